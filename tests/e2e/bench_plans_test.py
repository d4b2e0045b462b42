#!/usr/bin/env python3
"""bench_plans_test.py - `upres bench`'s rows and `upres upscale`'s plan cache over a folder.

  1. `upres bench --help` exits 0 and tells the row options; a bad -R or -W
     is refused with exit 2;
  2. `-R whole -W realesr-animevideov3-x2:600` prints one whole-image row
     and no model row: 600x600, the automatic tile 300 in 4 tiles (tiles
     are at most 512 and split evenly), GFLOP/s = GFLOP / time, and the
     ratio to the fp32 peak printed above; `-R model` prints a model row
     and no whole-image row;
  3. a folder of images in two sizes, A B A B A by name, is upscaled in
     name order: with the default plan cache (no --plans) each size is planned once
     ("plans: 3 made": the tile probe and two shapes), with `--plans 1`
     every change of size plans again (6 made), and the outputs are the
     same bytes; `--plans 0` is refused.

Figures are never checked against a speed: only the rows' shape and
arithmetic. usage: bench_plans_test.py PATH/TO/upres
"""
import os
import re
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import check, make_tmp, png, run, tally  # noqa: E402

UPRES = None
MODELS = os.environ.get("UPRES_TEST_MODELS", "")


def upres(*args):
    p = subprocess.run([UPRES] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=900)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def test_bench_options():
    rc, out, _ = upres("bench", "--help")
    check(rc == 0 and "-R ROWS" in out and "-W" in out, "bench --help exits 0 and tells -R and -W", out[-300:])
    rc, _, err = upres("bench", "-R", "tiles")
    check(rc == 2 and "bad rows" in err, "bench -R tiles is refused", err)
    rc, _, err = upres("bench", "-W", "realesr-animevideov3-x2")
    check(rc == 2 and "bad whole-image row" in err, "bench -W without a side is refused", err)


def test_bench_whole_row():
    rc, out, err = upres("bench", "-m", MODELS, "-R", "whole", "-W", "realesr-animevideov3-x2:600", "-j", "1",
                         "-p", "fp32")
    check(rc == 0, "bench -R whole succeeds", err[-500:])
    peak = re.search(r"AVX-512 FMA loop\): 1 thread ([\d.]+) GFLOP/s", out) or \
        re.search(r"AVX2 FMA loop\): 1 thread ([\d.]+) GFLOP/s", out)
    rows = [line.split() for line in out.splitlines() if line.startswith("realesr-animevideov3-x2 ")]
    check("model rows:" not in out and "whole-image rows:" in out, "-R whole prints only whole-image rows", out)
    check(len(rows) == 1 and len(rows[0]) == 14, "one whole-image row of 14 columns", repr(rows))
    if len(rows) != 1 or len(rows[0]) != 14 or not peak:
        return
    r = rows[0]
    check(r[1:6] == ["fp32", "1", "600x600", "300", "4"], "600x600 runs in 4 automatic tiles of 300", repr(r))
    secs, gflop, rate, ratio = float(r[6]), float(r[7]), float(r[8]), float(r[9])
    check(secs > 0 and gflop > 0, "the row has a time and a FLOP count", repr(r))
    check(abs(rate - gflop / secs) <= 0.002 * rate + 0.1, "GFLOP/s is GFLOP / time", repr(r))
    check(abs(ratio - rate / float(peak.group(1))) <= 0.01, "ratio is GFLOP/s over the fp32 peak", repr(r))
    check(float(r[13]) > 0, "peak RSS is printed", repr(r))


def test_bench_model_row():
    rc, out, err = upres("bench", "-m", MODELS, "-R", "model", "-n", "realesr-animevideov3-x2", "-j", "1", "-p",
                         "fp32", "-r", "1")
    rows = [line.split() for line in out.splitlines() if line.startswith("realesr-animevideov3-x2 ")]
    check(rc == 0 and "whole-image rows:" not in out and len(rows) == 1 and len(rows[0]) == 12,
          "-R model prints one model row and no whole-image row", out + err[-300:])


def test_folder_plans(tmp):
    src = os.path.join(tmp, "in")
    os.makedirs(src)
    for i, (w, h) in enumerate([(40, 30), (24, 36), (40, 30), (24, 36), (40, 30)]):
        with open(os.path.join(src, "img%d.png" % i), "wb") as f:
            f.write(png(w, h))
    made = {}
    for n in ("8", "1"):  # 8: the default, not given
        out = os.path.join(tmp, "out" + n)
        rc, _, err = upres("upscale", "-m", MODELS, "-i", src, "-o", out, "-n", "realesr-animevideov3-x2",
                           "--precision", "fp32", "-v", *(["--plans", n] if n != "8" else []))
        m = re.search(r"plans: (\d+) made, (\d+) reused", err)
        check(rc == 0 and m, "plans=%s over the folder succeeds" % n, err[-500:])
        names = re.findall(r"in/(img\d)\.png -> ", err)
        check(names == ["img%d" % i for i in range(5)], "the folder is read in name order", repr(names))
        made[n] = (int(m.group(1)) if m else -1, out)
    check(made["8"][0] == 3, "with the cache each size is planned once (probe + 2)", repr(made))
    check(made["1"][0] == 6, "with --plans 1 every change of size plans again (probe + 5)", repr(made))
    same = all(open(os.path.join(made["8"][1], f), "rb").read() == open(os.path.join(made["1"][1], f), "rb").read()
               for f in sorted(os.listdir(made["1"][1])))
    check(same and len(os.listdir(made["8"][1])) == 5, "the outputs are the same bytes either way")
    rc, _, err = upres("upscale", "-i", src, "-o", os.path.join(tmp, "x"), "--plans", "0")
    check(rc == 2 and "bad plan count" in err, "--plans 0 is refused", err)


def main():
    global UPRES
    UPRES = os.path.abspath(sys.argv[1])
    t0 = time.time()
    tmp = make_tmp("upres-bench-plans-")
    run(test_bench_options)
    run(test_bench_whole_row)
    run(test_bench_model_row)
    run(test_folder_plans, tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed (%.1fs)" % (tally.passed, tally.failed, time.time() - t0))
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
