#!/usr/bin/env python3
"""submit_latency.py - how long a submitted job waits before a worker takes it.

Starts `upres serve` on a free loopback port with a temporary data folder
and one idle worker (--workers 1 --threads 1), warms the model with one job,
then submits small jobs one after another (a 64-px PNG, the fast model,
scale 2), each after the previous one completed, so that a worker is always
free when a job arrives:
  http: POST /api/v1/upscale, answered by the server itself, which wakes
        its worker at once;
  cli:  `upres submit` on the same store, a separate process: on SQLite
        the server finds the job at its next poll of the store (once a
        second); on PostgreSQL (UPRES_BENCH_PG set to a postgresql:// URL:
        the run is repeated there, in a schema of its own) the submission's
        NOTIFY wakes the server's idle worker at once.
Submit-to-start is the job's started_at (its claim) minus its created_at,
as the server recorded them (GET /api/v1/jobs/{id}, millisecond times); the
answer time is from sending the POST to its answer. Prints median, p90 and
the slowest of each.

usage: [UPRES_BENCH_PG=postgresql://...] bench/submit_latency.py [PATH/TO/upres] [N]
Loopback only; every loop is bounded in count and time.
"""
import datetime, json, os, statistics, subprocess, sys, time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../tests/e2e"))
import client  # noqa: E402
from client import SHARED, Server, request  # noqa: E402  (client.UPRES: argv[1], default build/upres)

N = int(sys.argv[2]) if len(sys.argv) > 2 else 20
MODEL = "realesr-animevideov3"


def when(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def started_minus_created(port, job):
    j = request(port, "GET", f"/api/v1/jobs/{job}").json() or {}
    if not j.get("started_at") or not j.get("created_at"):
        return None
    return when(j["started_at"]) - when(j["created_at"])


def summary(name, xs):
    xs = sorted(xs)
    if not xs:
        return f"{name}: no samples"
    p90 = xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
    return (f"{name}: n={len(xs)} median {statistics.median(xs) * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms, "
            f"slowest {xs[-1] * 1000:.1f} ms")


def measure(name, env):
    """One server (env: its store); the three figures."""
    server = Server(name, "--workers", "1", "--rate-per-minute", "0", "--rate-per-day", "0", threads=1, env=env)
    with open(os.path.join(SHARED, "ref", "in", "chelsea_lr64.png"), "rb") as f:
        image = f.read()
    path = os.path.join(client.TMP, "chelsea.png")
    with open(path, "wb") as f:
        f.write(image)
    try:
        if not server.start():
            sys.exit("submit_latency: the server did not start")
        port = server.port
        warm = client.submit(port, data=image, scale=2, model_name=MODEL).json()["job_id"]
        client.wait_status(port, warm, ("completed", "failed"), 120)
        http_start, http_answer, cli_start = [], [], []
        for i in range(N):
            t0 = time.monotonic()
            r = client.submit(port, data=image, scale=2, model_name=MODEL)
            http_answer.append(time.monotonic() - t0)
            job = (r.json() or {}).get("job_id")
            if client.wait_status(port, job, ("completed", "failed"), 60).get("status") == "completed":
                d = started_minus_created(port, job)
                if d is not None:
                    http_start.append(d)
        for i in range(max(3, N // 2)):
            p = server.cli("submit", "-m", MODEL, "-s", "2", path)
            job = json.loads(p.stdout.splitlines()[0]).get("job_id") if p.returncode == 0 else None
            if job and client.wait_status(port, job, ("completed", "failed"), 60).get("status") == "completed":
                d = started_minus_created(port, job)
                if d is not None:
                    cli_start.append(d)
        return http_start, http_answer, cli_start
    finally:
        server.stop()


def pg_schema_url(url):
    """A fresh schema in the database url names (psql), and url with it as the search_path."""
    schema = "bench_latency_%d" % os.getpid()
    sql = "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s" % (schema, schema)
    subprocess.run(["psql", "-q", "-X", url, "-c", sql], check=True, capture_output=True)
    return url + ("&" if "?" in url else "?") + "options=-csearch_path%3D" + schema, schema


def main():
    client.make_tmp("upres-submit-latency-")
    http_start, http_answer, cli_start = measure("latency", {})
    print(summary("sqlite: http submit -> start", http_start))
    print(summary("sqlite: http submit answer", http_answer))
    print(summary("sqlite: cli submit -> start (another process: found by the 1 s poll)", cli_start))
    url = os.environ.get("UPRES_BENCH_PG")
    if not url:
        print("postgresql: not run (set UPRES_BENCH_PG to a postgresql:// URL; see README, Benchmarks)")
        return
    store, schema = pg_schema_url(url)
    try:
        http_start, http_answer, cli_start = measure("latency-pg", {"UPRES_STORE": store})
        print(summary("postgresql: http submit -> start", http_start))
        print(summary("postgresql: http submit answer", http_answer))
        print(summary("postgresql: cli submit -> start (another process: woken by NOTIFY)", cli_start))
    finally:
        subprocess.run(["psql", "-q", "-X", url, "-c", "DROP SCHEMA IF EXISTS %s CASCADE" % schema],
                       capture_output=True)


if __name__ == "__main__":
    main()
