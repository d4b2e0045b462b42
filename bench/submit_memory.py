#!/usr/bin/env python3
"""submit_memory.py - what accepting uploads costs the server in memory.

The upload of the "Job engine v2" memory issue: a 6300x6300 RGB PNG of
about 150 KB (mostly flat, so it compresses a thousandfold; written here by
hand with zlib, as tests/e2e/client.py's png()), whose pixels are 113 MB.
Starts `upres serve` on a free loopback port with a temporary data folder,
one worker (--workers 1 --threads 1), and keeps that worker busy with a
small long job (realesrgan-x4plus on a 512-px photo, 64-px tiles), so that
the 8 uploads wait in the queue and no worker decodes them while this
measures. Then, 8 times over, the same upload is sent at once from 8
threads to POST /api/v1/upscale (scale 2) and the server's memory read from
/proc/<pid>/status:
  before: VmRSS, after the peak was reset to it ("5" > /proc/<pid>/clear_refs)
  peak growth: VmHWM after the last answer minus that RSS
  kept: VmRSS after the last answer minus the RSS before
The same window with no uploads (the busy worker alone) is measured first,
as the noise floor. The first round is the figure that counts: later
rounds reuse memory that malloc kept from it. Latency is from sending a
request to its answer (median and slowest of the 8). Every job is
cancelled at the end.

usage: bench/submit_memory.py [PATH/TO/upres] [ROUNDS]
Loopback only; every loop is bounded in count and time.
"""
import os, shutil, statistics, struct, sys, threading, time, zlib

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../tests/e2e"))
import client  # noqa: E402
from client import SHARED, Server, request  # noqa: E402  (client.UPRES: argv[1], default build/upres)

N_UPLOADS = 8
SIZE = 6300
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3


def big_png(width, height):
    """A width x height RGB PNG, gray with a blue band and a patterned row every 150: about 150 KB."""
    flat = b"\x00" + bytes([200, 200, 200]) * width
    third = width // 3
    band = b"\x00" + bytes([200, 200, 200]) * third + bytes([30, 90, 160]) * (width - 2 * third) + \
        bytes([200, 200, 200]) * third
    z = zlib.compressobj(9)
    parts = []
    for y in range(height):
        row = band if height // 3 <= y < 2 * height // 3 else flat
        if y % 150 == 0:
            row = b"\x00" + bytes((x * 7 + y) & 255 for x in range(width * 3))
        parts.append(z.compress(row))
    parts.append(z.flush())

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def reset_peak(pid):
    """Reset the server's VmHWM to its VmRSS; False where the kernel does not allow it."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def submit(port, data, out, i):
    t0 = time.monotonic()
    r = client.submit(port, data=data, filename=f"big{i}.png", scale=2, model_name="realesr-animevideov3")
    out[i] = (time.monotonic() - t0, r.status, (r.json() or {}).get("job_id"), r)


def cancel(port, job):
    request(port, "POST", f"/api/v1/cancel/{job}")


def main():
    t0 = time.monotonic()
    data = big_png(SIZE, SIZE)
    print(f"upload: {SIZE}x{SIZE} RGB PNG of {len(data) / 1024:.0f} KB ({SIZE * SIZE * 3 / 2**20:.0f} MiB of "
          f"pixels), made in {time.monotonic() - t0:.1f} s; {N_UPLOADS} at once, {ROUNDS} rounds")
    client.make_tmp("upres-submit-mem-")
    server = Server("submit", "--workers", "1", "--rate-per-minute", "0", "--rate-per-day", "0", threads=1)
    jobs = []
    try:
        if not server.start():
            sys.exit("submit_memory: the server did not start")
        port, pid = server.port, server.proc.pid
        photo = os.path.join(SHARED, "images", "astronaut.png")
        r = client.submit(port, photo, scale=4, model_name="realesrgan-x4plus", tile_size=64)
        if r.status != 202:
            sys.exit(f"submit_memory: the busy job was refused: {r}")
        jobs.append(r.json()["job_id"])
        for _ in range(3000):
            if client.status(port, jobs[0]).get("status") == "processing":
                break
            time.sleep(0.01)
        time.sleep(2)  # its plan made, its memory steady
        if not reset_peak(pid):
            print("note: /proc/PID/clear_refs is not writable here: peaks include what came before")
        rss0 = status_kb(pid, "VmRSS")
        time.sleep(1.0)
        floor = status_kb(pid, "VmHWM") - rss0
        print(f"server idle but for the busy job: VmRSS {rss0 / 1024:.0f} MB; peak growth over 1 s with no "
              f"uploads {floor / 1024:+.1f} MB")
        print(f"{'round':>5} {'RSS before MB':>14} {'peak growth MB':>15} {'kept MB':>8} {'p50 s':>7} "
              f"{'max s':>7}  answers")
        peaks, p50s, maxs = [], [], []
        for rnd in range(ROUNDS):
            reset_peak(pid)
            before = status_kb(pid, "VmRSS")
            out = [None] * N_UPLOADS
            th = [threading.Thread(target=submit, args=(port, data, out, i)) for i in range(N_UPLOADS)]
            for t in th:
                t.start()
            for t in th:
                t.join(timeout=300)
            hwm, after = status_kb(pid, "VmHWM"), status_kb(pid, "VmRSS")
            lat = sorted(o[0] for o in out if o)
            codes = sorted(o[1] for o in out if o)
            jobs += [o[2] for o in out if o and o[2]]
            if any(c != 202 for c in codes):
                print("  refused:", [o[3] for o in out if o and o[1] != 202][:2])
            peaks.append((hwm - before) / 1024)
            p50s.append(statistics.median(lat))
            maxs.append(lat[-1])
            print(f"{rnd + 1:>5} {before / 1024:>14.0f} {peaks[-1]:>15.1f} {(after - before) / 1024:>8.1f} "
                  f"{p50s[-1]:>7.3f} {maxs[-1]:>7.3f}  {','.join(map(str, sorted(set(codes))))} x{len(codes)}")
            for j in jobs[1:]:
                cancel(port, j)
            time.sleep(0.5)
        # the first round is the one that counts: later rounds reuse what malloc kept from it
        print(f"{N_UPLOADS} uploads on a fresh server add {peaks[0]:.1f} MB at peak (later rounds: median "
              f"{statistics.median(peaks[1:] or peaks):.1f} MB); answer p50 {statistics.median(p50s):.3f} s, "
              f"slowest {statistics.median(maxs):.3f} s (medians of {ROUNDS} rounds)")
    finally:
        for j in jobs:
            try:
                cancel(server.port, j)
            except OSError:
                pass
        server.stop(timeout=20)
        shutil.rmtree(client.TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
