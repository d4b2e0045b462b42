#!/usr/bin/env python3
"""server_load.py - how the server answers while it works.

Starts `upres serve` on a free loopback port with a temporary data folder,
submits a long job (a photo with realesrgan-x4plus, small tiles), and while
it runs measures with wrk (Debian package `wrk`, installed by
scripts/setup.sh):
  GET /api/v1/health and GET /api/v1/status/{id}: requests/s, p50, p99
  the same status read with an API key, and GET /v1/jobs/{id} (key
  required): what checking a key (SHA-256, a store read, the rate limiter,
  here with no limits) costs per request, as a ratio to the anonymous read
Then, on the idle server, the time from POST /upscale returning to the job
being seen as processing (median of 10 small jobs, polling every 2 ms).

usage: bench/server_load.py [PATH/TO/upres] [IMAGE]
Loopback only; every loop is bounded in count and time.
"""
import os, re, shutil, statistics, subprocess, sys, time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../tests/e2e"))
import client  # noqa: E402
from client import REPO, Server, request  # noqa: E402  (client.UPRES: argv[1], default build/upres)

photo = sys.argv[2] if len(sys.argv) > 2 else os.path.join(REPO, "samples", "astronaut_128.png")
small = os.path.join(REPO, "samples", "astronaut_128.png")


def submit(port, path, headers=None, **fields):
    r = client.submit(port, path, headers=headers, **fields)
    if r.status != 202:
        sys.exit(f"server_load: submit -> {r}")
    return r.json()["job_id"]


def status(port, job):
    return client.status(port, job)


def wrk(url, key=None):
    auth = ["-H", f"Authorization: Bearer {key}"] if key else []
    out = subprocess.run(["wrk", "-t2", "-c16", "-d5s", "--latency"] + auth + [url], capture_output=True, text=True,
                         timeout=60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    return rps, pct(50), pct(99)


def main():
    if not shutil.which("wrk"):
        sys.exit("server_load: wrk is not installed (scripts/setup.sh installs it)")
    client.make_tmp("upres-load-")
    # the server's own thread count: this measures it; no rate limits, so that wrk measures the key check
    server = Server("load", "--rate-per-minute", "0", "--rate-per-day", "0", threads=None)
    try:
        if not server.start():
            sys.exit("server_load: the server did not start")
        port = server.port
        base = f"http://127.0.0.1:{port}/api/v1"
        key = server.key_create("bench")
        if not key:
            sys.exit("server_load: cannot create an API key")
        job = submit(port, photo, headers={"Authorization": f"Bearer {key}"}, scale=4,
                     model_name="realesrgan-x4plus", tile_size=32)
        for _ in range(500):
            if status(port, job).get("status") == "processing":
                break
            time.sleep(0.01)
        print(f"while a job runs ({os.path.basename(photo)}, realesrgan-x4plus, 32-px tiles), wrk -t2 -c16 -d5s:")
        print(f"{'endpoint':28} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
        anon = None
        for name, url, k in (("GET /api/v1/health", base + "/health", None),
                             ("GET /api/v1/status/{id}", f"{base}/status/{job}", None),
                             ("  the same, with a key", f"{base}/status/{job}", key),
                             ("GET /v1/jobs/{id} (key)", f"http://127.0.0.1:{port}/v1/jobs/{job}", key)):
            rps, p50, p99 = wrk(url, k)
            anon = rps if name.startswith("GET /api/v1/status") else anon
            ratio = f"  {rps / anon:.2f} x the anonymous status read" if k and anon else ""
            print(f"{name:28} {rps:10.0f} {p50:9.2f} {p99:9.2f}{ratio}")
        still = status(port, job).get("status")
        print(f"(the job was {still} when the load ended)")
        request(port, "POST", f"/api/v1/cancel/{job}", timeout=10)
        for _ in range(1000):
            if status(port, job).get("status") not in ("queued", "processing"):
                break
            time.sleep(0.05)
        waits = []
        for _ in range(10):
            j = submit(port, small, scale=2, model_name="realesr-animevideov3")
            t1 = time.monotonic()
            seen = None
            for _ in range(2500):
                s = status(port, j).get("status")
                if s != "queued":
                    seen = time.monotonic()
                    break
                time.sleep(0.002)
            if seen:
                waits.append((seen - t1) * 1000)
            for _ in range(500):
                if status(port, j).get("status") not in ("queued", "processing"):
                    break
                time.sleep(0.02)
        print(f"idle server, POST /upscale returned -> job seen processing: median {statistics.median(waits):.1f} ms, "
              f"max {max(waits):.1f} ms over {len(waits)} jobs (status polled every 2 ms)")
    finally:
        server.stop(timeout=30)
        shutil.rmtree(client.TMP, ignore_errors=True)

if __name__ == "__main__":
    main()
