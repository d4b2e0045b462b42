#!/usr/bin/env python3
"""cors_test.py - CORS as a browser meets it, against a real `upres serve`.

Run by ctest as: python3 tests/e2e/cors_test.py PATH/TO/upres
with UPRES_TEST_MODELS (models folder).

Three servers:

- "any" (the default, --cors-origins *, with --max-upload 4K):
  - preflights (OPTIONS with Access-Control-Request-Method) on
    /api/v1/upscale, /api/v1/status/{id}, /api/v1/status/{id}/stream,
    /v1/jobs and /api/v1/users/me (which needs a key: a preflight needs
    none): 204, Allow-Origin *, the asked method among the methods, every
    API header named in Allow-Headers (Authorization by name: a "*" would
    not cover it) with the asked ones, Max-Age 600; on an unknown path:
    404 JSON with Allow-Origin;
  - a plain OPTIONS: 204 with Allow, the path's methods;
  - Allow-Origin * and Expose-Headers (Content-Disposition, Content-Length)
    on a 200, a 404, a 405 (with Allow), a 401, a 413 refused at the head
    (Content-Length over the limit), a 413 written raw in the middle of a
    chunked body, an event stream (/api/v1/status/{id}/stream) and a
    download (with its Content-Disposition);
- "list" (--cors-origins "https://app.example, http://localhost:3000"): a
  listed Origin is echoed with Vary: Origin, on replies and preflights; an
  unlisted one gets no Access-Control-* header at all, and its preflight is
  a plain OPTIONS;
- "off" (UPRES_CORS_ORIGINS=none): no Access-Control-* header anywhere.

And a bad --cors-origins is refused at start (exit status 2, one line).
Headers are read from plain sockets where repeats or the raw early answer
matter.
"""
import os
import socket
import subprocess
import sys
import time
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import (MODELS, SLOW, UPRES, Server, check, make_tmp, png, run, submit, tally,  # noqa: E402
                    wait_status)

TMP = make_tmp("upres-cors-test-")
FAST = "realesr-animevideov3"
API_HEADERS = ("Content-Type", "Authorization", "X-Session-Token", "Last-Event-ID", "Cache-Control",
               "Idempotency-Key")
SERVERS = []


def start(name, *args, env=None):
    s = Server(name, *args, env=env)
    SERVERS.append(s)
    return s if check(s.start(), "server %s starts" % name) else None


class Raw:
    """One request on a plain socket: .status, .headers (lower-case name -> [values]), .body (what came)."""

    def __init__(self, port, method, path, headers=None, body=b"", read_all=True, timeout=10):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
        head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n" % (method, path, port)
        head += "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
        try:
            sock.sendall(head.encode() + b"\r\n" + body)
        except OSError:
            pass  # answered early and closed: read what it said
        data = b""
        deadline = time.time() + timeout * SLOW
        while time.time() < deadline:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
            if not read_all and b"\r\n\r\n" in data:
                break
        sock.close()
        top, _, self.body = data.partition(b"\r\n\r\n")
        lines = top.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else 0
        self.headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            self.headers.setdefault(k.strip().lower(), []).append(v.strip())

    def one(self, name):
        v = self.headers.get(name.lower())
        return v[0] if v and len(v) == 1 else None

    def items(self, name):
        """The comma-separated items of every line of the header, lower-cased."""
        return [x.strip().lower() for v in self.headers.get(name.lower(), []) for x in v.split(",") if x.strip()]

    def acx(self):
        """The Access-Control-* headers it has."""
        return sorted(k for k in self.headers if k.startswith("access-control-"))

    def __repr__(self):
        return "<%d %r %r>" % (self.status, self.headers, self.body[:200])


def cors_any(r):
    return (r.one("Access-Control-Allow-Origin") == "*"
            and {"content-disposition", "content-length"} <= set(r.items("Access-Control-Expose-Headers")))


def preflight(port, path, method, asked="", origin="https://app.example"):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if asked:
        h["Access-Control-Request-Headers"] = asked
    return Raw(port, "OPTIONS", path, h)


def test_preflights(s):
    jid = str(uuid.uuid4())
    cases = (("/api/v1/upscale", "POST", "authorization, content-type, idempotency-key"),
             ("/api/v1/status/" + jid, "GET", "cache-control, last-event-id"),
             ("/api/v1/status/%s/stream" % jid, "GET", "last-event-id, cache-control, x-requested-with"),
             ("/v1/jobs", "POST", "authorization, content-type, x-session-token"),
             ("/v1/jobs", "GET", ""),
             ("/api/v1/users/me", "GET", "authorization"))
    for path, method, asked in cases:
        r = preflight(s.port, path, method, asked)
        what = "preflight %s %s" % (method, path)
        check(r.status in (200, 204) and cors_any(r), what + ": 204, Allow-Origin *", r)
        check(method.lower() in r.items("Access-Control-Allow-Methods"), what + ": the asked method allowed", r)
        allowed = set(r.items("Access-Control-Allow-Headers"))
        want = {h.lower() for h in API_HEADERS} | {h.strip() for h in asked.split(",") if h.strip()}
        check(want <= allowed and "*" not in allowed, what + ": Allow-Headers names " + ", ".join(sorted(want)),
              sorted(allowed))
        check(r.one("Access-Control-Max-Age") == "600", what + ": Max-Age 600", r)
        check(r.body == b"", what + ": no body", r)
    r = preflight(s.port, "/api/v1/upscale", "POST")
    check(r.items("Allow") == ["post", "options"] and "post" in r.items("Access-Control-Allow-Methods"),
          "preflight /api/v1/upscale: its methods (POST, OPTIONS)", r)
    r = preflight(s.port, "/api/v1/no-such-thing", "GET", "authorization")
    check(r.status == 404 and cors_any(r) and b'"NOT_FOUND"' in r.body
          and r.one("Access-Control-Allow-Methods") is None, "preflight on an unknown path: 404 JSON with CORS", r)
    r = Raw(s.port, "OPTIONS", "/v1/jobs")
    check(r.status == 204 and r.items("Allow") == ["post", "get", "head", "options"] and cors_any(r)
          and r.one("Access-Control-Allow-Methods") is None,
          "plain OPTIONS /v1/jobs: 204, Allow: POST, GET, HEAD, OPTIONS", r)


def test_replies(s):
    r = Raw(s.port, "GET", "/api/v1/health", {"Origin": "https://app.example"})
    check(r.status == 200 and cors_any(r) and "vary" not in r.headers,
          "200: Allow-Origin *, Expose-Headers, no Vary", r)
    r = Raw(s.port, "GET", "/api/v1/nothing-here")
    check(r.status == 404 and cors_any(r), "404: Allow-Origin *", r)
    r = Raw(s.port, "DELETE", "/api/v1/upscale")
    check(r.status == 405 and cors_any(r) and r.items("Allow") == ["post", "options"],
          "405: Allow-Origin *, Allow: POST, OPTIONS", r)
    r = Raw(s.port, "GET", "/api/v1/status/" + str(uuid.uuid4()))
    check(r.status == 404 and cors_any(r), "a handler's 404: Allow-Origin *", r)
    r = Raw(s.port, "GET", "/api/v1/users/me")
    check(r.status == 401 and cors_any(r), "401: Allow-Origin *", r)
    r = Raw(s.port, "GET", "/api/v1/users/me", {"Authorization": "Bearer nope"})
    check(r.status == 401 and cors_any(r), "401 (a bad key): Allow-Origin *", r)
    # 413 at the head: the body is never read
    r = Raw(s.port, "POST", "/api/v1/upscale", {"Content-Type": "multipart/form-data; boundary=x",
                                                 "Content-Length": "100000"})
    check(r.status == 413 and cors_any(r), "413 (Content-Length over --max-upload): Allow-Origin *", r)
    # 413 in the middle of a chunked body (an upload, a JSON body): written raw to the socket
    part = (b"------cors0123456789\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + b"a" * 6000)
    for path, ctype, data in (("/api/v1/upscale", "multipart/form-data; boundary=----cors0123456789", part),
                              ("/v1/jobs", "application/json", b" " * 6000)):
        body = b"%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n"
        r = Raw(s.port, "POST", path, {"Content-Type": ctype, "Transfer-Encoding": "chunked"}, body)
        check(r.status == 413 and cors_any(r) and r.one("Connection") == "close" and "date" not in r.headers,
              "413 mid-body (chunked %s, answered raw): Allow-Origin *" % ctype.split(";")[0], r)


def test_stream_and_download(s):
    r = submit(s.port, data=png(24, 24), filename="c.png", model_name=FAST, scale=2)
    jid = (r.json() or {}).get("job_id")
    if not check(r.status == 202 and jid, "submit -> 202", r):
        return
    check(r.headers.get("access-control-allow-origin") == "*", "202: Allow-Origin *", r.headers)
    st = Raw(s.port, "GET", "/api/v1/status/%s/stream" % jid, {"Origin": "https://app.example"}, read_all=False)
    check(st.status == 200 and st.one("Content-Type") == "text/event-stream" and cors_any(st),
          "event stream: Allow-Origin *, Expose-Headers", st)
    done = wait_status(s.port, jid, ("completed", "failed"), 120)
    if not check(done.get("status") == "completed", "the job completes", done):
        return
    st = Raw(s.port, "GET", "/api/v1/status/%s/stream" % jid, {"Origin": "https://app.example"})
    check(st.status == 200 and cors_any(st) and b"completed" in st.body,
          "event stream of a finished job: Allow-Origin *", st)
    d = Raw(s.port, "GET", "/api/v1/download/" + jid, {"Origin": "https://app.example"})
    check(d.status == 200 and cors_any(d) and (d.one("Content-Disposition") or "").startswith("attachment")
          and d.body.startswith(b"\x89PNG"), "download: Allow-Origin *, Content-Disposition exposed", d)


def test_list(s):
    for origin in ("https://app.example", "http://localhost:3000"):
        r = Raw(s.port, "GET", "/api/v1/health", {"Origin": origin})
        check(r.status == 200 and r.one("Access-Control-Allow-Origin") == origin and "origin" in r.items("Vary")
              and "content-disposition" in r.items("Access-Control-Expose-Headers"),
              "listed %s: echoed, with Vary: Origin" % origin, r)
    r = Raw(s.port, "GET", "/api/v1/nothing", {"Origin": "https://app.example"})
    check(r.status == 404 and r.one("Access-Control-Allow-Origin") == "https://app.example",
          "listed: echoed on a 404", r)
    for origin in ("https://evil.example", "https://app.example.evil", None):
        h = {"Origin": origin} if origin else {}
        r = Raw(s.port, "GET", "/api/v1/health", h)
        check(r.status == 200 and r.acx() == [] and "origin" in r.items("Vary"),
              "unlisted %s: no Access-Control-* header (Vary: Origin)" % origin, r)
    r = preflight(s.port, "/api/v1/upscale", "POST", "authorization", origin="http://localhost:3000")
    check(r.status == 204 and r.one("Access-Control-Allow-Origin") == "http://localhost:3000"
          and "authorization" in r.items("Access-Control-Allow-Headers") and r.one("Access-Control-Max-Age") == "600"
          and "origin" in r.items("Vary"), "listed preflight: echoed, Authorization allowed, Max-Age 600", r)
    r = preflight(s.port, "/api/v1/upscale", "POST", "authorization", origin="https://evil.example")
    check(r.status == 204 and r.acx() == [] and r.items("Allow") == ["post", "options"],
          "unlisted preflight: a plain OPTIONS, no Access-Control-* header", r)


def test_off(s):
    r = Raw(s.port, "GET", "/api/v1/health", {"Origin": "https://app.example"})
    check(r.status == 200 and r.acx() == [] and "vary" not in r.headers, "off: no CORS header on a 200", r)
    r = preflight(s.port, "/api/v1/upscale", "POST", "authorization")
    check(r.status == 204 and r.acx() == [] and r.items("Allow") == ["post", "options"],
          "off: a preflight is a plain OPTIONS", r)


def test_bad_value():
    for bad in ("https://app.example/", "app.example", "https://a.example,,https://b.example"):
        cmd = [UPRES, "serve", "--port", "0", "--data", os.path.join(TMP, "bad"), "--cors-origins", bad]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30 * SLOW,
                           env=dict(os.environ, UPRES_MODELS=MODELS))
        check(p.returncode == 2 and "cors-origins" in p.stderr and p.stderr.count("\n") == 1,
              "--cors-origins %r refused: exit 2, one line" % bad, (p.returncode, p.stderr))


def main():
    t0 = time.time()
    try:
        s = start("any", "--max-upload", "4K", "--rate-per-minute", "0", "--rate-per-day", "0")
        if s:
            run(test_preflights, s)
            run(test_replies, s)
            run(test_stream_and_download, s)
        s = start("list", "--cors-origins", " https://app.example , http://localhost:3000")
        if s:
            run(test_list, s)
        s = start("off", env={"UPRES_CORS_ORIGINS": "none"})
        if s:
            run(test_off, s)
        run(test_bad_value)
    finally:
        for s in SERVERS:
            rc = s.stop()
            # under the sanitizers a leak or an error makes this non-zero
            check(rc == 0, "server %s stops cleanly on SIGTERM (exit 0)" % s.name, rc)
    if tally.failed:
        for s in SERVERS:
            print("---- server %s log (tail) ----\n%s" % (s.name, s.tail(3000)))
    else:
        import shutil
        shutil.rmtree(TMP, ignore_errors=True)
    print("%d passed, %d failed (%.1fs)" % (tally.passed, tally.failed, time.time() - t0))
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
