#!/usr/bin/env python3
"""stream.py - a stream of big jobs through `upres serve`, against the network alone.

usage: python3 bench/stream.py [PATH/TO/upres] [--jobs N] [--edge PX] [--solo K] [--rounds R]
                               [--input PNG] [--threads T]

A benchmark, not a test: it prints figures. One `upres serve --workers 1`
(--threads T, default the server's: all cores) on a loopback port with a fresh
data folder (SQLite store) runs realesr-animevideov3 x4 jobs on an EDGE x
EDGE PNG (default 1024: astronaut.png from the shared images made 1024^2
by `upres upscale -s 2`, or --input). Each round:

  solo:   K jobs before the stream and K after it, each submitted once
          the previous one completed, so that nothing overlaps the network; the network's time is the upscale
          step's "seconds" in each job's report (tiling, the network,
          stitching: the same tile plan as the stream's), read from the
          store. Network-only throughput = 1 / the median of those.
  stream: N jobs submitted at once; the time runs from the first job's
          claim (its started_at) to the last one's completed_at, as the
          store recorded them. Throughput = N / that time. "Steady" is
          (N - 1) / (last completion - first completion): the rate once
          the pipe is full, without the first job's decode and the last
          one's encode, which nothing can overlap.

The ratio printed is stream throughput / network-only throughput (the
goal of issue 13: >= 0.9). The first job of each server warms the model
and is not counted. R rounds run on fresh servers; medians are printed,
with every round's figures and the load average, since the machine may be
shared. The job's status is polled at most 5 times a second.
"""
import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
import client  # noqa: E402
from client import MODELS, SHARED, Server, request, submit  # noqa: E402

MODEL = "realesr-animevideov3"
SCALE = 4


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def load():
    return " ".join("%.2f" % x for x in os.getloadavg())


def make_input(upres, edge, tmp):
    """astronaut.png (512^2) upscaled by animevideov3 to edge x edge, through the upres CLI (libvips)."""
    src = os.path.join(SHARED, "images", "astronaut.png")
    out = os.path.join(tmp, "input-%d.png" % edge)
    r = subprocess.run([upres, "upscale", "-i", src, "-o", out, "-n", MODEL, "-s", "%g" % (edge / 512.0)],
                       capture_output=True, text=True, env=dict(os.environ, UPRES_MODELS=MODELS), timeout=600)
    if r.returncode != 0:
        raise RuntimeError("making the input failed: %s" % r.stderr[-2000:])
    return out


def wait_done(port, ids, timeout):
    deadline = time.time() + timeout
    left = list(ids)
    while left and time.time() < deadline:
        time.sleep(0.2)
        st = (request(port, "GET", "/api/v1/status/" + left[0]).json() or {}).get("status")
        if st in ("completed", "failed", "cancelled", "expired"):
            if st != "completed":
                raise RuntimeError("job %s ended %s" % (left[0], st))
            left.pop(0)
    if left:
        raise RuntimeError("%d job(s) did not complete in %.0f s" % (len(left), timeout))


def rows(data, ids):
    """{id: (started_at, completed_at, upscale step seconds, report)} from the store."""
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(data, "upres.db"), uri=True, timeout=10)
    out = {}
    for i in ids:
        r = db.execute("SELECT started_at, completed_at, report FROM jobs WHERE id = ?", (i,)).fetchone()
        rep = json.loads(r[2]) if r and r[2] else []
        up = sum(e.get("seconds", 0) for e in rep if e.get("op") == "upscale")
        enc = sum(e.get("seconds", 0) for e in rep if e.get("op") == "encode")
        out[i] = (r[0], r[1], up, enc)
    db.close()
    return out


def one_round(upres, image, n_jobs, n_solo, tmp, k, threads):
    data = os.path.join(tmp, "data-%d" % k)
    srv = Server("stream-%d" % k, "--workers", "1", "--rate-per-minute", "0", "--rate-per-day", "0",
                 data=data, threads=threads or None)
    if not srv.start():
        raise RuntimeError("the server did not start")
    timeout = 120 + 60 * (n_jobs + n_solo)
    try:
        def one():
            r = submit(srv.port, data=image, filename="in.png", model_name=MODEL, scale=SCALE)
            if r.status != 202:
                raise RuntimeError("submit: %r" % r)
            return r.json()["job_id"]

        warm = one()
        wait_done(srv.port, [warm], timeout)
        solo = []

        def solos():
            for _ in range(n_solo):
                solo.append(one())
                wait_done(srv.port, solo[-1:], timeout)

        solos()
        stream = [one() for _ in range(n_jobs)]
        wait_done(srv.port, stream, timeout)
        solos()  # before and after: a load that changed during the stream shows in both
        got = rows(data, solo + stream)
    finally:
        srv.stop()
    net = statistics.median(got[i][2] for i in solo)
    net_stream = statistics.median(got[i][2] for i in stream)  # slowed by the encode beside it, if at all
    enc = statistics.median(got[i][3] for i in solo)
    solo_job = statistics.median(got[i][1] - got[i][0] for i in solo)
    first = min(got[i][0] for i in stream)
    done = sorted(got[i][1] for i in stream)
    wall = done[-1] - first
    steady = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0
    shutil.rmtree(data, ignore_errors=True)
    return {"net": net, "net_stream": net_stream, "enc": enc, "solo_job": solo_job, "wall": wall, "rate": n_jobs / wall, "steady": steady}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("upres", nargs="?", default=os.path.join(HERE, "..", "build", "upres"))
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--edge", type=int, default=1024)
    ap.add_argument("--solo", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--input", help="a PNG to use instead of the made one")
    ap.add_argument("--threads", type=int, default=0, help="the server's --threads (0: its default, all cores)")
    a = ap.parse_args()
    if not (1 <= a.jobs <= 64 and 1 <= a.solo <= 16 and 1 <= a.rounds <= 10 and 64 <= a.edge <= 4096):
        ap.error("--jobs 1..64, --solo 1..16, --rounds 1..10, --edge 64..4096")
    upres = os.path.abspath(a.upres)
    client.UPRES = upres
    tmp = tempfile.mkdtemp(prefix="upres-bench-stream-")
    client.TMP = tmp
    try:
        path = a.input or make_input(upres, a.edge, tmp)
        with open(path, "rb") as f:
            image = f.read()
        print("upres stream benchmark: %s x%d on %s (%d bytes), `serve --workers 1 --threads %d`, %d solo (x2) "
              "+ %d streamed jobs" % (MODEL, SCALE, os.path.basename(path), len(image), a.threads, a.solo, a.jobs))
        print("cpu: %s, %d cores; load average before: %s" % (cpu_name(), os.cpu_count() or 0, load()))
        got = []
        for k in range(a.rounds):
            r = one_round(upres, image, a.jobs, a.solo, tmp, k, a.threads)
            got.append(r)
            print("  round %d: network %.3f s (encode %.3f s, solo job %.3f s): %.3f jobs/s network-only; "
                  "stream %.2f s (network %.3f s a job there): %.3f jobs/s (ratio %.3f), steady %.3f jobs/s "
                  "(ratio %.3f); load %s" % (
                      k + 1, r["net"], r["enc"], r["solo_job"], 1 / r["net"], r["wall"], r["net_stream"], r["rate"],
                      r["rate"] * r["net"], r["steady"], r["steady"] * r["net"], load()))
        med = lambda key: statistics.median(r[key] for r in got)  # noqa: E731
        print("median of %d round(s): network-only %.3f jobs/s, stream %.3f jobs/s, steady %.3f jobs/s" % (
            len(got), 1 / med("net"), med("rate"), med("steady")))
        print("ratio stream / network-only: %.3f (steady: %.3f; goal >= 0.9)" % (
            statistics.median(r["rate"] * r["net"] for r in got),
            statistics.median(r["steady"] * r["net"] for r in got)))
        print("load average after: %s" % load())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
