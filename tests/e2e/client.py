"""client.py - what the end-to-end tests and the server benchmark share.

A check() that counts passes and failures, a bounded HTTP client (standard
library only: http.client and a hand-built multipart body), a hand-made
PNG, and Server: `upres serve` on a free loopback port with its own data
folder, plus the `upres` command line on that same folder.

Paths: UPRES is argv[1] (default build/upres), SHARED the test images
(UPRES_SHARED_DATA), MODELS the models folder (UPRES_TEST_MODELS). SLOW
multiplies every time limit when UPRES_SANITIZE says the build is
instrumented. Every wait here is bounded in count and time. With
UPRES_TEST_QUIET=1 (as ctest runs them) only failed checks are printed, so
that a failure is near the top of a long log rather than lost in it.
"""
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
UPRES = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(REPO, "build", "upres")
SHARED = os.environ.get("UPRES_SHARED_DATA", os.path.join(REPO, "../shared/data"))
MODELS = os.environ.get("UPRES_TEST_MODELS", os.path.join(REPO, "models"))
SLOW = 4 if os.environ.get("UPRES_SANITIZE") in ("1", "ON", "true") else 1
QUIET = os.environ.get("UPRES_TEST_QUIET") == "1"

TMP = None  # the scratch folder of this run: make_tmp() sets it


def make_tmp(prefix="upres-e2e-"):
    """Make this run's scratch folder (servers' data and logs go there) and return it."""
    global TMP
    TMP = tempfile.mkdtemp(prefix=prefix)
    return TMP


# ---- counting checks ------------------------------------------------------------------


class Tally:
    passed = 0
    failed = 0


tally = Tally()


def check(cond, what, detail=""):
    if cond:
        tally.passed += 1
        if not QUIET:
            print("ok   %s" % what)
    else:
        tally.failed += 1
        print("FAIL %s %s" % (what, detail))
    return cond


def run(t, *args):
    """Run one test function: an exception is a failed check, not the end of the run; its time is printed."""
    t1 = time.time()
    try:
        t(*args)
    except Exception as e:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        check(False, t.__name__ + " raised", repr(e))
    print("  (%s: %.1fs)" % (t.__name__, time.time() - t1))


# ---- a tiny HTTP client -------------------------------------------------------------


class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except Exception:
            return None

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:300])


def request(port, method, path, body=None, headers=None, timeout=60):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def multipart(fields, files):
    """fields: {name: value}; files: {name: (filename, bytes, content_type)} -> (body, content_type)."""
    boundary = "----upres" + uuid.uuid4().hex
    out = []
    for name, value in fields.items():
        out.append(("--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n" % (boundary, name, value)).encode())
    for name, (filename, data, ctype) in files.items():
        out.append(("--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
                    "Content-Type: %s\r\n\r\n" % (boundary, name, filename, ctype)).encode())
        out.append(data)
        out.append(b"\r\n")
    out.append(("--%s--\r\n" % boundary).encode())
    return b"".join(out), "multipart/form-data; boundary=" + boundary


def submit(port, path=None, data=None, filename=None, headers=None, **fields):
    """POST /api/v1/upscale with the file at path (or data) and fields."""
    if data is None:
        with open(path, "rb") as f:
            data = f.read()
    filename = filename or (os.path.basename(path) if path else "image.png")
    files = {"image": (filename, data, "application/octet-stream")}
    body, ctype = multipart({k: str(v) for k, v in fields.items()}, files)
    return request(port, "POST", "/api/v1/upscale", body, dict(headers or {}, **{"Content-Type": ctype}))


def status(port, job_id):
    return request(port, "GET", "/api/v1/status/" + job_id).json() or {}


def wait_status(port, job_id, want, timeout):
    """Poll until status is in want (a tuple) or timeout seconds pass. Returns the last status object."""
    deadline = time.time() + timeout * SLOW
    st = {}
    for _ in range(int(timeout * SLOW / 0.05) + 1):
        st = status(port, job_id)
        if st.get("status") in want or time.time() > deadline:
            return st
        time.sleep(0.05)
    return st


def png(width, height):
    """A valid gray PNG of width x height built by hand."""
    raw = b"".join(b"\x00" + bytes([(x * 7 + y) & 255 for x in range(width)]) for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def png_size(data):
    """(width, height) of PNG bytes, or None when they are not a PNG."""
    if len(data) < 24 or not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    return struct.unpack(">II", data[16:24])


# ---- the server ---------------------------------------------------------------------


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    """`upres serve` on 127.0.0.1:<free port>: .port, .data (its data folder), .log.

    args are added to the command line, env to the environment; threads=None
    leaves --threads to the server's default.
    """

    def __init__(self, name, *args, data=None, env=None, threads=2):
        if TMP is None:
            make_tmp()
        self.name = name
        self.args = list(args)
        self.env = env or {}
        self.threads = threads
        self.data = data or os.path.join(TMP, name + "-data")
        self.proc = None
        self.port = None
        self.log = os.path.join(TMP, name + ".log")

    def start(self):
        self.port = free_port()
        env = dict(os.environ, UPRES_MODELS=MODELS, **self.env)
        cmd = [UPRES, "serve", "--listen", "127.0.0.1", "--port", str(self.port), "--data", self.data]
        if self.threads is not None:
            cmd += ["--threads", str(self.threads)]
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd + self.args, stdout=logf, stderr=logf, env=env)
        logf.close()
        deadline = time.time() + 30 * SLOW
        for _ in range(600 * SLOW):
            if self.proc.poll() is not None:
                break
            try:
                # 401: the server answers, but wants a key there (--require-keys)
                if request(self.port, "GET", "/api/v1/health", timeout=2).status in (200, 401):
                    return True
            except OSError:
                pass
            if time.time() > deadline:
                break
            time.sleep(0.05)
        print("server %s did not start; log:\n%s" % (self.name, self.tail()))
        return False

    def tail(self, n=3000):
        try:
            with open(self.log, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return None

    # ---- the command line on the same data folder ----

    def cli(self, *args, timeout=60):
        """Run `upres ARGS --data DATA`; returns the CompletedProcess (text)."""
        env = dict(os.environ, UPRES_MODELS=MODELS, **self.env)
        return subprocess.run([UPRES] + list(args) + ["--data", self.data], capture_output=True, text=True,
                              env=env, timeout=timeout * SLOW)

    def key_create(self, name, quota=None, tier=None, credits=None):
        """`upres keys create`: the new key (first line of stdout), or None (the output is printed)."""
        args = ["keys", "create", "--name", name]
        for flag, v in (("--quota", quota), ("--tier", tier), ("--credits", credits)):
            if v is not None:
                args += [flag, str(v)]
        p = self.cli(*args)
        first = p.stdout.split("\n", 1)[0].strip()
        if p.returncode != 0 or not first:
            print("keys create %s: rc %d\n%s%s" % (name, p.returncode, p.stdout, p.stderr))
            return None
        return first

    def keys_list(self):
        """`upres keys list --json` parsed, or None."""
        p = self.cli("keys", "list", "--json")
        try:
            return json.loads(p.stdout)
        except ValueError:
            print("keys list --json: rc %d\n%s%s" % (p.returncode, p.stdout, p.stderr))
            return None


# ---- Server-Sent Events -------------------------------------------------------------


class Stream:
    """GET path on a plain socket: .status, .headers, .body (when not chunked); event() reads on."""

    def __init__(self, port, path, headers=None, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
        extra = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n" % (path, port, extra)).encode())
        self.raw = b""     # bytes read and not decoded yet
        self.text = b""    # decoded body not parsed into events yet
        self.done = False  # the last chunk came: a clean end
        self.eof = False   # the connection closed
        deadline = time.time() + timeout * SLOW
        while b"\r\n\r\n" not in self.raw and not self.eof:
            self._recv(deadline)
        head, _, self.raw = self.raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else 0
        self.headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self.body = b""
        if not self.chunked:
            n = int(self.headers.get("content-length", "0") or 0)
            while len(self.raw) < n and not self.eof:
                self._recv(deadline)
            self.body, self.raw = self.raw[:n], self.raw[n:]

    def _recv(self, deadline):
        left = deadline - time.time()
        if left <= 0:
            raise TimeoutError("no bytes in time")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no bytes in time")
        except OSError:
            data = b""
        if data:
            self.raw += data
        else:
            self.eof = True

    def _decode(self):
        while self.chunked and not self.done:
            line, sep, rest = self.raw.partition(b"\r\n")
            if not sep:
                return
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.done = True  # trailers, if any, are not looked at
                self.raw = rest
                return
            if len(rest) < size + 2:
                return
            self.text += rest[:size]
            self.raw = rest[size + 2:]

    def event(self, timeout):
        """The next block: {"event", "data"} or {"comment"}; None at the end of the stream.
        Raises TimeoutError when nothing whole came within timeout seconds."""
        deadline = time.time() + timeout
        while True:
            self._decode()
            if b"\n\n" in self.text:
                block, _, self.text = self.text.partition(b"\n\n")
                ev = {}
                for ln in block.decode("utf-8").split("\n"):
                    if ln.startswith(":"):
                        ev["comment"] = ln[1:].strip()
                    else:
                        k, _, v = ln.partition(":")
                        v = v[1:] if v.startswith(" ") else v
                        ev[k] = ev[k] + "\n" + v if k == "data" and k in ev else v
                return ev
            if self.done or self.eof:
                return None
            self._recv(deadline)

    def json_data(self, ev):
        try:
            return json.loads(ev.get("data", ""))
        except ValueError:
            return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
