#!/usr/bin/env python3
"""proxy_test.py - --trusted-proxies: the client behind a load balancer, as per-address limits see it.

Run by ctest as: python3 tests/e2e/proxy_test.py PATH/TO/upres
with UPRES_TEST_MODELS (models folder).

A guest session is opened by an anonymous Tinify upload, and
--guest-sessions-per-ip 1 lets one address open one a day, so whether an
upload is refused (429 TOO_MANY_SESSIONS) tells which address the server
took for the client:

- "direct" (no --trusted-proxies): X-Forwarded-For is ignored, whatever it
  says: two uploads naming two clients are one address (the peer).
- "behind" (--trusted-proxies 127.0.0.0/8, ::1): the header names the
  client, read from the right past trusted hops; an entry that is not a
  bare address stops the walk at the hop before it; repeated header lines
  are one list.
- a bad --trusted-proxies is refused at start (exit 2, one line).
"""
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import (SLOW, UPRES, Server, check, make_tmp, multipart, png, request, run,  # noqa: E402
                    tally)

TMP = make_tmp("upres-proxy-test-")
SERVERS = []
IMAGE = png(8, 8)


def start(name, *args):
    s = Server(name, *args)
    SERVERS.append(s)
    return s if check(s.start(), "server %s starts" % name) else None


def upload(s, xff=()):
    """An anonymous upload (a new guest session) with these X-Forwarded-For lines: its status."""
    body, ctype = multipart({}, {"file": ("p.png", IMAGE, "image/png")})
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
    try:
        conn.putrequest("POST", "/upload")
        conn.putheader("Content-Type", ctype)
        conn.putheader("Content-Length", str(len(body)))
        for line in xff:
            conn.putheader("X-Forwarded-For", line)
        conn.endheaders(body)
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def test_direct(s):
    check(upload(s, ["198.51.100.1"]) == 200, "direct: a first session")
    check(upload(s, ["198.51.100.2"]) == 429, "direct: X-Forwarded-For is ignored: the peer's second -> 429")


def test_behind(s):
    cases = [
        (["198.51.100.7"], 200, "a client named by the proxy gets a session"),
        (["198.51.100.7"], 429, "the same client again -> 429"),
        (["198.51.100.8"], 200, "another client behind the same proxy -> a session of its own"),
        (["198.51.100.8, 127.0.0.1, ::1"], 429, "trusted hops on the right are skipped: .8 again -> 429"),
        (["203.0.113.5, 198.51.100.9"], 200, "the rightmost untrusted address is the client (.9), not a "
         "spoofed one on its left"),
        (["203.0.113.5", "198.51.100.9"], 429, "two header lines are one list: .9 again -> 429"),
        (["198.51.100.10, unknown"], 200, "an entry that is not an address stops the walk: the proxy (the peer) "
         "is the client"),
        (["198.51.100.11:8080"], 429, "an address with a port is not one: the peer again -> 429"),
        (["2001:db8::1"], 200, "an IPv6 client"),
        (["2001:db8::1, ::ffff:127.0.0.1"], 429, "a trusted hop written v4-mapped is skipped: the IPv6 client -> 429"),
    ]
    for xff, want, what in cases:
        got = upload(s, xff)
        check(got == want, "behind a proxy: %s (%s)" % (what, " | ".join(xff)), got)


def test_bad_value():
    p = subprocess.run([UPRES, "serve", "--port", "0", "--data", os.path.join(TMP, "bad"), "--trusted-proxies",
                        "10.0.0.0/8, nonsense"], capture_output=True, text=True, timeout=30 * SLOW)
    lines = [l for l in p.stderr.splitlines() if l.startswith("upres: error: ")]
    check(p.returncode == 2 and len(lines) == 1 and "nonsense" in lines[0] and "trusted-proxies" in lines[0],
          "a bad --trusted-proxies: exit 2, one line naming the entry", (p.returncode, p.stderr[-300:]))
    check(not os.path.exists(os.path.join(TMP, "bad")), "no data folder made")


def main():
    t0 = time.time()
    try:
        s = start("direct", "--guest-sessions-per-ip", "1")
        if s:
            run(test_direct, s)
        s = start("behind", "--guest-sessions-per-ip", "1", "--trusted-proxies", "127.0.0.0/8, ::1")
        if s:
            run(test_behind, s)
        run(test_bad_value)
    finally:
        for s in SERVERS:
            rc = s.stop()
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
