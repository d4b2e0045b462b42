#!/usr/bin/env python3
"""page_test.py - what the server does for the web page, without a browser
(tests/browser/ drives the page itself in Chromium).

Run by ctest as: python3 tests/e2e/page_test.py PATH/TO/upres

- `/`: a browser (Accept names text/html) gets web/page/index.html with a
  strict Content-Security-Policy (default-src 'self', no inline script),
  nosniff and no-cache; an API client (`*/*`, application/json, none) still
  gets the Tinify root JSON;
- `/page/{file}`: the page's files with their types; names with a slash,
  a leading dot or other characters, and missing files: 404 JSON;
- `/page/preview/source.png` is the 48x48 crop; `MODEL.png` that crop
  through the model, 192x192, different per model, rendered once (the
  second answer is the same bytes, and the log says "rendered" once);
  an unknown model: 404;
- the Tinify extensions: `model` (at the top level of /upscale and in
  `settings`) runs that model (`upscale_model` in the JobResponse; x4fast
  and animevideov3 make different images), `tile_size`, `alpha_mode`; bad
  values: 422 with the field's loc, nothing charged;
- `POST /cancel/{id}`: a queued job -> 200 cancelled and refunded; a
  processing one -> 202, then failed "cancelled"; a finished one -> 409
  JOB_FINISHED; another session's or no credential -> 404; a bad id -> 422;
- a queued job's status stream sends its new queue_position when a job
  ahead leaves the queue (the job's own record did not change).

Every wait is bounded in count and time. Prints "N passed, N failed".
"""
import json
import os
import sqlite3
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import (SHARED, SLOW, Server, Stream, check, make_tmp, multipart, png_size, request,  # noqa: E402
                    run, tally)

FAST = "realesr-animevideov3"
TMP = make_tmp("upres-page-test-")
SMALL = os.path.join(SHARED, "ref/in/chelsea_lr64.png")  # 64 x 64 RGB
# the server finds the same folder (UPRES_WEB, else the source tree's web/)
WEB = os.environ.get("UPRES_WEB") or os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "web")
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


def upload(s, token=None, path=SMALL):
    with open(path, "rb") as f:
        body, ctype = multipart({}, {"file": (os.path.basename(path), f.read(), "image/png")})
    headers = {"Content-Type": ctype}
    if token:
        headers["X-Session-Token"] = token
    return request(s.port, "POST", "/upload", body, headers).json() or {}


def post(s, path, obj, token):
    return request(s.port, "POST", path, json.dumps(obj).encode(),
                   {"Content-Type": "application/json", "X-Session-Token": token})


def wait_job(s, job_id, want, timeout):
    deadline = time.time() + timeout * SLOW
    st = {}
    for _ in range(int(timeout * SLOW / 0.05) + 1):
        st = request(s.port, "GET", "/status/" + job_id).json() or {}
        if (st.get("job") or {}).get("status") in want or time.time() > deadline:
            break
        time.sleep(0.05)
    return st.get("job") or {}


def result(s, job_id):
    job = wait_job(s, job_id, ("completed", "failed"), 60)
    r = request(s.port, "GET", "/download/" + job_id)
    return job, (r.body if r.status == 200 else None)


def test_root(s):
    r = request(s.port, "GET", "/", headers={"Accept": BROWSER})
    check(r.status == 200 and r.headers.get("content-type", "").startswith("text/html"),
          "a browser gets the page at /", (r.status, r.headers.get("content-type")))
    check(r.body.lstrip().lower().startswith(b"<!doctype html"), "  an HTML document", r.body[:60])
    csp = r.headers.get("content-security-policy", "")
    check("default-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp,
          "  with a strict Content-Security-Policy", csp)
    check(r.headers.get("x-content-type-options") == "nosniff", "  nosniff")
    check(r.headers.get("cache-control") == "no-cache", "  no-cache", r.headers.get("cache-control"))
    for accept in (None, "*/*", "application/json", "text/*", "text/html;q=0"):
        r = request(s.port, "GET", "/", headers={"Accept": accept} if accept else {})
        check(r.status == 200 and (r.json() or {}).get("api") == "tinify",
              "Accept %s gets the Tinify root JSON" % accept, (r.status, r.body[:80]))


def test_files(s):
    r = request(s.port, "GET", "/page/index.html")
    check(r.status == 200 and "default-src 'self'" in r.headers.get("content-security-policy", ""),
          "/page/index.html has the page's policy too")
    page = os.path.join(WEB, "page")
    want = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".html": "text/html"}
    names = sorted(os.listdir(page))
    check(any(n.endswith(".js") for n in names) and any(n.endswith(".css") for n in names),
          "web/page has a script and a style sheet", names)
    for name in names:
        r = request(s.port, "GET", "/page/" + name)
        ext = os.path.splitext(name)[1]
        with open(os.path.join(page, name), "rb") as f:
            same = f.read() == r.body
        check(r.status == 200 and same and r.headers.get("content-type", "").startswith(want.get(ext, "")),
              "/page/%s is the file, as %s" % (name, r.headers.get("content-type")), r.status)
    for bad in ("/page/.hidden", "/page/..%2Fopenapi.json", "/page/a%20b.js", "/page/nope.js", "/page/x/y.js"):
        r = request(s.port, "GET", bad)
        check(r.status == 404 and (r.json() or {}).get("success") is False, "%s -> 404 JSON" % bad, r.status)


def test_previews(s):
    r = request(s.port, "GET", "/page/preview/source.png")
    check(r.status == 200 and png_size(r.body) == (48, 48), "the preview source is a 48x48 PNG",
          (r.status, png_size(r.body)))
    seen = {}
    for model in (FAST, "realesrgan-x4fast"):
        r = request(s.port, "GET", "/page/preview/%s.png" % model, timeout=120 * SLOW)
        check(r.status == 200 and r.headers.get("content-type") == "image/png" and png_size(r.body) == (192, 192),
              "the %s preview is the crop x4 (192x192)" % model, (r.status, png_size(r.body), r.body[:200]))
        again = request(s.port, "GET", "/page/preview/%s.png" % model)
        check(again.body == r.body, "  the second answer is the same bytes")
        seen[model] = r.body
    check(seen[FAST] != seen["realesrgan-x4fast"], "two models' previews differ")
    with open(s.log, "rb") as f:
        log = f.read().decode("utf-8", "replace")
    check(log.count("rendered the %s preview" % FAST) == 1, "a preview is rendered once and kept")
    for bad in ("nope.png", "%s.jpg" % FAST, ".png"):
        r = request(s.port, "GET", "/page/preview/" + bad)
        check(r.status == 404, "/page/preview/%s -> 404" % bad, r.status)


def test_extensions(s):
    up = upload(s)
    token, tid = up.get("session_token"), up.get("temp_file_id")
    check(bool(token and tid), "an upload opens a session", up)
    used = []
    for model in (FAST, "realesrgan-x4fast"):
        r = post(s, "/upscale", {"temp_file_ids": [tid], "factor": 2, "model": model, "output_format": "png"}, token)
        job = ((r.json() or {}).get("jobs") or [{}])[0]
        check(r.status == 200 and job.get("upscale_model") == model, "/upscale with model %s" % model,
              (r.status, r.body[:300]))
        job, data = result(s, job.get("id", ""))
        check(job.get("status") == "completed" and job.get("upscale_model") == model and
              png_size(data or b"") == (128, 128), "  runs it (128x128)", job)
        used.append(data)
    check(used[0] != used[1], "  two models make different images")
    r = post(s, "/auto", {"temp_file_ids": [tid], "settings": {"output_upscale_factor": 2, "model": FAST,
                                                                "tile_size": 32, "alpha_mode": "model",
                                                                "output_format": "png"}}, token)
    job = ((r.json() or {}).get("jobs") or [{}])[0]
    check(r.status == 200 and job.get("upscale_model") == FAST, "/auto with settings model, tile_size, alpha_mode",
          (r.status, r.body[:300]))
    job, data = result(s, job.get("id", ""))
    check(job.get("status") == "completed" and png_size(data or b"") == (128, 128), "  runs", job)
    with sqlite3.connect(os.path.join(s.data, "upres.db")) as db:
        row = db.execute("SELECT steps FROM jobs WHERE id = ?", (job.get("id"),)).fetchone()
    step = json.loads(row[0])[0] if row else {}
    check(step.get("op") == "upscale" and step.get("model") == FAST and step.get("tile") == 32 and
          step.get("alpha") == "model", "  the job's pipeline has the model, tile and alpha mode", step)
    r = post(s, "/auto", {"temp_file_ids": [tid], "settings": {"output_format": "png"}}, token)
    job = ((r.json() or {}).get("jobs") or [{}])[0]
    check(r.status == 200 and "upscale_model" in job and job["upscale_model"] is None,
          "no upscale: upscale_model is null", job)
    cfg = request(s.port, "GET", "/config").json() or {}
    check(cfg.get("upscale_model") == FAST, "/config names the default model (upscale_model)", cfg)
    before = (request(s.port, "GET", "/usage/summary", headers={"X-Session-Token": token}).json() or {}).get(
        "credits_remaining")
    for body, loc in (({"model": "no such"}, ["body", "model"]), ({"model": "nomodel"}, ["body", "model"]),
                      ({"model": 4}, ["body", "model"]), ({"tile_size": 8}, ["body", "tile_size"]),
                      ({"tile_size": 9000}, ["body", "tile_size"]), ({"alpha_mode": "x"}, ["body", "alpha_mode"]),
                      ({"settings": {"tile_size": -1}}, ["body", "settings", "tile_size"]),
                      ({"settings": {"model": ""}}, ["body", "settings", "model"])):
        r = post(s, "/upscale", dict({"temp_file_ids": [tid], "factor": 2}, **body), token)
        detail = (r.json() or {}).get("detail") or [{}]
        check(r.status == 422 and detail[0].get("loc") == loc, "%s -> 422 at %s" % (json.dumps(body), loc),
              (r.status, r.body[:300]))
    after = (request(s.port, "GET", "/usage/summary", headers={"X-Session-Token": token}).json() or {}).get(
        "credits_remaining")
    check(before is not None and before == after, "  nothing charged for them", (before, after))


def test_cancel(s):
    up = upload(s)
    token, tid = up.get("session_token"), up.get("temp_file_id")
    other = upload(s).get("session_token")
    # one worker: the first job runs (x4plus at 4x takes a while), the second waits behind it
    r = post(s, "/upscale", {"temp_file_ids": [tid, tid], "factor": 4, "model": "realesrgan-x4plus"}, token)
    jobs = [j.get("id", "") for j in (r.json() or {}).get("jobs") or []]
    if not check(r.status == 200 and len(jobs) == 2, "two x4plus jobs submitted", r.body[:300]):
        return
    running, queued = jobs
    check(wait_job(s, running, ("processing",), 30).get("status") == "processing", "the first one runs")
    r = request(s.port, "POST", "/cancel/" + queued, headers={"X-Session-Token": other})
    check(r.status == 404, "another session cannot cancel it (404)", (r.status, r.body[:200]))
    r = request(s.port, "POST", "/cancel/" + queued)
    check(r.status == 404, "no credential cannot either (404)", (r.status, r.body[:200]))
    r = request(s.port, "POST", "/cancel/" + queued, headers={"X-Session-Token": token})
    check(r.status == 200 and (r.json() or {}).get("status") == "cancelled", "a queued job -> 200 cancelled",
          (r.status, r.body[:200]))
    job = wait_job(s, queued, ("failed",), 5)
    check(job.get("status") == "failed" and job.get("error_message") == "cancelled" and job.get("credits_used") == 0,
          "  it reads as failed, cancelled, refunded", job)
    r = request(s.port, "POST", "/cancel/" + running, headers={"X-Session-Token": token})
    check(r.status in (200, 202) and (r.json() or {}).get("success") is True, "a processing job -> 202",
          (r.status, r.body[:200]))
    job = wait_job(s, running, ("failed", "completed"), 60)
    check(job.get("status") == "failed" and job.get("error_message") == "cancelled",
          "  it stops: failed, cancelled", job)
    r = request(s.port, "POST", "/cancel/" + running, headers={"X-Session-Token": token})
    check(r.status == 409 and (r.json() or {}).get("code") == "JOB_FINISHED", "again -> 409 JOB_FINISHED",
          (r.status, r.body[:200]))
    r = request(s.port, "POST", "/cancel/not-a-uuid", headers={"X-Session-Token": token})
    check(r.status == 422, "a bad id -> 422", r.status)


def test_stream_position(s):
    """A queued job's stream says when its queue position moves, though its own record did not change."""
    up = upload(s, path=os.path.join(SHARED, "ref/in/astronaut_lr128.png"))
    token, tid = up.get("session_token"), up.get("temp_file_id")
    r = post(s, "/upscale", {"temp_file_ids": [tid, tid, tid], "factor": 4, "model": "realesrgan-x4plus"}, token)
    jobs = [j.get("id", "") for j in (r.json() or {}).get("jobs") or []]
    if not check(r.status == 200 and len(jobs) == 3, "three x4plus jobs submitted", r.body[:300]):
        return
    running, second, third = jobs
    check(wait_job(s, running, ("processing",), 30).get("status") == "processing", "the first one runs")
    st = Stream(s.port, "/status/%s/stream" % third, timeout=30 * SLOW)
    try:
        ev = st.event(10 * SLOW)
        if ev and "retry" in ev and "data" not in ev:  # the stream's retry: line comes first, alone
            ev = st.event(10 * SLOW)
        first = st.json_data(ev) or {}
        check(ev and ev.get("event") == "status" and first.get("queue_position") == 2,
              "the third job's stream: queue_position 2", ev)
        r = request(s.port, "POST", "/cancel/" + second, headers={"X-Session-Token": token})
        check(r.status == 200, "the second one is cancelled", r.status)
        ev = st.event(5 * SLOW)
        moved = st.json_data(ev) or {}
        ahead = wait_job(s, running, ("processing", "completed"), 1)
        check(moved.get("queue_position") == 1 and moved["job"].get("status") == "queued" and
              ahead.get("status") == "processing",
              "  a new status event with queue_position 1 while the first still runs", (ev, ahead.get("status")))
    finally:
        st.close()
        for j in jobs:
            request(s.port, "POST", "/cancel/" + j, headers={"X-Session-Token": token})


def main():
    t0 = time.time()
    s = Server("page", "--tinify-model", FAST, "--workers", "1", "--rate-per-minute", "0")
    try:
        if not check(s.start(), "server starts"):
            return 1
        run(test_root, s)
        run(test_files, s)
        run(test_previews, s)
        run(test_extensions, s)
        run(test_cancel, s)
        run(test_stream_position, s)
    finally:
        rc = s.stop()
        check(rc == 0, "server stops cleanly on SIGTERM (exit 0)", rc)
    if tally.failed:
        print("---- server log (tail) ----\n%s" % s.tail(3000))
    else:
        import shutil
        shutil.rmtree(TMP, ignore_errors=True)
    print("%d passed, %d failed (%.1fs)" % (tally.passed, tally.failed, time.time() - t0))
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
