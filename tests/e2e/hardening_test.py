#!/usr/bin/env python3
"""hardening_test.py - the server attacked as a hostile client would, over loopback.

One check (or a few) per defect of the hardening issue, each of which failed
on the code before its fix:

  1. client bytes that are not UTF-8, or are cut mid-character, never make a
     500, and a job is charged only when its answer went out;
  2. connections that dribble their request head, or their body, are closed
     at the deadline while normal requests are answered;
  3. image_url fetches run on their own pool, a few per key, with a minimum
     transfer rate, so uploads never wait behind a slow source;
  4. one visibility rule: (dialect, action, caller) -> answer, as a table;
  5. an over-limit chunked body is answered 413 as soon as it passes the
     limit, not read to its end;
  6. a full disk is 507 and a read-only data folder 503, nothing left behind
     (needs a tmpfs: skipped with a printed reason where mount is refused);
  7. more form fields than the server keeps, or a longer field, is a 400;
  8. a newline in a path cannot forge a log line;
  9. no signed link to a result file that is gone;
 10. a Host header that is not a plain host[:port] is refused;
 11. Idempotency-Key: a retry gets the first answer, not a second charge;
 13. an animated image over --max-frames is 422, and the answer says when
     only the first frame is used;
 14. a wide-gamut (Adobe RGB) input's result carries its ICC profile, and
     colour=srgb converts.
 12. an upload still arriving at SIGTERM is answered 503 (a job stopped
     mid-tile within 2 s is shutdown_test.py).
"""
import http.server
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import (SLOW, Server, check, make_tmp, png, request, run, tally, wait_status)  # noqa: E402

FAST = "realesr-animevideov3"  # the quickest model
TMP = make_tmp("upres-hardening-test-")
SERVERS = []
NO_RATE = ("--rate-per-minute", "0", "--rate-per-day", "0")
TINY = png(24, 24)


def start(name, *args, **kw):
    s = Server(name, *args, **kw)
    SERVERS.append(s)
    return s if check(s.start(), "server %s starts (%s)" % (name, " ".join(args))) else None


def bearer(key):
    return {"Authorization": "Bearer " + key} if key else {}


def raw_multipart(parts):
    """parts: [(name bytes, value bytes, filename bytes or None)] -> (body, content type). Any bytes at all."""
    b = b"----upresHardeningBoundary7"
    out = []
    for name, value, filename in parts:
        disp = b'Content-Disposition: form-data; name="' + name + b'"'
        if filename is not None:
            disp += b'; filename="' + filename + b'"\r\nContent-Type: application/octet-stream'
        out += [b"--" + b + b"\r\n" + disp + b"\r\n\r\n", value, b"\r\n"]
    out.append(b"--" + b + b"--\r\n")
    return b"".join(out), "multipart/form-data; boundary=" + b.decode()


def post_form(port, path, parts, key=None, headers=None, timeout=60):
    body, ctype = raw_multipart(parts)
    return request(port, "POST", path, body, dict(headers or {}, **bearer(key), **{"Content-Type": ctype}),
                   timeout * SLOW)


def json_reply(r):
    """The reply's JSON object, or None when the body is not one (every reply must be)."""
    j = r.json()
    return j if isinstance(j, dict) else None


def credits_left(s, key):
    r = request(s.port, "GET", "/api/v1/users/me/credits", headers=bearer(key))
    return (r.json() or {}).get("credits")


# ---- an image source for image_url --------------------------------------------------------


class Source:
    """A loopback HTTP server: /img/<anything> answers a PNG, /hang holds until released (30 s at most),
    /trickle sends a byte a second."""

    def __init__(self):
        self.release = threading.Event()
        src = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path.startswith("/hang"):
                    src.release.wait(30)
                if self.path.startswith("/trickle"):
                    self.send_response(200)
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    try:
                        for _ in range(30):
                            self.wfile.write(b"\x89")
                            self.wfile.flush()
                            time.sleep(1)
                    except OSError:
                        pass
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(TINY)))
                self.end_headers()
                self.wfile.write(TINY)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.port = self.httpd.server_address[1]

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def close(self):
        self.release.set()
        self.httpd.shutdown()


def send_until_answer(c, data, seconds, max_bytes=None, each=None):
    """Send data on socket c (with a short timeout set) over and over until an answer's head has come
    back, the server closed, seconds passed or max_bytes were sent; each(elapsed) runs before every send.
    Returns (bytes sent, bytes read)."""
    sent, got, t0 = 0, b"", time.time()
    try:
        while time.time() - t0 < seconds and b"\r\n\r\n" not in got and (max_bytes is None or sent < max_bytes):
            if each:
                each(time.time() - t0)
            c.sendall(data)
            sent += len(data)
            try:
                d = c.recv(65536)
                if not d:
                    break
                got += d
            except socket.timeout:
                pass
    except OSError:
        pass
    return sent, got


def create_url(port, key, url, timeout=60, **extra):
    body = json.dumps(dict({"image_url": url, "model": FAST, "scale": 2}, **extra), ensure_ascii=False).encode()
    return request(port, "POST", "/v1/jobs", body, dict(bearer(key), **{"Content-Type": "application/json"}),
                   timeout * SLOW)


# ---- 1. client text ----------------------------------------------------------------------


def test_client_text(s, src):
    key = s.key_create("utf8", credits=20)
    if not check(key is not None, "a key with 20 credits"):
        return
    ok = 0
    names = [(b"\xff.png", "a name of one invalid byte"),
             ((b"\xc3\xa9" * 200)[:255], "a UTF-8 name cut at byte 255, mid-character"),
             (b"a\x01c\x7f\x1b.png", "a name with control bytes")]
    for name, what in names:
        r = post_form(s.port, "/v1/jobs", [(b"image", TINY, name), (b"model", FAST.encode(), None),
                                           (b"scale", b"2", None)], key)
        j = json_reply(r)
        if check(r.status == 201 and j and j.get("id"), "POST /v1/jobs with %s -> 201 with JSON" % what, r):
            ok += 1
            g = request(s.port, "GET", "/v1/jobs/" + j["id"], headers=bearer(key))
            gj = json_reply(g) or {}
            check(g.status == 200 and gj.get("original_filename") == j.get("original_filename"),
                  "GET /v1/jobs/{id} of that job -> 200 with the same (valid) name", g)
    # a NUL inside a file name: MHD's parser stops there; whatever it makes of it, the answer is JSON
    r = post_form(s.port, "/v1/jobs", [(b"image", TINY, b"a\x00b.png"), (b"model", FAST.encode(), None),
                                       (b"scale", b"2", None)], key)
    ok += r.status == 201
    check(r.status in (201, 400) and json_reply(r) is not None, "a file name with a NUL -> 201 or 400, JSON", r)
    lst = request(s.port, "GET", "/v1/jobs?limit=100", headers=bearer(key))
    lj = json_reply(lst)
    check(lst.status == 200 and lj and len(lj.get("data", [])) == ok, "GET /v1/jobs lists every job that got a 201",
          lst)
    check(credits_left(s, key) == 20 - ok, "charged exactly the jobs that were answered 201 (%d)" % ok,
          credits_left(s, key))

    cases = [
        ("GET /%FF", lambda: request(s.port, "GET", "/%FF"), 404),
        ("GET /a%C3 (cut UTF-8 in the path)", lambda: request(s.port, "GET", "/a%C3"), 404),
        ("GET /api/v1/status/%FF%FE", lambda: request(s.port, "GET", "/api/v1/status/%FF%FE"), 404),
        ("GET /api/v1/models?scale=%FF", lambda: request(s.port, "GET", "/api/v1/models?scale=%FF"), 400),
        ("scale=\\xff on /api/v1/upscale",
         lambda: post_form(s.port, "/api/v1/upscale", [(b"image", TINY, b"x.png"), (b"scale", b"\xff", None)]), 400),
        ("2000 bytes of UTF-8 as model_name",
         lambda: post_form(s.port, "/api/v1/upscale", [(b"image", TINY, b"x.png"),
                                                       (b"model_name", "é".encode() * 1000, None)]), 400),
        ("invalid UTF-8 as model_name",
         lambda: post_form(s.port, "/api/v1/upscale", [(b"image", TINY, b"x.png"), (b"model_name", b"\xc0\xaf", None)]),
         400),
        ("invalid UTF-8 as a field name",
         lambda: post_form(s.port, "/api/v1/upscale", [(b"image", TINY, b"x.png"), (b"\xff\xfe", b"1", None)]), 202),
        ("a Bearer key of invalid UTF-8",
         lambda: request(s.port, "GET", "/v1/jobs", headers={"Authorization": b"Bearer \xff\xfe".decode("latin-1")}),
         401),
    ]
    for what, fn, want in cases:
        r = fn()
        check(r.status == want and json_reply(r) is not None, "%s -> %d with a JSON body" % (what, want), r)
    # an image_url whose last segment is 400 bytes of UTF-8: the job's name is cut on a character boundary
    seg = "日" * 133 + "a"  # 400 bytes
    r = create_url(s.port, key, src.url("/img/" + seg))
    j = json_reply(r)
    check(r.status in (201, 400) and j is not None, "image_url with a 400-byte UTF-8 last segment -> 201 or 400, JSON", r)
    if r.status == 201 and j:
        check(j.get("original_filename", "").startswith("日") and len(j["original_filename"].encode()) <= 255,
              "its original_filename is the segment cut on a character boundary", j.get("original_filename"))


# ---- 7. form fields ---------------------------------------------------------------------------------


def test_fields(s):
    junk = [(b"junk%d" % i, b"x", None) for i in range(40)]
    r = post_form(s.port, "/api/v1/upscale", junk + [(b"image", TINY, b"x.png"), (b"model_name", FAST.encode(), None),
                                                     (b"scale", b"2", None)])
    check(r.status == 400 and "too many form fields" in (json_reply(r) or {}).get("error", ""),
          "40 junk fields before model_name and scale -> 400 'too many form fields', not a default job", r)
    r = post_form(s.port, "/api/v1/upscale", [(b"image", TINY, b"x.png"), (b"model_name", b"m" * 5000, None)])
    check(r.status == 400 and "longer than" in (json_reply(r) or {}).get("error", ""),
          "a 5000-byte field -> 400 naming the limit, not a field cut at 4096 bytes", r)


# ---- 8. log lines ------------------------------------------------------------------------------------


def test_log_forging(s):
    request(s.port, "GET", "/a%0aforged%0d%0a2026-01-01T00:00:00.000Z%20error%20FORGED")
    time.sleep(0.2)
    log = s.tail(200000)
    forged = [ln for ln in log.split("\n") if ln.startswith("forged") or ln.startswith("2026-01-01T00:00:00.000Z")]
    check(not forged and "\\nforged" in log, "%0a in a path is logged as \\n: no forged line", forged)


# ---- 5. early 413 --------------------------------------------------------------------------------------


def test_early_413(s):
    """--max-upload 1M: a chunked body that never ends is answered 413 soon after its first megabyte."""
    c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    c.sendall(b"POST /api/v1/upscale HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=BBBBBB\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n")
    c.settimeout(0.02)
    chunk = b"x" * 65536
    sent, got = send_until_answer(c, b"%x\r\n" % len(chunk) + chunk + b"\r\n", 20 * SLOW, 64 * 2 ** 20)
    c.settimeout(2)
    try:
        while b"}" not in got:
            d = c.recv(65536)
            if not d:
                break
            got += d
    except OSError:
        pass
    c.close()
    check(got.startswith(b"HTTP/1.1 413") and b"TOO_LARGE" in got and sent < 8 * 2 ** 20,
          "a chunked body past --max-upload 1M -> 413 after %d KB sent, not read to its end" % (sent // 1024),
          got[:200])


# ---- 10. Host -------------------------------------------------------------------------------------------


def test_host(s, key):
    for h in ("evil.example/x", "a b", "x\"y", "[::1", "host:99999", "host:"):
        r = request(s.port, "GET", "/api/v1/health", headers={"Host": h})
        check(r.status == 400 and json_reply(r) is not None, "Host %r -> 400 JSON" % h, r)
    r = post_form(s.port, "/v1/jobs", [(b"image", TINY, b"h.png"), (b"model", FAST.encode(), None),
                                       (b"scale", b"2", None)], key, headers={"Host": "example.com:8080"})
    jid = (json_reply(r) or {}).get("id")
    if check(r.status == 201 and jid, "a job made with Host example.com:8080", r):
        wait_done_v1(s, key, jid)
        g = json_reply(request(s.port, "GET", "/v1/jobs/" + jid, headers=dict(bearer(key), Host="example.com:8080")))
        check((g or {}).get("result_url", "").startswith("http://example.com:8080/v1/results/"),
              "its result link follows a plain Host header", g)
    check("result links follow each request's Host header" in s.tail(200000),
          "the server said once at start that links follow the Host header")


def wait_done_v1(s, key, jid, timeout=60):
    for _ in range(int(timeout * SLOW / 0.1)):
        j = json_reply(request(s.port, "GET", "/v1/jobs/" + jid, headers=bearer(key))) or {}
        if j.get("status") in ("completed", "failed"):
            return j
        time.sleep(0.1)
    return {}


# ---- 9. links to files that are gone ----------------------------------------------------------------------


def test_links_gone(s, key):
    r = post_form(s.port, "/v1/jobs", [(b"image", TINY, b"g.png"), (b"model", FAST.encode(), None),
                                       (b"scale", b"2", None)], key)
    jid = (json_reply(r) or {}).get("id")
    if not check(r.status == 201 and jid, "a /v1 job to delete the result of", r):
        return
    j = wait_done_v1(s, key, jid)
    check(j.get("result_url"), "completed, with a result link", j)
    results = os.path.join(s.data, "results")
    for f in os.listdir(results):
        if f.startswith(jid):
            os.unlink(os.path.join(results, f))
    j = json_reply(request(s.port, "GET", "/v1/jobs/" + jid, headers=bearer(key))) or {}
    check(j.get("status") == "completed" and "result_url" not in j,
          "the file deleted under the row: GET /v1/jobs/{id} signs no link", j)
    r = request(s.port, "GET", "/api/v1/jobs/%s/result" % jid, headers=bearer(key))
    check(r.status == 410, "PicShapes /result of it -> 410, no link", r)


# ---- 11. Idempotency-Key ---------------------------------------------------------------------------------------


def test_idempotency(s):
    key = s.key_create("idem", credits=10)
    if not check(key is not None, "a key with 10 credits"):
        return
    parts = [(b"image", TINY, b"i.png"), (b"model", FAST.encode(), None), (b"scale", b"2", None)]
    h = {"Idempotency-Key": "order-1"}
    a = post_form(s.port, "/v1/jobs", parts, key, h)
    b = post_form(s.port, "/v1/jobs", parts, key, h)
    ja, jb = json_reply(a) or {}, json_reply(b) or {}
    check(a.status == 201 and b.status == 201 and ja.get("id") and ja.get("id") == jb.get("id")
          and b.headers.get("idempotent-replayed") == "true" and a.headers.get("idempotent-replayed") is None,
          "the same Idempotency-Key and body twice -> the same job, the second replayed", (a, b))
    check(credits_left(s, key) == 9, "charged once", credits_left(s, key))
    c = post_form(s.port, "/v1/jobs", parts[:2] + [(b"scale", b"3", None)], key, h)
    check(c.status == 422 and (json_reply(c) or {}).get("code") == "IDEMPOTENCY_KEY_REUSED",
          "the same key with another body -> 422 IDEMPOTENCY_KEY_REUSED", c)
    other = s.key_create("idem-other", credits=10)
    d = post_form(s.port, "/v1/jobs", parts, other, h)
    check(d.status == 201 and (json_reply(d) or {}).get("id") != ja.get("id"),
          "another API key's Idempotency-Key of the same name is its own", d)
    # retries racing each other: one job, one charge
    out = []
    threads = [threading.Thread(target=lambda: out.append(post_form(s.port, "/v1/jobs", parts, key,
                                                                    {"Idempotency-Key": "race-7"})))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60 * SLOW)
    ids = {(json_reply(r) or {}).get("id") for r in out}
    check(len(out) == 6 and all(r.status == 201 for r in out) and len(ids) == 1,
          "6 concurrent retries with one key -> 6 x 201, one job", [r.status for r in out])
    check(credits_left(s, key) == 8, "and one charge", credits_left(s, key))
    # the Upscale Service, anonymous
    e = post_form(s.port, "/api/v1/upscale", [(b"image", TINY, b"u.png"), (b"scale", b"2", None)],
                  headers={"Idempotency-Key": "anon-1"})
    f = post_form(s.port, "/api/v1/upscale", [(b"image", TINY, b"u.png"), (b"scale", b"2", None)],
                  headers={"Idempotency-Key": "anon-1"})
    check(e.status == 202 and f.status == 202 and (json_reply(e) or {}).get("job_id") == (json_reply(f) or {}).get(
        "job_id"), "/api/v1/upscale with an Idempotency-Key: the retry gets the same job_id", (e, f))
    g = post_form(s.port, "/api/v1/upscale", [(b"image", TINY, b"u.png")], headers={"Idempotency-Key": "has space"})
    check(g.status == 400, "an Idempotency-Key with a space -> 400", g)


# ---- 4. who may do what --------------------------------------------------------------------------------------------


def test_visibility(s):
    k1, k2 = s.key_create("owner"), s.key_create("stranger")
    if not check(k1 and k2, "two keys"):
        return

    def us_job(key):
        r = post_form(s.port, "/api/v1/upscale", [(b"image", TINY, b"v.png"), (b"model_name", FAST.encode(), None),
                                                  (b"scale", b"2", None)], key)
        return (json_reply(r) or {}).get("job_id")

    def v1_job():
        r = post_form(s.port, "/v1/jobs", [(b"image", TINY, b"v.png"), (b"model", FAST.encode(), None),
                                           (b"scale", b"2", None)], k1)
        return (json_reply(r) or {}).get("id")

    jobs = {"anon": us_job(None), "keyed": us_job(k1), "v1": v1_job()}
    if not check(all(jobs.values()), "three jobs: anonymous, keyed (Upscale Service), keyed (/v1)", jobs):
        return
    for j in jobs.values():
        wait_status(s.port, j, ("completed", "failed"), 60)
    callers = {"none": None, "owner": k1, "other": k2}
    # (dialect action, path, method) x (job) x (caller) -> status; destroying actions last
    table = [
        ("US status", "GET", "/api/v1/status/%s", {
            "anon": {"none": 200, "owner": 200, "other": 200},
            "keyed": {"none": 200, "owner": 200, "other": 404},
            "v1": {"none": 200, "owner": 200, "other": 404}}),
        ("PS job", "GET", "/api/v1/jobs/%s", {
            "anon": {"none": 200, "other": 200},
            "keyed": {"none": 200, "owner": 200, "other": 404},
            "v1": {"none": 200, "owner": 200, "other": 404}}),
        ("PS result", "GET", "/api/v1/jobs/%s/result", {
            "keyed": {"none": 200, "owner": 200, "other": 404},
            "v1": {"none": 200, "other": 404}}),
        ("v1 get", "GET", "/v1/jobs/%s", {
            "anon": {"none": 401, "owner": 404},
            "keyed": {"none": 401, "owner": 200, "other": 404},
            "v1": {"none": 401, "owner": 200, "other": 404}}),
        ("US cancel", "POST", "/api/v1/cancel/%s", {
            "keyed": {"none": 401, "other": 404, "owner": 409},
            "v1": {"none": 401, "other": 404}}),
        # a download that would delete needs the key; /v1's result is promised for an hour: kept
        ("US download", "GET", "/api/v1/download/%s", {
            "keyed": {"none": 401, "other": 404},
            "v1": {"none": 200, "other": 404, "owner": 200}}),
    ]
    for action, method, path, rows in table:
        for job, row in rows.items():
            for caller, want in row.items():
                r = request(s.port, method, path % jobs[job], headers=bearer(callers[caller]))
                check(r.status == want, "%s of the %s job by %s -> %d" % (action, job, caller, want), r)
    # the /v1 result survived two Upscale Service downloads: its signed link still serves it
    j = json_reply(request(s.port, "GET", "/v1/jobs/" + jobs["v1"], headers=bearer(k1))) or {}
    url = j.get("result_url", "")
    r = request(s.port, "GET", url[url.find("/v1/results/"):]) if "/v1/results/" in url else None
    check(r is not None and r.status == 200 and r.body.startswith(b"\x89PNG"),
          "the /v1 job's signed link still serves its result after Upscale Service downloads", r)
    # the owner's download of its Upscale Service job deletes it, as the guide says
    a = request(s.port, "GET", "/api/v1/download/" + jobs["keyed"], headers=bearer(k1))
    time.sleep(0.3)
    b = request(s.port, "GET", "/api/v1/download/" + jobs["keyed"], headers=bearer(k1))
    check(a.status == 200 and b.status == 410, "the owner downloads its Upscale Service result once: 200, then 410",
          (a, b))
    a = request(s.port, "GET", "/api/v1/download/" + jobs["anon"])
    check(a.status == 200, "an anonymous job's download is open to anyone, as the spec has it", a)


# ---- 13. frames ----------------------------------------------------------------------------------------------------


def gif(frames, w=8, h=8):
    """An animated GIF of `frames` frames, built by hand (2-bit LZW, a clear code every 2 pixels)."""
    def lzw(pixels):
        codes, bits = [], []
        for i, p in enumerate(pixels):
            if i % 2 == 0:
                codes.append(4)  # clear: the code width stays 3 bits
            codes.append(p)
        codes.append(5)  # end of information
        for c in codes:
            bits += [(c >> k) & 1 for k in range(3)]
        out = bytearray()
        for i in range(0, len(bits), 8):
            out.append(sum(b << k for k, b in enumerate(bits[i:i + 8])))
        blocks = b"".join(bytes([len(out[i:i + 255])]) + bytes(out[i:i + 255]) for i in range(0, len(out), 255))
        return b"\x02" + blocks + b"\x00"

    data = b"GIF89a" + struct.pack("<HHBBB", w, h, 0x81, 0, 0) + b"\x00\x00\x00\xff\xff\xff\xff\x00\x00\x00\xff\x00"
    data += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    for f in range(frames):
        data += b"\x21\xf9\x04\x04\x0a\x00\x00\x00"  # 0.1 s a frame
        data += b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0)
        data += lzw([(x + y + f) % 4 for y in range(h) for x in range(w)])
    return data + b"\x3b"


def test_frames(s):
    r = post_form(s.port, "/api/v1/upscale", [(b"image", gif(3), b"anim.gif"), (b"model_name", FAST.encode(), None),
                                              (b"scale", b"2", None)])
    check(r.status == 422 and "frames" in (json_reply(r) or {}).get("error", ""),
          "a 3-frame GIF over --max-frames 2 -> 422 naming the frames", r)
    r = post_form(s.port, "/api/v1/upscale", [(b"image", gif(2), b"anim.gif"), (b"model_name", FAST.encode(), None),
                                              (b"scale", b"2", None)])
    check(r.status == 202 and "first frame" in (json_reply(r) or {}).get("warning", ""),
          "a 2-frame GIF -> 202, the answer says only the first frame is used", r)
    r = post_form(s.port, "/api/v1/upscale", [(b"image", gif(1), b"still.gif"), (b"model_name", FAST.encode(), None),
                                              (b"scale", b"2", None)])
    check(r.status == 202 and "warning" not in (json_reply(r) or {}), "a still GIF -> 202 with no warning", r)


# ---- 14. colour ------------------------------------------------------------------------------------------------------

ICC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cases", "image", "adobe-rgb-1998.icc")


def chunks(data):
    """{kind: [payload, ...]} of a PNG."""
    out, i = {}, 8
    while i + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[i:i + 8])
        out.setdefault(kind, []).append(data[i + 8:i + 8 + n])
        i += 12 + n
    return out


def png_rgb_icc(w, h, profile):
    """An RGB PNG of saturated colours carrying profile (iCCP), built by hand."""
    import zlib
    raw = b"".join(b"\x00" + b"".join(bytes([(x * 40) & 255, 255 - (y * 30) & 255, 60]) for x in range(w))
                   for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"iCCP", b"Adobe RGB\x00\x00" + zlib.compress(profile)) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def test_colour(s):
    import zlib
    with open(ICC, "rb") as f:
        profile = f.read()
    img = png_rgb_icc(16, 16, profile)
    got = {}
    for colour in ("", "srgb"):
        fields = [(b"image", img, b"wide.png"), (b"model_name", FAST.encode(), None), (b"scale", b"2", None)]
        if colour:
            fields.append((b"colour", colour.encode(), None))
        r = post_form(s.port, "/api/v1/upscale", fields)
        jid = (json_reply(r) or {}).get("job_id")
        if not check(r.status == 202 and jid, "an Adobe RGB PNG upscaled (colour=%s)" % (colour or "default"), r):
            return
        wait_status(s.port, jid, ("completed", "failed"), 60)
        d = request(s.port, "GET", "/api/v1/download/" + jid)
        got[colour] = chunks(d.body) if d.status == 200 else {}
    iccp = got[""].get(b"iCCP", [b""])[0]
    kept = zlib.decompress(iccp[iccp.index(b"\x00") + 2:]) if b"\x00" in iccp else b""
    check(kept == profile, "by default the result carries the input's ICC profile, byte for byte", len(kept))
    check(got["srgb"] and b"iCCP" not in got["srgb"], "colour=srgb: converted, no profile", list(got["srgb"]))
    r = post_form(s.port, "/api/v1/upscale", [(b"image", img, b"w.png"), (b"colour", b"p3", None)])
    check(r.status == 400, "colour=p3 -> 400", r)


# ---- 2. deadlines ---------------------------------------------------------------------------------------------------


def test_deadlines():
    """--header-timeout 2: 300 connections dribbling a request head from 6 loopback addresses are closed
    at the deadline, while normal requests are answered."""
    s = start("deadlines", "--header-timeout", "2", "--min-body-rate", "1000", "--max-conns", "1024",
              "--max-conns-per-ip", "64", *NO_RATE)
    if not s:
        return
    dribblers = []
    for i in range(300):
        c = socket.socket()
        try:
            c.bind(("127.0.0.%d" % (2 + i // 50), 0))
            c.connect(("127.0.0.1", s.port))
            c.setblocking(False)
            dribblers.append(c)
        except OSError:
            c.close()
    head = b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 200
    closed_at = {}
    lat = []
    stop = threading.Event()

    def normal():
        for _ in range(40):
            if stop.is_set():
                break
            t = time.time()
            try:
                st = request(s.port, "GET", "/api/v1/health", timeout=10).status
            except OSError:
                st = 0
            lat.append((time.time() - t, st))
            time.sleep(0.1)

    th = threading.Thread(target=normal, daemon=True)
    t0 = time.time()
    th.start()
    pos = 0
    while time.time() - t0 < 6 * SLOW and len(closed_at) < len(dribblers):
        for i, c in enumerate(dribblers):
            if i in closed_at:
                continue
            try:
                c.send(head[pos % len(head):pos % len(head) + 1])
                if c.recv(4096) == b"":
                    closed_at[i] = time.time() - t0
            except BlockingIOError:
                pass
            except OSError:
                closed_at[i] = time.time() - t0
        pos += 1
        time.sleep(0.25)
    stop.set()
    th.join(20)
    for c in dribblers:
        c.close()
    worst = max(closed_at.values()) if closed_at else None
    check(len(dribblers) >= 250 and len(closed_at) == len(dribblers),
          "%d dribbling connections all closed by the server (the last at %.1f s, deadline 2 s)"
          % (len(dribblers), worst or -1), "%d of %d closed" % (len(closed_at), len(dribblers)))
    times = sorted(t for t, st in lat)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))] if times else None
    check(lat and all(st == 200 for _, st in lat), "meanwhile %d normal requests all answered 200 (p99 %.3f s)"
          % (len(lat), p99 or -1), [st for _, st in lat if st != 200][:5])
    # the bar: p99 under 1 s while they dribble (measured: a few ms; SLOW for the sanitizer build)
    check(p99 is not None and p99 < 1.0 * SLOW, "their p99 stays under 1 s", p99)
    print("  deadlines: %d dribblers closed at %.1f-%.1f s; normal requests p50 %.3f s, p99 %.3f s" % (
        len(closed_at), min(closed_at.values() or [0]), worst or 0, times[len(times) // 2] if times else 0, p99 or 0))
    # a body slower than --min-body-rate 1000 B/s is cut once the deadline passed
    c = socket.create_connection(("127.0.0.1", s.port), timeout=1)
    c.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              b"Content-Length: 100000\r\n\r\n")
    t0, cut = time.time(), None
    while time.time() - t0 < 10 * SLOW and cut is None:
        try:
            c.send(b"{" * 10)
            c.settimeout(0.5)
            if c.recv(4096) == b"":
                cut = time.time() - t0
        except socket.timeout:
            pass
        except OSError:
            cut = time.time() - t0
    c.close()
    check(cut is not None and cut < 6 * SLOW, "a body at 20 bytes/s is cut (after %.1f s)" % (cut or -1), cut)
    s.stop()


# ---- 3. fetches -----------------------------------------------------------------------------------------------------


def test_fetch_pool(src):
    s = start("fetchpool", "--fetch-allow", "127.0.0.0/8", "--submit-threads", "1", "--fetch-threads", "2",
              "--fetch-per-key", "1", "--fetch-per-ip", "3", "--fetch-timeout", "30", "--fetch-min-rate", "0",
              *NO_RATE)  # the held fetches are silent: no minimum rate here (test_fetch_min_rate has one)
    if not s:
        return
    k1, k2, k3, k4, k5 = (s.key_create("f%d" % i) for i in range(1, 6))
    src.release.clear()
    done = {}

    def bg(name, key):
        done[name] = create_url(s.port, key, src.url("/hang/" + name), timeout=60)

    t1 = threading.Thread(target=bg, args=("a", k1), daemon=True)
    t2 = threading.Thread(target=bg, args=("b", k2), daemon=True)
    t1.start()
    t2.start()
    time.sleep(0.5 * SLOW)
    r = create_url(s.port, k1, src.url("/hang/c"))
    check(r.status == 429 and (json_reply(r) or {}).get("code") == "TOO_MANY_FETCHES" and r.headers.get("retry-after"),
          "--fetch-per-key 1: a key's second fetch while one is under way -> 429 with Retry-After", r)
    t3 = threading.Thread(target=bg, args=("d", k4), daemon=True)
    t3.start()
    time.sleep(0.3 * SLOW)
    r = create_url(s.port, k5, src.url("/hang/e"))
    check(r.status == 429 and "from your address" in (json_reply(r) or {}).get("error", ""),
          "--fetch-per-ip 3: a fourth fetch from one address, with a fresh key -> 429", r)
    t = time.time()
    u = post_form(s.port, "/api/v1/upscale", [(b"image", TINY, b"u.png"), (b"scale", b"2", None)], timeout=30)
    waited = time.time() - t
    check(u.status == 202 and waited < 3 * SLOW,
          "with both fetch threads held by a silent source, an upload is accepted at once (%.2f s)" % waited, u)
    src.release.set()
    for t in (t1, t2, t3):
        t.join(30 * SLOW)
    check(all(done.get(n) is not None and done[n].status == 201 for n in "abd"),
          "the held fetches complete once the source answers", done)
    s.stop()


def test_fetch_min_rate(s, src):
    """The main server (--fetch-min-rate 4096 by default, --fetch-timeout 10 s)."""
    key = s.key_create("slow-source")
    t = time.time()
    r = create_url(s.port, key, src.url("/trickle"), timeout=60)
    took = time.time() - t
    check(r.status == 422 and "bytes/s" in (json_reply(r) or {}).get("error", "") and took < 8 * SLOW,
          "a source sending a byte a second is cut by the minimum rate (%.1f s), not the 10 s total" % took, r)
    src.release.clear()
    t = time.time()
    r = create_url(s.port, key, src.url("/hang/silent"), timeout=60)
    took = time.time() - t
    src.release.set()
    check(r.status == 422 and took < 8 * SLOW, "a source that never answers is cut as well (%.1f s)" % took, r)


# ---- 6. storage -------------------------------------------------------------------------------------------------------


def test_storage():
    mnt = os.path.join(TMP, "small-disk")
    os.makedirs(mnt, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", mnt], capture_output=True, text=True)
    if p.returncode != 0:
        print("SKIP storage errors: cannot mount a tmpfs here (%s)" % (p.stderr.strip() or p.returncode))
        return
    try:
        s = start("smalldisk", data=os.path.join(mnt, "data"))
        if not s:
            return
        big = TINY + os.urandom(4 * 2 ** 20)
        r = post_form(s.port, "/api/v1/upscale", [(b"image", big, b"big.png")])
        j = json_reply(r) or {}
        check(r.status == 507 and j.get("code") == "INSUFFICIENT_STORAGE",
              "an upload that fills the disk -> 507 INSUFFICIENT_STORAGE", r)
        uploads = os.path.join(mnt, "data", "uploads")
        left = [f for f in os.listdir(uploads)] if os.path.isdir(uploads) else []
        check(not left, "nothing half-written is left in uploads/", left)
        check("No space left on device" in s.tail(200000), "the log names the errno")
        r = post_form(s.port, "/api/v1/upscale", [(b"image", TINY, b"ok.png"), (b"model_name", FAST.encode(), None),
                                                  (b"scale", b"2", None)])
        check(r.status == 202, "a small upload afterwards still works", r)
        # a read-only uploads folder (a read-only tmpfs mounted over it: the database stays writable)
        ro = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", uploads], capture_output=True)
        if check(ro.returncode == 0, "a read-only tmpfs over uploads/", ro.stderr):
            r = post_form(s.port, "/api/v1/upscale", [(b"image", TINY, b"ro.png")])
            j = json_reply(r) or {}
            check(r.status == 503 and j.get("code") == "STORAGE_UNAVAILABLE" and r.headers.get("retry-after"),
                  "a read-only data folder -> 503 STORAGE_UNAVAILABLE with Retry-After", r)
            subprocess.run(["umount", uploads], capture_output=True)
        s.stop()
    finally:
        subprocess.run(["umount", "-l", mnt], capture_output=True)


# ---- 12. an upload under way at SIGTERM ---------------------------------------------------------------------------------


def test_stop_upload():
    """SIGTERM while an upload is still arriving: it gets a 503 answer, not a dropped socket, and the
    server exits 0 within 2 s (shutdown_test.py covers a job stopped mid-tile)."""
    s = start("stopupload")
    if not s:
        return
    c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    c.sendall(b"POST /api/v1/upscale HTTP/1.1\r\nHost: localhost\r\n"
              b"Content-Type: multipart/form-data; boundary=BBBBBB\r\nContent-Length: 40000000\r\n\r\n"
              b"--BBBBBB\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n")
    t_sig = []

    def sigterm_once(elapsed):
        if not t_sig and elapsed > 0.5:
            s.proc.send_signal(15)
            t_sig.append(time.time())

    c.settimeout(0.05)
    _, got = send_until_answer(c, b"x" * 16384, 10 * SLOW, each=sigterm_once)
    c.close()
    t_sig = t_sig[0] if t_sig else None
    code = None
    try:
        code = s.proc.wait(timeout=10 * SLOW)
    except subprocess.TimeoutExpired:
        pass
    took = time.time() - (t_sig or time.time())
    check(got.startswith(b"HTTP/1.1 503") and b"shutting down" in got,
          "SIGTERM during an upload: the upload is answered 503", got[:120])
    check(code == 0 and took < 2 * SLOW, "and the server exits 0 within 2 s (%.2f s)" % took, code)


# ---- main -------------------------------------------------------------------------------------------------------------


def main():
    t0 = time.time()
    src = Source()
    try:
        s = start("main", "--fetch-allow", "127.0.0.0/8", "--max-upload", "1M", "--max-frames", "2",
                  "--fetch-per-key", "4", *NO_RATE)
        if s:
            key = s.key_create("main")
            run(test_client_text, s, src)
            run(test_fields, s)
            run(test_log_forging, s)
            run(test_early_413, s)
            run(test_host, s, key)
            run(test_links_gone, s, key)
            run(test_idempotency, s)
            run(test_visibility, s)
            run(test_frames, s)
            run(test_colour, s)
            run(test_fetch_min_rate, s, src)
            check(s.stop() == 0, "the main server stops with status 0")
        run(test_deadlines)
        run(test_fetch_pool, src)
        run(test_storage)
        run(test_stop_upload)
    finally:
        for s in SERVERS:
            s.stop()
        src.close()
    if tally.failed:
        for s in SERVERS:
            print("---- %s log (tail) ----\n%s" % (s.name, s.tail()))
    print("%d passed, %d failed (%.1fs)" % (tally.passed, tally.failed, time.time() - t0))
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
