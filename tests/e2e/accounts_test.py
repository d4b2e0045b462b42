#!/usr/bin/env python3
"""accounts_test.py - end-to-end tests of accounts and the upres.ai and PicShapes dialects.

Run by ctest as: /usr/bin/python3 tests/e2e/accounts_test.py PATH/TO/upres
with UPRES_SHARED_DATA, UPRES_TEST_MODELS and UPRES_SANITIZE (see client.py).

Covers API keys (the `upres keys` command on the running server's data),
401s, the /v1/jobs API (multipart and image_url, listing with filters and
cursors, signed result links), image_url fetching and its refusals (a
loopback HTTP server run by this script serves the images, redirects and
failures), credits, quotas and refunds under concurrency, tiers and rate
limits, and PicShapes' /api/v1/users/me, /tiers and /jobs/{id}[/result].

Every JSON reply of an endpoint that a spec describes is validated against
the schema that spec gives for its path, method and status
(/work/shared/specs/upres-ai.openapi.json, whose paths are under /v1 here,
and picshapes.openapi.yaml), read with Debian's python3-yaml and checked
with python3-jsonschema. OpenAPI's `nullable` is not honoured (the server
omits absent fields rather than sending null), and the formats uuid,
date-time (RFC 3339) and uri (absolute http/https) are checked here.
Error replies must have the {"success": false, "error", "code"} envelope.

Every wait is bounded in count and time. Prints "N passed, N failed" and
exits non-zero on any failure.
"""
import base64
import datetime
import glob
import hashlib
import hmac
import http.server
import json
import os
import re
import shutil
import sys
import threading
import time
import urllib.parse
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import client  # noqa: E402
from client import (SHARED, SLOW, UPRES, Server, check, free_port, make_tmp, multipart, png,  # noqa: E402
                    png_size, request, run, submit, tally, wait_status)

import yaml  # noqa: E402  (python3-yaml)
from spec import parse_time, response_schema, validate  # noqa: E402  (spec.py: JSON Schema helpers)

SPECS = os.environ.get("UPRES_SPECS", os.path.join(os.path.dirname(os.path.abspath(SHARED)), "specs"))
SMALL = os.path.join(SHARED, "ref/in/chelsea_lr64.png")
SMALL2 = os.path.join(SHARED, "ref/in/astronaut_lr64.png")
LARGE = os.path.join(SHARED, "images/chelsea.png")
FAST = "realesr-animevideov3"  # the quickest model: scales 2, 3, 4
KEY_RE = re.compile(r"^upres_[A-Za-z0-9_-]{43}$")
NO_RATE = ("--rate-per-minute", "0", "--rate-per-day", "0")

TMP = make_tmp("upres-accounts-test-")
SERVERS = []  # every Server started, stopped at the end


def read(path):
    with open(path, "rb") as f:
        return f.read()


# ---- spec validation ----------------------------------------------------------------

for _spec in ("upres-ai.openapi.json", "picshapes.openapi.yaml"):
    if not os.path.exists(os.path.join(SPECS, _spec)):
        sys.exit("missing %s (set UPRES_SPECS to the specs folder)" % os.path.join(SPECS, _spec))
with open(os.path.join(SPECS, "upres-ai.openapi.json")) as _f:
    AI = json.load(_f)
with open(os.path.join(SPECS, "picshapes.openapi.yaml")) as _f:
    PS = yaml.safe_load(_f)

ENVELOPE = {"type": "object", "required": ["success", "error", "code"],
            "properties": {"success": {"const": False}, "error": {"type": "string", "minLength": 1},
                           "code": {"type": "string", "pattern": "^[A-Z][A-Z_]*$"}}}

# our path -> (spec, the spec's path)
ROUTES = [
    (re.compile(r"^/v1/jobs$"), AI, "/jobs"),
    (re.compile(r"^/v1/jobs/[^/]+$"), AI, "/jobs/{id}"),
    (re.compile(r"^/api/v1/users/me$"), PS, "/api/v1/users/me"),
    (re.compile(r"^/api/v1/users/me/credits$"), PS, "/api/v1/users/me/credits"),
    (re.compile(r"^/api/v1/tiers$"), PS, "/api/v1/tiers"),
    (re.compile(r"^/api/v1/jobs$"), PS, "/api/v1/jobs"),
    (re.compile(r"^/api/v1/jobs/[^/]+$"), PS, "/api/v1/jobs/{id}"),
    (re.compile(r"^/api/v1/jobs/[^/]+/result$"), PS, "/api/v1/jobs/{id}/result"),
]
spec_seen = {"validated": 0, "reported": set()}


def spec_fail(what, msg):
    k = (what, msg)
    if k not in spec_seen["reported"]:
        spec_seen["reported"].add(k)
        check(False, "spec: " + what, msg)


def spec_check(method, path, r):
    """Validate reply r to METHOD path: its spec's schema, and the error envelope for >= 400."""
    path = urllib.parse.urlsplit(path).path
    route = next(((spec, sp) for rx, spec, sp in ROUTES if rx.match(path)), None)
    is_json = r.headers.get("content-type", "").startswith("application/json")
    if not route and r.status < 400:
        return
    name = "%s %s -> %d" % (method, route[1] if route else path, r.status)
    j = r.json()
    if j is None or not is_json:
        spec_fail(name, "not a JSON reply (%s): %r" % (r.headers.get("content-type"), r.body[:200]))
        return
    spec_seen["validated"] += 1
    if r.status >= 400:
        msg = validate(j, {}, ENVELOPE)
        if msg:
            spec_fail(name + " (error envelope)", msg)
    if route:
        schema = response_schema(route[0], route[1], method, r.status)
        if schema is not None:
            msg = validate(j, route[0], schema)
            if msg:
                spec_fail(name, msg + " in " + json.dumps(j)[:300])


# ---- requests -------------------------------------------------------------------------


def bearer(key):
    return {"Authorization": "Bearer " + key} if key else {}


def call(port, method, path, key=None, body=None, headers=None, timeout=60):
    """request() with the key's Authorization, the reply validated (spec_check)."""
    r = request(port, method, path, body, dict(headers or {}, **bearer(key)), timeout)
    spec_check(method, path, r)
    return r


def create_body(path=None, data=None, filename=None, **fields):
    if data is None:
        data = read(path)
    filename = filename or (os.path.basename(path) if path else "tiny.png")
    body, ctype = multipart({k: str(v) for k, v in fields.items()}, {"image": (filename, data, "image/png")})
    return body, {"Content-Type": ctype}


def create(port, key, path=None, data=None, filename=None, headers=None, **fields):
    """POST /v1/jobs multipart: image (path or data) and fields."""
    body, h = create_body(path, data, filename, **fields)
    return call(port, "POST", "/v1/jobs", key, body, dict(headers or {}, **h))


def create_url(port, key, obj):
    """POST /v1/jobs with obj as JSON."""
    return call(port, "POST", "/v1/jobs", key, json.dumps(obj).encode(), {"Content-Type": "application/json"})


def is_err(r, code_status, code):
    return r.status == code_status and (r.json() or {}).get("code") == code


def job_id(r, want=201):
    return (r.json() or {}).get("id") if r.status == want else None


def credits(port, key):
    return (call(port, "GET", "/api/v1/users/me/credits", key).json() or {}).get("credits", "absent")


def wait_credits(port, key, want, timeout=10):
    got = None
    deadline = time.time() + timeout * SLOW
    for _ in range(int(timeout * SLOW / 0.1) + 1):
        got = credits(port, key)
        if got == want or time.time() > deadline:
            break
        time.sleep(0.1)
    return got


def wait_job(port, key, jid, want=("completed", "failed"), timeout=60):
    """Poll GET /v1/jobs/{id} until its status is in want. Returns the last Job (or {})."""
    j = {}
    deadline = time.time() + timeout * SLOW
    for _ in range(int(timeout * SLOW / 0.05) + 1):
        j = call(port, "GET", "/v1/jobs/" + jid, key).json() or {}
        if j.get("status") in want or time.time() > deadline:
            break
        time.sleep(0.05)
    return j


def fetch_result(port, url):
    """GET a result_url (no key) from our server, whatever host it names."""
    u = urllib.parse.urlsplit(url)
    return request(port, "GET", u.path + ("?" + u.query if u.query else ""))


def check_result_url(port, jid, url, what, host=None):
    host = host or "http://127.0.0.1:%d" % port
    m = re.match(r"^%s/v1/results/%s\?expires=(\d+)&sig=([0-9a-f]{64})$" % (re.escape(host), re.escape(jid)),
                 url or "")
    check(m is not None, what + ": result_url is %s/v1/results/<id>?expires=<unix>&sig=<64 hex>" % host, url)
    if m:
        check(time.time() < int(m.group(1)) <= time.time() + 3600 + 5, what + ": expires within the hour", url)
    return m


def mk(s, name, **kw):
    key = s.key_create(name, **kw)
    check(key is not None and KEY_RE.match(key) is not None, "keys create %s %s: upres_ + 43 base64url" % (name, kw),
          key)
    return key or ("upres_" + "A" * 43)


def key_record(s, name):
    return next((k for k in (s.keys_list() or []) if k.get("name") == name), {})


def start(name, *args, **kw):
    s = Server(name, *args, **kw)
    SERVERS.append(s)
    return s if check(s.start(), "server %s starts (%s)" % (name, " ".join(args))) else None


def unknown_key():
    return "upres_" + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def busy(s):
    """Submit a long job (anonymous, Upscale Service) and wait until the one worker runs it: its id or None."""
    r = submit(s.port, LARGE, model_name="realesrgan-x4plus", scale=4, tile_size=32)
    jid = (r.json() or {}).get("job_id")
    st = wait_status(s.port, jid, ("processing", "completed", "failed"), 120) if jid else {}
    return jid if st.get("status") == "processing" else None


# ---- a loopback HTTP server that image_url points at ------------------------------------


class Fixture:
    """Serves images, redirects and failures on 127.0.0.1 for the image_url tests."""

    BIG = 150000  # bytes, over the main server's --fetch-max-bytes

    def __init__(self):
        self.hits = 0
        self.release = threading.Event()  # /hold answers once this is set
        fixture = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def send(self, code, body, ctype="image/png", length=True, extra=()):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                for k, v in extra:
                    self.send_header(k, v)
                if length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def redirect(self, to):
                self.send(302, b"", "text/plain", extra=(("Location", to),))

            def do_GET(self):
                fixture.hits += 1
                u = urllib.parse.urlsplit(self.path)
                q = urllib.parse.parse_qs(u.query)
                p = u.path
                try:
                    if p.startswith("/img/") and os.path.basename(p) in ("chelsea_lr64.png", "astronaut_lr64.png"):
                        self.send(200, read(os.path.join(SHARED, "ref/in", os.path.basename(p))))
                    elif p == "/plain.png":
                        self.send(200, read(SMALL), "text/plain")
                    elif p == "/text":
                        self.send(200, b"this is plain text, not an image\n" * 20, "text/plain")
                    elif p == "/status500":
                        self.send(500, b"oops", "text/plain")
                    elif p == "/redirect":
                        self.redirect(q.get("to", ["/"])[0])
                    elif p == "/loop":
                        self.redirect("/loop")
                    elif p.startswith("/chain/"):
                        n = int(p.rsplit("/", 1)[1])
                        if n > 0:
                            self.redirect("/chain/%d" % (n - 1))
                        else:
                            self.send(200, read(SMALL))
                    elif p in ("/big", "/big-nolen"):
                        self.send(200, b"\x89PNG\r\n\x1a\n" + os.urandom(Fixture.BIG), length=(p == "/big"))
                    elif p == "/hold":  # no answer until the test releases it (at most 30 s)
                        fixture.release.wait(30)
                        self.send(200, read(SMALL))
                    elif p == "/slow":  # no answer for 8 s
                        time.sleep(8)
                        self.send(200, read(SMALL))
                    elif p == "/drip":  # a byte every 0.5 s for 10 s
                        self.send_response(200)
                        self.send_header("Content-Type", "image/png")
                        self.send_header("Content-Length", "100000")
                        self.end_headers()
                        for _ in range(20):
                            self.wfile.write(b"\x00")
                            self.wfile.flush()
                            time.sleep(0.5)
                    else:
                        self.send(404, b"not found", "text/plain")
                except (OSError, ValueError):
                    pass  # the server under test hung up, as it should

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---- 1. authentication ----------------------------------------------------------------


def test_auth(s, ctx):
    p = s.port
    good = mk(s, "auth-good")
    tiny_body, tiny_h = create_body(data=png(16, 16), model=FAST, scale=2)
    endpoints = [("POST", "/v1/jobs", tiny_body, tiny_h), ("GET", "/v1/jobs", None, {}),
                 ("GET", "/v1/jobs/" + str(uuid.uuid4()), None, {}), ("GET", "/api/v1/users/me", None, {}),
                 ("GET", "/api/v1/users/me/credits", None, {})]
    bad = [("no Authorization", {}), ("Basic", {"Authorization": "Basic dXNlcjpwYXNz"}),
           ("Bearer alone", {"Authorization": "Bearer"}), ("Bearer + space", {"Authorization": "Bearer "}),
           ("Token scheme", {"Authorization": "Token " + good}), ("not a key", {"Authorization": "Bearer notakey"}),
           ("short key", {"Authorization": "Bearer upres_abc"}),
           ("key + 1 char", {"Authorization": "Bearer " + good + "A"}),
           ("bad character", {"Authorization": "Bearer upres_" + "!" * 43}),
           ("other prefix", {"Authorization": "Bearer uk_" + good[6:]}),
           ("unknown key", {"Authorization": "Bearer " + unknown_key()})]
    for method, path, body, h in endpoints:
        wrong = []
        for name, auth in bad:
            r = call(p, method, path, None, body, dict(h, **auth))
            if not is_err(r, 401, "UNAUTHORIZED"):
                wrong.append("%s: %r" % (name, r))
        check(not wrong, "401 UNAUTHORIZED for every bad Authorization on %s %s" % (method, path), wrong)
    r = call(p, "GET", "/v1/jobs", good)
    check(r.status == 200, "a good key -> 200", r)

    # the command line: list, revoke while the server runs
    out = s.cli("keys", "list")
    check(out.returncode == 0 and "auth-good" in out.stdout and good not in out.stdout and good[6:] not in out.stdout,
          "keys list: a table naming the key, never the key", out.stdout + out.stderr)
    keys = s.keys_list() or []
    rec = next((k for k in keys if k.get("name") == "auth-good"), {})
    schema = {"type": "array", "items": {
        "type": "object",
        "required": ["id", "name", "prefix", "tier", "quota", "used", "credits", "created_at", "last_used_at",
                     "revoked"],
        "properties": {"id": {"type": "string", "format": "uuid"}, "name": {"type": "string"},
                       "prefix": {"type": "string", "minLength": 7}, "tier": {"enum": ["basic", "pro", "premium"]},
                       "quota": {"type": ["integer", "null"]}, "used": {"type": "integer", "minimum": 0},
                       "credits": {"type": ["integer", "null"]},
                       "created_at": {"type": "string", "format": "date-time"},
                       "last_used_at": {"type": ["string", "null"], "format": "date-time"},
                       "revoked": {"type": "boolean"}}}}
    msg = validate(keys, {}, schema)
    check(not msg and rec, "keys list --json: the documented fields", msg or keys)
    check(rec.get("tier") == "basic" and rec.get("quota") is None and rec.get("credits") is None
          and rec.get("revoked") is False and good.startswith(rec.get("prefix") or "-")
          and len(rec.get("prefix") or good) < len(good) and rec.get("last_used_at") is not None,
          "keys list --json: defaults basic, no quota, unlimited; prefix of the key; last_used_at set", rec)
    out = s.cli("keys", "list", "--json")
    check(good not in out.stdout, "keys list --json never shows the key")
    ctx["auth_key_id"] = rec.get("id")

    out = s.cli("keys", "revoke", rec.get("id") or "none")
    check(out.returncode == 0, "keys revoke ID while the server runs", out.stdout + out.stderr)
    r = call(p, "GET", "/v1/jobs", good)
    check(is_err(r, 401, "UNAUTHORIZED"), "a revoked key -> 401 at once", r)
    r = call(p, "GET", "/api/v1/users/me", good)
    check(is_err(r, 401, "UNAUTHORIZED"), "a revoked key -> 401 on /api/v1/users/me", r)
    check(key_record(s, "auth-good").get("revoked") is True, "keys list --json: revoked true")
    second = mk(s, "auth-second")
    check(call(p, "GET", "/v1/jobs", second).status == 200, "second key works")
    prefix = key_record(s, "auth-second").get("prefix") or "none"
    out = s.cli("keys", "revoke", prefix)
    check(out.returncode == 0, "keys revoke PREFIX", out.stdout + out.stderr)
    check(is_err(call(p, "GET", "/v1/jobs", second), 401, "UNAUTHORIZED"), "revoked by prefix -> 401")
    out = s.cli("keys", "revoke", str(uuid.uuid4()))
    check(out.returncode != 0, "keys revoke of an unknown id fails", out.returncode)
    out = s.cli("keys", "create", "--name", "x", "--tier", "gold")
    check(out.returncode != 0, "keys create --tier gold fails", out.returncode)

    # the Upscale Service stays open without a key, checks one that is sent
    r = submit(p, data=png(16, 16), filename="open.png", model_name=FAST, scale=2)
    check(r.status == 202, "Upscale Service: no key -> 202", r)
    jid = (r.json() or {}).get("job_id", "")
    for name, h in (("unknown key", bearer(unknown_key())), ("revoked key", bearer(good)),
                    ("malformed", {"Authorization": "Bearer nope"})):
        r = submit(p, data=png(16, 16), filename="open.png", model_name=FAST, scale=2, headers=h)
        check(is_err(r, 401, "UNAUTHORIZED"), "Upscale Service upscale: %s -> 401" % name, r)
        spec_check("POST", "/api/v1/upscale", r)
    r = request(p, "GET", "/api/v1/status/" + jid, headers=bearer(unknown_key()))
    check(is_err(r, 401, "UNAUTHORIZED"), "Upscale Service status: unknown key -> 401", r)
    check(request(p, "GET", "/api/v1/status/" + jid).status == 200, "Upscale Service status: no key -> 200")

    # --require-keys
    rs = start("require", "--require-keys", *NO_RATE)
    if not rs:
        return
    try:
        k = mk(rs, "req")
        r = submit(rs.port, data=png(16, 16), filename="r.png", model_name=FAST, scale=2)
        check(is_err(r, 401, "UNAUTHORIZED"), "--require-keys: upscale without a key -> 401", r)
        spec_check("POST", "/api/v1/upscale", r)
        r = submit(rs.port, data=png(16, 16), filename="r.png", model_name=FAST, scale=2, headers=bearer(k))
        check(r.status == 202, "--require-keys: upscale with a key -> 202", r)
        jid = (r.json() or {}).get("job_id", "")
        r = request(rs.port, "GET", "/api/v1/status/" + jid)
        check(is_err(r, 401, "UNAUTHORIZED"), "--require-keys: status without a key -> 401", r)
        r = request(rs.port, "GET", "/api/v1/status/" + jid, headers=bearer(k))
        check(r.status == 200, "--require-keys: status with a key -> 200", r)
        r = call(rs.port, "GET", "/v1/jobs", k)
        check(r.status == 200, "--require-keys: /v1/jobs with a key -> 200", r)
    finally:
        rs.stop()


# ---- 2. creating jobs -------------------------------------------------------------------


def check_job(j, what, **want):
    msg = validate(j, AI, {"$ref": "#/components/schemas/Job"})
    check(not msg, what + ": a Job (upres.ai schema)", msg + " in " + json.dumps(j)[:300] if msg else "")
    bad = {k: (j.get(k), v) for k, v in want.items() if j.get(k) != v}
    if want:
        check(not bad, what + ": " + ", ".join("%s=%r" % kv for kv in want.items()), bad)


def complete_and_download(p, key, jid, scale, what, size=64):
    j = wait_job(p, key, jid, timeout=120)
    check(j.get("status") == "completed" and "error" not in j, what + ": completed", j)
    if j.get("status") != "completed":
        return j
    check_job(j, what + " (completed)")
    check((parse_time(j.get("updated_at")) or 0) >= (parse_time(j.get("created_at")) or 1),
          what + ": updated_at >= created_at", j)
    check_result_url(p, jid, j.get("result_url"), what)
    r = fetch_result(p, j.get("result_url", ""))
    check(r.status == 200 and r.headers.get("content-type", "").startswith("image/")
          and png_size(r.body) == (size * scale, size * scale),
          what + ": result_url downloads a %dx%d PNG" % (size * scale, size * scale),
          (r.status, r.headers.get("content-type"), png_size(r.body), r.body[:100]))
    return j


def test_create(s, fx, ctx):
    p = s.port
    k = mk(s, "create", credits=100)
    n_ok = 0
    r = create(p, k, SMALL, model=FAST, scale=2)
    if check(r.status == 201, "multipart -> 201", r):
        n_ok += 1
        check_job(r.json() or {}, "multipart", status="pending", model=FAST, scale=2,
                  original_filename="chelsea_lr64.png")
        check("result_url" not in (r.json() or {}) and "error" not in (r.json() or {}),
              "a pending Job has no result_url nor error", r)
    a = job_id(r)
    r = create(p, k, SMALL2)  # defaults
    if check(r.status == 201, "multipart, no model nor scale -> 201", r):
        n_ok += 1
        check_job(r.json() or {}, "defaults", model="wavespeed-ai/real-esrgan", scale=4,
                  original_filename="astronaut_lr64.png")
    d = job_id(r)
    r = create_url(p, k, {"image_url": fx.url("/img/chelsea_lr64.png?v=1"), "model": "realesrgan-x4fast", "scale": 4})
    if check(r.status == 201, "JSON image_url (loopback allowed by --fetch-allow) -> 201", r):
        n_ok += 1
        check_job(r.json() or {}, "image_url", status="pending", model="realesrgan-x4fast", scale=4,
                  original_filename="chelsea_lr64.png")
    b = job_id(r)
    r = create_url(p, k, {"image_url": fx.url("/img/astronaut_lr64.png"), "model": "wavespeed-ai/image-upscaler"})
    if check(r.status == 201, "JSON image_url, alias wavespeed-ai/image-upscaler -> 201", r):
        n_ok += 1
        check_job(r.json() or {}, "alias", model="wavespeed-ai/image-upscaler", scale=4,
                  original_filename="astronaut_lr64.png")
    c = job_id(r)
    ctx["jobs"] = {}
    for jid, scale, what in ((a, 2, "multipart"), (b, 4, "image_url"), (c, 4, "alias"), (d, 4, "defaults")):
        if jid:
            j = complete_and_download(p, k, jid, scale, what)
            if j.get("status") == "completed":
                ctx["jobs"][what] = j
    ctx["create_key"] = k

    # bad requests: 400 INVALID_REQUEST, 415 for a file that is no image; none is charged
    img = fx.url("/img/chelsea_lr64.png")
    cases = [("JSON that does not parse", b"{not json", "application/json"),
             ("a JSON array", b"[]", "application/json"),
             ("JSON without image_url", b"{}", "application/json"),
             ("image_url not a string", json.dumps({"image_url": 5}).encode(), "application/json")]
    for scale in (1, 9, 2.5, "four", 0, -2):
        cases.append(("scale %r" % (scale,), json.dumps({"image_url": img, "scale": scale}).encode(), "application/json"))
    cases.append(("unknown model", json.dumps({"image_url": img, "model": "nope"}).encode(), "application/json"))
    for what, body, ctype in cases:
        r = call(p, "POST", "/v1/jobs", k, body, {"Content-Type": ctype})
        check(is_err(r, 400, "INVALID_REQUEST"), "POST /v1/jobs %s -> 400 INVALID_REQUEST" % what, r)
    body, ctype = multipart({"scale": "2"}, {})
    r = call(p, "POST", "/v1/jobs", k, body, {"Content-Type": ctype})
    check(is_err(r, 400, "INVALID_REQUEST"), "multipart without image -> 400", r)
    for scale in ("9", "1", "x"):
        r = create(p, k, SMALL, scale=scale)
        check(is_err(r, 400, "INVALID_REQUEST"), "multipart scale=%s -> 400" % scale, r)
    r = create(p, k, SMALL, model="no-such-model")
    check(is_err(r, 400, "INVALID_REQUEST"), "multipart unknown model -> 400", r)
    r = create(p, k, data=b"this is plain text, not an image\n" * 10, filename="notes.txt")
    check(is_err(r, 415, "UNSUPPORTED_IMAGE"), "multipart text file -> 415 UNSUPPORTED_IMAGE", r)
    check(credits(p, k) == 100 - n_ok, "only the %d created jobs were charged" % n_ok, credits(p, k))


# ---- 3. image_url refusals ------------------------------------------------------------------


def test_fetch(s, fx, ctx):
    k = mk(s, "fetch")
    p = s.port

    def post(url, **extra):
        return create_url(p, k, dict({"image_url": url, "model": FAST, "scale": 2}, **extra))

    # with --fetch-allow 127.0.0.0/8
    for what, path, want in (
            ("a redirect to 169.254.169.254", "/redirect?to=" + urllib.parse.quote("http://169.254.169.254/latest/meta-data"),
             (400, "URL_REFUSED")),
            ("a redirect to 10.1.2.3", "/redirect?to=" + urllib.parse.quote("http://10.1.2.3/"), (400, "URL_REFUSED")),
            ("a redirect to file:///etc/passwd", "/redirect?to=" + urllib.parse.quote("file:///etc/passwd"),
             (400, "URL_REFUSED")),
            ("a redirect loop", "/loop", (400, "URL_REFUSED")),
            ("6 redirects", "/chain/6", (400, "URL_REFUSED")),
            ("a 404", "/missing", (422, "URL_FETCH_FAILED")),
            ("a 500", "/status500", (422, "URL_FETCH_FAILED")),
            ("a text body", "/text", (422, "UNSUPPORTED_IMAGE")),
            ("a body over --fetch-max-bytes", "/big", (422, "URL_FETCH_FAILED")),
            ("a body over --fetch-max-bytes, no Content-Length", "/big-nolen", (422, "URL_FETCH_FAILED"))):
        r = post(fx.url(path))
        check(is_err(r, *want), "image_url %s -> %d %s" % (what, want[0], want[1]), r)
    r = post("http://127.0.0.1:%d/x.png" % free_port())
    check(is_err(r, 422, "URL_FETCH_FAILED"), "image_url, connection refused -> 422 URL_FETCH_FAILED", r)
    for what, path in (("no answer for 8 s", "/slow"), ("a byte every 0.5 s", "/drip")):
        t0 = time.time()
        r = post(fx.url(path))
        dt = time.time() - t0
        check(is_err(r, 422, "URL_FETCH_FAILED") and dt < 3 + 3 * SLOW,
              "image_url %s, --fetch-timeout 3 -> 422 URL_FETCH_FAILED in %.1fs" % (what, dt), r)
    r = post(fx.url("/plain.png"))
    check(r.status == 201, "image_url: a PNG served as text/plain -> 201", r)
    check((r.json() or {}).get("original_filename") == "plain.png", "image_url: original_filename plain.png", r)
    r = post(fx.url("/chain/2"))
    check(r.status == 201, "image_url: 2 redirects to a PNG -> 201", r)

    # a server without --fetch-allow refuses every address that is not public
    so = start("nofetch", *NO_RATE)
    if not so:
        return
    try:
        k2 = mk(so, "nofetch")
        fp = fx.port
        hits = fx.hits
        for url, word in (
                ("http://127.0.0.1:%d/img/chelsea_lr64.png" % fp, "loopback"),
                ("http://localhost:%d/img/chelsea_lr64.png" % fp, "loopback"),
                ("http://127.1.2.3:%d/img/chelsea_lr64.png" % fp, "loopback"),
                ("http://2130706433:%d/img/chelsea_lr64.png" % fp, None),
                ("http://0.0.0.0:%d/img/chelsea_lr64.png" % fp, None),
                ("http://[::ffff:127.0.0.1]:%d/img/chelsea_lr64.png" % fp, None),
                ("http://[::1]:%d/img/chelsea_lr64.png" % fp, "loopback"),
                ("http://169.254.169.254/latest/meta-data", "linklocal"),
                ("http://[fe80::1]/x.png", None),
                ("http://10.0.0.1/x.png", "private"),
                ("http://172.16.0.1/x.png", "private"),
                ("http://192.168.1.1/x.png", "private"),
                ("http://[fc00::1]/x.png", None),
                ("ftp://example.com/x.png", None),
                ("file:///etc/passwd", None),
                ("gopher://127.0.0.1:70/", None),
                ("not-a-url", None),
                ("http://", None),
                ("http:///x.png", None)):
            r = create_url(so.port, k2, {"image_url": url, "model": FAST, "scale": 2})
            msg = re.sub(r"[\s-]", "", (r.json() or {}).get("error", "").lower())
            check(is_err(r, 400, "URL_REFUSED") and (word is None or word in msg),
                  "no --fetch-allow: %s -> 400 URL_REFUSED%s" % (url, " naming " + word if word else ""), r)
        check(fx.hits == hits, "refused URLs were never fetched", fx.hits - hits)
    finally:
        so.stop()


# ---- 4. credits and quotas under concurrency ----------------------------------------------------


def burst(p, key, n, data):
    """n concurrent POST /v1/jobs; returns the replies (or exceptions), validated."""
    out = [None] * n
    body, h = create_body(data=data, model=FAST, scale=2)
    h = dict(h, **bearer(key))

    def one(i):
        try:
            out[i] = request(p, "POST", "/v1/jobs", body, h, timeout=60 * SLOW)
        except Exception as e:  # noqa: BLE001
            out[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90 * SLOW)
    for r in out:
        if isinstance(r, client.Resp):
            spec_check("POST", "/v1/jobs", r)
    return out


def test_credits(s, ctx):
    p = s.port
    k = mk(s, "burst", credits=10)
    out = burst(p, k, 100, png(16, 16))
    codes = [r.status if isinstance(r, client.Resp) else repr(r) for r in out]
    check(codes.count(201) == 10 and codes.count(402) == 90, "100 concurrent jobs on 10 credits: 10 x 201, 90 x 402",
          {c: codes.count(c) for c in set(codes)})
    refused = [r.json() or {} for r in out if isinstance(r, client.Resp) and r.status == 402]
    wrong = [j for j in refused if not (j.get("code") == "INSUFFICIENT_CREDITS" and j.get("credits") == 0
                                        and j.get("credits_needed") == 1)]
    check(refused and not wrong, "402: INSUFFICIENT_CREDITS, credits 0, credits_needed 1", wrong[:2])
    ids = [(r.json() or {}).get("id") for r in out if isinstance(r, client.Resp) and r.status == 201]
    check(len(set(ids)) == len(ids), "distinct job ids", ids)
    check(credits(p, k) == 0, "/users/me/credits: 0 left", credits(p, k))

    k = mk(s, "quota", quota=3)
    codes = []
    for i in range(5):
        r = create(p, k, data=png(16, 16), filename="q%d.png" % i, model=FAST, scale=2)
        codes.append(r.status)
        if i == 3:
            j = r.json() or {}
            check(is_err(r, 402, "QUOTA_EXCEEDED") and j.get("quota") == 3 and j.get("used") == 3,
                  "quota 3: the 4th job -> 402 QUOTA_EXCEEDED, quota 3, used 3", r)
    check(codes == [201, 201, 201, 402, 402], "quota 3: 3 x 201 then 402", codes)
    me = call(p, "GET", "/api/v1/users/me", k).json() or {}
    check(me.get("quota") == 3 and me.get("used") == 3, "users/me: quota 3, used 3", me)
    k = mk(s, "quota-pro", tier="pro", quota=5)
    r = create(p, k, data=png(16, 16), filename="q.png", model=FAST, scale=2)
    check(r.status == 201, "quota 5, pro: the first job (3 credits) -> 201", r)
    r = create(p, k, data=png(16, 16), filename="q.png", model=FAST, scale=2)
    j = r.json() or {}
    check(is_err(r, 402, "QUOTA_EXCEEDED") and j.get("quota") == 5 and j.get("used") == 3,
          "quota 5, pro: the second job -> 402 QUOTA_EXCEEDED, quota 5, used 3 (the quota counts credits)", r)
    k = mk(s, "quota-burst", quota=5)
    codes = [r.status if isinstance(r, client.Resp) else repr(r) for r in burst(p, k, 30, png(16, 16))]
    check(codes.count(201) == 5 and codes.count(402) == 25, "30 concurrent jobs on quota 5: 5 x 201, 25 x 402",
          {c: codes.count(c) for c in set(codes)})


# ---- 5. refunds (and PicShapes' view of a queued job) -------------------------------------------


def test_refunds(s, ctx):
    p = s.port
    big = busy(s)
    if not check(big, "refunds: a long job holds the one worker"):
        return
    k = mk(s, "refund", credits=2)
    ids = []
    for i in range(2):
        ids.append(job_id(create(p, k, data=png(16, 16), filename="r%d.png" % i, model=FAST, scale=2)))
    if not check(all(ids), "refunds: two jobs queued", ids):
        request(p, "POST", "/api/v1/cancel/" + big)
        return
    check(credits(p, k) == 0, "refunds: both credits spent", credits(p, k))

    # PicShapes: a queued job
    r = call(p, "GET", "/api/v1/jobs/" + ids[0])
    j = r.json() or {}
    check(r.status == 200 and j.get("status") in ("pending", "claimed") and j.get("id") == ids[0],
          "PicShapes jobs/{id}: a queued job is pending", r)
    check("model" not in j and j.get("upscale_model") == FAST and j.get("tier") == "basic"
          and j.get("width") == 32 and j.get("height") == 32 and "result_url" not in j and "completed_at" not in j,
          "PicShapes jobs/{id}: upscale_model, tier, output size; no model, result_url, completed_at", j)
    r = call(p, "GET", "/api/v1/jobs/%s/result" % ids[0])
    j = r.json() or {}
    check(r.status == 202 and isinstance(j.get("status"), str) and isinstance(j.get("message"), str),
          "PicShapes jobs/{id}/result: 202 {status, message} while queued", r)
    r = call(p, "GET", "/v1/jobs/" + ids[0], k)
    check((r.json() or {}).get("status") == "pending", "/v1/jobs/{id}: queued -> pending", r)

    # a cancelled queued job gives its credit back, once
    r = request(p, "POST", "/api/v1/cancel/" + ids[0], headers=bearer(k))
    check(r.status == 200, "cancel a queued job -> 200", r)
    check(wait_credits(p, k, 1) == 1, "cancel: the credit comes back (1)", credits(p, k))
    r = request(p, "POST", "/api/v1/cancel/" + ids[0], headers=bearer(k))
    check(r.status == 409, "cancel again -> 409", r)
    check(credits(p, k) == 1, "cancel again: still 1 credit", credits(p, k))
    j = call(p, "GET", "/v1/jobs/" + ids[0], k).json() or {}
    check(j.get("status") == "failed" and isinstance(j.get("error"), str) and j.get("error")
          and "result_url" not in j, "/v1/jobs/{id}: a cancelled job shows failed with an error", j)
    j = call(p, "GET", "/api/v1/jobs/" + ids[0]).json() or {}
    check(j.get("status") == "failed" and j.get("error_msg"), "PicShapes: a cancelled job is failed with error_msg", j)
    r = call(p, "GET", "/api/v1/jobs/%s/result" % ids[0])
    check(is_err(r, 409, "JOB_FAILED"), "PicShapes jobs/{id}/result of a failed job -> 409 JOB_FAILED", r)

    # a job that fails in the worker: its upload is spoiled on disk while it waits
    files = glob.glob(os.path.join(s.data, "uploads", ids[1] + "*"))
    if check(files, "refunds: the queued job's upload is in uploads/", os.listdir(os.path.join(s.data, "uploads"))):
        for f in files:
            with open(f, "wb") as fh:
                fh.write(b"no longer an image\n" * 10)
    r = request(p, "POST", "/api/v1/cancel/" + big)
    check(r.status in (200, 202), "cancel the long job", r)
    j = wait_job(p, k, ids[1], timeout=120)
    check(j.get("status") == "failed" and j.get("error"), "a job whose image fails in the worker -> failed", j)
    check(wait_credits(p, k, 2) == 2, "failed job: the credit comes back (2)", credits(p, k))
    time.sleep(0.5)
    check(credits(p, k) == 2, "failed job: refunded once (still 2)", credits(p, k))
    r = request(p, "POST", "/api/v1/cancel/" + ids[1], headers=bearer(k))
    check(r.status == 409 and credits(p, k) == 2, "cancel of the failed job -> 409, no second refund", r)
    ctx["failed_job"] = ids[1]


# ---- 6. tiers ---------------------------------------------------------------------------------------


def test_tiers(s, ctx):
    p = s.port
    r = call(p, "GET", "/api/v1/tiers")
    t = (r.json() or {}).get("tiers", {})
    want = {"basic": (4096, 4096, 1), "pro": (8192, 8192, 3), "premium": (16384, 16384, 5)}
    got = {n: (v.get("max_width"), v.get("max_height"), v.get("credits")) for n, v in t.items()}
    check(r.status == 200 and got == want, "tiers: the default table", got)
    check(all(v.get("name") == n and isinstance(v.get("description"), str) for n, v in t.items()),
          "tiers: name and description", t)

    kb = mk(s, "basic", credits=100)
    for w, h, scale, ok in ((64, 64, 4, True), (1100, 1100, 4, False), (1024, 16, 4, True), (1025, 16, 4, False),
                            (16, 1025, 4, False), (1100, 8, 3, True)):
        r = create(p, kb, data=png(w, h), filename="t.png", model=FAST, scale=scale)
        what = "basic: %dx%d x%d (%dx%d)" % (w, h, scale, w * scale, h * scale)
        if ok:
            check(r.status == 201, what + " -> 201", r)
        else:
            check(is_err(r, 400, "TIER_LIMIT_EXCEEDED"), what + " -> 400 TIER_LIMIT_EXCEEDED", r)
    check(credits(p, kb) == 97, "basic: 1 credit a job, refusals free (97 left)", credits(p, kb))
    r = submit(p, data=png(1100, 1100), filename="t.png", model_name=FAST, scale=4, headers=bearer(kb))
    check(is_err(r, 400, "TIER_LIMIT_EXCEEDED"), "Upscale Service with a basic key: 4400 px -> 400 TIER_LIMIT_EXCEEDED",
          r)

    kp = mk(s, "pro", tier="pro", credits=10)
    r = create(p, kp, data=png(64, 64), filename="t.png", model=FAST, scale=4)
    check(r.status == 201 and credits(p, kp) == 7, "pro: a job costs 3 credits", (r, credits(p, kp)))
    r = create(p, kp, data=png(1100, 8), filename="t.png", model=FAST, scale=4)
    check(r.status == 201 and credits(p, kp) == 4, "pro: 4400x32 -> 201 (max 8192)", (r, credits(p, kp)))
    r = submit(p, data=png(16, 16), filename="t.png", model_name=FAST, scale=2, headers=bearer(kp))
    check(r.status == 202 and credits(p, kp) == 1, "Upscale Service with a pro key: charged 3", (r, credits(p, kp)))
    r = create(p, kp, data=png(16, 16), filename="t.png", model=FAST, scale=2)
    j = r.json() or {}
    check(is_err(r, 402, "INSUFFICIENT_CREDITS") and j.get("credits") == 1 and j.get("credits_needed") == 3,
          "pro with 1 credit -> 402, credits 1, credits_needed 3", r)
    kx = mk(s, "premium", tier="premium", credits=10)
    r = create(p, kx, data=png(16, 16), filename="t.png", model=FAST, scale=2)
    check(r.status == 201 and credits(p, kx) == 5, "premium: a job costs 5 credits", (r, credits(p, kx)))
    me = call(p, "GET", "/api/v1/users/me", kx).json() or {}
    check(me.get("tier") == "premium", "users/me: tier premium", me)

    # priority (an upres extension): any key may lower its jobs, raising them is the tier's max_priority
    r = create(p, kb, data=png(16, 16), filename="t.png", model=FAST, scale=2, priority=1)
    check(is_err(r, 400, "PRIORITY_NOT_ALLOWED") and (r.json() or {}).get("max_priority") == 0 and
          credits(p, kb) == 97, "basic: priority 1 -> 400 PRIORITY_NOT_ALLOWED, max_priority 0, nothing charged", r)
    r = create(p, kb, data=png(16, 16), filename="t.png", model=FAST, scale=2, priority=-3)
    check(r.status == 201 and (r.json() or {}).get("priority") == -3 and credits(p, kb) == 96,
          "basic: priority -3 -> 201, the job shows it", r)
    r = create(p, kb, data=png(16, 16), filename="t.png", model=FAST, scale=2, priority="high")
    check(is_err(r, 400, "INVALID_REQUEST"), "priority 'high' -> 400 INVALID_REQUEST", r)
    r = create(p, kb, data=png(16, 16), filename="t.png", model=FAST, scale=2, priority=11)
    check(is_err(r, 400, "INVALID_REQUEST") and credits(p, kb) == 96, "priority 11 -> 400 INVALID_REQUEST", r)
    r = create(p, kx, data=png(16, 16), filename="t.png", model=FAST, scale=2, priority=5)
    check(r.status == 201 and (r.json() or {}).get("priority") == 5, "premium: priority 5 -> 201", r)

    # a custom table
    table = {"tiers": {"basic": {"name": "basic", "description": "Small", "max_width": 200, "max_height": 150,
                                 "credits": 2},
                       "pro": {"name": "pro", "description": "Medium", "max_width": 400, "max_height": 400, "credits": 4},
                       "premium": {"name": "premium", "description": "Large", "max_width": 1000, "max_height": 1000,
                                   "credits": 7}}}
    path = os.path.join(TMP, "tiers.json")
    with open(path, "w") as f:
        json.dump(table, f)
    st = start("tiers", "--tiers", path, *NO_RATE)
    if not st:
        return
    try:
        r = call(st.port, "GET", "/api/v1/tiers")
        got = {n: {f: v.get(f) for f in ("name", "description", "max_width", "max_height", "credits")}
               for n, v in ((r.json() or {}).get("tiers") or {}).items()}
        check(r.status == 200 and got == table["tiers"], "--tiers FILE: /api/v1/tiers serves it", got)
        kb = mk(st, "custom-basic", credits=10)
        for w, h, scale, ok in ((64, 64, 2, True), (64, 32, 3, True), (80, 32, 3, False), (64, 64, 3, False)):
            r = create(st.port, kb, data=png(w, h), filename="t.png", model=FAST, scale=scale)
            what = "--tiers basic 200x150: %dx%d x%d" % (w, h, scale)
            check(r.status == 201 if ok else is_err(r, 400, "TIER_LIMIT_EXCEEDED"),
                  what + (" -> 201" if ok else " -> 400 TIER_LIMIT_EXCEEDED"), r)
        check(credits(st.port, kb) == 6, "--tiers: basic costs 2 (6 left)", credits(st.port, kb))
        kp = mk(st, "custom-pro", tier="pro", credits=10)
        r = create(st.port, kp, data=png(64, 64), filename="t.png", model=FAST, scale=4)
        check(r.status == 201 and credits(st.port, kp) == 6, "--tiers: pro 256x256 -> 201, costs 4",
              (r, credits(st.port, kp)))
    finally:
        st.stop()


# ---- 7. rate limits (three phases: the window is a real minute) -----------------------------------


def rate_start(ctx):
    s = start("rate", "--rate-per-minute", "5", "--rate-per-day", "0")
    ctx["rate"] = s
    if not s:
        return
    a, b = mk(s, "rate-a"), mk(s, "rate-b")
    ctx["rate_keys"] = (a, b)
    codes, last = [], None
    ctx["rate_t0"] = time.time()
    for _ in range(8):
        last = call(s.port, "GET", "/v1/jobs", a)
        codes.append(last.status)
        if len(codes) == 5:
            ctx["rate_t1"] = time.time()  # the 5 counted requests are all in by now
    check(codes == [200] * 5 + [429] * 3, "rate 5/min: a burst of 8 -> 5 x 200, 3 x 429", codes)
    j = last.json() or {}
    ra = last.headers.get("retry-after", "")
    check(is_err(last, 429, "RATE_LIMITED") and ra.isdigit() and 1 <= int(ra) <= 60 and j.get("retry_after") == int(ra),
          "429: RATE_LIMITED, Retry-After 1..60 = retry_after", (ra, last))
    msg = validate(j, PS, PS["paths"]["/api/v1/jobs"]["post"]["responses"]["429"]["content"]["application/json"]["schema"])
    check(not msg, "429 body matches PicShapes' 429 schema", msg)
    r = call(s.port, "GET", "/api/v1/users/me", a)
    check(is_err(r, 429, "RATE_LIMITED"), "rate: /api/v1/users/me is limited too", r)
    r = create(s.port, a, data=png(16, 16), filename="r.png", model=FAST, scale=2)
    check(is_err(r, 429, "RATE_LIMITED") and r.headers.get("retry-after", "").isdigit(),
          "rate: POST /v1/jobs is limited too", r)
    r = request(s.port, "GET", "/api/v1/status/" + str(uuid.uuid4()), headers=bearer(a))
    check(is_err(r, 429, "RATE_LIMITED"), "rate: the Upscale Service with the key is limited too", r)
    check(call(s.port, "GET", "/v1/jobs", b).status == 200, "rate: another key is unaffected")


def rate_middle(ctx):
    """At least 10 s after the burst: refusals say how long is left, and are not counted."""
    s = ctx.get("rate")
    if not s or "rate_keys" not in ctx:
        return
    wait = ctx["rate_t0"] + 10 - time.time()
    if wait > 0:
        time.sleep(wait)
    el = time.time() - ctx["rate_t0"]
    if el > 50:
        print("skip rate middle phase: %.0f s after the burst" % el)
        return
    ctx["rate_mid"] = True
    for _ in range(2):
        r = call(s.port, "GET", "/v1/jobs", ctx["rate_keys"][0])
        ra = (r.json() or {}).get("retry_after")
        check(is_err(r, 429, "RATE_LIMITED") and isinstance(ra, int) and abs(ra - (60 - el)) <= 2,
              "rate, %.0f s after the burst: 429 with retry_after ~%.0f" % (el, 60 - el), r)


def rate_finish(ctx):
    s = ctx.get("rate")
    if not s or "rate_keys" not in ctx:
        return
    try:
        wait = ctx.get("rate_t1", ctx["rate_t0"]) + 60.5 - time.time()
        if wait > 0:
            print("  (waiting %.0f s for the rate window)" % wait)
            time.sleep(min(wait, 61))
        codes = [call(s.port, "GET", "/v1/jobs", ctx["rate_keys"][0]).status for _ in range(6)]
        check(codes == [200] * 5 + [429], "rate, after Retry-After: 5 x 200 again, then 429%s" % (
            " (refused requests were not counted)" if ctx.get("rate_mid") else ""), codes)
    finally:
        s.stop()
    sd = start("daily", "--rate-per-minute", "0", "--rate-per-day", "3")
    if not sd:
        return
    try:
        k = mk(sd, "daily")
        codes, last = [], None
        for _ in range(4):
            last = call(sd.port, "GET", "/v1/jobs", k)
            codes.append(last.status)
        ra = last.headers.get("retry-after", "")
        j = last.json() or {}
        check(codes == [200, 200, 200, 429], "rate 3/day: 3 x 200 then 429", codes)
        check(is_err(last, 429, "RATE_LIMITED") and ra.isdigit() and 60 < int(ra) <= 86400
              and j.get("retry_after") == int(ra), "daily 429: Retry-After = retry_after > 60", (ra, last))
        check(call(sd.port, "GET", "/v1/jobs", mk(sd, "daily-2")).status == 200, "daily: another key is unaffected")
    finally:
        sd.stop()


# ---- 8. listing: cursors and filters ---------------------------------------------------------------


def page(p, key, query):
    r = call(p, "GET", "/v1/jobs?" + query, key)
    return r, r.json() or {}


def test_paging(s, ctx):
    p = s.port
    kp, kq = mk(s, "pager"), mk(s, "other")
    tiny = png(16, 16)

    def new(key, n, tag):
        out = []
        for i in range(n):
            out.append(job_id(create(p, key, data=tiny, filename="%s%d.png" % (tag, i), model=FAST, scale=2)))
            time.sleep(0.005)
        return out

    orig, other = [], []
    for i in range(25):
        orig += new(kp, 1, "p")
        other += new(kq, 1, "q")
    if not check(all(orig) and all(other), "paging: 25 + 25 jobs created"):
        return
    newest_first = orig[::-1]
    r, j1 = page(p, kp, "limit=10")
    ids1 = [x.get("id") for x in j1.get("data", [])]
    check(r.status == 200 and ids1 == newest_first[:10] and j1.get("has_more") is True
          and isinstance(j1.get("next_cursor"), str) and j1.get("next_cursor"),
          "page 1: the 10 newest, has_more, next_cursor", (r.status, ids1, j1.get("has_more")))
    added = new(kp, 3, "n")
    r, j2 = page(p, kp, "limit=10&cursor=" + urllib.parse.quote(j1.get("next_cursor") or ""))
    ids2 = [x.get("id") for x in j2.get("data", [])]
    check(r.status == 200 and ids2 == newest_first[10:20] and j2.get("has_more") is True and j2.get("next_cursor"),
          "page 2: the next 10 older, none of the 3 added since", (r.status, ids2, j2.get("has_more")))
    added += new(kp, 2, "m")
    r, j3 = page(p, kp, "limit=10&cursor=" + urllib.parse.quote(j2.get("next_cursor") or ""))
    ids3 = [x.get("id") for x in j3.get("data", [])]
    check(r.status == 200 and ids3 == newest_first[20:] and j3.get("has_more") is False and "next_cursor" not in j3,
          "page 3: the last 5, has_more false, no next_cursor", (r.status, ids3, j3))
    union = ids1 + ids2 + ids3
    check(union == newest_first and not set(union) & set(added), "pages: exactly the 25, newest first, no overlap")
    check(not set(union) & set(other), "pages: never another key's jobs")
    r, j = page(p, kq, "limit=10&cursor=" + urllib.parse.quote(j1.get("next_cursor") or ""))
    check(r.status == 400 or (r.status == 200 and not {x.get("id") for x in j.get("data", [])} - set(other)),
          "another key with this key's cursor: 400 or its own jobs only", r)

    everything = newest_first[::-1] + added  # oldest first
    r, j = page(p, kp, "")
    check(r.status == 200 and len(j.get("data", [])) == 20 and j.get("has_more") is True,
          "default limit 20", (r.status, len(j.get("data", []))))
    r, j = page(p, kp, "limit=100")
    got = [x.get("id") for x in j.get("data", [])]
    check(got == everything[::-1] and j.get("has_more") is False, "limit=100: all 30, newest first", got)
    stamps = [parse_time(x.get("created_at")) for x in j.get("data", [])]
    check(all(a is not None and b is not None and a >= b for a, b in zip(stamps, stamps[1:])),
          "created_at never increases down the list", stamps)

    # status filters: wait for the last one (the queue is first in, first out)
    r, j = page(p, kp, "status=pending&limit=100")
    check(r.status == 200 and all(x.get("status") == "pending" for x in j.get("data", [])),
          "status=pending: only pending jobs", [x.get("status") for x in j.get("data", [])])
    wait_job(p, kp, everything[-1], timeout=120)
    r, j = page(p, kp, "status=completed&limit=100")
    got = [x.get("id") for x in j.get("data", [])]
    check(r.status == 200 and got == everything[::-1], "status=completed: all 30 once done", len(got))
    r, j = page(p, kp, "status=failed")
    check(r.status == 200 and j.get("data") == [] and j.get("has_more") is False, "status=failed: none", j)

    # before / after a middle job
    full = {x["id"]: x for x in (page(p, kp, "limit=100")[1].get("data") or []) if "id" in x}
    mid = full.get(orig[12], {})
    t_mid = parse_time(mid.get("created_at"))
    if check(t_mid is not None, "the middle job has a created_at", mid):
        older = [i for i in everything[::-1] if parse_time(full[i]["created_at"]) < t_mid]
        newer = [i for i in everything[::-1] if parse_time(full[i]["created_at"]) > t_mid]
        r, j = page(p, kp, "limit=100&before=" + urllib.parse.quote(mid["created_at"]))
        check(r.status == 200 and [x.get("id") for x in j.get("data", [])] == older and len(older) == 12,
              "before=<created_at of job 13>: the 12 older", (r.status, len(j.get("data", []))))
        r, j = page(p, kp, "limit=100&after=" + urllib.parse.quote(mid["created_at"]))
        check(r.status == 200 and [x.get("id") for x in j.get("data", [])] == newer and len(newer) == 17,
              "after=<created_at of job 13>: the 17 newer", (r.status, len(j.get("data", []))))
        lo, hi = full[orig[5]]["created_at"], full[orig[20]]["created_at"]
        r, j = page(p, kp, "limit=100&after=%s&before=%s" % (urllib.parse.quote(lo), urllib.parse.quote(hi)))
        check(r.status == 200 and [x.get("id") for x in j.get("data", [])] == orig[6:20][::-1],
              "after=job 6 & before=job 21: jobs 7..20", (r.status, len(j.get("data", []))))
        shifted = datetime.datetime.fromtimestamp(t_mid, datetime.timezone(datetime.timedelta(hours=2)))
        iso = shifted.isoformat(timespec="milliseconds")
        r, j = page(p, kp, "limit=100&before=" + urllib.parse.quote(iso))
        check(r.status == 200 and [x.get("id") for x in j.get("data", [])] == older,
              "before= the same instant written +02:00 (%s)" % iso, (r.status, len(j.get("data", []))))
        r, j = page(p, kp, "limit=5&before=" + urllib.parse.quote(mid["created_at"]))
        r2, j2 = page(p, kp, "limit=100&before=%s&cursor=%s" % (urllib.parse.quote(mid["created_at"]),
                                                                  urllib.parse.quote(j.get("next_cursor") or "")))
        check([x.get("id") for x in j.get("data", []) + j2.get("data", [])] == older,
              "before= with a cursor pages within the filter", (r.status, r2.status))

    # models: our name and the alias select the same jobs
    km = mk(s, "models")
    mine = {}
    for m in ("wavespeed-ai/image-upscaler", "realesrgan-x4fast", FAST, "wavespeed-ai/image-upscaler"):
        mine[job_id(create(p, km, data=tiny, filename="m.png", model=m, scale=4))] = m
    fast4 = [i for i, m in mine.items() if m != FAST]
    for m, want in (("wavespeed-ai/image-upscaler", fast4), ("realesrgan-x4fast", fast4),
                    (FAST, [i for i, m in mine.items() if m == FAST]), ("wavespeed-ai/real-esrgan", []),
                    ("realesrgan-x4plus", [])):
        r, j = page(p, km, "limit=100&model=" + urllib.parse.quote(m))
        got = [x.get("id") for x in j.get("data", [])]
        check(r.status == 200 and sorted(got) == sorted(want), "model=%s: %d jobs" % (m, len(want)), got)
    r, j = page(p, km, "limit=100")
    check({x.get("id"): x.get("model") for x in j.get("data", [])} == mine, "each Job echoes the model name used", j)

    # bad parameters
    for q in ("status=done", "status=cancelled", "limit=0", "limit=101", "limit=abc", "limit=10.5", "limit=-1",
              "cursor=garbage", "cursor=" + base64.urlsafe_b64encode(b"{\"x\":1}").decode(), "before=yesterday",
              "after=2026-13-45T00:00:00Z", "before=1700000000"):
        r, j = page(p, kp, q)
        check(is_err(r, 400, "INVALID_REQUEST"), "GET /v1/jobs?%s -> 400 INVALID_REQUEST" % q, r)
    # one key's job is not another's
    r = call(p, "GET", "/v1/jobs/" + other[0], kp)
    check(r.status == 404, "GET /v1/jobs/{another key's job} -> 404", r)
    r = call(p, "GET", "/v1/jobs/" + other[0], kq)
    check(r.status == 200, "GET /v1/jobs/{own job} -> 200", r)
    for jid in (str(uuid.uuid4()), "not-a-uuid"):
        r = call(p, "GET", "/v1/jobs/" + jid, kp)
        check(r.status == 404, "GET /v1/jobs/%s -> 404" % jid, r)


# ---- 9. signed result links -------------------------------------------------------------------


def test_signed(s, ctx):
    p = s.port
    jobs = ctx.get("jobs", {})
    a, b = jobs.get("multipart"), jobs.get("image_url")
    if not check(a and b, "signed links: two completed jobs from the create tests"):
        return
    ua, ub = a["result_url"], b["result_url"]
    ma = re.search(r"/v1/results/([^?]+)\?expires=(\d+)&sig=([0-9a-f]{64})$", ua)
    mb = re.search(r"/v1/results/([^?]+)\?expires=(\d+)&sig=([0-9a-f]{64})$", ub)
    if not check(ma and mb, "signed links: parse", (ua, ub)):
        return
    ida, exa, sga = ma.groups()
    idb = mb.group(1)
    # upres-ai spec: valid for 1 hour, although this server keeps Upscale Service results 900 s (the default)
    left = int(exa) - time.time()
    check(3600 - 120 * SLOW < left <= 3600, "a result link is valid about an hour (retention 900 s)", "%.0f s" % left)
    sig2 = sga[:-1] + ("0" if sga[-1] != "0" else "1")
    sig3 = ("f" if sga[0] != "f" else "e") + sga[1:]
    for what, path in (("a hex digit of sig changed (last)", "/v1/results/%s?expires=%s&sig=%s" % (ida, exa, sig2)),
                       ("a hex digit of sig changed (first)", "/v1/results/%s?expires=%s&sig=%s" % (ida, exa, sig3)),
                       ("expires + 1", "/v1/results/%s?expires=%d&sig=%s" % (ida, int(exa) + 1, sga)),
                       ("expires - 1", "/v1/results/%s?expires=%d&sig=%s" % (ida, int(exa) - 1, sga)),
                       ("job A's sig on job B", "/v1/results/%s?expires=%s&sig=%s" % (idb, exa, sga))):
        r = request(p, "GET", path)
        spec_check("GET", path, r)
        check(is_err(r, 403, "FORBIDDEN"), "result link, %s -> 403 FORBIDDEN" % what, r)
    for what, path in (("no sig", "/v1/results/%s?expires=%s" % (ida, exa)), ("no query", "/v1/results/%s" % ida)):
        r = request(p, "GET", path)
        spec_check("GET", path, r)
        check(r.status in (400, 403), "result link, %s -> 400 or 403" % what, r)
    r = fetch_result(p, ua)
    check(r.status == 200 and r.headers.get("content-type", "").startswith("image/") and png_size(r.body) == (128, 128),
          "the untouched link -> 200 image (no key needed)", (r.status, r.headers.get("content-type")))
    r = fetch_result(p, ua)
    check(r.status == 200, "the link works more than once", r.status)

    host = "http://files.example.test:8123"
    # a secret shared by servers of one database (UPRES_SECRET): this server's links are signed with it
    shared = os.urandom(32)
    st = start("ttl", "--result-url-ttl", "1", "--public-url", host, *NO_RATE, env={"UPRES_SECRET": shared.hex()})
    if not st:
        return
    try:
        k = mk(st, "ttl")
        jid = job_id(create(st.port, k, data=png(16, 16), filename="t.png", model=FAST, scale=2))
        j = wait_job(st.port, k, jid, timeout=60) if jid else {}
        if check(j.get("status") == "completed", "ttl server: job completes", j):
            url = j.get("result_url") or ""
            m = re.match(r"^%s/v1/results/%s\?expires=(\d+)&sig=[0-9a-f]{64}$" % (re.escape(host), jid), url)
            check(m is not None, "--public-url: the link starts with it", url)
            if m:
                want = hmac.new(shared, ("%s.%s" % (jid, m.group(1))).encode(), hashlib.sha256).hexdigest()
                check(url.endswith("&sig=" + want), "UPRES_SECRET: the link is signed with that secret", url)
                check(int(m.group(1)) <= time.time() + 2, "--result-url-ttl 1: expires within 1 s", url)
                time.sleep(max(0.0, int(m.group(1)) + 2 - time.time()))
                r = fetch_result(st.port, url)
                spec_check("GET", "/v1/results/x", r)
                check(r.status == 403 and (r.json() or {}).get("code") in ("LINK_EXPIRED", "FORBIDDEN"),
                      "an expired link -> 403", r)
    finally:
        st.stop()


# ---- 10. PicShapes ---------------------------------------------------------------------------------


def test_picshapes(s, ctx):
    p = s.port
    ku, kn = mk(s, "profile-user", credits=5), mk(s, "profile-unlimited")
    ids = {k.get("name"): k.get("id") for k in (s.keys_list() or [])}
    r = call(p, "GET", "/api/v1/users/me", ku)
    me = r.json() or {}
    check(r.status == 200 and me.get("id") == ids.get("profile-user") and me.get("display_name") == "profile-user"
          and me.get("credits") == 5 and me.get("role") == "user" and me.get("tier") == "basic"
          and isinstance(me.get("used"), int) and parse_time(me.get("created_at")) is not None,
          "users/me: id, display_name, credits, role, tier, used, created_at", me)
    me = call(p, "GET", "/api/v1/users/me", ku).json() or {}
    check(parse_time(me.get("last_login_at")) is not None, "users/me: last_login_at once used", me)
    r = call(p, "GET", "/api/v1/users/me", kn)
    me = r.json() or {}
    check(r.status == 200 and "credits" not in me and me.get("display_name") == "profile-unlimited",
          "users/me, unlimited: no credits field", me)
    r = call(p, "GET", "/api/v1/users/me/credits", ku)
    check(r.status == 200 and r.json() == {"credits": 5, "user_id": ids.get("profile-user")},
          "users/me/credits: {credits, user_id}", r)
    r = call(p, "GET", "/api/v1/users/me/credits", kn)
    j = r.json() or {}
    check(r.status == 200 and "credits" not in j and j.get("unlimited") is True
          and j.get("user_id") == ids.get("profile-unlimited"), "users/me/credits, unlimited", r)

    done = ctx.get("jobs", {}).get("multipart")
    if check(done, "PicShapes: a completed job from the create tests"):
        r = call(p, "GET", "/api/v1/jobs/" + done["id"])
        j = r.json() or {}
        times = [parse_time(j.get(f)) for f in ("created_at", "started_at", "completed_at")]
        check(r.status == 200 and j.get("status") == "completed" and j.get("id") == done["id"]
              and j.get("width") == 128 and j.get("height") == 128 and j.get("tier") == "basic"
              and j.get("upscale_model") == FAST and "model" not in j and "error_msg" not in j,
              "PicShapes jobs/{id}: completed, 128x128, basic, upscale_model", j)
        check(None not in times and times[0] <= times[1] <= times[2], "created_at <= started_at <= completed_at", times)
        if j.get("result_url"):
            rr = fetch_result(p, j["result_url"])
            check(rr.status == 200 and png_size(rr.body) == (128, 128), "PicShapes result_url downloads", rr.status)
        else:
            check(False, "PicShapes jobs/{id}: result_url when completed", j)
        r = call(p, "GET", "/api/v1/jobs/%s/result" % done["id"])
        j = r.json() or {}
        check(r.status == 200 and isinstance(j.get("result_url"), str), "jobs/{id}/result: 200 {result_url}", r)
        if j.get("result_url"):
            check(fetch_result(p, j["result_url"]).status == 200, "jobs/{id}/result's link downloads")
        r = call(p, "GET", "/api/v1/jobs/" + done["id"], ctx.get("create_key"))
        check(r.status == 200, "jobs/{id} with the owner's key -> 200", r)
        for path in ("/api/v1/jobs/" + done["id"], "/api/v1/jobs/%s/result" % done["id"]):
            r = call(p, "GET", path, ku)
            check(is_err(r, 404, "NOT_FOUND"), "GET %s with another key -> 404 (as on the Upscale Service)" % path, r)
        r = call(p, "GET", "/api/v1/jobs/" + done["id"], unknown_key())
        check(is_err(r, 401, "UNAUTHORIZED"), "jobs/{id} with an unknown key -> 401", r)
    for path in ("/api/v1/jobs/" + str(uuid.uuid4()), "/api/v1/jobs/%s/result" % uuid.uuid4(),
                 "/api/v1/jobs/not-a-uuid"):
        r = call(p, "GET", path)
        check(r.status == 404, "GET %s -> 404" % path, r)
    if ctx.get("failed_job"):
        r = call(p, "GET", "/api/v1/jobs/%s/result" % ctx["failed_job"])
        check(is_err(r, 409, "JOB_FAILED"), "jobs/{id}/result of a job failed in the worker -> 409 JOB_FAILED", r)
        j = call(p, "GET", "/api/v1/jobs/" + ctx["failed_job"]).json() or {}
        check(j.get("status") == "failed" and j.get("error_msg"), "PicShapes: failed job with error_msg", j)
    r = call(p, "POST", "/api/v1/jobs", ku, json.dumps({"prompt": "a cat"}).encode(), {"Content-Type": "application/json"})
    check(is_err(r, 501, "NOT_IMPLEMENTED"), "POST /api/v1/jobs -> 501 NOT_IMPLEMENTED", r)

    r = request(p, "GET", "/api/v1/models")
    models = (r.json() or {}).get("models")
    # the Upscale Service's list, not PicShapes' map: each entry is checked as a PicShapes ModelInfo
    ok = isinstance(models, list) and models and all(
        m.get("available") is True and m.get("worker_count") == 1 for m in models)
    check(r.status == 200 and ok, "/api/v1/models: available true, worker_count 1 (one worker)", models)
    for m in models or []:
        msg = validate(m, PS, {"$ref": "#/components/schemas/ModelInfo"})
        if msg:
            spec_fail("/api/v1/models entry %s (ModelInfo)" % m.get("name"), msg)


# ---- main ------------------------------------------------------------------------------------------


def test_fetch_background(fx, ctx):
    """A slow image_url holds no HTTP thread: with one HTTP thread, other requests are answered while the
    image server holds its answer back, and the held fetch then completes. With one fetch thread and room
    for one waiting submission, a third submission meanwhile gets 503 with Retry-After."""
    s = start("onethread", "--http-threads", "1", "--fetch-threads", "1", "--submit-queue", "1",
              "--fetch-per-key", "10", "--fetch-allow", "127.0.0.0/8", "--fetch-timeout", "30", *NO_RATE)
    if not s:
        return
    k = mk(s, "held")
    done = {}

    def held_post(i):
        done[i] = create_url(s.port, k, {"image_url": fx.url("/hold"), "model": FAST, "scale": 2})

    fx.release.clear()
    hits = fx.hits
    first = threading.Thread(target=held_post, args=(0,), daemon=True)
    first.start()
    for _ in range(200):  # until the fetch has reached the image server (at most 10 s)
        if fx.hits > hits:
            break
        time.sleep(0.05)
    # were the fetch on the only HTTP thread, these would wait for the release, which comes after them
    try:
        health = request(s.port, "GET", "/api/v1/health", timeout=10 * SLOW).status
        listed = call(s.port, "GET", "/v1/jobs", k, timeout=10 * SLOW).status
    except OSError as e:
        health = listed = repr(e)
    check(health == 200 and listed == 200 and first.is_alive(),
          "one HTTP thread: /health and GET /v1/jobs answer while an image_url fetch is held",
          "health %s, list %s" % (health, listed))
    # the fetch thread is held: of two more submissions, one waits and the other is refused at once
    more = [threading.Thread(target=held_post, args=(i,), daemon=True) for i in (1, 2)]
    for t in more:
        t.start()
    for _ in range(int(200 * SLOW)):  # until one of them is answered (at most 10 s x SLOW)
        if 1 in done or 2 in done:
            break
        time.sleep(0.05)
    refused = [done[i] for i in (1, 2) if i in done]
    r = refused[0] if len(refused) == 1 else None
    check(r is not None and is_err(r, 503, "UNAVAILABLE") and r.headers.get("retry-after") == "1",
          "--submit-queue 1: with the one fetch thread busy and one waiting, a third -> 503, Retry-After 1",
          refused)
    fx.release.set()
    for t in [first] + more:
        t.join(timeout=30 * SLOW)
    codes = sorted(done[i].status if i in done else 0 for i in (0, 1, 2))
    check(codes == [201, 201, 503], "the held fetch and the waiting one then complete: 201, 201", codes)
    s.stop()


def main():
    for f in (UPRES, SMALL, SMALL2, LARGE):
        if not os.path.exists(f):
            print("missing %s" % f)
            return 1
    t0 = time.time()
    fx = Fixture()
    ctx = {}
    try:
        run(rate_start, ctx)
        # (--max-conns-per-ip: the credits test opens 100 connections at once)
        s = start("main", "--fetch-allow", "127.0.0.0/8", "--fetch-max-bytes", "100000", "--fetch-timeout", "3",
                  "--max-conns-per-ip", "256", *NO_RATE)
        if s:
            run(test_auth, s, ctx)
            run(rate_middle, ctx)
            run(test_create, s, fx, ctx)
            run(test_fetch, s, fx, ctx)
            run(test_signed, s, ctx)
            run(test_credits, s, ctx)
            run(test_refunds, s, ctx)
            run(test_tiers, s, ctx)
            run(test_paging, s, ctx)
            run(test_picshapes, s, ctx)
            s.stop()
        run(test_fetch_background, fx, ctx)
        run(rate_finish, ctx)
    finally:
        for s in SERVERS:
            rc = s.stop()  # the exit status, also of one stopped before
            check(rc == 0, "server %s: exit status 0 after SIGTERM (no sanitizer report)" % s.name, rc)
        fx.close()
    print("  (%d JSON replies validated against the specs)" % spec_seen["validated"])
    if tally.failed:
        for s in SERVERS:
            print("---- %s log (tail) ----\n%s" % (s.name, s.tail(2000)))
    shutil.rmtree(TMP, ignore_errors=True)
    print("%d passed, %d failed (%.1fs)" % (tally.passed, tally.failed, time.time() - t0))
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
