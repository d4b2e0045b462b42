#!/usr/bin/env python3
"""Where oneDNN's time goes, from its verbose log: python3 bench/dnnl_profile.py LOG [RUNS]

LOG is the output of a process run with ONEDNN_VERBOSE=1 that ran one net RUNS times (default 1)
after a warm-up run, e.g. `ONEDNN_VERBOSE=1 UPRES_BENCH_GRIDS=on build/bench_grids MODEL 148 148 2`.
Only the last run counts (the warm-up also reorders the weights); weight reorders (shapes not
starting with a batch of 1) are dropped anyway. Prints the time per primitive kind, convolutions split
into Winograd and direct, and each kind's share of the run."""
import collections
import sys


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    runs = (int(sys.argv[2]) if len(sys.argv) > 2 else 1) + 1
    execs = []
    for line in open(sys.argv[1], errors="replace"):
        if not line.startswith(("onednn_verbose,exec", "dnnl_verbose,exec")):
            continue
        f = line.strip().split(",")
        if f[3] == "reorder" and not f[-2].startswith("1x"):
            continue  # weights, reordered once
        execs.append(f)
    last = execs[len(execs) - len(execs) // runs:]
    total, count = collections.Counter(), collections.Counter()
    for f in last:
        kind = f[3]
        if kind == "convolution":
            kind = "convolution (winograd)" if "wino" in f[4] else "convolution (direct)"
        total[kind] += float(f[-1])
        count[kind] += 1
    whole = sum(total.values()) or 1
    for kind, ms in total.most_common():
        print("%-24s %5d calls %10.1f ms %5.1f%%" % (kind, count[kind], ms, 100 * ms / whole))
    print("%-24s %5d calls %10.1f ms" % ("total", sum(count.values()), whole))
    return 0


if __name__ == "__main__":
    sys.exit(main())
