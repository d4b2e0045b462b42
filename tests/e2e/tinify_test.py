#!/usr/bin/env python3
"""tinify_test.py - the Tinify.ai dialect at the server root, point by point
of the checklist that ends ../shared/docs/tinify-contract.md.

Run by ctest as: python3 tests/e2e/tinify_test.py PATH/TO/upres
with UPRES_SHARED_DATA, UPRES_TEST_MODELS (see client.py).

Two servers on loopback: the main one (the fast model as the Tinify
model, an admin token, a 1-megapixel output limit, an 8 MB upload limit),
and a small one with 3 guest credits a day for the credit checks. Every
JSON reply is validated against ../shared/specs/tinify.openapi.json (the
schema for its path, method and status; OpenAPI 3.1, draft 2020-12), and
every error reply must have {success: false, error, code, detail}, a 422
FastAPI's HTTPValidationError. Images that come back are decoded (by their
headers: PNG, JPEG, WebP) and their sizes checked. Streams are read as an
EventSource reads them: retry, named events, data lines.

Every wait is bounded in count and time. Prints "N passed, N failed".
"""
import json
import os
import re
import struct
import sys
import time
import urllib.parse
import uuid
import zlib

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import (SHARED, SLOW, Server, Stream, check, make_tmp, multipart, png, request, run,  # noqa: E402
                    tally)
from spec import parse_time, response_schema, validate  # noqa: E402

SPECS = os.environ.get("UPRES_SPECS", os.path.join(os.path.dirname(os.path.abspath(SHARED)), "specs"))
with open(os.path.join(SPECS, "tinify.openapi.json")) as _f:
    TZ = json.load(_f)
FAST = "realesr-animevideov3"
ADMIN = "admin-secret-for-tests"
TMP = make_tmp("upres-tinify-test-")
SMALL = os.path.join(SHARED, "ref/in/chelsea_lr64.png")  # 64 x 64 RGB

ERROR = {"type": "object", "required": ["success", "error", "code", "detail"],
         "properties": {"success": {"const": False}, "error": {"type": "string", "minLength": 1},
                        "code": {"type": "string", "pattern": "^[A-Z][A-Z_]*$"}}}
SPEC_PATHS = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$"), p) for p in
              sorted(TZ["paths"], key=lambda p: (p.count("{"), -len(p)))]


def spec_path(path):
    return next((sp for rx, sp in SPEC_PATHS if rx.match(path)), None)


def spec_check(method, path, r):
    """The reply's JSON against the spec (and the error shapes)."""
    path = urllib.parse.urlsplit(path).path
    ctype = r.headers.get("content-type", "")
    if not ctype.startswith("application/json"):
        if r.status >= 400:
            check(False, "spec: %s %s -> %d is JSON" % (method, path, r.status), ctype)
        return
    j = r.json()
    name = "%s %s -> %d" % (method, spec_path(path) or path, r.status)
    if r.status >= 400:
        msg = validate(j, {}, ERROR)
        if r.status == 422 and not msg:
            msg = validate(j, TZ, {"$ref": "#/components/schemas/HTTPValidationError"})
            if not msg and not j.get("detail"):
                msg = "a 422 with no detail"
        if msg:
            check(False, "spec: " + name, msg + " in " + json.dumps(j)[:300])
        return
    sp = spec_path(path)
    schema = response_schema(TZ, sp, method, r.status) if sp else None
    if schema:
        msg = validate(j, TZ, schema)
        if msg:
            check(False, "spec: " + name, msg + " in " + json.dumps(j)[:400])


def call(port, method, path, body=None, headers=None, timeout=60):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        headers = dict(headers or {}, **{"Content-Type": "application/json"})
    r = request(port, method, path, body, headers, timeout)
    spec_check(method, path, r)
    return r


def upload(port, data, name="image.png", headers=None):
    body, ctype = multipart({}, {"file": (name, data, "application/octet-stream")})
    return call(port, "POST", "/upload", body, dict(headers or {}, **{"Content-Type": ctype}))


def image_size(data):
    """(format, width, height) from PNG, JPEG, WebP or GIF bytes, else None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ("png",) + struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return ("gif",) + struct.unpack("<HH", data[6:10])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        kind = data[12:16]
        if kind == b"VP8 ":
            w, h = struct.unpack("<HH", data[26:30])
            return ("webp", w & 0x3FFF, h & 0x3FFF)
        if kind == b"VP8L":
            b = data[21:25]
            return ("webp", 1 + (((b[1] & 0x3F) << 8) | b[0]), 1 + (((b[3] & 0xF) << 10) | (b[2] << 2) | (b[1] >> 6)))
        if kind == b"VP8X":
            return ("webp", 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little"))
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            m, n = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
            if m in (0xC0, 0xC1, 0xC2):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return ("jpg", w, h)
            i += 2 + n
    return None


def png_pixel_alpha(data, x, y):
    """The alpha of pixel (x, y) of an 8-bit RGBA, gray+alpha or palette PNG (None for other kinds)."""
    w, h, depth, ctype = struct.unpack(">IIBB", data[16:26])
    if ctype not in (3, 4, 6) or (ctype != 3 and depth != 8):
        return None
    idat, trns, i = b"", b"", 8
    while i < len(data):
        n = struct.unpack(">I", data[i:i + 4])[0]
        kind = data[i + 4:i + 8]
        if kind == b"IDAT":
            idat += data[i + 8:i + 8 + n]
        elif kind == b"tRNS":
            trns = data[i + 8:i + 8 + n]
        i += 12 + n
    raw = zlib.decompress(idat)
    bits = {3: depth, 4: 16, 6: 32}[ctype]
    bpp, stride = max(1, bits // 8), (w * bits + 7) // 8
    prev, row = bytearray(stride), None
    for r in range(y + 1):
        f, line = raw[r * (stride + 1)], bytearray(raw[r * (stride + 1) + 1:(r + 1) * (stride + 1)])
        for k in range(stride):
            a = line[k - bpp] if k >= bpp else 0
            b, c = prev[k], prev[k - bpp] if k >= bpp else 0
            if f == 1:
                line[k] = (line[k] + a) & 255
            elif f == 2:
                line[k] = (line[k] + b) & 255
            elif f == 3:
                line[k] = (line[k] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[k] = (line[k] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev, row = line, line
    if ctype != 3:
        return row[x * bpp + bpp - 1]
    bit = x * depth
    index = (row[bit // 8] >> (8 - depth - bit % 8)) & ((1 << depth) - 1)
    return trns[index] if index < len(trns) else 255


def png_file(width, height, idat_rows=1):
    """A valid RGB PNG header of width x height whose IDAT holds only idat_rows rows (a bomb's header)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress((b"\x00" + b"\x00" * 3 * min(width, 64)) * idat_rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def gif_anim(w, h, colours, delays_cs):
    """An animated GIF by hand: one flat frame per colour (RGB), each shown delays_cs[i] hundredths of a
    second, looping. LZW with a clear code before every pixel: valid, if not small."""
    palette = b"".join(bytes(c) for c in colours) + b"\x00\x00\x00" * (4 - len(colours))
    out = [b"GIF89a", struct.pack("<HHBBB", w, h, 0x91, 0, 0), palette,
           b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"]
    for i, delay in enumerate(delays_cs):
        out.append(b"\x21\xf9\x04\x00" + struct.pack("<H", delay) + b"\x00\x00")
        out.append(b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0))
        codes, acc, nbits, data = [], 0, 0, bytearray()
        for _ in range(w * h):
            codes += [4, i]  # clear, then the pixel's index
        codes.append(5)
        for c in codes:
            acc |= c << nbits
            nbits += 3
            while nbits >= 8:
                data.append(acc & 255)
                acc >>= 8
                nbits -= 8
        if nbits:
            data.append(acc & 255)
        out.append(b"\x02")
        for k in range(0, len(data), 255):
            out.append(bytes([len(data[k:k + 255])]) + bytes(data[k:k + 255]))
        out.append(b"\x00")
    out.append(b"\x3b")
    return b"".join(out)


def gif_frames(data):
    """(frame count, delays in cs) of GIF bytes, walking its blocks."""
    i = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    n, delays = 0, []
    while i < len(data):
        b = data[i]
        if b == 0x3B:
            break
        if b == 0x21:
            if data[i + 1] == 0xF9:
                delays.append(struct.unpack("<H", data[i + 4:i + 6])[0])
            i += 2
            while data[i]:
                i += data[i] + 1
            i += 1
        elif b == 0x2C:
            n += 1
            packed = data[i + 9]
            i += 10 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0) + 1
            while data[i]:
                i += data[i] + 1
            i += 1
        else:
            break
    return n, delays


def head_only_upload(port, size):
    """POST /upload announcing size bytes and sending none: the answer the head alone gets (status, JSON)."""
    import socket
    sock = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
    try:
        sock.sendall(("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                      "boundary=x\r\nContent-Length: %d\r\n\r\n" % size).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                break
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1]) if head.startswith(b"HTTP/") else 0
        try:
            return status, json.loads(body.decode() or "{}")
        except ValueError:
            return status, None
    finally:
        sock.close()


def wait_job(port, jid, timeout=60):
    deadline = time.time() + timeout * SLOW
    st = {}
    while time.time() < deadline:
        st = call(port, "GET", "/status/" + jid).json() or {}
        if (st.get("job") or {}).get("status") in ("completed", "failed", "expired"):
            return st
        time.sleep(0.05)
    return st


def process(port, endpoint, ids, headers, **body):
    return call(port, "POST", "/" + endpoint, dict(body, temp_file_ids=ids), headers)


# ---- the server ------------------------------------------------------------------------


def test_service(s):
    p = s.port
    r = call(p, "GET", "/health")
    check(r.status == 200 and r.json().get("status") == "ok", "1. /health ok", repr(r.json()))
    r = call(p, "GET", "/readiness")
    check(r.status == 200 and r.json().get("status") == "ready", "1. /readiness ready", repr(r.json()))
    r = call(p, "GET", "/")
    check(r.status == 200 and isinstance(r.json(), dict), "1. GET / is JSON", r.body[:100])
    c = call(p, "GET", "/config").json() or {}
    want = ("guest_daily_credits", "max_upload_bytes", "max_input_pixels", "max_output_pixels", "max_batch_files",
            "max_gif_frames", "retention_seconds", "temp_file_ttl_seconds", "signed_url_ttl_seconds")
    check(all(isinstance(c.get(k), int) for k in want) and c.get("guest_daily_credits") == 20
          and "jpg" in c.get("output_formats", []) and isinstance(c.get("tiers"), list), "2. /config fields",
          json.dumps(c)[:300])
    check("secret" not in json.dumps(c).lower() and ADMIN not in json.dumps(c), "2. /config has no secrets")
    r = call(p, "GET", "/no/such/path")
    check(r.status == 404, "3. unknown path -> 404 JSON", repr(r))
    r = call(p, "DELETE", "/config")
    check(r.status == 405, "3. wrong method -> 405 JSON", repr(r))


# ---- uploads --------------------------------------------------------------------------


def test_upload(s):
    p = s.port
    data = open(SMALL, "rb").read()
    r = upload(p, data, "chelsea.png")
    j = r.json() or {}
    check(r.status == 200 and j.get("temp_file_id") and j.get("original_filename") == "chelsea.png"
          and j.get("file_size") == len(data) and j.get("mime_type") == "image/png", "4. TempFileResponse", repr(j))
    check(not str(j.get("temp_path", "")).startswith("/"), "4. temp_path is an opaque key", j.get("temp_path"))
    exp = parse_time(j.get("expires_at"))
    check(exp and abs(exp - (time.time() + 3600)) < 60, "4. expires_at = now + TTL", j.get("expires_at"))
    tok = j.get("session_token") or ""
    check(len(tok) >= 22, "5. a new guest gets a session_token", repr(tok))
    r2 = upload(p, data, "b.png", {"X-Session-Token": tok})
    check(r2.status == 200 and r2.json().get("session_token") == tok, "5. a sent token is echoed", repr(r2.json()))
    r3 = upload(p, data, "c.png", {"X-Session-Token": "no-such-token-0123456789abcdef"})
    check(r3.status == 401, "5. an unknown token -> 401", repr(r3))
    body, ctype = multipart({"other": "x"}, {})
    r = call(p, "POST", "/upload", body, {"Content-Type": ctype})
    check(r.status == 422 and "file" in json.dumps(r.json().get("detail")), "6. no file -> 422 naming file",
          repr(r.json()))
    r = upload(p, b"hello, not an image\n" * 10, "x.png")
    check(r.status == 415, "6. not an image -> 415", repr(r))
    r = upload(p, b"", "empty.png")
    check(400 <= r.status < 500, "6. empty -> 4xx", repr(r))
    # a 50000 x 50000 header: refused from the header, fast
    t0 = time.time()
    r = upload(p, png_file(50000, 50000), "bomb.png")
    check(r.status == 422 and time.time() - t0 < 5, "6. a 50000^2 header -> 422 in < 5 s",
          "%d in %.1fs" % (r.status, time.time() - t0))
    status, j = head_only_upload(p, 9 * 1024 * 1024)
    check(status == 413 and j and j.get("code"), "6. over the upload limit -> 413", "%r %r" % (status, j))
    check(call(p, "GET", "/health").status == 200, "6. the server is fine after a 413")
    return tok, j.get("temp_file_id")


def test_upload_url(s, tok):
    p = s.port
    h = {"X-Session-Token": tok}
    for url in ("http://127.0.0.1:%d/x.png" % p, "http://2130706433/x.png", "http://0x7f000001/x.png",
                "http://127.1/x.png", "http://[::ffff:127.0.0.1]/x.png", "http://localhost/x.png",
                "http://169.254.169.254/latest/meta-data", "http://10.0.0.1/x.png"):
        r = call(p, "POST", "/upload/url", {"url": url}, h)
        check(r.status == 400 and r.json().get("code") == "URL_REFUSED", "8. %s -> 400 URL_REFUSED" % url, repr(r))
    for url in ("file:///etc/passwd", "ftp://example.com/x.png", "http://user:pw@example.com/x.png", "not a url"):
        r = call(p, "POST", "/upload/url", {"url": url}, h)
        check(r.status in (400, 422), "8. %s -> 400/422" % url, repr(r))
    r = call(p, "POST", "/upload/url", {"filename": "x.png"}, h)
    check(r.status == 422 and "url" in json.dumps(r.json().get("detail")), "8. no url -> 422", repr(r))


# ---- processing ---------------------------------------------------------------------------


def new_guest(s, n=1, data=None, name="chelsea.png"):
    """A fresh guest session and n temp ids of data."""
    data = data or open(SMALL, "rb").read()
    r = upload(s.port, data, name)
    tok = r.json()["session_token"]
    ids = [r.json()["temp_file_id"]] + [upload(s.port, data, name, {"X-Session-Token": tok}).json()["temp_file_id"]
                                       for _ in range(n - 1)]
    return {"X-Session-Token": tok}, ids


def test_validation(s):
    p = s.port
    h, ids = new_guest(s)
    cases = [
        ({"settings": {"output_width": 0}}, "output_width"),
        ({"settings": {"output_width": 9000}}, "output_width"),
        ({"settings": {"output_quality": 101}}, "output_quality"),
        ({"settings": {"output_format": "bmp"}}, "output_format"),
        ({"settings": {"output_resize_behavior": "stretch"}}, "output_resize_behavior"),
        ({"settings": {"output_upscale_factor": 11}}, "output_upscale_factor"),
        ({"settings": {"output_file_size_limit": 0}}, "output_file_size_limit"),
        ({"settings": {"gif_frame_limit": 101}}, "gif_frame_limit"),
        ({"settings": "x"}, "settings"),
    ]
    before = call(p, "GET", "/usage/summary", headers=h).json().get("credits_remaining")
    for body, field in cases:
        r = process(p, "auto", ids, h, **body)
        d = json.dumps((r.json() or {}).get("detail"))
        check(r.status == 422 and field in d, "9. %s -> 422 naming %s" % (json.dumps(body), field), repr(r.json()))
    r = process(p, "upscale", ids, h, factor=5)
    check(r.status == 422 and "factor" in json.dumps(r.json().get("detail")), "9. /upscale factor 5 -> 422")
    r = process(p, "compress", ids, h, quality=0)
    check(r.status == 422 and "quality" in json.dumps(r.json().get("detail")), "9. /compress quality 0 -> 422")
    r = process(p, "resize", ids, h)
    check(r.status == 422, "9. /resize with no size -> 422", repr(r.json()))
    r = process(p, "auto", ["not-a-uuid"], h)
    check(r.status == 422 and "temp_file_ids" in json.dumps(r.json().get("detail")), "9. a bad temp id -> 422")
    r = call(p, "POST", "/auto", b"{not json", dict(h, **{"Content-Type": "application/json"}))
    check(r.status == 422, "9. bad JSON -> 422", repr(r))
    r = process(p, "auto", [str(uuid.uuid4()) for _ in range(21)], h)
    check(r.status == 422, "9. 21 files -> 422", repr(r.json()))
    r = call(p, "POST", "/auto", {"settings": {}}, h)
    check(r.status == 422 and "temp_file_ids" in json.dumps(r.json().get("detail")), "9. no temp_file_ids -> 422")
    r = process(p, "auto", ids, {})
    check(r.status == 401, "10. no credential -> 401", repr(r))
    r = process(p, "auto", ids, {"X-Session-Token": "unknown-token-000000000000"})
    check(r.status == 401, "10. an unknown token -> 401", repr(r))
    r = process(p, "auto", [str(uuid.uuid4())], h)
    check(r.status == 404, "10. an unknown temp id -> 404", repr(r))
    h2, _ = new_guest(s)
    r = process(p, "auto", ids, h2)
    check(r.status == 404, "10. another guest's temp id -> 404", repr(r))
    r = call(p, "POST", "/tag", {"temp_file_ids": ids}, h)
    check(r.status == 501, "10. /tag -> 501", repr(r))
    r = process(p, "auto", ids, h, settings={"output_seo_tag_gen": True})
    check(r.status == 501, "10. an SEO flag -> 501", repr(r))
    after = call(p, "GET", "/usage/summary", headers=h).json().get("credits_remaining")
    check(before == after, "9. nothing refused was charged", "%r -> %r" % (before, after))


def fetch(p, jid):
    return request(p, "GET", "/download/" + jid)


def test_processing(s):
    p = s.port
    h, ids = new_guest(s, 3)
    before = call(p, "GET", "/usage/summary", headers=h).json()["credits_remaining"]
    r = process(p, "upscale", ids, h, settings={"output_format": "webp"})
    j = r.json() or {}
    jobs = j.get("jobs") or []
    check(r.status == 200 and len(jobs) == 3 and j.get("credits_used") == 3, "11. one job per temp id",
          json.dumps(j)[:300])
    check(j.get("credits_remaining") == before - 3, "11. credits_remaining drops by credits_used",
          "%r -> %r" % (before, j.get("credits_remaining")))
    for job in jobs:
        st = wait_job(p, job["id"])
        jb = st.get("job") or {}
        check(jb.get("status") == "completed", "17. upscale x2 completes", json.dumps(st)[:300])
        d = fetch(p, job["id"])
        check(d.status == 200 and image_size(d.body) == ("webp", 128, 128), "17. x2 is 128x128 webp",
              repr(image_size(d.body)))
        check(d.headers.get("content-type") == "image/webp" and int(d.headers.get("content-length", -1)) == len(d.body)
              and "attachment" in d.headers.get("content-disposition", "")
              and ".webp" in d.headers.get("content-disposition", ""), "12. download headers", repr(d.headers))
    jb = wait_job(p, jobs[0]["id"])["job"]
    check(jb["executed_upscale"] and jb["executed_compress"] and not jb["executed_resize"], "15. executed_*",
          json.dumps(jb)[:300])
    check(jb["job_entry_point"] == "upscale" and jb["job_source"] == "web" and jb["output_format"] == "webp"
          and jb["output_quality"] == 80, "15. entry point, source, output_* echoed", json.dumps(jb)[:400])
    check(jb["original_format"] == "png" and jb["original_width"] == 64 and jb["processed_width"] == 128
          and abs(jb["processed_compression_ratio"] - jb["original_size"] / jb["processed_size"]) < 0.01,
          "15. original_*, processed_*, ratio", json.dumps(jb)[:400])
    t = [parse_time(jb[k]) for k in ("created_at", "started_at", "completed_at")]
    check(all(t) and t[0] <= t[1] <= t[2], "15. timestamps ordered", repr(t))
    check(abs(parse_time(jb["expires_at"]) - (t[2] + 900)) < 2, "15. expires_at = completed + retention",
          "%s vs %s" % (jb["expires_at"], jb["completed_at"]))
    d2 = fetch(p, jobs[0]["id"])
    check(d2.status == 200, "25. downloading deletes nothing (a second download works)", repr(d2.status))

    # formats, qualities, x3 and x4, top-level beats settings
    h, ids = new_guest(s, 1)
    sizes = {}
    for fmt, factor, want in (("jpg", 3, ("jpg", 192, 192)), ("png", 4, ("png", 256, 256))):
        r = process(p, "upscale", ids, h, factor=factor, output_format=fmt, settings={"output_format": "webp"})
        jid = r.json()["jobs"][0]["id"]
        wait_job(p, jid)
        d = fetch(p, jid)
        check(d.status == 200 and image_size(d.body) == want, "17. x%d as %s: %r" % (factor, fmt, want),
              repr(image_size(d.body)))
    # the network, not a classical kernel: the same pixels as the Upscale Service's x2 of the same model
    r = process(p, "upscale", ids, h, output_format="png", settings={"output_quality": 100})
    jid = r.json()["jobs"][0]["id"]
    wait_job(p, jid)
    ours = fetch(p, jid).body
    body, ctype = multipart({"model_name": FAST, "scale": "2", "format": "png"},
                            {"image": ("c.png", open(SMALL, "rb").read(), "image/png")})
    us = request(p, "POST", "/api/v1/upscale", body, {"Content-Type": ctype}).json().get("job_id")
    for _ in range(int(600 * SLOW)):
        if (request(p, "GET", "/api/v1/status/" + us).json() or {}).get("status") in ("completed", "failed"):
            break
        time.sleep(0.05)
    theirs = request(p, "GET", "/api/v1/download/" + us).body
    check(image_size(ours) == ("png", 128, 128) and ours == theirs,
          "17. x2 is the network's output (the Upscale Service's bytes for the same model)",
          "%d vs %d bytes" % (len(ours), len(theirs)))
    for q in (30, 90):
        r = process(p, "compress", ids, h, output_format="jpg", quality=q)
        jid = r.json()["jobs"][0]["id"]
        wait_job(p, jid)
        sizes[q] = len(fetch(p, jid).body)
    check(sizes[30] < sizes[90], "13. q30 < q90", repr(sizes))
    r = process(p, "auto", ids, h)
    jid = r.json()["jobs"][0]["id"]
    jb = wait_job(p, jid)["job"]
    check(jb["output_quality"] == 80 and not jb["executed_upscale"] and not jb["executed_resize"]
          and jb["executed_compress"] and jb["processed_format"] == "png", "18. no settings = compress only at 80",
          json.dumps(jb)[:300])
    r = process(p, "auto", ids, h, settings={"output_upscale_factor": 2, "output_width": 100, "output_format": "webp"})
    jid = r.json()["jobs"][0]["id"]
    jb = wait_job(p, jid)["job"]
    d = fetch(p, jid)
    check(image_size(d.body) == ("webp", 100, 100) and jb["executed_upscale"] and jb["executed_resize"],
          "18. /auto x2 then width 100 -> 100x100 webp", repr(image_size(d.body)))
    # the target size, and one that cannot be met
    r = process(p, "compress", ids, h, output_format="jpg", target_file_size=2500)
    jid = r.json()["jobs"][0]["id"]
    jb = wait_job(p, jid)["job"]
    check(jb["status"] == "completed" and jb["processed_size"] <= 2500, "14. the target size is met",
          json.dumps(jb)[:300])
    left = call(p, "GET", "/usage/summary", headers=h).json()["credits_remaining"]
    r = process(p, "compress", ids, h, output_format="jpg", target_file_size=50)
    jid = r.json()["jobs"][0]["id"]
    jb = wait_job(p, jid)["job"]
    check(jb["status"] == "failed" and "bytes" in (jb.get("error_message") or "") and jb["credits_used"] == 0,
          "14. an unreachable target fails, naming the size, refunded", json.dumps(jb)[:300])
    check(call(p, "GET", "/usage/summary", headers=h).json()["credits_remaining"] == left,
          "14. ... and the credit is back")
    d = fetch(p, jid)
    check(d.status == 409 and (d.json() or {}).get("code") == "JOB_FAILED", "14. its download -> 409", repr(d))
    # an output over max_output_pixels (1 Mpx on this server): refused before any work, nothing charged
    before = call(p, "GET", "/usage/summary", headers=h).json()["credits_remaining"]
    r = process(p, "auto", ids, h, settings={"output_width": 2000, "output_height": 2000})
    check(400 <= r.status < 500, "19. over max_output_pixels -> 4xx", repr(r))
    check(call(p, "GET", "/usage/summary", headers=h).json()["credits_remaining"] == before, "19. nothing charged")


def test_formats(s):
    p = s.port
    h, ids = new_guest(s, 1)
    for fmt, magic, want in (("avif", b"ftyp", (128, 128)), ("gif", b"GIF8", (128, 128)), ("ico", b"\x00\x00\x01\x00", (128, 128))):
        r = process(p, "upscale", ids, h, output_format=fmt)
        jid = r.json()["jobs"][0]["id"]
        jb = wait_job(p, jid).get("job") or {}
        d = fetch(p, jid)
        ok = d.status == 200 and (d.body[4:8] == magic if fmt == "avif" else d.body[:len(magic)] == magic)
        check(ok and (jb.get("processed_width"), jb.get("processed_height")) == want and jb.get("processed_format") == fmt,
              "12. %s: %dx%d" % (fmt, want[0], want[1]), "%r %r" % (d.body[:12], json.dumps(jb)[:200]))
        if fmt == "ico" and ok:
            png = d.body[struct.unpack("<I", d.body[18:22])[0]:]
            check(image_size(png) == ("png", 128, 128), "12. the ico holds a 128x128 PNG", repr(image_size(png)))
    r = process(p, "auto", ids, h, settings={"output_format": "svg"})
    check(r.status == 422, "12. svg from a raster -> 422", repr(r))
    # PNG -> PNG below quality 100 is quantised: smaller than the upload
    data = open(SMALL, "rb").read()
    r = process(p, "compress", ids, h, output_format="png")
    jid = r.json()["jobs"][0]["id"]
    jb = wait_job(p, jid)["job"]
    check(jb["status"] == "completed" and jb["processed_size"] < len(data), "14. PNG -> PNG is smaller",
          "%r vs %d" % (jb.get("processed_size"), len(data)))
    # an animated GIF: counted at upload, upscaled frame by frame, gif_frame_limit keeps the first N
    anim = gif_anim(16, 12, [(200, 30, 30), (30, 200, 30), (30, 30, 200)], [10, 20, 30])
    r = upload(p, anim, "anim.gif", h)
    j = r.json() or {}
    check(r.status == 200 and j.get("gif_frame_count") == 3 and abs((j.get("gif_fps") or 0) - 5.0) < 0.01,
          "7. a GIF's frame count and fps", json.dumps(j))
    r = process(p, "upscale", [j.get("temp_file_id")], h, settings={"gif_frame_limit": 2})
    jid = r.json()["jobs"][0]["id"]
    jb = wait_job(p, jid).get("job") or {}
    d = fetch(p, jid)
    n, delays = gif_frames(d.body) if d.body[:4] == b"GIF8" else (0, [])
    check(image_size(d.body) == ("gif", 32, 24) and n == 2 and delays == [10, 20],
          "17. an animated GIF stays animated, x2 frame by frame, the first 2 frames with their delays",
          "%r %d %r %s" % (image_size(d.body), n, delays, json.dumps(jb)[:200]))


def test_resize(s):
    p = s.port
    h, ids = new_guest(s, 1)
    r = process(p, "resize", ids, h, width=100, height=50, resize_behavior="pad", output_format="png")
    jid = r.json()["jobs"][0]["id"]
    wait_job(p, jid)
    d = fetch(p, jid)
    check(image_size(d.body) == ("png", 100, 50), "16. pad gives the exact size", repr(image_size(d.body)))
    a = png_pixel_alpha(d.body, 0, 25) if image_size(d.body) else None
    check(a == 0, "16. PNG pad bars are transparent", repr(a))
    r = process(p, "resize", ids, h, width=100, height=50, resize_behavior="crop", output_format="jpg")
    jid = r.json()["jobs"][0]["id"]
    wait_job(p, jid)
    check(image_size(fetch(p, jid).body) == ("jpg", 100, 50), "16. crop gives the exact size")
    r = process(p, "resize", ids, h, width=32)
    jid = r.json()["jobs"][0]["id"]
    wait_job(p, jid)
    check(image_size(fetch(p, jid).body) == ("png", 32, 32), "16. one side keeps the aspect")


# ---- status, streams, downloads --------------------------------------------------------------


def test_status(s):
    p = s.port
    h, ids = new_guest(s, 2)
    jobs = process(p, "upscale", ids, h).json()["jobs"]
    a, b = jobs[0]["id"], jobs[1]["id"]
    st = call(p, "GET", "/status/" + b).json()
    check("progress" in st and st["job"]["id"] == b, "20. StatusResponse with progress", json.dumps(st)[:200])
    if st["job"]["status"] == "queued":
        check(isinstance(st.get("queue_position"), int) and st["queue_position"] >= 1, "20. queue_position while queued",
              json.dumps(st)[:300])
    d = fetch(p, b)
    if (st["job"]["status"]) in ("queued", "processing"):
        check(d.status == 409 and d.json().get("code") == "JOB_NOT_READY", "25. download before done -> 409", repr(d))
    st = wait_job(p, b)
    check(st.get("download_url") == "/download/" + b and st.get("progress") == 100, "20. download_url once done",
          json.dumps(st)[:200])
    unknown = str(uuid.uuid4())
    for path in ("/status/", "/download/", "/status/%s/stream", "/download/%s/url"):
        pth = path % unknown if "%s" in path else path + unknown
        r = call(p, "GET", pth)
        check(r.status == 404, "21. unknown id -> 404: " + path, repr(r))
    for path in ("/status/not-a-uuid", "/download/not-a-uuid", "/status/not-a-uuid/stream"):
        r = call(p, "GET", path)
        check(r.status == 422, "21. bad uuid -> 422: " + path, repr(r))
    for q in ("", "?job_ids=nope", "?" + "&".join("job_ids=" + str(uuid.uuid4()) for _ in range(101))):
        for base in ("/status", "/status/stream"):
            r = call(p, "GET", base + q)
            check(r.status == 422, "21. %s with %s -> 422" % (base, q[:20] or "no ids"), repr(r))
    wait_job(p, a)
    r = call(p, "GET", "/status?job_ids=%s&job_ids=%s&job_ids=%s" % (b, unknown, a)).json()
    check([j["id"] for j in r["jobs"]] == [b, a] and r["total"] == 2, "22. repeated ids, order kept, unknown left out",
          json.dumps(r)[:200])
    r = call(p, "GET", "/status?job_ids=%s,%s" % (a, b)).json()
    check([j["id"] for j in r["jobs"]] == [a, b], "22. comma form", json.dumps(r)[:200])
    # signed URL
    r = call(p, "GET", "/download/%s/url" % a)
    u = r.json() or {}
    check(r.status == 200 and u.get("url", "").startswith("http") and 0 < u.get("expires_in", 0) <= 900
          and u.get("filename", "").endswith(".png") and u.get("content_type") == "image/png", "26. signed URL fields",
          json.dumps(u))
    path = urllib.parse.urlsplit(u.get("url", "")).path + "?" + urllib.parse.urlsplit(u.get("url", "")).query
    r = request(p, "GET", path)
    check(r.status == 200 and image_size(r.body) == ("png", 128, 128), "26. the signed URL works with no credential",
          repr(r.status))
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(u["url"]).query)
    bad = {"sig": "/download/%s?expires=%s&sig=%s" % (a, q["expires"][0], "0" * 64),
           "expires": "/download/%s?expires=%d&sig=%s" % (a, int(q["expires"][0]) + 1, q["sig"][0]),
           "no sig": "/download/%s?expires=%s" % (a, q["expires"][0])}
    for what, pth in bad.items():
        r = call(p, "GET", pth)
        check(r.status == 403, "26. a changed %s -> 403" % what, repr(r))


def test_streams(s):
    p = s.port
    h, ids = new_guest(s, 2)
    jobs = process(p, "upscale", ids, h).json()["jobs"]
    a, b = jobs[0]["id"], jobs[1]["id"]
    st = Stream(p, "/status/%s/stream" % b, timeout=10)
    check(st.status == 200 and st.headers.get("content-type", "").startswith("text/event-stream"),
          "23. a stream", repr(st.headers))
    evs = []
    deadline = time.time() + 60 * SLOW
    while time.time() < deadline:
        ev = st.event(30 * SLOW)
        if ev is None:
            break
        evs.append(ev)
    st.close()
    check(evs and "retry" in evs[0], "23. retry: first", repr(evs[:2]))
    names = [e.get("event") for e in evs if "event" in e]
    check(names and names[-1] == "complete" and names.count("complete") == 1
          and all(n == "status" for n in names[:-1]), "23. status events, then one complete, then closed",
          repr(names))
    last = json.loads(evs[-1]["data"]) if evs and "data" in evs[-1] else {}
    check(validate(last, TZ, {"$ref": "#/components/schemas/StatusResponse"}) == "" and
          last["job"]["status"] == "completed", "23. complete carries a StatusResponse", json.dumps(last)[:200])
    t0 = time.time()
    st = Stream(p, "/status/%s/stream" % b, timeout=10)
    evs = [e for e in (st.event(5), st.event(5), st.event(5)) if e]
    st.close()
    check(any(e.get("event") == "complete" for e in evs) and time.time() - t0 < 3, "23. a late subscriber: complete < 3 s",
          "%r in %.1fs" % (evs, time.time() - t0))
    # the batch stream
    h, ids = new_guest(s, 2)
    jobs = process(p, "upscale", ids, h).json()["jobs"]
    st = Stream(p, "/status/stream?job_ids=%s,%s" % (jobs[0]["id"], jobs[1]["id"]), timeout=10)
    evs = []
    deadline = time.time() + 90 * SLOW
    while time.time() < deadline:
        ev = st.event(30 * SLOW)
        if ev is None:
            break
        evs.append(ev)
    st.close()
    names = [e.get("event") for e in evs if "event" in e]
    completes = [json.loads(e["data"])["job"]["id"] for e in evs if e.get("event") == "complete"]
    check(sorted(completes) == sorted(j["id"] for j in jobs) and names[-1] == "done", "24. one complete per job, then done",
          repr(names))
    done = json.loads(evs[-1]["data"]) if evs else {}
    check(validate(done, TZ, {"$ref": "#/components/schemas/BatchStatusResponse"}) == "" and done.get("total") == 2,
          "24. done carries a BatchStatusResponse", json.dumps(done)[:200])


# ---- credits, usage, operators -----------------------------------------------------------------


def test_credits(s):
    p = s.port  # a server with 3 guest credits a day
    h, ids = new_guest(s, 4)
    summ = call(p, "GET", "/usage/summary", headers=h).json()
    check(summ.get("tier") == "guest" and summ.get("credits_remaining") == 3 and summ.get("daily_credits") == 3
          and summ.get("credits_used_today") == 0 and summ.get("subscription") is None, "27/28. a new guest's summary",
          json.dumps(summ))
    r = process(p, "compress", ids, h)
    check(r.status == 402 and r.json().get("code") == "INSUFFICIENT_CREDITS" and r.json().get("credits_needed") == 4
          and r.json().get("credits_remaining") == 3, "27. a batch over the balance is refused whole", repr(r.json()))
    r = process(p, "compress", ids[:2], h)
    check(r.status == 200 and r.json().get("credits_remaining") == 1, "27. jobs spend credits", repr(r.json()))
    for j in r.json().get("jobs", []):
        wait_job(p, j["id"])
    r = process(p, "compress", ids[2:], h)
    check(r.status == 402, "27. then 402", repr(r))
    summ = call(p, "GET", "/usage/summary", headers=h).json()
    check(summ.get("credits_used_today") == 2 and summ.get("credits_remaining") == 1, "28. the summary agrees",
          json.dumps(summ))
    hist = call(p, "GET", "/usage/history?days=7", headers=h).json()
    daily = hist.get("daily") or []
    today = time.strftime("%Y-%m-%d", time.gmtime())
    check(len(daily) == 7 and daily[-1]["date"] == today and daily[-1]["jobs"] == 2 and daily[-1]["credits"] == 2
          and hist.get("total_jobs") == 2, "28. history: 7 days, today last, the session's totals", json.dumps(hist)[:300])
    check(len(call(p, "GET", "/usage/history", headers=h).json().get("daily", [])) == 30, "28. 30 days by default")
    for d in ("0", "91", "x"):
        check(call(p, "GET", "/usage/history?days=" + d, headers=h).status == 422, "28. days=%s -> 422" % d)
    check(call(p, "GET", "/usage/summary").status == 401 and call(p, "GET", "/usage/history").status == 401,
          "28. usage needs a credential")
    # operators
    for path in ("/internal/cleanup", "/internal/refresh-daily-credits", "/process"):
        r = call(p, "POST", path, headers={"X-CloudScheduler": "true", "X-CloudTasks-QueueName": "q"})
        check(r.status in (401, 403), "29. %s without the token -> 401/403" % path, repr(r))
    r = call(p, "POST", "/internal/cleanup", headers={"Authorization": "Bearer " + ADMIN})
    j = r.json() or {}
    check(r.status == 200 and j.get("success") is True and isinstance(j.get("deleted"), int)
          and isinstance(j.get("errors"), int), "29. cleanup", repr(j))
    r = call(p, "POST", "/internal/refresh-daily-credits", headers={"Authorization": "Bearer " + ADMIN})
    check(r.status == 200 and r.json().get("success") is True, "29. refresh", repr(r.json()))
    summ = call(p, "GET", "/usage/summary", headers=h).json()
    check(summ.get("credits_remaining") == 3, "29. refresh restores the guest's credits", json.dumps(summ))
    check(call(p, "POST", "/process", headers={"Authorization": "Bearer " + ADMIN}).status == 501,
          "29. /process with the token -> 501")
    # section 6.11: one address opens at most --guest-sessions-per-ip sessions (4 here; 1 used above)
    data = open(SMALL, "rb").read()
    codes = [upload(p, data).status for _ in range(4)]
    r = upload(p, data)
    check(codes[:3] == [200, 200, 200] and codes[3] == 429 and r.status == 429
          and r.json().get("code") == "TOO_MANY_SESSIONS" and int(r.headers.get("retry-after", "0")) > 0,
          "6.11. new sessions per address are capped (429 with Retry-After)", "%r %r" % (codes, r))
    check(upload(p, data, headers=h).status == 200, "6.11. ... while an open session keeps uploading")


def test_out_of_scope(s):
    p = s.port
    eps = [("POST", "/billing/checkout"), ("POST", "/billing/portal"), ("GET", "/billing/subscription"),
           ("POST", "/webhooks/stripe"), ("POST", "/mcp/auth/device-code"), ("GET", "/mcp/auth/token"),
           ("POST", "/mcp/auth/approve"), ("POST", "/mcp/auth/deny"), ("POST", "/mcp/auth/revoke"),
           ("GET", "/mcp/auth/status")]
    for m, path in eps:
        r = call(p, m, path, {} if m == "POST" else None)
        check(r.status == 501 and r.json().get("code") == "NOT_IMPLEMENTED", "30. %s %s -> 501" % (m, path), repr(r))


def test_cors(s):
    p = s.port
    jid = str(uuid.uuid4())
    paths = ["/upload", "/upload/url", "/auto", "/compress", "/resize", "/upscale", "/status/" + jid, "/status",
             "/status/stream", "/status/%s/stream" % jid, "/download/" + jid, "/download/%s/url" % jid,
             "/usage/summary", "/usage/history"]
    for path in paths:
        method = "GET" if path.startswith(("/status", "/download", "/usage")) else "POST"
        r = request(p, "OPTIONS", path, None, {"Origin": "https://app.example", "Access-Control-Request-Method": method,
                                               "Access-Control-Request-Headers": "authorization, x-session-token"})
        hd = r.headers
        check(r.status in (200, 204) and hd.get("access-control-allow-origin") == "*"
              and method in hd.get("access-control-allow-methods", "")
              and "authorization" in hd.get("access-control-allow-headers", "").lower()
              and "x-session-token" in hd.get("access-control-allow-headers", "").lower()
              and hd.get("access-control-max-age") == "600", "31. preflight %s" % path, repr(r))
    r = request(p, "GET", "/status/" + jid, None, {"Origin": "https://app.example"})
    check(r.status == 404 and r.headers.get("access-control-allow-origin") == "*", "31. Allow-Origin on an error")
    h, ids = new_guest(s, 1)
    job = process(p, "compress", ids, h).json()["jobs"][0]["id"]
    wait_job(p, job)
    r = request(p, "GET", "/download/" + job, None, {"Origin": "https://app.example"})
    check(r.status == 200 and r.headers.get("access-control-allow-origin") == "*"
          and "content-disposition" in r.headers.get("access-control-expose-headers", "").lower(),
          "31. a download exposes Content-Disposition", repr(r.headers))
    st = Stream(p, "/status/%s/stream" % job, {"Origin": "https://app.example"})
    check(st.headers.get("access-control-allow-origin") == "*", "31. Allow-Origin on a stream", repr(st.headers))
    st.close()


def main():
    t0 = time.time()
    main_srv = Server("tinify", "--tinify-model", FAST, "--admin-token", ADMIN, "--max-output-pixels", "1000000",
                      "--max-upload", "8M", "--rate-per-minute", "0", "--rate-per-day", "0")
    small = Server("tinify-credits", "--tinify-model", FAST, "--admin-token", ADMIN, "--guest-daily-credits", "3",
                   "--guest-sessions-per-ip", "4",
                   "--rate-per-minute", "0", "--rate-per-day", "0")
    if not check(main_srv.start() and small.start(), "servers start"):
        return 1
    try:
        run(test_service, main_srv)
        tok = [None]

        def uploads(s):
            tok[0] = test_upload(s)[0]
        run(uploads, main_srv)
        if tok[0]:
            run(test_upload_url, main_srv, tok[0])
        run(test_validation, main_srv)
        run(test_processing, main_srv)
        run(test_formats, main_srv)
        run(test_resize, main_srv)
        run(test_status, main_srv)
        run(test_streams, main_srv)
        run(test_credits, small)
        run(test_out_of_scope, main_srv)
        run(test_cors, main_srv)
    finally:
        main_srv.stop()
        small.stop()
    if tally.failed:
        print("---- server log (tail) ----\n" + main_srv.tail(3000))
    print("%d passed, %d failed (%.1fs)" % (tally.passed, tally.failed, time.time() - t0))
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
