#!/usr/bin/env python3
"""settings_test.py - `upres serve`'s settings: one table, told the same everywhere.

  1. `upres serve --settings-markdown` (README's rows, printed from the table
     in src/cli/serve.c) succeeds: every default the table shows is the value
     the config structs are initialised with;
  2. README.md's table under "### Settings" is exactly those rows;
  3. `upres serve -h` lists the same flags, environment variables and
     defaults as README's rows, and nothing else;
  4. every setting that checks its value refuses a bad one given as its flag
     and as its environment variable: exit 2, one line "upres: error: bad
     NAME 'VALUE': ...", no data folder made; a flag wins over its variable;
  5. only src/cli reads the environment, apart from the few library reads
     listed here (each a documented variable of its own).

usage: settings_test.py PATH/TO/upres
"""
import os
import re
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import check, make_tmp, tally  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TMP = None  # this run's scratch folder: every `upres serve` runs there

# getenv outside src/cli: file -> the variables it may read (report new ones, do not add them lightly)
LIBRARY_GETENV = {
    "src/core/paths.c": "UPRES_MODELS, UPRES_WEB (paths_find_dir, for the commands other than serve)",
    "src/upscale/upscale.c": "UPRES_MAX_PIXELS, UPRES_MAX_OUTPUT_PIXELS (the limits' defaults)",
    "src/nn/backend/dnnl.c": "UPRES_DNNL_CONV_ALG, UPRES_DNNL_GRIDS (tuning switches of the oneDNN backend)",
    "src/image/image.c": "VIPS_CONCURRENCY (libvips' own)",
}

# values columns of settings that take any text (nothing to refuse)
FREE_VALUES = ("a folder", "an IPv4 or IPv6 address", "error, warn, info or debug")


def clean_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("UPRES_")}


def run(upres, args, env=None, timeout=20):
    """rc, stdout, stderr of `upres serve ARGS`, run in the scratch folder (a relative path a setting
    wrongly took lands there); rc -1 when it was still running at timeout (killed)."""
    try:
        p = subprocess.run([upres, "serve"] + args, env=env if env is not None else clean_env(), cwd=TMP,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return -1, (e.stdout or b"").decode(), (e.stderr or b"").decode()
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def table_rows(text):
    """The markdown table rows (header and separator dropped) as lists of cells."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells[0] in ("flag", "---"):
            continue
        rows.append(cells)
    return rows


def readme_table():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    start = text.index("### Settings\n")
    lines = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break  # the table ended
    return "\n".join(lines) + "\n"


def help_entries(text):
    """-h's options: {flag: (env or None, default or None)}, continuation lines joined."""
    entries, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"^  (?:-(\w), |    )--([\w-]+)(?: \S+)?\s+(.*)$", line)
        if m:
            cur = ("-%s, --%s" % (m.group(1), m.group(2))) if m.group(1) else "--" + m.group(2)
            entries[cur] = m.group(3)
        elif cur and line.startswith(" " * 27):
            entries[cur] += " " + line.strip()
        else:
            cur = None
    out = {}
    for flag, t in entries.items():
        m = re.search(r"\((UPRES_[A-Z_]+)(=1)?(?:, default (.*))?\)$", t)
        if m:
            out[flag] = (m.group(1) + (m.group(2) or ""), m.group(3))
        else:
            m = re.search(r"\(default (.*)\)$", t)
            out[flag] = (None, m.group(1) if m else None)
    return out


def readme_default(cell):
    """A README default cell as -h shows it: `marks` dropped, units and words of a boolean gone."""
    d = cell.replace("`", "")
    return re.sub(r" s$", "", d)


def main():
    global TMP
    upres = os.path.abspath(sys.argv[1])
    tmp = TMP = make_tmp("upres-settings-")
    t0 = time.time()

    # 1. the table's defaults are the configuration's
    rc, md, err = run(upres, ["--settings-markdown"])
    check(rc == 0 and err == "", "--settings-markdown: every default matches the config (rc 0, no error)",
          "rc %d: %s" % (rc, err))
    rows = table_rows(md)
    check(len(rows) >= 40, "--settings-markdown prints a row per setting", "%d rows" % len(rows))

    # 2. README's table is those rows
    readme = readme_table()
    same = readme == md
    if not same:
        import difflib
        diff = "".join(difflib.unified_diff(readme.splitlines(True), md.splitlines(True), "README.md",
                                            "upres serve --settings-markdown"))
        print(diff)
    check(same, "README.md's settings table is `upres serve --settings-markdown` (paste it there)")

    # 3. -h tells the same flags, variables and defaults
    rc, out, err = run(upres, ["-h"])
    check(rc == 0 and out.startswith("usage: upres serve"), "serve -h: exit 0 with usage", err)
    helped = help_entries(out)
    helped.pop("-h, --help", None)
    flags_md = {r[0].strip("`"): r for r in rows}
    check(set(helped) == set(flags_md), "-h and README list the same flags",
          "only -h: %s, only README: %s" % (sorted(set(helped) - set(flags_md)),
                                            sorted(set(flags_md) - set(helped))))
    for flag in sorted(set(helped) & set(flags_md)):
        env, default = helped[flag]
        row = flags_md[flag]
        check(env == (row[1].strip("`") or None), "%s: -h and README name the same variable" % flag,
              "-h %s, README %s" % (env, row[1]))
        if row[1].endswith("=1`"):
            check(default is None and row[2] in ("off", "on"), "%s: a boolean, off or on" % flag, row[2])
        else:
            check(default == readme_default(row[2]), "%s: -h and README show the same default" % flag,
                  "-h %r, README %r" % (default, row[2]))
    envs = [r[1] for r in rows]
    check(len(envs) == len(set(envs)), "no variable names two settings")

    # 4. a bad value is refused, as a flag and as a variable, before the data folder is made
    data = os.path.join(tmp, "data")

    def refused(what, args, env, name, value):
        port = [] if name == "port" else ["--port", "0"]  # (a flag would win over UPRES_PORT)
        rc, out, err = run(upres, ["-d", data] + port + args, env, timeout=10)
        # (log lines may come too: UPRES_MAX_PIXELS's library default warns of a bad value first)
        lines = [l for l in err.splitlines() if l.startswith("upres: error: ")]
        check(rc == 2, "%s: exit 2" % what, "got %d: %s" % (rc, err))
        check(len(lines) == 1, "%s: one error line" % what, err)
        want = "bad %s '%s'" % (name, value) if name else value
        check(want in err, "%s: says %r" % (what, want), err)
        check(name or value == want or value not in err, "%s: the value is not echoed" % what, err)
        check(not os.path.exists(data), "%s: no data folder made" % what)
        shutil.rmtree(data, ignore_errors=True)

    n_checked = 0
    for row in rows:
        flag, env, values = row[0].strip("`"), row[1].strip("`"), row[3]
        if env.endswith("=1") or values.startswith(FREE_VALUES):
            continue
        long_flag = flag.split(", ")[-1]
        name = long_flag[2:]
        bad = "x!"
        # tiers: the loader's own message names the file; secret: the value is never echoed
        told = None if name == "tiers" else name
        said = "bad secret (its value not shown)" if name == "secret" else bad
        if name == "secret":
            told = None
        refused("%s %s" % (long_flag, bad), [long_flag, bad], None, told, said)
        e = clean_env()
        e[env] = bad
        refused("%s=%s" % (env, bad), [], e, told, said)
        n_checked += 1
    check(n_checked >= 30, "most settings check their values", "%d checked" % n_checked)
    e = clean_env()
    e["UPRES_PORT"] = "x"
    refused("a flag wins over its variable", ["--port", "1", "--workers", "0"], e, "workers", "0")
    refused("heartbeat under the lease", ["--lease", "5", "--heartbeat", "5"], None, None,
            "bad heartbeat 5 s: it must be under the lease (5 s)")

    # 5. only src/cli reads the environment (and the listed library reads)
    readers = set()
    for base, _, files in os.walk(os.path.join(ROOT, "src")):
        for f in files:
            if not f.endswith((".c", ".h")):
                continue
            path = os.path.join(base, f)
            rel = os.path.relpath(path, ROOT)
            if rel.startswith("src/cli/"):
                continue
            if re.search(r"\b(secure_)?getenv\s*\(", open(path, encoding="utf-8", errors="replace").read()):
                readers.add(rel)
    check(readers <= set(LIBRARY_GETENV),
          "only src/cli reads the environment (and %s)" % ", ".join(sorted(LIBRARY_GETENV)),
          "new readers: %s: read it in src/cli and pass it down" % sorted(readers - set(LIBRARY_GETENV)))

    shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed (%.1fs)" % (tally.passed, tally.failed, time.time() - t0))
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
