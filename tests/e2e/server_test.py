#!/usr/bin/env python3
"""server_test.py - end-to-end tests of `upres serve` (the Upscale Service API).

Run by ctest as: python3 tests/e2e/server_test.py PATH/TO/upres
with UPRES_SHARED_DATA (test images) and UPRES_TEST_MODELS (models folder).

Starts the real server on a free loopback port with a temporary data folder
and talks HTTP to 127.0.0.1 as a client would (standard library only: a
hand-built multipart body over http.client). Every wait is bounded in count
and time. Prints "N passed, N failed" and exits non-zero on any failure.
"""
import os
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
import struct

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import (SHARED, SLOW, UPRES, Server, check, make_tmp, multipart, png, request,  # noqa: E402
                    status, submit, tally, wait_status)

SMALL = os.path.join(SHARED, "ref/in/chelsea_lr64.png")
SMALL2 = os.path.join(SHARED, "ref/in/astronaut_lr64.png")
LARGE = os.path.join(SHARED, "images/chelsea.png")
LARGER = os.path.join(SHARED, "images/astronaut.png")

TMP = make_tmp("upres-server-test-")


def main_data():
    return os.path.join(TMP, "main-data")


# ---- the tests ------------------------------------------------------------------------


def test_basics(p):
    r = request(p, "GET", "/api/v1/health")
    j = r.json() or {}
    check(r.status == 200 and j.get("status") == "ok" and isinstance(j.get("version"), str)
          and isinstance(j.get("time"), int) and abs(j["time"] - time.time()) < 60, "health", r)
    check(r.headers.get("content-type", "").startswith("application/json"), "health is JSON")

    r = request(p, "GET", "/api/v1/models")
    j = r.json() or {}
    names = {m.get("name"): m for m in j.get("models", [])}
    check(r.status == 200 and isinstance(j.get("version"), str), "models", r)
    check("realesrgan-x4plus" in names and names["realesrgan-x4plus"].get("supported_scales") == [4]
          and isinstance(names["realesrgan-x4plus"].get("description"), str), "models: realesrgan-x4plus [4]", names)
    check(names.get("realesr-animevideov3", {}).get("supported_scales") == [2, 3, 4],
          "models: realesr-animevideov3 [2,3,4]", names)
    r = request(p, "GET", "/api/v1/models?scale=3")
    j = r.json() or {}
    got = [m["name"] for m in j.get("models", [])]
    check(r.status == 200 and got == ["realesr-animevideov3"], "models ?scale=3 filter", got)
    r = request(p, "GET", "/api/v1/models?scale=4")
    check(r.status == 200 and len((r.json() or {}).get("models", [])) == len(names), "models ?scale=4 keeps all")
    r = request(p, "GET", "/api/v1/models?scale=abc")
    check(r.status == 400 and (r.json() or {}).get("success") is False, "models ?scale=abc -> 400", r)

    r = request(p, "GET", "/api/v1/nothing-here")
    check(r.status == 404 and (r.json() or {}).get("success") is False, "unknown path -> 404 JSON", r)
    r = request(p, "GET", "/")  # the Tinify dialect's root (tinify_test.py has the rest)
    check(r.status == 200 and isinstance(r.json(), dict), "/ -> JSON", r)
    r = request(p, "DELETE", "/api/v1/health")
    check(r.status == 405 and r.json() is not None, "wrong method -> 405 JSON", r)
    r = request(p, "GET", "/api/v1/upscale")
    check(r.status == 405 and r.json() is not None, "GET /upscale -> 405 JSON", r)

    bogus = str(uuid.uuid4())
    for method, path in (("GET", "/api/v1/status/"), ("GET", "/api/v1/download/"), ("POST", "/api/v1/cancel/")):
        r = request(p, method, path + bogus)
        check(r.status == 404 and (r.json() or {}).get("success") is False, "%s %s{unknown} -> 404 JSON" % (method, path), r)

    # docs and OpenAPI
    r = request(p, "GET", "/api/v1/docs")
    body = r.body.decode("utf-8", "replace")
    check(r.status == 200 and r.headers.get("content-type", "").startswith("text/html") and "swagger-ui" in body
          and "/api/v1/openapi.json" in body,
          "docs page", r.status)
    check("unpkg" not in body and "cdn" not in body.lower(), "docs page uses no CDN")
    r = request(p, "GET", "/api/v1/docs/swagger-ui-bundle.js")
    check(r.status == 200 and len(r.body) > 100000 and "javascript" in r.headers.get("content-type", ""),
          "docs: swagger-ui-bundle.js served locally (scripts/setup.sh installs it)", r.status)
    r = request(p, "GET", "/api/v1/docs/swagger-ui.css")
    check(r.status == 200 and "css" in r.headers.get("content-type", ""), "docs: swagger-ui.css served", r.status)
    r = request(p, "GET", "/api/v1/docs/..%2F..%2Fopenapi.json")
    check(r.status == 404, "docs: no path traversal", r.status)
    r = request(p, "GET", "/api/v1/openapi.json")
    j = r.json() or {}
    check(r.status == 200 and str(j.get("openapi", "")).startswith("3."), "openapi.json is OpenAPI 3", r.status)
    paths = j.get("paths", {})
    for ep in ("/upscale", "/status/{job_id}", "/download/{job_id}", "/cancel/{job_id}", "/models", "/health"):
        check(ep in paths or ("/api/v1" + ep) in paths, "openapi.json documents " + ep, list(paths))


def test_bad_requests(p):
    r = submit(p, SMALL, scale=5)
    j = r.json() or {}
    check(r.status == 400 and j.get("success") is False and "2, 3, 4" in j.get("error", ""), "scale=5 -> 400", r)
    r = submit(p, SMALL, scale="x")
    check(r.status == 400, "scale=x -> 400", r)
    r = submit(p, SMALL, model_name="no-such-model")
    j = r.json() or {}
    check(r.status == 400 and "realesrgan-x4plus" in j.get("error", ""), "unknown model -> 400 naming models", r)
    r = submit(p, SMALL, format="gif")
    j = r.json() or {}
    check(r.status == 400 and "png" in j.get("error", "") and "webp" in j.get("error", ""), "format=gif -> 400", r)
    r = submit(p, SMALL, tile_size=8)
    check(r.status == 400 and (r.json() or {}).get("success") is False, "tile_size=8 -> 400", r)
    r = submit(p, SMALL, tile_size=-1)
    check(r.status == 400, "tile_size=-1 -> 400", r)
    body, ctype = multipart({"scale": "2"}, {})
    r = request(p, "POST", "/api/v1/upscale", body, {"Content-Type": ctype})
    check(r.status == 400 and "image" in (r.json() or {}).get("error", ""), "missing image -> 400", r)
    r = request(p, "POST", "/api/v1/upscale", b"scale=2", {"Content-Type": "application/x-www-form-urlencoded"})
    check(r.status == 400 and r.json() is not None, "not multipart -> 400 JSON", r)
    r = submit(p, data=b"this is plain text, not an image\n" * 10, filename="notes.txt")
    check(r.status == 415 and (r.json() or {}).get("success") is False, "text file -> 415", r)
    r = submit(p, data=b"", filename="empty.png")
    check(r.status == 415, "empty file -> 415", r)
    r = submit(p, data=open(SMALL, "rb").read()[:2000], filename="cut.png")
    check(r.status == 415, "truncated PNG -> 415", r)
    leftovers = [f for f in os.listdir(os.path.join(main_data(), "uploads")) if f.startswith(".upload")]
    check(not leftovers, "refused uploads leave no files", leftovers)


def cycle(p, path, model, scale, fmt=None, expect_type="image/png"):
    fields = {"scale": scale, "model_name": model}
    if fmt:
        fields["format"] = fmt
    r = submit(p, path, **fields)
    j = r.json() or {}
    what = "%s x%d %s" % (model, scale, fmt or "(input format)")
    if not check(r.status == 202 and j.get("success") is True and j.get("job_id")
                 and j.get("status_url") == "/api/v1/status/" + j.get("job_id", ""), "submit " + what, r):
        return
    jid = j["job_id"]
    st = wait_status(p, jid, ("completed", "failed"), 120)
    check(st.get("status") == "completed", what + ": completed", st)
    if st.get("status") != "completed":
        return
    with open(path, "rb") as f:
        w, h = struct.unpack(">II", f.read(24)[16:24])
    check(st.get("progress") == 100 and st.get("download_url") == "/api/v1/download/" + jid
          and isinstance(st.get("duration_seconds"), (int, float))
          and st.get("input_size") == {"width": w, "height": h}
          and st.get("output_size") == {"width": w * scale, "height": h * scale}
          and isinstance(st.get("file_size_bytes"), int), what + ": status fields", st)
    r = request(p, "GET", st["download_url"])
    stem = os.path.splitext(os.path.basename(path))[0]
    ext = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}[expect_type]
    check(r.status == 200 and r.headers.get("content-type") == expect_type, what + ": download type", r.headers)
    check(r.headers.get("content-disposition") == 'attachment; filename="%s_x%d.%s"' % (stem, scale, ext),
          what + ": content-disposition", r.headers.get("content-disposition"))
    check(len(r.body) == st["file_size_bytes"], what + ": download size", (len(r.body), st["file_size_bytes"]))
    magic = {"png": b"\x89PNG", "jpg": b"\xff\xd8", "webp": b"RIFF"}[ext]
    check(r.body.startswith(magic), what + ": the bytes are a " + ext)
    if ext == "png":
        ow, oh = struct.unpack(">II", r.body[16:24])
        check((ow, oh) == (w * scale, h * scale), what + ": image size", (ow, oh))
    time.sleep(0.3)  # the completion hook runs after the last byte
    r2 = request(p, "GET", st["download_url"])
    check(r2.status in (404, 410) and (r2.json() or {}).get("success") is False, what + ": second download -> 410", r2)
    st = status(p, jid)
    check(st.get("status") == "expired", what + ": status expired after download", st)
    results = os.listdir(os.path.join(main_data(), "results"))
    check(not [f for f in results if f.startswith(jid)], what + ": result file deleted", results)


def test_cycles(p):
    cycle(p, SMALL, "realesr-animevideov3", 2)
    cycle(p, SMALL, "realesrgan-x4fast", 4)
    cycle(p, SMALL2, "realesrgan-x4fast", 3, "jpg", "image/jpeg")
    cycle(p, SMALL, "realesr-animevideov3", 4, "webp", "image/webp")


def test_cancel(p):
    # A: large and slow, B and C queued behind it (one worker)
    a = (submit(p, LARGE, model_name="realesrgan-x4plus", scale=4, tile_size=32).json() or {}).get("job_id")
    b = (submit(p, SMALL, model_name="realesr-animevideov3", scale=2).json() or {}).get("job_id")
    c = (submit(p, SMALL, model_name="realesr-animevideov3", scale=2).json() or {}).get("job_id")
    if not check(a and b and c, "cancel: three jobs submitted"):
        return
    st = wait_status(p, a, ("processing", "completed", "failed"), 60)
    check(st.get("status") == "processing" and isinstance(st.get("progress"), int), "cancel: A processing", st)
    st = status(p, c)
    check(st.get("status") == "queued" and st.get("progress") == 0, "cancel: C queued with progress 0", st)
    r = request(p, "GET", "/api/v1/download/" + c)
    check(r.status == 409 and r.json() is not None, "download of a queued job -> 409", r)
    r = request(p, "POST", "/api/v1/cancel/" + c)
    j = r.json() or {}
    check(r.status == 200 and j.get("success") is True and j.get("status") == "cancelled", "cancel queued -> 200", r)
    check(status(p, c).get("status") == "cancelled", "cancel queued: status cancelled at once")
    r = request(p, "GET", "/api/v1/download/" + c)
    check(r.status == 409, "download of a cancelled job -> 409", r)
    r = request(p, "POST", "/api/v1/cancel/" + c)
    check(r.status == 409 and (r.json() or {}).get("success") is False, "cancel twice -> 409", r)
    r = request(p, "GET", "/api/v1/download/" + a)
    check(r.status == 409, "download of a processing job -> 409", r)
    time.sleep(0.5)
    r = request(p, "POST", "/api/v1/cancel/" + a)
    j = r.json() or {}
    check(r.status in (200, 202) and j.get("success") is True, "cancel processing -> 202", r)
    st = wait_status(p, a, ("cancelled", "completed", "failed"), 60)
    check(st.get("status") == "cancelled", "cancel processing: stops at the next tile", st)
    st = wait_status(p, b, ("completed", "failed"), 60)
    check(st.get("status") == "completed", "cancel: B still completes", st)
    r = request(p, "POST", "/api/v1/cancel/" + b)
    check(r.status == 409, "cancel completed -> 409", r)


def test_concurrent(p, n=20):
    ids, errors = [None] * n, []

    def one(i):
        try:
            r = submit(p, SMALL, model_name="realesr-animevideov3", scale=2, filename="c%d.png" % i)
            ids[i] = (r.json() or {}).get("job_id") if r.status == 202 else None
            if r.status != 202:
                errors.append(r)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60 * SLOW)
    check(all(ids) and not errors and len(set(ids)) == n, "%d concurrent submissions accepted" % n, errors[:3])
    deadline = time.time() + 120 * SLOW
    done = {}
    for _ in range(2000):
        for jid in ids:
            if jid and jid not in done:
                s = status(p, jid).get("status")
                if s in ("completed", "failed"):
                    done[jid] = s
        if len(done) == len([x for x in ids if x]) or time.time() > deadline:
            break
        time.sleep(0.1)
    check(len(done) == n and all(s == "completed" for s in done.values()), "%d concurrent jobs all complete" % n,
          done)
    # download them concurrently too
    codes = []

    def dl(jid):
        try:
            codes.append(request(p, "GET", "/api/v1/download/" + jid).status)
        except Exception as e:  # noqa: BLE001
            codes.append(str(e))

    threads = [threading.Thread(target=dl, args=(jid,)) for jid in ids if jid]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60 * SLOW)
    check(codes.count(200) == n, "%d concurrent downloads" % n, codes)
    h = request(p, "GET", "/api/v1/health").json() or {}
    check(isinstance(h.get("jobs"), dict), "health reports job counts", h)


def test_limits():
    # The flag beats the environment for the workers too, not only at submit
    # (the workers once read the environment's limit and failed such jobs).
    s = Server("limits", "--max-upload", "20000", "--max-pixels", "5000", env={"UPRES_MAX_PIXELS": "1000"})
    if not check(s.start(), "limits server starts"):
        return
    try:
        # a body declared at 10 GB is refused at once, before it is sent
        t0 = time.time()
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
            sock.sendall(b"POST /api/v1/upscale HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 10000000000\r\n\r\n"
                         + b"-" * 1000)
            head = sock.recv(4096)
        check(head.startswith(b"HTTP/1.1 413") and time.time() - t0 < 5,
              "a 10 GB Content-Length -> 413 at once", head[:80])
        # a chunked body (no length) over the limit: nothing of it stays on disk, then 413
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
            # (a realistic boundary: libmicrohttpd's post processor refuses one-letter ones)
            sock.sendall(b"POST /api/v1/upscale HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: multipart/form-data; boundary=----upresChunked\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            part = (b'------upresChunked\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
                    b"Content-Type: image/png\r\n\r\n" + os.urandom(50000) + b"\r\n------upresChunked--\r\n")
            sock.sendall(b"%x\r\n" % len(part) + part + b"\r\n0\r\n\r\n")
            head = sock.recv(4096)
        check(head.startswith(b"HTTP/1.1 413"), "a chunked body over the limit -> 413", head[:80])
        time.sleep(0.2)
        left = os.listdir(os.path.join(s.data, "uploads")) if os.path.isdir(os.path.join(s.data, "uploads")) else []
        check(not left, "chunked 413: partial upload removed", left)
        big = os.urandom(60000)
        r = submit(s.port, data=big, filename="big.png")
        check(r.status == 413 and (r.json() or {}).get("success") is False, "upload over --max-upload -> 413", r)
        time.sleep(0.2)
        up = os.path.join(s.data, "uploads")
        left = os.listdir(up) if os.path.isdir(up) else []
        check(not left, "413: partial upload removed", left)
        r = submit(s.port, data=png(100, 100), filename="wide.png")
        check(r.status == 422 and (r.json() or {}).get("success") is False, "too many pixels -> 422", r)
        r = submit(s.port, data=png(60, 60), filename="ok.png", model_name="realesr-animevideov3", scale=2)
        check(r.status == 202, "under both limits -> 202", r)
        jid = (r.json() or {}).get("job_id", "")
        st = wait_status(s.port, jid, ("completed", "failed"), 60)
        check(st.get("status") == "completed" and st.get("output_size") == {"width": 120, "height": 120},
              "a hand-made gray PNG upscales", st)
        r = request(s.port, "GET", "/api/v1/download/" + jid)
        check(r.status == 200 and r.headers.get("content-disposition") == 'attachment; filename="ok_x2.png"',
              "download keeps the client's name", r.headers)
    finally:
        rc = s.stop()
        check(rc == 0, "SIGTERM: exit status 0", rc)


def test_retention():
    s = Server("retention", "--retention", "1", "--sweep-interval", "0.2")
    if not check(s.start(), "retention server starts"):
        return
    try:
        r = submit(s.port, SMALL, model_name="realesr-animevideov3", scale=2)
        jid = (r.json() or {}).get("job_id", "")
        st = wait_status(s.port, jid, ("completed", "failed", "expired"), 60)
        check(st.get("status") in ("completed", "expired"), "retention: job completes", st)
        st = wait_status(s.port, jid, ("expired",), 15)
        check(st.get("status") == "expired", "retention: status expired after the TTL", st)
        r = request(s.port, "GET", "/api/v1/download/" + jid)
        check(r.status == 410 and (r.json() or {}).get("success") is False, "retention: download -> 410", r)
        left = [f for f in os.listdir(os.path.join(s.data, "results")) if f.startswith(jid)]
        check(not left, "retention: result file deleted", left)
    finally:
        s.stop()


def test_restart():
    s = Server("restart", "--lease", "3", "--heartbeat", "1")  # a killed job is rescued once its lease lapses
    if not check(s.start(), "restart server starts"):
        return
    r = submit(s.port, LARGER, model_name="realesrgan-x4fast", scale=2, tile_size=32)
    jid = (r.json() or {}).get("job_id", "")
    q = (submit(s.port, SMALL, model_name="realesr-animevideov3", scale=2).json() or {}).get("job_id", "")
    st = {}
    deadline = time.time() + 60 * SLOW
    for _ in range(3000):
        st = status(s.port, jid)
        if (st.get("status") == "processing" and st.get("progress", 0) > 0) or st.get("status") in (
                "completed", "failed") or time.time() > deadline:
            break
        time.sleep(0.02)
    check(st.get("status") == "processing", "restart: job processing before kill -9", st)
    s.stop(signal.SIGKILL)
    left = [f for f in os.listdir(os.path.join(s.data, "results")) if not f.startswith(".")]
    check(not [f for f in left if f.startswith(jid)], "restart: no partial result visible", left)
    if not check(s.start(), "restart: server starts again on the same data"):
        return
    try:
        st = wait_status(s.port, jid, ("completed", "failed"), 180)
        check(st.get("status") == "completed", "restart: the interrupted job completes", st)
        st = wait_status(s.port, q, ("completed", "failed"), 60)
        check(st.get("status") == "completed", "restart: the queued job completes", st)
        r = request(s.port, "GET", "/api/v1/download/" + jid)
        check(r.status == 200 and r.body.startswith(b"\x89PNG"), "restart: result downloads", r.status)
        # SIGTERM while processing: the job stops between layers, is requeued, exit 0
        jid = (submit(s.port, LARGER, model_name="realesrgan-x4fast", scale=2, tile_size=32).json() or {}).get("job_id", "")
        st = wait_status(s.port, jid, ("processing", "completed", "failed"), 60)
        check(st.get("status") == "processing", "SIGTERM: job processing", st)
        t1 = time.time()
        rc = s.stop(signal.SIGTERM, timeout=30)
        check(rc == 0, "SIGTERM while processing: exit 0 in %.1fs" % (time.time() - t1), rc)
        if check(s.start(), "SIGTERM: server starts again"):
            st = wait_status(s.port, jid, ("completed", "failed"), 180)
            check(st.get("status") == "completed", "SIGTERM: the requeued job completes", st)
    finally:
        rc = s.stop()
        check(rc == 0, "restart server: SIGTERM exit 0", rc)


def main():
    for f in (UPRES, SMALL, SMALL2, LARGE, LARGER):
        if not os.path.exists(f):
            print("missing %s" % f)
            return 1
    t0 = time.time()
    s = Server("main")
    ok = check(s.start(), "server starts")
    try:
        if ok:
            for t in (test_basics, test_bad_requests, test_cycles, test_cancel, test_concurrent):
                t1 = time.time()
                try:
                    t(s.port)
                except Exception as e:  # noqa: BLE001
                    check(False, t.__name__ + " raised", repr(e))
                print("  (%s: %.1fs)" % (t.__name__, time.time() - t1))
    finally:
        rc = s.stop()
        if ok:
            check(rc == 0, "main server: SIGTERM exit 0", rc)
    for t in (test_limits, test_retention, test_restart):
        t1 = time.time()
        try:
            t()
        except Exception as e:  # noqa: BLE001
            check(False, t.__name__ + " raised", repr(e))
        print("  (%s: %.1fs)" % (t.__name__, time.time() - t1))
    if tally.failed:
        for name in ("main", "limits", "retention", "restart"):
            p = os.path.join(TMP, name + ".log")
            if os.path.exists(p):
                print("---- %s log (tail) ----" % name)
                with open(p, "rb") as f:
                    print(f.read()[-2000:].decode("utf-8", "replace"))
    else:
        shutil.rmtree(TMP, ignore_errors=True)
    print("%d passed, %d failed (%.1fs)" % (tally.passed, tally.failed, time.time() - t0))
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
