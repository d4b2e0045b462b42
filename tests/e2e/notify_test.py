#!/usr/bin/env python3
"""notify_test.py - two `upres serve` on one PostgreSQL store: wake-ups and job events cross processes.

Servers A and B share a PostgreSQL schema and a data folder, one worker of
one thread each. A's worker is kept busy with a long realesrgan-x4plus job,
then:

- wake-up: jobs submitted to A (whose own worker is busy) are claimed by
  B's idle worker, woken by the submission's NOTIFY: each of 3 within
  0.4 s of its submission (the poll alone finds a job 0 to 1 s later, so
  three in a row under 0.4 s would be luck: 1 in 16);
- events: a job submitted to B runs on B (A is busy) while a status stream
  is open on A: A's stream gets the job's progress and its completion
  within 5 s of it (without the relay, A would hear nothing until its 15 s
  keep-alive re-read).

Needs UPRES_TEST_PG (ctest passes the pg fixture's cluster); skipped
without it. Every wait is bounded.
"""
import datetime
import os
import subprocess
import sys
import time
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import SLOW, Server, Stream, check, make_tmp, png, request, submit, tally  # noqa: E402

PG = os.environ.get("UPRES_TEST_PG")
FAST = "realesr-animevideov3"


def when(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def job(port, jid):
    return request(port, "GET", "/api/v1/jobs/%s" % jid).json() or {}


def wait_status(port, jid, want, timeout):
    deadline = time.time() + timeout * SLOW
    j = {}
    while time.time() < deadline:
        j = job(port, jid)
        if j.get("status") in want:
            return j
        time.sleep(0.05)
    return j


def psql(sql):
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", PG, "-c", sql], check=True,
                   capture_output=True, timeout=30 * SLOW)


def main():
    if not PG:
        print("notify_test: UPRES_TEST_PG is not set: skipped (ctest sets it with a PostgreSQL server)")
        return 0
    t0 = time.time()
    tmp = make_tmp("upres-notify-test-")
    schema = "nt_" + uuid.uuid4().hex[:12]
    psql("CREATE SCHEMA %s" % schema)
    url = "%s%coptions=-csearch_path%%3D%s" % (PG, "&" if "?" in PG else "?", schema)
    data = os.path.join(tmp, "data")
    args = ("--store", url, "--workers", "1", "--rate-per-minute", "0", "--rate-per-day", "0")
    a = Server("a", *args, data=data, threads=1)
    b = Server("b", *args, data=data, threads=1)
    try:
        if not (check(a.start(), "server A starts") and check(b.start(), "server B starts")):
            return 1
        # A's worker busy for a long while (x4plus, one 320x320 image on one thread)
        r = submit(a.port, data=png(320, 320), filename="long.png", model_name="realesrgan-x4plus", scale=4)
        long_id = (r.json() or {}).get("job_id", "")
        check(r.status == 202 and long_id, "a long job submitted to A", r)
        j = wait_status(a.port, long_id, ("processing",), 30)
        check(j.get("status") == "processing", "  it runs", j.get("status"))
        runner = None
        # wake-ups: a job submitted to A is claimed by B's idle worker, woken by NOTIFY
        waits = []
        for i in range(3):
            r = submit(a.port, data=png(32, 32), filename="w%d.png" % i, model_name=FAST, scale=2)
            jid = (r.json() or {}).get("job_id", "")
            j = wait_status(a.port, jid, ("completed", "failed"), 30)
            if j.get("status") == "completed" and j.get("started_at") and j.get("created_at"):
                waits.append(when(j["started_at"]) - when(j["created_at"]))
        check(len(waits) == 3 and max(waits) < 0.4,
              "3 jobs submitted to A (busy) each claimed by B within 0.4 s", ["%.3f" % w for w in waits])
        print("notify_test: submit to A -> claimed by B: %s s" % ", ".join("%.3f" % w for w in waits))
        # events: a job run by B, followed by a stream on A
        r = submit(b.port, data=png(256, 256), filename="ev.png", model_name=FAST, scale=2, tile_size=32)
        jid = (r.json() or {}).get("job_id", "")
        check(r.status == 202 and jid, "a 64-tile job submitted to B", r)
        st = Stream(a.port, "/api/v1/status/%s/stream" % jid, timeout=30 * SLOW)
        statuses, done_at = [], None
        try:
            deadline = time.time() + 60 * SLOW
            while time.time() < deadline:
                try:
                    ev = st.event(20 * SLOW)
                except TimeoutError:
                    break
                if ev is None:
                    break
                d = st.json_data(ev) or {}
                if ev.get("event") == "status" or "status" in d:
                    statuses.append((d.get("status"), d.get("progress")))
                    if d.get("status") in ("completed", "failed"):
                        done_at = time.time()
                        break
        finally:
            st.close()
        j = job(b.port, jid)
        runner = "B" if j.get("status") == "completed" else "?"
        check(j.get("status") == "completed", "  B's job completed", j.get("status"))
        progress = [p for s, p in statuses if s == "processing"]
        check(len(progress) >= 2, "  A's stream got B's progress (%d processing events)" % len(progress), statuses)
        lag = done_at - when(j["completed_at"]) if done_at and j.get("completed_at") else None
        check(lag is not None and lag < 5, "  and its completion within 5 s on A (keep-alive: 15 s)", lag)
        print("notify_test: a stream on A saw the job B ran complete %.3f s after it did (runner %s)" %
              (lag if lag is not None else -1, runner))
        rcs = (a.stop(), b.stop())
        check(rcs == (0, 0), "both stop on SIGTERM with exit status 0 (A's long job requeued)", (rcs, a.tail(600)))
    finally:
        a.stop()
        b.stop()
        try:
            psql("DROP SCHEMA IF EXISTS %s CASCADE" % schema)
        except Exception:
            pass
    print("notify_test: %d passed, %d failed (%.1f s)" % (tally.passed, tally.failed, time.time() - t0))
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
