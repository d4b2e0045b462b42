#!/usr/bin/env python3
"""plan_cache.py - a folder of mixed image sizes with and without the plan cache.

Run: python3 bench/plan_cache.py [--upres build/upres] [--images DIR] [--reps N]
                                 [--case NAME]... [--fixed T]... [--distinct] [--before UPRES]

Every image size gets its own tile shape, and a new tile shape a new plan
of the network (oneDNN primitives, weight reorders, the first touch of a
new arena). This builds a folder of 20 images in a few sizes, in an order
that never repeats one size twice in a row (crops of the photos in
IMAGES_DIR, default ../shared/data/images, reflected past their borders
where a size is larger), and times `upres upscale` over the whole folder,
each run in a fresh process, with:

  plans=1   `--plans 1`: only the plan in use is kept, so every change of
            size plans again (what upres did before the plan cache);
  plans=8   the default: the last 8 plans are kept (within the tile budget);
  fixed=T   one tile shape for every image: `-t T` over a copy of the
            folder where each image is reflect-padded to at least T x T,
            so that every tile is (T+20)^2 and the model is planned once
            (the alternative to a cache: it computes the padding too).

--before UPRES adds a run of another build (one from before the plan
cache: its plan count prints "?"). The configurations alternate within each repetition (the machine is
shared), and the medians of wall time and of the process's CPU time (user
+ system: less sensitive to other processes on a shared machine) are
printed with the ratio of each to plans=1,
plus the plan counts the -v log gives ("plans: N made, M reused").
--distinct makes 20 different sizes instead, where a cache cannot help
(it shows what it costs when it misses). Outputs are JPEG (-q 90) so that
PNG encoding does not dilute the figures. A benchmark, not a test: it
prints figures and never fails on them.
"""
import argparse
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, model, sizes cycled over the 20 images); x4plus only on small sizes, it is ~20x slower
CASES = {
    "animevideov3": ("realesr-animevideov3-x4",
                     [(200, 150), (256, 256), (320, 200), (384, 288), (480, 320), (640, 480)]),
    "x4fast": ("realesrgan-x4fast", [(160, 120), (200, 200), (256, 192), (320, 240), (384, 256)]),
    "x4plus": ("realesrgan-x4plus", [(64, 64), (96, 64), (80, 80), (128, 96), (112, 112)]),
}
N_IMAGES = 20


# ---- PNG in and out (8-bit gray, RGB or RGBA, not interlaced), by hand ----------------

def png_read(path):
    """(width, height, rows of RGB bytes)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = hdr
    bpp = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    assert depth == 8 and interlace == 0, "%s: only 8-bit non-interlaced PNGs" % path
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        ft = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ft == 1:
                line[i] = (line[i] + a) & 255
            elif ft == 2:
                line[i] = (line[i] + b) & 255
            elif ft == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ft == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev = line
        if bpp == 3:
            rows.append(bytes(line))
        else:
            colour = 1 if bpp <= 2 else 3
            out = bytearray()
            for x in range(w):
                px = line[x * bpp:x * bpp + colour]
                out += px * 3 if colour == 1 else px
            rows.append(bytes(out))
    return w, h, rows


def png_write(path, w, rows):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + r for r in rows)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, len(rows), 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def reflect(i, n):
    """reflect-101 index into [0, n), as the upscaler pads tiles."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    i %= period
    return i if i < n else period - i


def crop(src, x0, y0, w, h):
    """w x h RGB rows from src at (x0, y0), reflected past its borders."""
    sw, sh, rows = src
    xs = [reflect(x0 + x, sw) for x in range(w)]
    out = []
    for y in range(h):
        r = rows[reflect(y0 + y, sh)]
        out.append(b"".join(r[3 * x:3 * x + 3] for x in xs))
    return out


# ---- the folder and the runs ---------------------------------------------------------

def make_folder(folder, photos, sizes):
    """N_IMAGES crops cycling through sizes; returns [(name, w, h)]."""
    os.makedirs(folder)
    made = []
    for i in range(N_IMAGES):
        w, h = sizes[i % len(sizes)]
        src = photos[i % len(photos)]
        name = "img%02d_%dx%d.png" % (i, w, h)
        x0, y0 = (i * 37) % max(1, src[0] - w + 1), (i * 53) % max(1, src[1] - h + 1)
        png_write(os.path.join(folder, name), w, crop(src, x0, y0, w, h))
        made.append((name, w, h))
    return made


def pad_folder(src, dst, t):
    """src's images reflect-padded (right and bottom) to at least t x t."""
    os.makedirs(dst)
    for name in sorted(os.listdir(src)):
        img = png_read(os.path.join(src, name))
        w, h = max(img[0], t), max(img[1], t)
        png_write(os.path.join(dst, name), w, crop(img, 0, 0, w, h))


def run(upres, folder, out, model, extra):
    """One `upres upscale` over folder in a fresh process: (wall s, CPU s, 'N made, M reused')."""
    shutil.rmtree(out, ignore_errors=True)
    if extra and extra[0] == "--binary":  # another build (--before), which may not know --plans
        upres, extra = extra[1], extra[2:]
    cmd = [upres, "upscale", "-i", folder, "-o", out, "-n", model, "-f", "jpg", "-q", "90", "-v"] + extra
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(p.pid, 0)
    secs = time.time() - t0
    if status != 0:
        sys.exit("upres upscale failed (%s):\n%s" % (" ".join(cmd), err[-2000:]))
    m = re.search(r"plans: (\d+) made, (\d+) reused", err)
    return secs, usage.ru_utime + usage.ru_stime, ("%s made, %s reused" % m.groups()) if m else "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upres", default=os.path.join(REPO, "build", "upres"))
    ap.add_argument("--images", default=os.path.join(REPO, "..", "shared", "data", "images"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--case", action="append", choices=sorted(CASES), help="default: animevideov3 and x4plus")
    ap.add_argument("--fixed", type=int, action="append", help="fixed tile edges to try (default 256)")
    ap.add_argument("--before", help="an upres built before the plan cache, run as one more configuration")
    ap.add_argument("--distinct", action="store_true", help="20 different sizes instead of a few repeated")
    a = ap.parse_args()
    upres = os.path.abspath(a.upres)
    photos = [png_read(os.path.join(a.images, n)) for n in ("astronaut.png", "chelsea.png", "camera.png")]
    tmp = tempfile.mkdtemp(prefix="upres-plans-")
    print("CPU: %s, %d cores; %d repetitions, configurations alternating, medians" % (
        cpu_name(), os.cpu_count(), a.reps))
    print("| model | folder | configuration | plans | median wall | wall runs | / plans=1 | median CPU | / plans=1 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    try:
        for case in a.case or ["animevideov3", "x4plus"]:
            model, sizes = CASES[case]
            if a.distinct:  # 20 sizes between the smallest and the largest of the case
                (w0, h0), (w1, h1) = sizes[0], sizes[-1]
                sizes = [(w0 + (w1 - w0) * i // (N_IMAGES - 1) // 4 * 4, h0 + (h1 - h0) * i // (N_IMAGES - 1) // 4 * 4)
                         for i in range(N_IMAGES)]
            folder = os.path.join(tmp, case)
            make_folder(folder, photos, sizes)
            configs = [("plans=1", folder, ["--plans", "1"]), ("plans=8", folder, [])]
            if a.before:
                configs.insert(0, ("before", folder, ["--binary", os.path.abspath(a.before)]))
            for t in a.fixed or [256]:
                padded = os.path.join(tmp, "%s_pad%d" % (case, t))
                pad_folder(folder, padded, t)
                configs.append(("fixed=%d" % t, padded, ["-t", str(t)]))
            times = {c[0]: [] for c in configs}
            cpu = {c[0]: [] for c in configs}
            plans = {}
            for _ in range(a.reps):
                for name, src, extra in configs:
                    secs, used, p = run(upres, src, os.path.join(tmp, "out"), model, extra)
                    times[name].append(secs)
                    cpu[name].append(used)
                    plans[name] = p
            base = statistics.median(times["plans=1"])
            base_cpu = statistics.median(cpu["plans=1"])
            what = "%d images, %d sizes" % (N_IMAGES, len(set(sizes)))
            for name, _, _ in configs:
                med, med_cpu = statistics.median(times[name]), statistics.median(cpu[name])
                print("| %s | %s | %s | %s | %.2f s | %s | %.2f | %.2f s | %.2f |" % (
                    model, what, name, plans[name], med, " ".join("%.2f" % t for t in times[name]), med / base,
                    med_cpu, med_cpu / base_cpu), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


if __name__ == "__main__":
    main()
