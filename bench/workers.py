#!/usr/bin/env python3
"""workers.py - throughput of 1 vs 2 `upres worker` processes, each with one thread.

usage: python3 bench/workers.py [PATH/TO/upres] [--jobs N] [--edge PX] [--rounds R]

A benchmark, not a test: it prints figures. For each worker count (1, then
2) it starts one `upres serve --no-workers` on a fresh data folder (the
SQLite store; the claims are the same statements on PostgreSQL), queues N
realesr-animevideov3 x2 jobs on EDGE x EDGE gray PNGs through the API, and
only then starts the workers (`--slots 1 --threads 1`), so that each one
finds a full queue. The time is from the first claim to the last
completion in the workers' logs; throughput is jobs per second, and the
ratio is 2 workers' throughput over 1's (the scale-out goal: >= 1.8 on a
machine with two free cores). Each count runs R rounds; the best round
counts (the machine may be shared). The CPU, its core count and the load
average are printed with the figures.
"""
import argparse
import datetime
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
from client import MODELS, Server, png, request, submit  # noqa: E402

MODEL = "realesr-animevideov3"
CLAIMED = re.compile(r"^(\S+) info job ([0-9a-f-]{36}) claimed ", re.M)
COMPLETED = re.compile(r"^(\S+) info job ([0-9a-f-]{36}) completed in ", re.M)


def stamp(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def one_round(upres, n_workers, n_jobs, edge, tmp):
    data = os.path.join(tmp, "data-%d-%d" % (n_workers, time.time_ns()))
    api = Server("api-%d" % n_workers, "--no-workers", data=data)
    if not api.start():
        raise RuntimeError("the API server did not start")
    logs, procs = [], []
    try:
        image = png(edge, edge)
        ids = []
        for i in range(n_jobs):
            r = submit(api.port, data=image, filename="b%d.png" % i, model_name=MODEL, scale=2)
            if r.status != 202:
                raise RuntimeError("submit: %r" % r)
            ids.append(r.json()["job_id"])
        for k in range(n_workers):
            log = os.path.join(tmp, "bench-w%d-%d.log" % (n_workers, k))
            logs.append(log)
            f = open(log, "wb")
            procs.append(subprocess.Popen([upres, "worker", "--data", data, "--slots", "1", "--threads", "1",
                                           "--models", MODEL, "--name", "bench-%d" % k], stdout=f, stderr=f,
                                          env=dict(os.environ, UPRES_MODELS=MODELS)))
            f.close()
        # the workers' logs say when each job completed: no polling of the API, which would take CPU from them
        deadline = time.time() + 60 + n_jobs * edge * edge * 4e-5
        done = 0
        while done < n_jobs and time.time() < deadline:
            time.sleep(0.2)
            done = sum(len(COMPLETED.findall(open(f, "rb").read().decode("utf-8", "replace"))) for f in logs)
        left = [j for j in ids if (request(api.port, "GET", "/api/v1/status/" + j).json() or {}).get("status")
                != "completed"]
        if left:
            raise RuntimeError("%d jobs did not complete in time" % len(left))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        api.stop()
    text = "".join(open(f, "rb").read().decode("utf-8", "replace") for f in logs)
    first = min(stamp(m.group(1)) for m in CLAIMED.finditer(text))
    last = max(stamp(m.group(1)) for m in COMPLETED.finditer(text))
    per = [len(COMPLETED.findall(open(f, "rb").read().decode("utf-8", "replace"))) for f in logs]
    shutil.rmtree(data, ignore_errors=True)
    return last - first, per


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("upres", nargs="?", default=os.path.join(HERE, "..", "build", "upres"))
    ap.add_argument("--jobs", type=int, default=24)
    ap.add_argument("--edge", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    upres = os.path.abspath(a.upres)
    tmp = tempfile.mkdtemp(prefix="upres-bench-workers-")
    print("upres workers benchmark: %d jobs of %s x2 on %dx%d PNGs, each worker --slots 1 --threads 1" % (
        a.jobs, MODEL, a.edge, a.edge))
    print("cpu: %s, %d cores; load average before: %s" % (cpu_name(), os.cpu_count() or 0,
                                                          " ".join("%.2f" % x for x in os.getloadavg())))
    best = {}
    for n in (1, 2):
        for r in range(a.rounds):
            wall, per = one_round(upres, n, a.jobs, a.edge, tmp)
            rate = a.jobs / wall
            print("  %d worker(s), round %d: %.2f s, %.2f jobs/s (jobs per worker: %s)" % (
                n, r + 1, wall, rate, ", ".join(map(str, per))))
            best[n] = max(best.get(n, 0), rate)
    print("best: 1 worker %.2f jobs/s, 2 workers %.2f jobs/s: ratio %.2fx (goal >= 1.8x)" % (
        best[1], best[2], best[2] / best[1]))
    print("load average after: %s" % " ".join("%.2f" % x for x in os.getloadavg()))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
