#!/usr/bin/env python3
"""multiprocess_test.py - two `upres serve` on one data folder, one of them killed mid-job.

Run by ctest as: python3 tests/e2e/multiprocess_test.py PATH/TO/upres
with UPRES_TEST_MODELS (models folder).

Any number of processes may share one SQLite data folder: a claim has an
owner (worker id) and a lease, renewed every heartbeat; a job whose lease
runs out is queued again by whichever process sees it first; every write a
worker makes is fenced by its claim, and each attempt writes its own result
file. Here processes A and B (--lease 3 --heartbeat 1) share one folder and
run 40 small jobs (realesr-animevideov3, x2), submitted in waves to both;
A is killed with SIGKILL while it holds a job (checked in the store: the
job is claimed or processing by one of A's workers), several times, and
restarted each time. Then:

  - every job completes, exactly once: one "completed" line per job in all
    the logs together (the worker logs one line per job transition), and
    a killed job is claimed again within lease + 5 s of the kill;
  - every result downloads (GET /api/v1/download/{id}: 200, a PNG of twice
    the size);
  - uploads/ is empty once the jobs completed, results/ once downloaded;
  - both stop with status 0 and `PRAGMA integrity_check` says ok.

Also: `serve` refuses a --heartbeat that is not under --lease.

The same scenario runs again on PostgreSQL when UPRES_TEST_PG names a
database (ctest's pg fixture, tests/pg/cluster.sh): both servers take
`--store` with that URL (a schema of their own through its search_path,
made here with psql), the store is read with psql, and its check is the
rows' statuses alone (no integrity_check).

On PostgreSQL, two more servers with data folders of their own share one
key's request limit and one address's guest-session limit: the counts
live in the database.

The measured rescue times are printed.
"""
import datetime
import os
import re
import uuid
import signal
import sqlite3
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import client  # noqa: E402
from client import (QUIET, SLOW, UPRES, Server, check, make_tmp, png, png_size, request, submit,  # noqa: E402
                    tally)

TMP = make_tmp("upres-multiprocess-test-")
LEASE_S, HEARTBEAT_S = 3, 1
N_JOBS, N_WAVES = 40, 4
N_KILLS = 3  # mid-job kills wanted (at most one per job: a job has 3 attempts)
EDGE = 128  # input pixels: about 0.15 s a job on one thread, long enough to be caught mid-job
MODEL = "realesr-animevideov3"
ARGS = ("--lease", str(LEASE_S), "--heartbeat", str(HEARTBEAT_S), "--workers", "1")

CLAIMED = re.compile(r"^(\S+) info job ([0-9a-f-]{36}) claimed \(.*attempt (\d+), worker ([^)]+)\)$", re.M)
ENDED = re.compile(r" job ([0-9a-f-]{36})(?: completed in| failed:| cancelled| queued again|: attempt \d+ superseded)")
COMPLETED = re.compile(r" info job ([0-9a-f-]{36}) completed in ", re.M)


def say(msg):
    if not QUIET:
        print(msg)


def log_time(stamp):
    """A log line's time stamp (2026-01-02T03:04:05.678Z) as Unix seconds."""
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


PG = os.environ.get("UPRES_TEST_PG")


class Store:
    """Where the two servers keep their jobs: the data folder's SQLite file, or a PostgreSQL schema."""

    def __init__(self, data, pg_url=None):
        self.data = data
        self.url = None
        if pg_url:
            schema = "mp_" + uuid.uuid4().hex[:12]
            self.base = pg_url
            self.psql("CREATE SCHEMA %s" % schema, search_path=False)
            self.schema = schema
            self.url = "%s%coptions=-csearch_path%%3D%s" % (pg_url, "&" if "?" in pg_url else "?", schema)
        self.name = "PostgreSQL" if pg_url else "SQLite"

    def args(self):
        return ("--store", self.url) if self.url else ()

    def psql(self, sql, search_path=True):
        if search_path:
            sql = "SET search_path = %s; %s" % (self.schema, sql)
        p = subprocess.run(["psql", "-X", "-q", "-At", "-F", "|", "-v", "ON_ERROR_STOP=1", "-d", self.base,
                            "-c", sql], capture_output=True, text=True, timeout=30 * SLOW)
        if p.returncode != 0:
            raise RuntimeError("psql: %s" % p.stderr.strip())
        return [tuple(int(x) if x.lstrip("-").isdigit() else x for x in line.split("|"))
                for line in p.stdout.splitlines() if line]

    def rows(self, sql):
        """The rows of sql (no parameters: ids here are the server's UUIDs), ints as ints."""
        if self.url:
            return self.psql(sql)
        con = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.data, "upres.db"), uri=True, timeout=10)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()


def job_row(store, jid):
    """(status, attempts, worker) of job jid in the store, or None."""
    assert re.fullmatch(r"[0-9a-f-]{36}", jid)
    rows = store.rows("SELECT status, attempts, coalesce(worker, '') FROM jobs WHERE id = '%s'" % jid)
    return rows[0] if rows else None


def read_from(path, offset):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def pending_claim(text):
    """The last job the log text shows claimed and not ended: (job id, worker id), or None."""
    ended = set(ENDED.findall(text))
    last = None
    for m in CLAIMED.finditer(text):
        if m.group(2) not in ended:
            last = (m.group(2), m.group(4))
    return last


def kill_mid_job(store, a, killed, budget_s):
    """Wait (up to budget_s) until A holds a job not killed before, SIGKILL A and say whether the
    store showed that job held by A's worker at the kill: (job id, kill time) or None."""
    offset = a.log_offset
    deadline = time.time() + budget_s * SLOW
    while time.time() < deadline and a.proc.poll() is None:
        p = pending_claim(read_from(a.log, offset))
        if p and p[0] not in killed:
            a.proc.send_signal(signal.SIGKILL)
            t_kill = time.time()
            a.proc.wait(timeout=30)
            row = job_row(store, p[0])
            held = row is not None and row[0] in (1, 6) and row[2] == p[1]
            say("killed A (pid %d) holding job %s: store says %r" % (a.proc.pid, p[0], row))
            return (p[0], t_kill) if held else None
        time.sleep(0.002)
    return None


def start(s):
    s.log_offset = os.path.getsize(s.log) if os.path.exists(s.log) else 0
    return s.start()


def scenario(store):
    """Two servers on store and one data folder, A killed mid-job N_KILLS times: 0, or 1 when they did not start."""
    data = store.data
    say("---- %s ----" % store.name)
    a = Server("a-" + store.name, *(ARGS + store.args()), data=data, threads=1)
    b = Server("b-" + store.name, *(ARGS + store.args()), data=data, threads=1)
    if not check(start(a) and start(b), "%s: two servers start on one data folder" % store.name):
        a.stop()
        b.stop()
        return 1
    ids, killed, kills = [], {}, 0
    image = png(EDGE, EDGE)
    try:
        for wave in range(N_WAVES):
            for i in range(N_JOBS // N_WAVES):
                s = a if i % 2 == 0 else b
                r = submit(s.port, data=image, filename="w%d-%d.png" % (wave, i), model_name=MODEL, scale=2)
                jid = (r.json() or {}).get("job_id", "")
                if check(r.status == 202 and jid, "submit job %d to %s -> 202" % (len(ids), s.name), r):
                    ids.append(jid)
            if len(killed) < N_KILLS:
                got = kill_mid_job(store, a, killed, 20)
                kills += 1
                if got:
                    killed[got[0]] = got[1]
                if not check(start(a), "A starts again after kill -9 %d" % kills):
                    return 1
        # waves may be done before A held a job often enough: more kills on the last wave's leftovers
        while len(killed) < N_KILLS and kills < 8:
            r = [submit((a if i % 2 == 0 else b).port, data=image, filename="x.png", model_name=MODEL, scale=2)
                 for i in range(4)]
            ids.extend((x.json() or {}).get("job_id", "") for x in r if x.status == 202)
            got = kill_mid_job(store, a, killed, 20)
            kills += 1
            if got:
                killed[got[0]] = got[1]
            if not check(start(a), "A starts again after kill -9 %d" % kills):
                return 1
        check(len(killed) >= N_KILLS, "A killed mid-job %d times (store: the job held by A's worker)" % N_KILLS,
              "%d of %d kills" % (len(killed), kills))

        # every job completes; the killed ones are rescued by B or the new A
        deadline = time.time() + (LEASE_S + 5) * 2 * SLOW + 60 * SLOW
        left = list(ids)
        while left and time.time() < deadline:
            left = [j for j in left if (request(b.port, "GET", "/api/v1/status/" + j).json() or {}).get("status")
                    not in ("completed", "failed", "cancelled", "expired")]
            time.sleep(0.1)
        statuses = {j: (request(b.port, "GET", "/api/v1/status/" + j).json() or {}).get("status") for j in ids}
        check(all(v == "completed" for v in statuses.values()), "all %d jobs completed" % len(ids),
              {j: v for j, v in statuses.items() if v != "completed"})
        uploads = os.listdir(os.path.join(data, "uploads"))
        check(not uploads, "uploads/ is empty once the jobs completed", uploads)

        logs = read_from(a.log, 0) + read_from(b.log, 0)
        done = {}
        for jid in COMPLETED.findall(logs):
            done[jid] = done.get(jid, 0) + 1
        twice = {j: n for j, n in done.items() if n != 1}
        check(not twice and all(done.get(j) == 1 for j in ids),
              "every job completed exactly once (one 'completed' line per job in the logs)",
              {j: done.get(j, 0) for j in ids if done.get(j) != 1})
        # rescue: a killed job is claimed again (attempt 2, another worker) within lease + 5 s
        rescue = []
        for jid, t_kill in killed.items():
            again = [log_time(m.group(1)) for m in CLAIMED.finditer(logs)
                     if m.group(2) == jid and int(m.group(3)) >= 2]
            rescue.append(min(again) - t_kill if again else None)
        print("multiprocess: %d kills, %d mid-job; claimed again after %s s (bound %d s)" % (
            kills, len(killed), ", ".join("%.2f" % r if r is not None else "never" for r in rescue),
            LEASE_S + 5))
        check(all(r is not None and r <= (LEASE_S + 5) * SLOW for r in rescue),
              "a killed job is claimed again within lease + 5 s", rescue)

        bad = []
        for i, jid in enumerate(ids):
            s = a if i % 2 else b
            r = request(s.port, "GET", "/api/v1/download/" + jid)
            if r.status != 200 or png_size(r.body) != (2 * EDGE, 2 * EDGE):
                bad.append((jid, r.status, png_size(r.body)))
        check(not bad, "every result downloads: 200, a %dx%d PNG" % (2 * EDGE, 2 * EDGE), bad)
        time.sleep(0.3)  # the download's deletion runs once the reply is sent
        results = os.listdir(os.path.join(data, "results"))
        check(not results, "results/ is empty after the downloads", results)
    finally:
        rc_a, rc_b = a.stop(), b.stop()
        check(rc_a == 0 and rc_b == 0, "both servers stop with status 0", (rc_a, rc_b))
        if tally.failed:
            for s in (a, b):
                print("---- %s log (tail) ----\n%s" % (s.name, s.tail(3000)))
    if not store.url:
        ok = store.rows("PRAGMA integrity_check")
        check(ok == [("ok",)], "PRAGMA integrity_check: ok", ok)
    rows = store.rows("SELECT status, count(*) FROM jobs GROUP BY status")
    attempts = dict(store.rows("SELECT id, attempts FROM jobs"))
    check(rows == [(5, len(ids))], "every job downloaded (expired) in the store", rows)
    check(all(attempts.get(j, 0) >= 2 for j in killed), "each killed job took a second attempt",
          {j: attempts.get(j) for j in killed})
    return 0


def shared_limits(store):
    """PostgreSQL: two servers with data folders of their own count one key's requests and one address's guest
    sessions together (the limits live in the database)."""
    say("---- shared limits (%s) ----" % store.name)
    common = ("--rate-per-minute", "4", "--rate-per-day", "0", "--guest-sessions-per-ip", "2")
    a = Server("la", *(common + store.args()), data=os.path.join(TMP, "limits-a"))
    b = Server("lb", *(common + store.args()), data=os.path.join(TMP, "limits-b"))
    try:
        if not check(start(a) and start(b), "two servers on one database, each with its own data folder"):
            return
        p = a.cli("keys", "create", "--name", "shared", "--store", store.url)
        key = p.stdout.split("\n", 1)[0].strip() if p.returncode == 0 else None
        if not check(key, "a key made through server A's database"):
            return
        auth = {"Authorization": "Bearer " + key}
        codes = [request(s.port, "GET", "/api/v1/users/me", headers=auth).status for s in (a, b, a, b, a, b)]
        check(codes == [200, 200, 200, 200, 429, 429],
              "--rate-per-minute 4: two requests on A and two on B, then both refuse (429)", codes)
        r = request(b.port, "GET", "/api/v1/users/me", headers=auth)
        retry = int(r.headers.get("retry-after", "0"))
        check(r.status == 429 and 50 <= retry <= 60, "B's 429 says Retry-After of about a minute", r.headers)
        body, ctype = client.multipart({}, {"file": ("g.png", png(8, 8), "image/png")})
        got = [request(s.port, "POST", "/upload", body=body, headers={"Content-Type": ctype}).status
               for s in (a, b, a)]
        check(got[:2] == [200, 200] and got[2] == 429,
              "--guest-sessions-per-ip 2: a session on A, one on B, the third refused on A", got)
    finally:
        rc_a, rc_b = a.stop(), b.stop()
        check(rc_a == 0 and rc_b == 0, "both limit servers stop with status 0", (rc_a, rc_b))
        if tally.failed:
            for s in (a, b):
                print("---- %s log (tail) ----\n%s" % (s.name, s.tail(3000)))


def main():
    for f in (UPRES,):
        if not os.path.exists(f):
            print("missing %s" % f)
            return 1
    t0 = time.time()
    # a heartbeat that is not under the lease would let a live worker's claim run out: refused
    for args in (("--lease", "2", "--heartbeat", "2"), ("--heartbeat", "30"), ("--lease", "0")):
        p = subprocess.run([UPRES, "serve", "--port", "0", "--data", os.path.join(TMP, "refused")] + list(args),
                           capture_output=True, text=True, timeout=30 * SLOW)
        check(p.returncode == 2 and ("heartbeat" in p.stderr or "lease" in p.stderr),
              "serve %s -> exit 2 with a message" % " ".join(args), (p.returncode, p.stderr[-300:]))
    stores = [Store(os.path.join(TMP, "data"))]
    if PG:
        stores.append(Store(os.path.join(TMP, "data-pg"), PG))
    else:
        print("multiprocess_test: UPRES_TEST_PG is not set: SQLite only (ctest sets it with a PostgreSQL server)")
    for store in stores:
        if scenario(store):
            return 1
    if PG:
        shared_limits(Store(os.path.join(TMP, "data-limits"), PG))
    print("multiprocess_test: %d passed, %d failed (%.1f s)" % (tally.passed, tally.failed, time.time() - t0))
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
