#!/usr/bin/env python3
"""shutdown_test.py - `upres serve` stops promptly on SIGTERM, mid-tile.

Run by ctest as: python3 tests/e2e/shutdown_test.py PATH/TO/upres
with UPRES_TEST_MODELS (models folder).

Container runtimes wait 10 s after SIGTERM before they kill. One tile of
the default model, realesrgan-x4plus, takes seconds, so the server must
stop inside the tile (between layers of the network), not after it. Here
one job is a single 320x320 tile (about 11 s on 2 cores): the server gets
SIGTERM half a second after the tile is planned and must exit with status
0 within STOP_BOUND_S (2 s; 6 s in the sanitizer build, still well under
the tile). Restarted on the same data folder, the job must be queued or
processing again, not lost and not failed; a client's cancel of it must
then also take effect within the bound rather than at the end of the tile.
The measured times are printed either way.
"""
import os
import shutil
import signal
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import (QUIET, SLOW, UPRES, Server, check, make_tmp, png, request, status, submit,  # noqa: E402
                    tally, wait_status)

TMP = make_tmp("upres-shutdown-test-")
EDGE = 320  # one tile of EDGE x EDGE input pixels (plus padding): seconds of realesrgan-x4plus
STOP_BOUND_S = 6.0 if SLOW > 1 else 2.0
SETTLE_S = 0.5  # after the tile's plan is logged: the network is running the tile
PLANNED = "plan dnnl 3x%dx%d" % (EDGE + 20, EDGE + 20)  # debug log (--verbose): the tile is planned


def say(msg):
    if not QUIET:
        print(msg)


def wait_processing(s, jid, what, n_planned):
    """Wait until jid is processing and its tile planned (n_planned plans logged before), then
    SETTLE_S more; True if the job is still processing: inside its only tile."""
    st = wait_status(s.port, jid, ("processing", "completed", "failed", "cancelled"), 60)
    if not check(st.get("status") == "processing", what + ": job processing", st):
        return False
    deadline = time.time() + 60 * SLOW
    while s.tail(1 << 22).count(PLANNED) <= n_planned and time.time() < deadline:
        time.sleep(0.05)
    if not check(s.tail(1 << 22).count(PLANNED) > n_planned, what + ": the tile is planned (log)"):
        return False
    time.sleep(SETTLE_S)
    st = status(s.port, jid)
    return check(st.get("status") == "processing" and st.get("progress", 0) < 100,
                 what + ": still in its only tile %.1f s later" % SETTLE_S, st)


def sigterm(s, what):
    """SIGTERM s and time its exit: (exit status or None, seconds)."""
    t0 = time.monotonic()
    rc = s.stop(signal.SIGTERM, timeout=30)
    dt = time.monotonic() - t0
    print("%s: SIGTERM -> exit %s in %.2f s (bound %.1f s)" % (what, rc, dt, STOP_BOUND_S))
    check(rc == 0, what + ": exit status 0 after SIGTERM", rc)
    check(dt < STOP_BOUND_S, what + ": stopped within %.1f s" % STOP_BOUND_S, "%.2f s" % dt)
    return rc, dt


def test_shutdown():
    s = Server("shutdown", "--verbose")
    if not check(s.start(), "server starts"):
        return
    try:
        r = submit(s.port, data=png(EDGE, EDGE), filename="big.png", model_name="realesrgan-x4plus",
                   tile_size=EDGE)
        jid = (r.json() or {}).get("job_id", "")
        if not check(r.status == 202 and jid, "submit a one-tile realesrgan-x4plus job -> 202", r):
            return
        if not wait_processing(s, jid, "first run", 0):
            return
    finally:
        sigterm(s, "mid-tile")
    log = s.tail(1 << 22)
    check("queued again" in log, "the stopped job is queued again (log)", log[-1500:])
    uploads = os.listdir(os.path.join(s.data, "uploads"))
    check([f for f in uploads if f.startswith(jid)], "its input is kept for the next run", uploads)
    results = [f for f in os.listdir(os.path.join(s.data, "results")) if f.startswith(jid)]
    check(not results, "no result file, not even a partial one", results)

    if not check(s.start(), "server starts again on the same data folder"):
        return
    try:
        st = status(s.port, jid)
        check(st.get("status") in ("queued", "processing"), "after restart: the job is queued or processing", st)
        if not wait_processing(s, jid, "after restart", 1):
            return
        # a client's cancel stops the tile too, when this process runs the job
        t0 = time.monotonic()
        r = request(s.port, "POST", "/api/v1/cancel/" + jid)
        check(r.status == 202 and (r.json() or {}).get("success") is True, "cancel processing -> 202", r)
        st = wait_status(s.port, jid, ("cancelled", "completed", "failed"), 30)
        dt = time.monotonic() - t0
        print("cancel mid-tile -> %s in %.2f s (bound %.1f s)" % (st.get("status"), dt, STOP_BOUND_S))
        check(st.get("status") == "cancelled", "cancel mid-tile: job cancelled", st)
        check(dt < STOP_BOUND_S, "cancel mid-tile: within %.1f s" % STOP_BOUND_S, "%.2f s" % dt)
    finally:
        sigterm(s, "idle")


def main():
    if not os.path.exists(UPRES):
        print("missing %s" % UPRES)
        return 1
    t0 = time.time()
    try:
        test_shutdown()
    except Exception as e:  # noqa: BLE001
        check(False, "test_shutdown raised", repr(e))
    if tally.failed:
        p = os.path.join(TMP, "shutdown.log")
        if os.path.exists(p):
            print("---- shutdown log (tail) ----")
            with open(p, "rb") as f:
                print(f.read()[-3000:].decode("utf-8", "replace"))
    else:
        shutil.rmtree(TMP, ignore_errors=True)
    print("%d passed, %d failed (%.1fs)" % (tally.passed, tally.failed, time.time() - t0))
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
