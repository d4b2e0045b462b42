#!/usr/bin/env python3
"""scaleout_test.py - one API server and `upres worker` processes on PostgreSQL, killed, paused, cut off.

Run by ctest as: python3 tests/e2e/scaleout_test.py PATH/TO/upres
with UPRES_TEST_MODELS (models folder).

The cluster is this test's own (tests/pg/cluster.sh in its scratch
folder, a Unix socket only), not the ctest fixture's: the test restarts
and stops it. One `upres serve --no-workers` answers the API; workers
(`upres worker --lease 3 --heartbeat 1 --threads 1`) claim from the same
database and share the API server's blob folder (one through --blobs
file:///..., the others through a plain path). Jobs are realesr-animevideov3
x2 on small gray PNGs, from three API keys.

  - models: worker_count 0 and available false with no worker; 3 once three
    workers run; it falls while a worker is paused past its lease or
    stopped, and comes back with a replacement; 0 at the end;
  - 60 jobs from 3 keys, a worker SIGKILLed while it holds a job (the store
    names its pid in the claim) 10 times, a replacement started each time:
    every job completes, exactly once (one "completed" line per job in all
    the workers' logs), each killed job claimed again within lease + 5 s;
  - SIGSTOP a worker holding a job until another worker has completed it,
    then SIGCONT: the late worker's run is refused (its log says
    superseded or refused), the job's row is unchanged and results/ holds
    only the winner's file;
  - PostgreSQL restarted while 20 jobs run: every worker is still alive
    and every job completes once;
  - SIGTERM a worker holding a job: it exits 0 within 2 s, its row is gone,
    the job completes in another worker;
  - every result downloads (a PNG of twice the size) and results/ and
    uploads/ end empty; the store has no row left in the workers registry;
  - a worker with --db-retries 2 on a stopped server exits 1 with log lines
    saying it retried and gave up.

Every wait is bounded in count and time (SLOW under the sanitizers).
"""
import datetime
import os
import re
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import (MODELS, QUIET, REPO, SLOW, UPRES, Server, Stream, check, free_port, make_tmp, png,  # noqa: E402
                    png_size, request, submit, tally)

TMP = make_tmp("upres-scaleout-")
os.chmod(TMP, 0o755)  # the cluster runs as postgres when we are root: it needs to reach its folder
PG_DIR = os.path.join(TMP, "pg")
CLUSTER = os.path.join(REPO, "tests", "pg", "cluster.sh")
DATA = os.path.join(TMP, "data")
LEASE_S, HEARTBEAT_S = 3, 1
MODEL = "realesr-animevideov3"
OTHER = "realesrgan-x4plus"  # served by one more worker, which must never take a MODEL job
EDGE = 160  # input pixels: a few tenths of a second a job on one thread, long enough to be caught mid-job
N_JOBS, N_KILLS = 60, 10
WORKER_ARGS = ("--lease", str(LEASE_S), "--heartbeat", str(HEARTBEAT_S), "--threads", "1")

CLAIMED = re.compile(r"^(\S+) info job ([0-9a-f-]{36}) claimed \(.*attempt (\d+), worker ([^)]+)\)$", re.M)
COMPLETED = re.compile(r" info job ([0-9a-f-]{36}) completed in ", re.M)


def say(msg):
    if not QUIET:
        print(msg)


def log_time(stamp):
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


# ---- the cluster ----------------------------------------------------------------------


def pg_bin():
    dirs = sorted((os.path.join("/usr/lib/postgresql", v, "bin") for v in os.listdir("/usr/lib/postgresql")),
                  key=lambda p: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", p)]) \
        if os.path.isdir("/usr/lib/postgresql") else []
    return os.environ.get("UPRES_PG_BIN") or (dirs[-1] if dirs else "")


def as_owner(cmd):
    return (["runuser", "-u", "postgres", "--"] + cmd) if os.geteuid() == 0 else cmd


def pg_ctl(*args):
    # the server's output to its log, none to us: a started server would hold our pipes open
    p = subprocess.run(as_owner([os.path.join(pg_bin(), "pg_ctl"), "-D", os.path.join(PG_DIR, "data"), "-w",
                                 "-t", "60", "-l", os.path.join(PG_DIR, "server.log")] + list(args)),
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=90 * SLOW)
    return p.returncode == 0


def psql(url, sql):
    p = subprocess.run(["psql", "-X", "-q", "-At", "-F", "|", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                       capture_output=True, text=True, timeout=30 * SLOW)
    if p.returncode != 0:
        raise RuntimeError("psql: %s" % p.stderr.strip())
    return [tuple(int(x) if x.lstrip("-").isdigit() else x for x in line.split("|"))
            for line in p.stdout.splitlines() if line]


# ---- workers ----------------------------------------------------------------------------


class Worker:
    """`upres worker` on the test's store and blob folder: .proc, .log, .name."""
    n = 0

    def __init__(self, url, *extra, models=MODEL):
        Worker.n += 1
        self.name = "w%d" % Worker.n
        self.log = os.path.join(TMP, self.name + ".log")
        # the first through a file: URL, the others through the plain path
        blobs = "file://" + DATA if Worker.n == 1 else DATA
        cmd = [UPRES, "worker", "--store", url, "--blobs", blobs, "--data", os.path.join(TMP, self.name),
               "--name", self.name, "--models", models] + list(WORKER_ARGS) + list(extra)
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=logf, env=dict(os.environ, UPRES_MODELS=MODELS))
        logf.close()

    def text(self):
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def worker_count(api, model=MODEL):
    r = request(api.port, "GET", "/api/v1/models")
    for m in (r.json() or {}).get("models", []):
        if m.get("name") == model:
            return m.get("worker_count"), m.get("available")
    return None, None


def wait_count(api, want, budget_s, model=MODEL):
    """Poll /api/v1/models until the model's worker_count == want (bounded): the last (count, available)."""
    got = (None, None)
    deadline = time.time() + budget_s * SLOW
    for _ in range(int(budget_s * SLOW / 0.1) + 1):
        got = worker_count(api, model)
        if got[0] == want or time.time() > deadline:
            break
        time.sleep(0.1)
    return got


def held_jobs(url):
    """{job id: (pid of the holding process, attempt)} of the jobs claimed or processing now."""
    out = {}
    for jid, worker, attempts in psql(url, "SELECT id, worker, attempts FROM jobs WHERE status IN (1, 6)"):
        parts = str(worker).split(":")
        if len(parts) >= 4 and parts[-3].isdigit():
            out[jid] = (int(parts[-3]), attempts)
    return out


def wait_held(url, workers, skip, budget_s, want_status=None):
    """A job held by one of workers (not in skip): (job id, worker) or None, bounded."""
    deadline = time.time() + budget_s * SLOW
    by_pid = {w.proc.pid: w for w in workers if w.alive()}
    while time.time() < deadline:
        for jid, (pid, _) in held_jobs(url).items():
            if jid not in skip and pid in by_pid:
                return jid, by_pid[pid]
        time.sleep(0.02)
    return None


OWNER = {}  # job id -> the key that made it (a key sees only its own jobs)


def submit_jobs(api, keys, n, tag):
    ids = []
    image = png(EDGE, EDGE)
    for i in range(n):
        key = keys[i % len(keys)]
        r = submit(api.port, data=image, filename="%s-%d.png" % (tag, i), model_name=MODEL, scale=2,
                   headers={"Authorization": "Bearer " + key})
        jid = (r.json() or {}).get("job_id", "")
        if check(r.status == 202 and jid, "%s: submit job %d -> 202" % (tag, i), r):
            ids.append(jid)
            OWNER[jid] = key
    return ids


def wait_done(api, ids, budget_s):
    """Poll until every job has ended (bounded): {id: status}."""
    deadline = time.time() + budget_s * SLOW
    left = list(ids)
    statuses = {}
    while time.time() < deadline:
        for j in left:
            statuses[j] = (request(api.port, "GET", "/api/v1/status/" + j,
                                   headers={"Authorization": "Bearer " + OWNER[j]}).json() or {}).get("status")
        left = [j for j in left if statuses[j] not in ("completed", "failed", "cancelled", "expired")]
        if not left:
            break
        time.sleep(0.2)
    return statuses


def results_of(jid):
    return sorted(f for f in os.listdir(os.path.join(DATA, "results")) if f.startswith(jid))


# ---- the scenario ---------------------------------------------------------------------------


def scenario(url, api, keys, workers):
    all_ids = []

    # ---- models before any worker, then three
    got = worker_count(api)
    check(got == (0, False), "models: no worker -> worker_count 0, available false", got)
    other_metrics = free_port()
    other = Worker(url, "--metrics-port", str(other_metrics), models=OTHER)
    workers.append(other)
    for _ in range(3):
        workers.append(Worker(url))
    got = wait_count(api, 3, 20)
    check(got == (3, True), "models: three workers -> worker_count 3, available true", got)
    got = wait_count(api, 1, 20, OTHER)  # (it loads a larger model: it may register a moment later)
    check(got == (1, True), "models: the worker of another model counts for that model only", got)
    p = subprocess.run([UPRES, "workers", "list", "--store", url], capture_output=True, text=True, timeout=30 * SLOW)
    check(p.returncode == 0 and all(w.name in p.stdout for w in workers) and MODEL in p.stdout,
          "upres workers list names the three workers and their model", p.stdout + p.stderr)

    r = request(api.port, "GET", "/metrics")
    text = r.body.decode("utf-8", "replace")
    check(r.status == 200 and 'upres_worker_slots{model="%s"} 3\n' % MODEL in text and "\nupres_workers 4\n" in text
          and 'upres_queue_depth{model="%s"} 0\n' % MODEL in text,
          "the API server's /metrics on PostgreSQL: 3 slots for the model, 4 live workers, nothing queued",
          [l for l in text.splitlines() if l.startswith(("upres_worker", "upres_queue_depth"))])

    # ---- 60 jobs from 3 keys, 10 mid-job SIGKILLs, a replacement each time
    t0 = time.time()
    ids = submit_jobs(api, keys, N_JOBS, "kill")
    all_ids += ids
    killed, killed_names = {}, []
    for k in range(N_KILLS * 2):
        if len(killed) >= N_KILLS:
            break
        got = wait_held(url, workers, killed, 20)
        if not got:
            # the queue ran dry before ten kills: more jobs keep the workers busy
            more = submit_jobs(api, keys, 6, "more%d" % k)
            ids += more
            all_ids += more
            continue
        jid, w = got
        w.proc.send_signal(signal.SIGKILL)
        t_kill = time.time()
        w.proc.wait(timeout=30)
        killed[jid] = t_kill
        killed_names.append(w.name)
        workers.remove(w)
        workers.append(Worker(url))
        say("killed %s (pid %d) holding %s" % (w.name, w.proc.pid, jid))
    check(len(killed) == N_KILLS, "a worker SIGKILLed mid-job %d times (the store: the job held by its pid)" % N_KILLS,
          len(killed))
    statuses = wait_done(api, ids, (LEASE_S + 5) * 3 + 60)
    check(all(v == "completed" for v in statuses.values()) and len(statuses) == len(ids),
          "all %d jobs completed after the kills" % len(ids), {j: v for j, v in statuses.items() if v != "completed"})
    logs = "".join(open(os.path.join(TMP, f), "rb").read().decode("utf-8", "replace")
                   for f in os.listdir(TMP) if re.fullmatch(r"w\d+\.log", f))
    rescue = []
    for jid, t_kill in killed.items():
        again = [log_time(m.group(1)) for m in CLAIMED.finditer(logs) if m.group(2) == jid and m.group(1)
                 and log_time(m.group(1)) > t_kill]
        rescue.append(min(again) - t_kill if again else None)
    print("scaleout: %d jobs, %d kills, claimed again after %s s (bound %d s), %.1f s" % (
        len(ids), len(killed), ", ".join("%.2f" % r if r is not None else "never" for r in rescue), LEASE_S + 5,
        time.time() - t0))
    check(all(r is not None and r <= (LEASE_S + 5) * SLOW for r in rescue),
          "each killed job is claimed again within lease + 5 s", rescue)
    got = wait_count(api, 3, LEASE_S + 5)
    check(got == (3, True), "models: worker_count 3 again (the killed workers' rows lapsed, replacements counted)",
          got)
    p = subprocess.run([UPRES, "workers", "list", "--all", "--store", url], capture_output=True, text=True,
                       timeout=30 * SLOW)
    live = subprocess.run([UPRES, "workers", "list", "--store", url], capture_output=True, text=True,
                          timeout=30 * SLOW)
    dead = [n for n in killed_names if not re.search(r"^%s\s+lapsed\s" % n, p.stdout, re.M)]
    check(p.returncode == 0 and not dead, "workers list --all shows the killed workers' rows as lapsed", p.stdout)
    check(live.returncode == 0 and not any(re.search(r"^%s\s" % n, live.stdout, re.M) for n in killed_names)
          and all(re.search(r"^%s\s+running\s" % w.name, live.stdout, re.M) for w in workers),
          "workers list shows the live workers running and no killed one", live.stdout)

    # ---- SIGSTOP past the lease, another worker completes the job, SIGCONT: refused, nothing left behind
    stop_ids = submit_jobs(api, keys, 1, "stop")
    all_ids += stop_ids
    got = wait_held(url, workers, set(), 20)
    if check(got is not None and got[0] == stop_ids[0], "a worker holds the job to pause", got):
        jid, w = got
        w.proc.send_signal(signal.SIGSTOP)
        say("stopped %s (pid %d) holding %s" % (w.name, w.proc.pid, jid))
        try:
            lapsed = wait_count(api, 2, LEASE_S + 3)
            check(lapsed == (2, True), "models: a worker paused past its lease no longer counts", lapsed)
            st = wait_done(api, [jid], (LEASE_S + 5) * 2 + 30)
            check(st.get(jid) == "completed", "the paused worker's job is completed by another", st)
            before = psql(url, "SELECT status, attempts, worker, result_key, completed_at FROM jobs WHERE id = '%s'"
                          % jid)
        finally:
            w.proc.send_signal(signal.SIGCONT)
        # its keeper renews at once on waking and finds the claim superseded; give it a few heartbeats
        deadline = time.time() + 10 * SLOW
        refused = False
        while time.time() < deadline and not refused:
            refused = re.search(r"job %s: (attempt \d+ superseded|cannot record the result)" % jid, w.text()) is not None \
                or ("superseded" in w.text() and jid in w.text() and "stopping the run" in w.text())
            time.sleep(0.1)
        check(refused, "the late worker's run is refused (superseded) after SIGCONT", w.text()[-1500:])
        time.sleep(1.0)
        after = psql(url, "SELECT status, attempts, worker, result_key, completed_at FROM jobs WHERE id = '%s'" % jid)
        check(before == after and before and before[0][0] == 2, "the job's row is unchanged by the late worker",
              (before, after))
        files = results_of(jid)
        check(len(files) == 1 and before and files[0] == os.path.basename(str(before[0][3])),
              "results/ holds only the winner's file", (files, before))
        check(w.alive(), "the paused worker goes on after SIGCONT")
        got = wait_count(api, 3, LEASE_S + 3)
        check(got == (3, True), "models: the woken worker counts again", got)

    # ---- PostgreSQL restarted while jobs run
    pg_ids = submit_jobs(api, keys, 20, "restart")
    all_ids += pg_ids
    wait_held(url, workers, set(), 20)
    t_restart = time.time()
    check(pg_ctl("-m", "fast", "restart"), "PostgreSQL restarts mid-run")
    say("PostgreSQL restarted in %.2f s" % (time.time() - t_restart))
    st = wait_done(api, pg_ids, (LEASE_S + 5) * 3 + 60)
    check(all(v == "completed" for v in st.values()) and len(st) == len(pg_ids),
          "every job submitted before the restart completes", {j: v for j, v in st.items() if v != "completed"})
    check(all(w.alive() for w in workers), "every worker is still running after the restart",
          [(w.name, w.proc.returncode) for w in workers])
    got = wait_count(api, 3, 10)
    check(got == (3, True), "models: three workers after the restart", got)

    # ---- SIGTERM a busy worker: out within 2 s, its job completes elsewhere
    term_ids = submit_jobs(api, keys, 6, "term")
    all_ids += term_ids
    got = wait_held(url, workers, set(), 20)
    if check(got is not None, "a worker holds a job to SIGTERM", got):
        jid, w = got
        t = time.time()
        w.proc.send_signal(signal.SIGTERM)
        try:
            rc = w.proc.wait(timeout=10 * SLOW)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.time() - t
        say("SIGTERM: %s exited %r in %.2f s" % (w.name, rc, took))
        check(rc == 0 and took <= 2.0 * SLOW, "a busy worker exits 0 within 2 s of SIGTERM", (rc, took))
        workers.remove(w)
        got = worker_count(api)
        check(got == (2, True), "models: the stopped worker's row is gone at once", got)
        st = wait_done(api, term_ids, (LEASE_S + 5) * 2 + 30)
        check(st.get(jid) == "completed", "its job completes in another worker", st.get(jid))
        check(all(v == "completed" for v in st.values()), "the other jobs complete too", st)
        check(re.search(r"job %s queued again" % jid, w.text()), "its log says the job went back to the queue",
              w.text()[-800:])

    # ---- a worker's own /metrics (--metrics-port): its counters and the database's gauges
    r = request(other_metrics, "GET", "/metrics")
    text = r.body.decode("utf-8", "replace")
    check(r.status == 200 and text.startswith("# HELP ") and 'upres_worker_slots{model="%s"} 1\n' % OTHER in text
          and "upres_jobs_claimed_total{" not in text and 'upres_jobs{status="completed"}' in text,
          "a worker's --metrics-port answers /metrics: 1 slot for its model, no claims of its own, the jobs",
          text[:400])
    r = request(other_metrics, "GET", "/api/v1/models")
    check(r.status == 404, "... and nothing else (404 for the API)", r)

    check(other.alive() and " claimed (" not in other.text(),
          "the worker serving only %s never claimed a %s job" % (OTHER, MODEL), other.text()[-800:])

    # ---- exactly once, downloads, nothing left
    logs = "".join(open(os.path.join(TMP, f), "rb").read().decode("utf-8", "replace")
                   for f in os.listdir(TMP) if re.fullmatch(r"w\d+\.log", f))
    done = {}
    for jid in COMPLETED.findall(logs):
        done[jid] = done.get(jid, 0) + 1
    check(all(done.get(j) == 1 for j in all_ids) and len(done) == len(all_ids),
          "every job (%d) completed exactly once (one 'completed' line per job in all the logs)" % len(all_ids),
          {j: done.get(j, 0) for j in all_ids if done.get(j) != 1})
    files = os.listdir(os.path.join(DATA, "results"))
    check(len(files) == len(all_ids), "results/ holds one file per job, no more", (len(files), len(all_ids)))
    bad = []
    for jid in all_ids:
        r = request(api.port, "GET", "/api/v1/download/" + jid, headers={"Authorization": "Bearer " + OWNER[jid]})
        if r.status != 200 or png_size(r.body) != (2 * EDGE, 2 * EDGE):
            bad.append((jid, r.status))
    check(not bad, "every result downloads: a %dx%d PNG" % (2 * EDGE, 2 * EDGE), bad[:5])

    # ---- NOTIFY: idle workers claim at once; the API server's stream follows a worker's progress
    auth = {"Authorization": "Bearer " + keys[0]}
    waits = []
    for i in range(3):
        r = submit(api.port, data=png(32, 32), filename="n%d.png" % i, model_name=MODEL, scale=2, headers=auth)
        jid = (r.json() or {}).get("job_id", "")
        j = {}
        for _ in range(300):
            j = request(api.port, "GET", "/api/v1/jobs/" + jid, headers=auth).json() or {}
            if j.get("status") in ("completed", "failed"):
                break
            time.sleep(0.05)
        if j.get("started_at") and j.get("created_at"):
            waits.append(when(j["started_at"]) - when(j["created_at"]))
    check(len(waits) == 3 and max(waits) < 0.4, "NOTIFY: a job submitted to the API server is claimed by an "
          "idle worker within 0.4 s (the poll: up to 1 s)", ["%.3f" % w for w in waits])
    r = submit(api.port, data=png(256, 256), filename="stream.png", model_name=MODEL, scale=2, tile_size=32,
               headers=auth)
    jid = (r.json() or {}).get("job_id", "")
    st = Stream(api.port, "/api/v1/status/%s/stream" % jid, timeout=30 * SLOW)
    statuses, done_at = [], None
    try:
        deadline = time.time() + 60 * SLOW
        while time.time() < deadline:
            try:
                ev = st.event(20 * SLOW)
            except TimeoutError:
                break
            if ev is None:
                break
            d = st.json_data(ev) or {}
            if "status" in d:
                statuses.append((d.get("status"), d.get("progress")))
                if d.get("status") in ("completed", "failed"):
                    done_at = time.time()
                    break
    finally:
        st.close()
    j = request(api.port, "GET", "/api/v1/jobs/" + jid, headers=auth).json() or {}
    progress = [p for s, p in statuses if s == "processing"]
    check(len(progress) >= 2, "the API server's stream got a worker's progress (%d processing events)" %
          len(progress), statuses)
    lag = done_at - when(j["completed_at"]) if done_at and j.get("completed_at") else None
    check(lag is not None and lag < 5, "... and its completion within 5 s (the keep-alive poll: 15 s)", lag)


def when(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def lost_store(url, api, workers):
    """A worker on a server that goes away: retries, then exits 1 saying so."""
    w = Worker(url, "--db-retries", "2")
    deadline = time.time() + 20 * SLOW
    while time.time() < deadline and "worker: %s running" % w.name not in w.text():
        time.sleep(0.05)
    rcs = [(x.name, x.stop()) for x in workers]
    check(all(rc == 0 for _, rc in rcs), "every worker drains and exits 0 on SIGTERM", rcs)
    check(wait_count(api, 1, LEASE_S + 2) == (1, True), "models: only the last worker counts once the others left",
          worker_count(api))
    check(pg_ctl("-m", "fast", "stop"), "PostgreSQL stops")
    try:
        rc = w.proc.wait(timeout=30 * SLOW)
    except subprocess.TimeoutExpired:
        rc = None
    text = w.text()
    check(rc == 1, "a worker whose store is gone exits 1 after its retries", (rc, text[-1500:]))
    check("retrying in" in text and "the store is lost" in text, "its log says it retried and gave up", text[-1500:])
    w.stop(signal.SIGKILL)


def main():
    if not os.path.exists(UPRES):
        print("missing %s" % UPRES)
        return 1
    if not pg_bin() or not os.path.exists(os.path.join(pg_bin(), "initdb")):
        print("scaleout_test: no PostgreSQL server (scripts/setup.sh installs postgresql): not run")
        return 0
    t0 = time.time()
    # blob URLs this build has no backend for, or malformed: refused before anything starts
    for cmd, value, want in (("serve", "s3://bucket/x", "no s3 blob store"), ("worker", "gs://bucket", "no gs blob store"),
                             ("worker", "file://host/dir", "three slashes")):
        p = subprocess.run([UPRES, cmd, "--blobs", value, "--data", os.path.join(TMP, "refused")], capture_output=True,
                           text=True, timeout=30 * SLOW)
        check(p.returncode == 2 and "bad blobs" in p.stderr and want in p.stderr and not os.path.exists(
            os.path.join(TMP, "refused")), "%s --blobs %s -> exit 2, %r" % (cmd, value, want), (p.returncode, p.stderr))
    # README's table of the worker's settings is the one the worker prints
    clean = {k: v for k, v in os.environ.items() if not k.startswith("UPRES_")}
    p = subprocess.run([UPRES, "worker", "--settings-markdown"], capture_output=True, text=True, timeout=30 * SLOW,
                       env=clean)
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    check(p.returncode == 0 and p.stdout.startswith("| flag |") and p.stdout in readme,
          "README's worker settings table is `upres worker --settings-markdown` (paste it there)", p.stderr)
    p = subprocess.run([UPRES, "worker", "--models", "no-such-model", "--data", os.path.join(TMP, "refused")],
                       capture_output=True, text=True, timeout=30 * SLOW, env=dict(os.environ, UPRES_MODELS=MODELS))
    check(p.returncode == 2 and "no model no-such-model" in p.stderr, "worker --models of a model not installed -> exit 2",
          (p.returncode, p.stderr))
    p = subprocess.run(["bash", CLUSTER, "start", PG_DIR], capture_output=True, text=True, timeout=120 * SLOW)
    if not check(p.returncode == 0, "a throw-away PostgreSQL cluster starts", p.stderr):
        return 1
    url = p.stdout.strip().splitlines()[-1]
    # the API server's data folder (its secret) is its own; the blobs are the folder the workers share
    api = Server("api", "--no-workers", "--store", url, "--blobs", "file://" + DATA, "--lease", str(LEASE_S),
                 "--heartbeat", str(HEARTBEAT_S), "--rate-per-minute", "0", "--rate-per-day", "0",
                 data=os.path.join(TMP, "api-data"))
    workers = []
    try:
        p = subprocess.run([UPRES, "db", "migrate", "--store", url], capture_output=True, text=True,
                           timeout=30 * SLOW)
        check(p.returncode == 0 and "postgresql store: schema version 4" in p.stdout,
              "upres db migrate makes the schema and says its version", p.stdout + p.stderr)
        if not check(api.start(), "serve --no-workers starts on the cluster"):
            return 1
        keys = []
        for i in range(3):
            p = api.cli("keys", "create", "--name", "k%d" % i, "--store", url)
            keys.append(p.stdout.split("\n", 1)[0].strip() if p.returncode == 0 else "")
        if not check(all(keys), "three keys made on the cluster", keys):
            return 1
        scenario(url, api, keys, workers)
        lost_store(url, api, workers)
    finally:
        for w in workers:
            w.stop()
        rc = api.stop()
        check(rc == 0, "the API server stops with status 0", rc)
        if tally.failed:
            print("---- api log (tail) ----\n%s" % api.tail(3000))
            for f in sorted(os.listdir(TMP)):
                if re.fullmatch(r"w\d+\.log", f):
                    print("---- %s (tail) ----\n%s" % (f, open(os.path.join(TMP, f), "rb").read()[-1500:].decode(
                        "utf-8", "replace")))
        subprocess.run(["bash", CLUSTER, "stop", PG_DIR], capture_output=True, timeout=120 * SLOW)
    print("scaleout_test: %d passed, %d failed (%.1f s)" % (tally.passed, tally.failed, time.time() - t0))
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
