#!/usr/bin/env python3
"""blob_test.py - uploads and results are blobs named by keys, and a start
sweeps what a killed server left.

Run by ctest as: python3 tests/e2e/blob_test.py PATH/TO/upres
with UPRES_TEST_MODELS (models folder).

1. Keys, not paths: `upres serve -d data` from TMP/a makes a job that
   completes; stopped, and started again from TMP/b with `-d ../a/data`,
   the result still downloads (200, a PNG of the right size), and the row
   holds "results/<id>-a1.png", not a path (read with sqlite3).
2. The start sweep: a server is killed (SIGKILL) while a slow multipart
   upload of a few MB is half sent, which leaves uploads/.upload-<pid>-*;
   by hand, an upload no row references (uploads/<uuid>.png, its time an
   hour back) and a queued job whose upload is referenced (its time also
   an hour back; the job not claimable for an hour, so no worker ends it
   and deletes its input). Restarted, the orphan and the temporary are
   gone (the log names both removals) and the referenced upload is kept.
The measured times are printed.
"""
import os
import signal
import socket
import sqlite3
import sys
import time
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import (QUIET, Server, check, make_tmp, png, png_size, request, submit, tally,  # noqa: E402
                    wait_status)

TMP = make_tmp("upres-blob-test-")
MODEL = "realesr-animevideov3"


def say(msg):
    if not QUIET:
        print(msg)


def start_in(cwd, name, data):
    """A server started with the working directory cwd and `--data data` as given (relative)."""
    os.makedirs(cwd, exist_ok=True)
    s = Server(name, data=data)
    here = os.getcwd()
    os.chdir(cwd)
    try:
        ok = s.start()
    finally:
        os.chdir(here)
    return s, ok


def row(db, job_id):
    c = sqlite3.connect(db, timeout=10)
    try:
        # the input is the job's asset (schema 6)
        return c.execute("SELECT a.key, j.result_key, j.status FROM jobs j LEFT JOIN assets a ON a.id = j.asset_id"
                         " WHERE j.id = ?", (job_id,)).fetchone()
    except sqlite3.Error as e:
        return ("sqlite: %s" % e, "", -1)
    finally:
        c.close()


def test_relative_data_folder():
    a, b = os.path.join(TMP, "a"), os.path.join(TMP, "b")
    s, ok = start_in(a, "rel-a", "data")
    if not check(ok, "serve -d data from TMP/a starts"):
        s.stop()
        return
    check(os.path.isdir(os.path.join(a, "data", "uploads")), "the data folder is TMP/a/data")
    r = submit(s.port, data=png(24, 16), filename="small.png", model_name=MODEL, scale=2)
    jid = (r.json() or {}).get("job_id", "")
    check(r.status == 202 and jid, "a job is made", r)
    st = wait_status(s.port, jid, ("completed", "failed"), 120)
    check(st.get("status") == "completed", "it completes", st)
    check(s.stop() == 0, "the first server stops")
    db = os.path.join(a, "data", "upres.db")
    got = row(db, jid)
    check(got and got[1] == "results/%s-a1.png" % jid, "the row holds the result's key, not a path", got)
    check(got and got[0] == "", "the upload is deleted and its key cleared", got)

    s2, ok = start_in(b, "rel-b", os.path.join("..", "a", "data"))
    if check(ok, "serve -d ../a/data from TMP/b starts"):
        t0 = time.monotonic()
        r = request(s2.port, "GET", "/api/v1/download/" + jid)
        say("download from the other working directory: %d, %d bytes in %.3f s" %
            (r.status, len(r.body), time.monotonic() - t0))
        check(r.status == 200, "the result downloads from another working directory", r)
        check(png_size(r.body) == (48, 32), "it is the PNG the job made", png_size(r.body))
        check(not os.path.exists(os.path.join(b, "data")), "no data folder was made in TMP/b")
    check(s2.stop() == 0, "the second server stops")


def slow_upload_killed(s, size):
    """Send half of a multipart upload of size bytes slowly, then SIGKILL s. Returns the staged temporaries."""
    boundary = "----upres" + uuid.uuid4().hex
    head = ("--%s\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n" % boundary).encode()
    tail = ("\r\n--%s--\r\n" % boundary).encode()
    body_len = len(head) + size + len(tail)
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    sock.sendall(("POST /api/v1/upscale HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  "Content-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n\r\n"
                  % (boundary, body_len)).encode() + head)
    chunk = b"\x89PNG" + b"\x00" * (64 * 1024 - 4)
    sent = 0
    uploads = os.path.join(s.data, "uploads")
    staged = []
    while sent < size // 2:
        sock.sendall(chunk)
        sent += len(chunk)
        time.sleep(0.01)
    for _ in range(200):  # the server has written part of it to its temporary
        staged = [n for n in os.listdir(uploads) if n.startswith(".upload-")]
        if staged and os.path.getsize(os.path.join(uploads, staged[0])) > 0:
            break
        time.sleep(0.02)
    s.proc.send_signal(signal.SIGKILL)
    s.proc.wait(timeout=10)
    sock.close()
    return staged, sent


def test_start_sweep():
    s = Server("sweep")
    if not check(s.start(), "server starts"):
        return
    uploads = os.path.join(s.data, "uploads")
    staged, sent = slow_upload_killed(s, 4 << 20)
    say("killed with %d of %d bytes sent; staged: %s" % (sent, 4 << 20, staged))
    check(len(staged) == 1, "the half-sent upload was staged as uploads/.upload-*", staged)
    tagged = staged and staged[0].startswith(".upload-%d-" % s.proc.pid)
    check(tagged, "its name carries the killed server's pid", staged)

    # an upload no row references, an hour old; a queued job whose upload is referenced, as old
    hour_ago = time.time() - 3600
    orphan = os.path.join(uploads, "%s.png" % uuid.uuid4())
    with open(orphan, "wb") as f:
        f.write(png(8, 8))
    os.utime(orphan, (hour_ago, hour_ago))
    kept_id = str(uuid.uuid4())
    kept = os.path.join(uploads, kept_id + ".png")
    with open(kept, "wb") as f:
        f.write(png(8, 8))
    os.utime(kept, (hour_ago, hour_ago))
    c = sqlite3.connect(os.path.join(s.data, "upres.db"), timeout=10)
    # not claimable for an hour (a backoff), so no worker runs it and deletes its input meanwhile
    now = time.time()
    c.execute("INSERT INTO assets (id, key, name, format, width, height, created_at, expires_at)"
              " VALUES (?, ?, 'kept.png', 'png', 8, 8, ?, ?)", (kept_id, "uploads/%s.png" % kept_id, now, now))
    c.execute("INSERT INTO jobs (id, status, model, scale, asset_id, created_at, not_before)"
              " VALUES (?, 0, ?, 2, ?, ?, ?)", (kept_id, MODEL, kept_id, now, now + 3600))
    c.commit()
    c.close()

    t0 = time.monotonic()
    check(s.start(), "the server starts again")
    say("restart with the sweep: %.2f s" % (time.monotonic() - t0))
    left = [n for n in os.listdir(uploads) if n.startswith(".upload-")]
    check(not left, "the killed upload's temporary is gone", left)
    check(not os.path.exists(orphan), "the unreferenced upload is gone")
    log = s.tail(1 << 20)
    check("removed the temporary uploads/.upload-" in log, "the log names the temporary's removal")
    check("removed uploads/%s" % os.path.basename(orphan) in log, "the log names the orphan's removal")
    check(os.path.exists(kept), "the queued job's upload, referenced, is kept however old")
    st = request(s.port, "GET", "/api/v1/status/" + kept_id).json() or {}
    check(st.get("status") == "queued", "and its job is still queued", st)
    check(s.stop() == 0, "the server stops")


def main():
    test_relative_data_folder()
    test_start_sweep()
    print("%d passed, %d failed" % (tally.passed, tally.failed))
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
