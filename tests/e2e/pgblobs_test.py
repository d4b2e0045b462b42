#!/usr/bin/env python3
"""pgblobs_test.py - blobs in PostgreSQL: an API server and a worker that share nothing but the database.

`upres serve --no-workers` and `upres worker`, each with a data folder of
its own, both `--store URL --blobs postgresql:` on a schema of the pg
fixture's cluster:

- a random-noise PNG of over 1 MiB (so two chunks) is uploaded to the API
  server: its bytes land in blob_chunks, no staged file stays behind;
- the worker (another folder: it can only read the input from the
  database) runs it; the input's blob is removed when the job ends, and
  the worker's streamed local copy of it too;
- the download from the API server streams the result from its chunks:
  200, its Content-Length, a PNG of twice the size, the same SHA-256 as
  the chunks in the database; downloading deletes it (the upscale-service
  rule): its rows go;
- `upres submit --blobs postgresql:` queues a file from a third folder,
  which the worker runs and the API server serves;
- `--blobs postgresql:` with a SQLite store is refused at start, and
  `--blobs postgresql:x` is a setting error (exit 2).

Needs UPRES_TEST_PG (ctest passes the pg fixture's cluster); skipped
without it. Every wait is bounded.
"""
import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import time
import uuid
import zlib

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import (MODELS, SLOW, UPRES, Server, check, make_tmp, png, png_size, request, submit,  # noqa: E402
                    tally, wait_status)

PG = os.environ.get("UPRES_TEST_PG")
MODEL = "realesr-animevideov3"


def psql(url, sql):
    p = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                       capture_output=True, text=True, timeout=30 * SLOW)
    if p.returncode != 0:
        raise RuntimeError("psql: %s" % p.stderr.strip())
    return p.stdout.strip()


def noise_png(w, h, seed):
    """A gray PNG of random pixels: it does not compress, so w*h bytes or a little more."""
    rnd = random.Random(seed)
    raw = b"".join(b"\x00" + bytes(rnd.getrandbits(8) for _ in range(w)) for _ in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))


def files_in(folder):
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def wait_for(fn, budget_s):
    deadline = time.time() + budget_s * SLOW
    while True:
        v = fn()
        if v or time.time() > deadline:
            return v
        time.sleep(0.1)


def main():
    if not PG:
        print("pgblobs_test: UPRES_TEST_PG is not set: skipped (ctest sets it with a PostgreSQL server)")
        return 0
    t0 = time.time()
    tmp = make_tmp("upres-pgblobs-test-")
    env = dict(os.environ, UPRES_MODELS=MODELS)
    # refusals first: nothing starts
    p = subprocess.run([UPRES, "serve", "--blobs", "postgresql:", "--data", os.path.join(tmp, "sq"), "--port", "0"],
                       capture_output=True, text=True, timeout=60 * SLOW, env=env)
    check(p.returncode != 0 and "not on PostgreSQL" in p.stderr, "--blobs postgresql: with a SQLite store is refused",
          (p.returncode, p.stderr[-400:]))
    p = subprocess.run([UPRES, "worker", "--blobs", "postgresql:x", "--data", os.path.join(tmp, "sq")],
                       capture_output=True, text=True, timeout=30 * SLOW, env=env)
    check(p.returncode == 2 and "bad blobs" in p.stderr, "--blobs postgresql:x -> exit 2", (p.returncode, p.stderr))

    schema = "pb_" + uuid.uuid4().hex[:12]
    psql(PG, "CREATE SCHEMA %s" % schema)
    url = "%s%coptions=-csearch_path%%3D%s" % (PG, "&" if "?" in PG else "?", schema)
    api_data, w_data = os.path.join(tmp, "api"), os.path.join(tmp, "w")
    api = Server("api", "--no-workers", "--store", url, "--blobs", "postgresql:", "--rate-per-minute", "0",
                 "--rate-per-day", "0", data=api_data)
    worker = None
    try:
        if not check(api.start(), "serve --no-workers --blobs postgresql: starts"):
            return 1
        check("blobs postgresql" in api.tail(), "  its log says where the blobs are", api.tail(600))
        image = noise_png(1024, 1024, 7)
        check(len(image) > (1 << 20), "the input is over 1 MiB", len(image))
        r = submit(api.port, data=image, filename="noise.png", model_name=MODEL, scale=2)
        jid = (r.json() or {}).get("job_id", "")
        check(r.status == 202 and jid, "a job submitted to the API server", r)
        input_key = psql(url, "SELECT a.key FROM jobs j JOIN assets a ON a.id = j.asset_id WHERE j.id = '%s'" % jid)
        check(input_key.startswith("uploads/"), "  its input is a blob", input_key)
        chunks = psql(url, "SELECT count(*), sum(length(c.data)) FROM blob_chunks c JOIN blobs b ON b.id = c.blob "
                           "WHERE b.key = '%s'" % input_key)
        check(chunks == "2|%d" % len(image), "  stored as two chunks of its bytes", chunks)
        check([f for f in files_in(os.path.join(api_data, "uploads")) if f.startswith(".upload-")] == [],
              "  no staged upload left in the API server's folder", files_in(os.path.join(api_data, "uploads")))

        wlog = open(os.path.join(tmp, "w.log"), "ab")
        worker = subprocess.Popen([UPRES, "worker", "--store", url, "--blobs", "postgresql:", "--data", w_data,
                                   "--name", "pgw", "--threads", "2"], stdout=wlog, stderr=wlog, env=env)
        wlog.close()
        st = wait_status(api.port, jid, ("completed", "failed"), 300)
        check(st.get("status") == "completed", "the worker (its own folder) runs the job", st)
        result_key = psql(url, "SELECT result_key FROM jobs WHERE id = '%s'" % jid)
        check(result_key.startswith("results/"), "  its result is a blob", result_key)
        check(wait_for(lambda: psql(url, "SELECT count(*) FROM blobs WHERE key = '%s'" % input_key) == "0", 10),
              "  the input's blob is removed when the job ends")
        check(files_in(os.path.join(w_data, "uploads")) == [], "  the worker's local copy of the input is removed",
              files_in(os.path.join(w_data, "uploads")))
        want = psql(url, "SELECT encode(sha256(string_agg(c.data, ''::bytea ORDER BY c.n)), 'hex'), count(*) "
                         "FROM blob_chunks c JOIN blobs b ON b.id = c.blob WHERE b.key = '%s'" % result_key)
        d = request(api.port, "GET", "/api/v1/download/" + jid, timeout=120)
        got = hashlib.sha256(d.body).hexdigest()
        check(d.status == 200 and png_size(d.body) == (2048, 2048), "the download is the x2 PNG",
              (d.status, png_size(d.body)))
        check(int(d.headers.get("content-length", "-1")) == len(d.body), "  with its length told first",
              d.headers.get("content-length"))
        n_chunks = int(want.split("|")[1] or 0)
        check(want.split("|")[0] == got and n_chunks >= 2, "  byte for byte the %d chunks in the database" % n_chunks,
              (want, got))
        check(wait_for(lambda: psql(url, "SELECT count(*) FROM blobs") == "0", 10),
              "  downloading deleted it: no blob row left", psql(url, "SELECT key FROM blobs"))
        check(psql(url, "SELECT count(*) FROM blob_chunks") == "0", "  nor chunk rows")

        small = os.path.join(tmp, "small.png")
        with open(small, "wb") as f:
            f.write(png(48, 40))
        p = subprocess.run([UPRES, "submit", "--store", url, "--blobs", "postgresql:", "--data",
                            os.path.join(tmp, "cli"), "-m", MODEL, "-s", "2", small], capture_output=True, text=True,
                           timeout=60 * SLOW, env=env)
        line = json.loads(p.stdout.splitlines()[0]) if p.returncode == 0 and p.stdout else {}
        check(line.get("status") == "queued", "upres submit --blobs postgresql: queues a file", (p.stdout, p.stderr))
        cid = line.get("job_id", "")
        st = wait_status(api.port, cid, ("completed", "failed"), 120) if cid else {}
        d = request(api.port, "GET", "/api/v1/download/" + cid, timeout=60) if st.get("status") == "completed" else None
        check(d and d.status == 200 and png_size(d.body) == (96, 80), "  the worker runs it, the API server serves it",
              (st, d and d.status))
    finally:
        if worker:
            worker.terminate()
            try:
                worker.wait(timeout=30 * SLOW)
            except subprocess.TimeoutExpired:
                worker.kill()
            check(worker.returncode == 0, "the worker stops with status 0", worker.returncode)
        rc = api.stop()
        check(rc == 0, "the API server stops with status 0", rc)
        if tally.failed:
            print("---- api log (tail) ----\n%s" % api.tail(3000))
            try:
                print("---- worker log (tail) ----\n%s" % open(os.path.join(tmp, "w.log"), "rb").read()[-3000:].decode(
                    "utf-8", "replace"))
            except OSError:
                pass
        try:
            psql(PG, "SET client_min_messages = warning; DROP SCHEMA %s CASCADE" % schema)
        except RuntimeError as e:
            print(e)
    print("pgblobs_test: %d passed, %d failed (%.1f s)" % (tally.passed, tally.failed, time.time() - t0))
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
