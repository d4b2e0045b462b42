#!/usr/bin/env python3
"""tinify_latency.py - a small image through the Tinify dialect, end to end.

Starts `upres serve` on a free loopback port (one worker, --tinify-model
realesr-animevideov3), warms the model with one job, then N times: POST
/upload a 64x64 PNG, POST /auto (x2 -> webp), open GET /status/{id}/stream
and read until the `complete` event. Prints the median and slowest time
from the upload to that event, the time the network's step took (the
upscale step's seconds in the job's report, read from the job store), and
the share of the total spent outside the network (HTTP, checks, the
queue, decode, encode, the stream).

usage: bench/tinify_latency.py [PATH/TO/upres] [N]
Loopback only; every loop is bounded in count and time.
"""
import json
import os
import sqlite3
import statistics
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../tests/e2e"))
import client  # noqa: E402
from client import SHARED, Server, Stream, multipart, request  # noqa: E402

N = int(sys.argv[2]) if len(sys.argv) > 2 else 20
MODEL = "realesr-animevideov3"


def one(port, image):
    t0 = time.monotonic()
    body, ctype = multipart({}, {"file": ("chelsea.png", image, "image/png")})
    up = request(port, "POST", "/upload", body, {"Content-Type": ctype}).json()
    h = {"X-Session-Token": up["session_token"], "Content-Type": "application/json"}
    req = {"temp_file_ids": [up["temp_file_id"]], "settings": {"output_upscale_factor": 2, "output_format": "webp"}}
    job = request(port, "POST", "/auto", json.dumps(req).encode(), h).json()["jobs"][0]["id"]
    st = Stream(port, "/status/%s/stream" % job, timeout=60)
    try:
        for _ in range(10000):
            ev = st.event(60)
            if ev is None or ev.get("event") == "complete":
                break
    finally:
        st.close()
    return time.monotonic() - t0, job


def main():
    client.make_tmp("upres-tinify-latency-")
    server = Server("tinify-latency", "--workers", "1", "--tinify-model", MODEL, "--rate-per-minute", "0",
                    "--rate-per-day", "0", "--guest-daily-credits", str(N + 10))
    with open(os.path.join(SHARED, "ref", "in", "chelsea_lr64.png"), "rb") as f:
        image = f.read()
    try:
        if not server.start():
            sys.exit("tinify_latency: the server did not start")
        one(server.port, image)  # warm: the model loads
        totals, nets = [], []
        db = sqlite3.connect(os.path.join(server.data, "upres.db"), timeout=10)
        for _ in range(N):
            t, job = one(server.port, image)
            report = json.loads(db.execute("SELECT report FROM jobs WHERE id = ?", (job,)).fetchone()[0] or "[]")
            net = sum(e.get("seconds", 0) for e in report if e.get("op") == "upscale")
            totals.append(t)
            nets.append(net)
        db.close()
        tm, nm = statistics.median(totals), statistics.median(nets)
        print(f"64x64 PNG, /upload -> /auto (x2 {MODEL} -> webp) -> SSE complete, n={N}")
        print(f"upload to complete: median {tm * 1000:.1f} ms, slowest {max(totals) * 1000:.1f} ms")
        print(f"the upscale step: median {nm * 1000:.1f} ms")
        print(f"outside the network: {(tm - nm) * 1000:.1f} ms, {100 * (tm - nm) / tm:.0f}% of the total")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
