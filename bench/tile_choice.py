#!/usr/bin/env python3
"""tile_choice.py - the automatic tile against fixed ones, on whole images.

Run: python3 bench/tile_choice.py [build/upres] [IMAGES_DIR] [--precision auto|fp32|bf16]

For each case (model, input side) it runs `upres upscale` once with the
automatic tile (the budget derived from the memory available now, as
`serve --tile-memory 0` and the CLI use) and once per fixed `-t`, each in a
fresh process, and prints wall time, peak RSS (the child's ru_maxrss) and
the tile the automatic choice took (from the -v log), then the ratio of
the automatic time to the best fixed one, all in the precision given
(default auto: bf16 where the CPU has AMX). Inputs: astronaut.png (512^2)
from IMAGES_DIR (default ../shared/data/images), and 1024^2 and 2048^2
versions of it made first by upres itself (animevideov3 x2 and x4). A
benchmark, not a test: it prints figures and never fails on them.
"""
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = sys.argv[1:]
PRECISION = "auto"
if "--precision" in ARGS:
    i = ARGS.index("--precision")
    PRECISION = ARGS[i + 1]
    del ARGS[i:i + 2]
UPRES = os.path.abspath(ARGS[0]) if len(ARGS) > 0 else os.path.join(REPO, "build", "upres")
IMAGES = ARGS[1] if len(ARGS) > 1 else os.path.join(REPO, "..", "shared", "data", "images")


def upscale(src, dst, model, scale, tile=None):
    """One run in a fresh process: (seconds, peak RSS in MB, the tile it used or None)."""
    cmd = [UPRES, "upscale", "-i", src, "-o", dst, "-n", model, "-s", str(scale), "--precision", PRECISION, "-v"]
    if tile is not None:
        cmd += ["-t", str(tile)]
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(p.pid, 0)
    secs = time.time() - t0
    if status != 0:
        sys.exit("upres upscale failed (%s):\n%s" % (" ".join(cmd), err[-2000:]))
    m = re.search(r"upscale \d+x\d+ x\d+: tile (\d+)", err)
    return secs, usage.ru_maxrss / 1024.0, int(m.group(1)) if m else None


def main():
    tmp = tempfile.mkdtemp(prefix="upres-tiles-")
    photo = os.path.join(IMAGES, "astronaut.png")
    big = {}
    for side, scale in ((1024, 2), (2048, 4)):
        big[side] = os.path.join(tmp, "astronaut_%d.png" % side)
        upscale(photo, big[side], "realesr-animevideov3", scale)
    # bf16 is fastest in tiles of 128-192, fp32 in tiles of 512 or one tile (docs/benchmarks.md)
    cases = [("realesrgan-x4plus", photo, 512, (128, 176, 256, 512)),
             ("realesr-animevideov3", big[1024], 1024, (128, 176, 256, 512, 1024)),
             ("realesr-animevideov3", big[2048], 2048, (128, 176, 256, 512, 1024))]
    with open("/proc/meminfo") as f:
        avail = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    print("MemAvailable %.1f GiB; the automatic budget is half of it, 256 MiB to 8 GiB; precision %s"
          % (avail / 2 ** 20, PRECISION))
    print("| model | input | tile | time | peak RSS |")
    print("| --- | --- | --- | --- | --- |")
    for model, src, side, tiles in cases:
        out = os.path.join(tmp, "out.png")
        auto = upscale(src, out, model, 4)
        print("| %s | %d^2 | automatic (%s) | %.2f s | %.0f MB |" % (model, side, auto[2] or "one tile", auto[0],
                                                                  auto[1]), flush=True)
        best = None
        for t in tiles:
            r = upscale(src, out, model, 4, t)
            print("| %s | %d^2 | `-t %d` | %.2f s | %.0f MB |" % (model, side, t, r[0], r[1]), flush=True)
            best = r[0] if best is None else min(best, r[0])
        print("| %s | %d^2 | automatic / best fixed | %.2f | |" % (model, side, auto[0] / best), flush=True)
    for name in os.listdir(tmp):
        os.remove(os.path.join(tmp, name))
    os.rmdir(tmp)


if __name__ == "__main__":
    main()
