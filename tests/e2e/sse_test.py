#!/usr/bin/env python3
"""sse_test.py - GET /api/v1/status/{id}/stream: a job's status as Server-Sent Events.

Run by ctest as: python3 tests/e2e/sse_test.py PATH/TO/upres
with UPRES_TEST_MODELS (models folder).

One server (one worker of one thread, --header-timeout 2 so that the
deadline reaper would cut a stream within the test if it counted one as
idle, and room for 250 connections from 127.0.0.1):

- events: a stream opened right after a submission gets "event: status"
  events whose data is the GET /status/{id} object: queued or processing
  first, statuses in order (queued, processing, completed), progress never
  falling, at least one processing event, and the completed state last,
  equal to GET /status/{id}; then the chunked body ends (its last chunk)
  within a moment of the job's end, not at a keep-alive 15 s later.
- a late subscriber to that finished job gets the completed state at once
  and the end of the stream.
- visibility: an unknown id is 404 JSON NOT_FOUND; a job made with one key
  is 404 to another key (as GET /status/{id}), visible to its own.
- many streams: with a long job running (realesrgan-x4plus, one 320x320
  tile on one thread: tens of seconds) and a second one queued behind it,
  200 streams on the queued job each get its state at once, and the
  server's thread count (/proc/PID/status, Threads:) grows by at most 2
  (no thread per stream); a quiet stream gets ": keep-alive" after 15 s
  (and is not cut, although the head timeout is 2 s); then SIGTERM with the
  200 streams open: exit status 0 within 2 s (6 s in the sanitizer build),
  and every stream ended cleanly with its last chunk.

Stream bytes are read from plain sockets and the chunked encoding decoded
here, so that a clean end (the zero-length chunk) is told apart from a cut
connection. Every wait is bounded; the figures (thread counts, stop time)
are printed.
"""
import json
import os
import re
import shutil
import signal
import socket
import sys
import time
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import QUIET, SLOW, Server, Stream, check, make_tmp, png, request, status, submit, tally  # noqa: E402

TMP = make_tmp("upres-sse-test-")
N_STREAMS = 200
KEEPALIVE_S = 15  # the server's default (http_config_t.sse_keepalive_s)
STOP_BOUND_S = 6.0 if SLOW > 1 else 2.0
RANK = {"queued": 0, "processing": 1, "completed": 2, "failed": 2, "cancelled": 2, "expired": 3}


def say(msg):
    if not QUIET:
        print(msg)


def stream_path(jid):
    return "/api/v1/status/%s/stream" % jid


def threads_of(pid):
    with open("/proc/%d/status" % pid) as f:
        m = re.search(r"^Threads:\s+(\d+)", f.read(), re.M)
    return int(m.group(1)) if m else -1


# ---- the tests ------------------------------------------------------------------------


def test_events(s):
    """A stream from submission to the end; returns the job id."""
    r = submit(s.port, data=png(256, 256), filename="ev.png", model_name="realesr-animevideov3", scale=2,
               tile_size=32)
    jid = (r.json() or {}).get("job_id", "")
    if not check(r.status == 202 and jid, "submit a 64-tile job -> 202", r):
        return None
    st = Stream(s.port, stream_path(jid))
    if not check(st.status == 200, "stream -> 200", (st.status, st.body[:300])):
        return jid
    check(st.headers.get("content-type", "").startswith("text/event-stream"), "Content-Type text/event-stream",
          st.headers)
    check(st.headers.get("cache-control") == "no-cache", "Cache-Control no-cache", st.headers)
    events, bad, end_t = [], [], None
    t0 = time.time()
    for _ in range(2000):
        try:
            ev = st.event(30 * SLOW)
        except TimeoutError:
            bad.append("timeout")
            break
        if ev is None:
            end_t = time.time()
            break
        if "comment" in ev:
            continue
        data = st.json_data(ev)
        if ev.get("event") != "status" or not data or data.get("job_id") != jid:
            bad.append(ev)
        events.append(data or {})
    st.close()
    seq = [(e.get("status"), e.get("progress")) for e in events]
    say("events: %s" % seq)
    check(not bad, "every event is 'status' with the job's status object", bad[:3])
    check(events and events[0].get("status") in ("queued", "processing"), "first event: queued or processing",
          seq[:2])
    ranks = [RANK.get(e.get("status"), -1) for e in events]
    check(ranks == sorted(ranks) and -1 not in ranks, "statuses in order", seq)
    progress = [e.get("progress", 0) for e in events]
    check(progress == sorted(progress), "progress never falls", progress)
    check(any(e.get("status") == "processing" for e in events), "at least one processing event", seq)
    check(len(set(map(str, events))) == len(events), "no event repeats the one before", seq)
    last = events[-1] if events else {}
    check(last.get("status") == "completed" and last.get("download_url"), "last event: completed", last)
    check(st.done, "the stream ended with its last chunk (clean end)", (st.done, st.eof))
    check(end_t is not None and end_t - t0 < 10 * SLOW, "the stream ended with the job, not at a keep-alive",
          "%.1f s" % ((end_t or time.time()) - t0))
    check(last == status(s.port, jid), "the completed event is the GET /status/{id} object", last)
    return jid


def test_late(s, jid):
    t0 = time.time()
    st = Stream(s.port, stream_path(jid))
    ev = st.event(5 * SLOW) if st.status == 200 else None
    data = st.json_data(ev) if ev else None
    end = st.event(5 * SLOW) if ev else "not read"
    dt = time.time() - t0
    st.close()
    check(st.status == 200 and data and data.get("status") == "completed",
          "late subscriber: the completed state at once", (st.status, ev))
    check(end is None and st.done and dt < 2 * SLOW, "late subscriber: then the stream ends (%.3f s)" % dt,
          (end, st.done))
    check(data == status(s.port, jid), "late subscriber: the GET /status/{id} object", data)


def test_visibility(s):
    st = Stream(s.port, stream_path(str(uuid.uuid4())))
    body = st.body
    st.close()
    j = None
    try:
        j = json.loads(body.decode())
    except ValueError:
        pass
    check(st.status == 404 and st.headers.get("content-type", "").startswith("application/json")
          and (j or {}).get("code") == "NOT_FOUND", "unknown id -> 404 JSON NOT_FOUND", (st.status, body[:200]))

    k1, k2 = s.key_create("sse-one"), s.key_create("sse-two")
    if not check(k1 and k2, "two keys made"):
        return
    h1, h2 = {"Authorization": "Bearer " + k1}, {"Authorization": "Bearer " + k2}
    r = submit(s.port, data=png(32, 32), filename="k.png", model_name="realesr-animevideov3", scale=2, headers=h1)
    jid = (r.json() or {}).get("job_id", "")
    if not check(r.status == 202 and jid, "submit with key one -> 202", r):
        return
    st = Stream(s.port, stream_path(jid), headers=h2)
    st.close()
    plain = request(s.port, "GET", "/api/v1/status/" + jid, headers=h2)
    check(st.status == 404 and plain.status == 404, "another key's job: stream 404, as GET /status/{id}",
          (st.status, st.body[:200], plain.status))
    st = Stream(s.port, stream_path(jid), headers=h1)
    ev = st.event(5 * SLOW) if st.status == 200 else None
    st.close()
    check(st.status == 200 and ev and ev.get("event") == "status", "its own key: the stream", (st.status, ev))


def test_many_and_sigterm(s):
    """200 open streams: no thread each, keep-alive, and a clean end at SIGTERM. Stops the server."""
    long = dict(data=png(320, 320), model_name="realesrgan-x4plus", scale=4, tile_size=320)
    a = (submit(s.port, filename="a.png", **long).json() or {}).get("job_id", "")
    b = (submit(s.port, filename="b.png", **long).json() or {}).get("job_id", "")
    if not check(a and b, "submit two long jobs", (a, b)):
        return
    # the first one running (so that the worker's threads are all there), the second queued
    deadline = time.time() + 30 * SLOW
    while status(s.port, a).get("status") != "processing" and time.time() < deadline:
        time.sleep(0.05)
    check(status(s.port, b).get("status") == "queued", "the second job waits (queued)", status(s.port, b))
    quiet = Stream(s.port, stream_path(b))
    t_quiet = time.time()
    first = quiet.event(5 * SLOW) if quiet.status == 200 else None
    check(first and (quiet.json_data(first) or {}).get("status") == "queued", "a stream on the queued job",
          first)
    time.sleep(0.3)
    before = threads_of(s.proc.pid)

    streams, n_first = [], 0
    t0 = time.time()
    for _ in range(N_STREAMS):
        try:
            streams.append(Stream(s.port, stream_path(b)))
        except (OSError, TimeoutError) as e:
            check(False, "open stream %d" % len(streams), repr(e))
            break
    for st in streams:
        try:
            ev = st.event(10 * SLOW) if st.status == 200 else None
        except TimeoutError:
            ev = None
        n_first += bool(ev and (st.json_data(ev) or {}).get("job_id") == b)
    opened = time.time() - t0
    time.sleep(0.3)
    with_streams = threads_of(s.proc.pid)
    print("threads: %d before, %d with %d open streams (opened and first event read in %.2f s)"
          % (before, with_streams, len(streams), opened))
    check(n_first == N_STREAMS, "each of %d streams got the job's state at once" % N_STREAMS, n_first)
    check(before > 0 and with_streams - before <= 2, "open streams cost no threads", (before, with_streams))

    # the quiet stream: nothing happens to the queued job, so a keep-alive comment comes after 15 s
    got, ka_t = [], None
    try:
        while ka_t is None:
            ev = quiet.event(max(0.1, t_quiet + KEEPALIVE_S + 5 * SLOW - time.time()))
            if ev is None:
                break
            got.append(ev)
            if ev.get("comment") == "keep-alive":
                ka_t = time.time() - t_quiet
    except TimeoutError:
        pass
    print("keep-alive after %s s" % ("%.1f" % ka_t if ka_t else "-"))
    check(ka_t is not None and ka_t >= KEEPALIVE_S - 1, "a quiet stream gets ': keep-alive' after ~15 s "
          "(not cut by the 2 s head timeout)", (ka_t, got[:3]))
    check(status(s.port, a).get("status") == "processing" and status(s.port, b).get("status") == "queued",
          "the long job still runs: the streams are open at SIGTERM", (status(s.port, a), status(s.port, b)))

    t1 = time.monotonic()
    rc = s.stop(signal.SIGTERM, timeout=30)
    dt = time.monotonic() - t1
    print("SIGTERM with %d streams open -> exit %s in %.2f s (bound %.1f s)" % (len(streams) + 1, rc, dt,
                                                                                 STOP_BOUND_S))
    check(rc == 0, "SIGTERM with streams open: exit status 0", rc)
    check(dt < STOP_BOUND_S, "SIGTERM with streams open: stopped within %.1f s" % STOP_BOUND_S, "%.2f s" % dt)
    clean = 0
    for st in streams + [quiet]:
        try:
            while st.event(2 * SLOW) is not None:
                pass
        except TimeoutError:
            pass
        clean += st.done
        st.close()
    check(clean == len(streams) + 1, "every stream ended cleanly (last chunk) at SIGTERM",
          "%d of %d" % (clean, len(streams) + 1))


def main():
    t0 = time.time()
    s = Server("sse", "--max-conns-per-ip", "400", "--header-timeout", "2", threads=1)
    ok = check(s.start(), "server starts")
    try:
        if ok:
            t1 = time.time()
            jid = test_events(s)
            if jid:
                test_late(s, jid)
            test_visibility(s)
            say("  (events, late, visibility: %.1fs)" % (time.time() - t1))
            t1 = time.time()
            test_many_and_sigterm(s)
            say("  (many streams, SIGTERM: %.1fs)" % (time.time() - t1))
    except Exception as e:  # noqa: BLE001
        check(False, "the test raised", repr(e))
    finally:
        s.stop(signal.SIGKILL, timeout=10)
    if tally.failed:
        print("---- server log (tail) ----\n" + s.tail(4000))
    else:
        shutil.rmtree(TMP, ignore_errors=True)
    print("%d passed, %d failed (%.1fs)" % (tally.passed, tally.failed, time.time() - t0))
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
