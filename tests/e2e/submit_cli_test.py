#!/usr/bin/env python3
"""submit_cli_test.py - `upres submit` queues jobs through the jobs API with
no server in between, and a server on the same data folder runs them.

Run by ctest as: python3 tests/e2e/submit_cli_test.py PATH/TO/upres
with UPRES_TEST_MODELS (models folder).

1. A server runs on a data folder; `upres submit --data DIR -m MODEL -s 2
   a.png b.png` prints one JSON line per file with its job id, and exits 0;
   the server finds both jobs (it polls the store once a second) and
   completes them: each downloads as a 2x PNG.
2. A pipeline (--steps: upscale x2, resize to 50x30 with pad, encode webp)
   gives a 50x30 WebP.
3. Refusals are JSON lines with the engine's code, exit 1, nothing queued:
   a text file (UNSUPPORTED_IMAGE), an unknown model (INVALID_MODEL), a
   missing file; a malformed --steps is a usage error (exit 2) before any
   file is read.
"""
import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import Server, check, make_tmp, png, png_size, request, run, tally, wait_status  # noqa: E402

TMP = make_tmp("upres-submit-cli-test-")
MODEL = "realesr-animevideov3"


def lines(p):
    out = []
    for line in p.stdout.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"unparsed": line})
    return out


def job_count(server):
    h = request(server.port, "GET", "/api/v1/health").json() or {}
    return sum((h.get("jobs") or {}).values()) if isinstance(h.get("jobs"), dict) else None


def test_submit(server):
    a, b = os.path.join(TMP, "a.png"), os.path.join(TMP, "b.png")
    with open(a, "wb") as f:
        f.write(png(40, 30))
    with open(b, "wb") as f:
        f.write(png(24, 24))
    p = server.cli("submit", "-m", MODEL, "-s", "2", a, b)
    out = lines(p)
    check(p.returncode == 0 and len(out) == 2, "submit: exit 0, one line per file", p.stdout + p.stderr)
    for line, want in zip(out, ((80, 60), (48, 48))):
        job = line.get("job_id")
        check(job and line.get("status") == "queued" and line.get("file", "").endswith(".png"), "a queued job",
              repr(line))
        st = wait_status(server.port, job, ("completed", "failed"), 60)
        check(st.get("status") == "completed", "the server ran it", repr(st))
        r = request(server.port, "GET", "/api/v1/download/" + job)
        check(r.status == 200 and png_size(r.body) == want, "downloads at 2x", "%s %r" % (r.status, png_size(r.body)))


def test_pipeline(server):
    a = os.path.join(TMP, "c.png")
    with open(a, "wb") as f:
        f.write(png(32, 32))
    steps = json.dumps([{"op": "upscale", "model": MODEL, "scale": 2},
                        {"op": "resize", "width": 50, "height": 30, "fit": "pad"},
                        {"op": "encode", "format": "webp", "quality": 70}])
    p = server.cli("submit", "--steps", steps, a)
    out = lines(p)
    job = out[0].get("job_id") if out else None
    check(p.returncode == 0 and job, "a pipeline is queued", p.stdout + p.stderr)
    st = wait_status(server.port, job, ("completed", "failed"), 60)
    check(st.get("status") == "completed", "the pipeline completed", repr(st))
    r = request(server.port, "GET", "/api/v1/download/" + job)
    check(r.status == 200 and r.body[:4] == b"RIFF" and r.body[8:12] == b"WEBP", "a WebP", repr(r.body[:16]))
    check(r.headers.get("content-type") == "image/webp", "served as image/webp", repr(r.headers))


def test_refusals(server):
    text = os.path.join(TMP, "note.png")
    with open(text, "w") as f:
        f.write("not an image\n")
    ok = os.path.join(TMP, "ok.png")
    with open(ok, "wb") as f:
        f.write(png(16, 16))
    before = job_count(server)
    p = server.cli("submit", "-m", MODEL, text, os.path.join(TMP, "missing.png"))
    out = lines(p)
    check(p.returncode == 1 and len(out) == 2, "refused files: exit 1, one line each", p.stdout + p.stderr)
    check(out and out[0].get("code") == "UNSUPPORTED_IMAGE" and out[0].get("status") == 415, "a text file: 415",
          repr(out))
    check(len(out) > 1 and out[1].get("code") == "FILE_UNREADABLE", "a missing file", repr(out))
    p = server.cli("submit", "-m", "no-such-model", ok)
    out = lines(p)
    check(p.returncode == 1 and out and out[0].get("code") == "INVALID_MODEL", "an unknown model", p.stdout)
    p = server.cli("submit", "--steps", "[{\"op\":\"blur\"}]", ok)
    check(p.returncode == 2 and not p.stdout and "steps" in p.stderr, "bad --steps: a usage error",
          p.stdout + p.stderr)
    check(job_count(server) == before, "nothing was queued", "%r -> %r" % (before, job_count(server)))


def main():
    server = Server("submit-cli")
    if not check(server.start(), "server starts"):
        return 1
    try:
        run(test_submit, server)
        run(test_pipeline, server)
        run(test_refusals, server)
    finally:
        server.stop()
    if tally.failed:
        print("---- server log (tail) ----\n" + server.tail(4000))
    print("%d passed, %d failed" % (tally.passed, tally.failed))
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
