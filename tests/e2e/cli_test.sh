#!/usr/bin/env bash
# cli_test.sh - the `upres` command as a user runs it: upscale files and
# folders with real models and images, formats and scales, and one clear
# error line with a non-zero exit for each kind of bad input.
# usage: cli_test.sh PATH/TO/upres   (ctest passes it; env from CMake)
set -u
upres=$1
data=$UPRES_SHARED_DATA
export UPRES_MODELS=$UPRES_TEST_MODELS
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok()   { pass=$((pass + 1)); }
bad()  { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
check() { local what=$1; shift; if "$@"; then ok; else bad "$what"; fi; }
size() { python3 -c "import struct,sys; d=open(sys.argv[1],'rb').read(24); print(*struct.unpack('>II', d[16:24]))" "$1"; }

fast=realesr-animevideov3
in64=$data/ref/in/chelsea_lr64.png

# models
out=$("$upres" models 2>&1)
check "models lists x4plus as default" grep -q "realesrgan-x4plus .*scale 4  (default)" <<<"$out"
check "models lists animevideov3 scales" grep -q "realesr-animevideov3 .*scale 2,3,4" <<<"$out"

# native scales and an exact non-native one
for s in 2 3 4; do
  "$upres" upscale -i "$in64" -o "$tmp/x$s.png" -n $fast -s $s 2>"$tmp/err" || bad "upscale x$s: $(cat "$tmp/err")"
  check "x$s size" test "$(size "$tmp/x$s.png")" = "$((64 * s)) $((64 * s))"
done
"$upres" upscale -i "$in64" -o "$tmp/x1.5.png" -n realesrgan-x4fast -s 1.5 2>"$tmp/err" || bad "x1.5: $(cat "$tmp/err")"
check "x1.5 size" test "$(size "$tmp/x1.5.png")" = "96 96"
check "progress on stderr" grep -q "100%" "$tmp/err"

# formats: from -f, from the extension; tiles
"$upres" upscale -i "$in64" -o "$tmp/a.out" -n $fast -s 2 -f jpg -q 80 2>/dev/null || bad "jpg via -f"
check "jpg magic" test "$(head -c 3 "$tmp/a.out" | od -An -tx1 | tr -d ' ')" = "ffd8ff"
"$upres" upscale -i "$in64" -o "$tmp/a.webp" -n $fast -s 2 -t 32 2>/dev/null || bad "webp by extension, tiled"
check "webp magic" grep -q WEBP <(head -c 16 "$tmp/a.webp")

# gray and alpha stay gray and alpha
"$upres" upscale -i "$data/images/camera.png" -o "$tmp/gray.png" -n $fast -s 2 2>/dev/null || bad "gray input"
check "gray output is gray (PNG colour type 0)" test "$(od -An -tu1 -j25 -N1 "$tmp/gray.png" | tr -d ' ')" = 0
"$upres" upscale -i "$data/images/logo.png" -o "$tmp/logo.png" -n $fast -s 2 2>/dev/null || bad "alpha input"
check "alpha output has alpha (PNG colour type 6)" test "$(od -An -tu1 -j25 -N1 "$tmp/logo.png" | tr -d ' ')" = 6
check "alpha output size" test "$(size "$tmp/logo.png")" = "1000 1000"

# a folder in, a folder out; a bad file inside fails alone
mkdir -p "$tmp/in"
cp "$data/ref/in/chelsea_lr64.png" "$data/ref/in/astronaut_lr64.png" "$tmp/in/"
echo "not an image" > "$tmp/in/notes.txt"
"$upres" upscale -i "$tmp/in" -o "$tmp/out" -n $fast -s 2 2>"$tmp/err"
check "folder with a bad file exits non-zero" test $? -ne 0
check "folder outputs" test -s "$tmp/out/chelsea_lr64.png" -a -s "$tmp/out/astronaut_lr64.png"
check "folder names the bad file" grep -q "notes.txt" "$tmp/err"

# errors: one line, non-zero
expect_error() { # what pattern args...
  local what=$1 pat=$2; shift 2
  "$upres" upscale "$@" >"$tmp/o" 2>"$tmp/e"
  local rc=$?
  check "$what: exit non-zero" test $rc -ne 0
  check "$what: one line" test "$(grep -vc '^$' "$tmp/e")" = 1
  check "$what: says '$pat' (got: $(cat "$tmp/e"))" grep -qi "$pat" "$tmp/e"
}
: > "$tmp/empty.png"
echo "hello" > "$tmp/text.jpg"
head -c 3000 "$tmp/a.out" > "$tmp/trunc.jpg"
expect_error "missing file" "no such file" -i "$tmp/nope.png" -o "$tmp/x.png"
expect_error "zero bytes" "image" -i "$tmp/empty.png" -o "$tmp/x.png" -n $fast
expect_error "text file" "image" -i "$tmp/text.jpg" -o "$tmp/x.png" -n $fast
expect_error "truncated jpeg" "trunc\|premature\|image" -i "$tmp/trunc.jpg" -o "$tmp/x.png" -n $fast
expect_error "unknown model" "unknown model" -i "$in64" -o "$tmp/x.png" -n no-such-model
expect_error "bad scale" "bad scale" -i "$in64" -o "$tmp/x.png" -s 0
expect_error "bad scale text" "bad scale" -i "$in64" -o "$tmp/x.png" -s abc
expect_error "bad format" "bad format" -i "$in64" -o "$tmp/x.png" -f bmp
expect_error "bad models dir" "models folder" -i "$in64" -o "$tmp/x.png" -m "$tmp/nowhere"
UPRES_MAX_PIXELS=1000 expect_error "input pixel limit" "megapixels" -i "$in64" -o "$tmp/x.png" -n $fast
UPRES_MAX_OUTPUT_PIXELS=10000 expect_error "output pixel limit" "megapixels" -i "$in64" -o "$tmp/x.png" -n $fast

# keys: create, list, revoke, update on a temporary data folder; the database keeps no key
unset UPRES_DATA UPRES_TIERS
kd=$tmp/keys-data
keys_err() { # what exit-status pattern args...: one "upres: error:" line
  local what=$1 want=$2 pat=$3; shift 3
  "$upres" keys "$@" >"$tmp/o" 2>"$tmp/e"
  local rc=$?
  check "keys $what: exit $want (got $rc)" test $rc = "$want"
  check "keys $what: one error line (got: $(cat "$tmp/e"))" test "$(grep -c '^upres: error: ' "$tmp/e")" = 1
  check "keys $what: says '$pat'" grep -qi "$pat" "$tmp/e"
}
"$upres" keys -h >"$tmp/o" 2>&1
check "keys -h exits 0 with usage" grep -q "usage: upres keys" "$tmp/o"
"$upres" keys >/dev/null 2>&1
check "keys alone exits 2" test $? = 2
mkdir -p "$kd"
check "keys list, none yet" test "$("$upres" keys list -d "$kd" 2>&1)" = \
  "no API keys (create one: upres keys create --name NAME)"
check "keys list --json, none yet" test "$("$upres" keys list -d "$kd" --json 2>&1)" = "[]"

"$upres" keys create --name "first key" -d "$kd" >"$tmp/k1" 2>"$tmp/e" || bad "keys create: $(cat "$tmp/e")"
k1=$(head -1 "$tmp/k1")
check "keys create: key alone on the first line (got: $k1)" grep -Eq '^upres_[A-Za-z0-9_-]{43}$' <<<"$k1"
check "keys create: shown once" grep -q "shown only once" "$tmp/k1"
UPRES_DATA=$kd "$upres" keys create --name second --tier pro --credits 5 --quota 100 >"$tmp/k2" 2>"$tmp/e" \
  || bad "keys create pro (UPRES_DATA): $(cat "$tmp/e")"
k2=$(head -1 "$tmp/k2")
check "keys create: another key" test "${#k2}" = 49 -a "$k2" != "$k1"

"$upres" keys list -d "$kd" >"$tmp/list" 2>"$tmp/e" || bad "keys list: $(cat "$tmp/e")"
check "keys list: header" grep -q "^ID .*PREFIX .*NAME .*LAST USED .*STATUS$" "$tmp/list"
check "keys list: first key, no quota, unlimited, never used" \
  grep -q "${k1:0:14} .*first key .*basic .* - .* 0 .*unlimited .*never .*active" "$tmp/list"
check "keys list: second key" grep -q "${k2:0:14} .*second .*pro .* 100 .* 0 .* 5 .*active" "$tmp/list"
check "keys list: no full key" test "$(grep -cF -e "$k1" -e "$k2" "$tmp/list")" = 0
"$upres" keys list -d "$kd" --json >"$tmp/list.json" 2>"$tmp/e" || bad "keys list --json: $(cat "$tmp/e")"
check "keys list --json: fields (got: $(cat "$tmp/list.json"))" /usr/bin/python3 -c '
import json, re, sys
a = json.load(open(sys.argv[1]))
t = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
assert [k["name"] for k in a] == ["first key", "second"]
assert [k["prefix"] for k in a] == [sys.argv[2][:14], sys.argv[3][:14]]
assert a[0]["tier"] == "basic" and a[0]["quota"] is None and a[0]["credits"] is None
assert a[1]["tier"] == "pro" and a[1]["quota"] == 100 and a[1]["credits"] == 5
for k in a:
    assert len(k["id"]) == 36 and k["used"] == 0 and t.match(k["created_at"])
    assert k["last_used_at"] is None and k["revoked"] is False and k["revoked_at"] is None
assert sys.argv[2] not in open(sys.argv[1]).read()
' "$tmp/list.json" "$k1" "$k2"

"$upres" keys revoke "${k1:0:14}" -d "$kd" >"$tmp/o" 2>"$tmp/e"
check "keys revoke by prefix (got: $(cat "$tmp/o" "$tmp/e"))" grep -q "^revoked .*${k1:0:14}.*first key" "$tmp/o"
check "keys list: first revoked" grep -q "${k1:0:14} .*first key .*revoked$" <("$upres" keys list -d "$kd")
check "keys list: second active" grep -q "${k2:0:14} .*second .*active$" <("$upres" keys list -d "$kd")
check "keys list --json: revoked_at" /usr/bin/python3 -c '
import json, sys
a = json.loads(sys.stdin.read())
assert a[0]["revoked"] is True and a[0]["revoked_at"].endswith("Z") and a[1]["revoked"] is False
' < <("$upres" keys list -d "$kd" --json)
keys_err "revoke again" 1 "already revoked" revoke "${k1:0:14}" -d "$kd"
keys_err "revoke unknown" 1 "no API key matches" revoke 00000000-0000-4000-8000-000000000000 -d "$kd"
keys_err "revoke too short" 2 "match any key" revoke upres_ -d "$kd"
keys_err "bad tier" 2 "unknown tier 'gold' (tiers: basic, pro, premium)" create --name x --tier gold -d "$kd"
keys_err "negative quota" 2 "bad quota" create --name x --quota -1 -d "$kd"
keys_err "quota not a number" 2 "bad quota" create --name x --quota abc -d "$kd"
keys_err "negative credits" 2 "bad credits" create --name x --credits -5 -d "$kd"
keys_err "missing name" 2 "needs --name" create -d "$kd"
keys_err "empty name" 2 "bad name" create --name "" -d "$kd"
keys_err "extra argument" 2 "unexpected argument" list extra -d "$kd"
keys_err "unknown option" 2 "unknown option" list --nope -d "$kd"
keys_err "unknown subcommand" 2 "unknown keys command" frobnicate

# keys update: the second key (pro, quota 100, 5 credits) changes; the revoked first one cannot
kj() { "$upres" keys list -d "$kd" --json | /usr/bin/python3 -c "import json, sys; print(json.dumps(json.load(sys.stdin)[1][sys.argv[1]]))" "$1"; }
"$upres" keys update "${k2:0:14}" --add-credits 5 -d "$kd" >"$tmp/o" 2>"$tmp/e" || bad "keys update --add-credits: $(cat "$tmp/e")"
check "keys update --add-credits 5: list --json shows 10 (got $(kj credits))" test "$(kj credits)" = 10
check "keys update prints the new state (got: $(cat "$tmp/o"))" grep -q "^credits:  10$" "$tmp/o"
check "keys update prints field lines" grep -q "^tier:     pro$" "$tmp/o"
check "keys update prints no key" test "$(grep -cF -e "$k2" -e upres_ "$tmp/o")" = 0
"$upres" keys update "$k2" --add-credits -3 -d "$kd" >/dev/null 2>"$tmp/e" || bad "keys update by whole key: $(cat "$tmp/e")"
check "keys update --add-credits -3: 7 (got $(kj credits))" test "$(kj credits)" = 7
keys_err "update below 0" 1 "below 0" update "${k2:0:14}" --add-credits -8 -d "$kd"
check "keys update below 0 changed nothing" test "$(kj credits)" = 7
"$upres" keys update "${k2:0:14}" --credits unlimited -d "$kd" >"$tmp/o" 2>"$tmp/e" || bad "keys update --credits unlimited: $(cat "$tmp/e")"
check "keys update --credits unlimited: null (got $(kj credits))" test "$(kj credits)" = null
check "keys update --credits unlimited: printed" grep -q "^credits:  unlimited$" "$tmp/o"
"$upres" keys update "${k2:0:14}" --quota 7 -d "$kd" >"$tmp/o" 2>"$tmp/e" || bad "keys update --quota 7: $(cat "$tmp/e")"
check "keys update --quota 7 (got $(kj quota))" test "$(kj quota)" = 7
check "keys update --quota 7: printed" grep -q "^quota:    7 credits a month$" "$tmp/o"
"$upres" keys update "${k2:0:14}" --quota none -d "$kd" >/dev/null 2>"$tmp/e" || bad "keys update --quota none: $(cat "$tmp/e")"
check "keys update --quota none: null (got $(kj quota))" test "$(kj quota)" = null
"$upres" keys update "${k2:0:14}" --tier basic -d "$kd" >/dev/null 2>"$tmp/e" || bad "keys update --tier basic: $(cat "$tmp/e")"
check "keys update --tier basic (got $(kj tier))" test "$(kj tier)" = '"basic"'
"$upres" keys update "${k2:0:14}" --tier pro --credits 3 -d "$kd" >/dev/null 2>"$tmp/e" || bad "keys update --tier pro: $(cat "$tmp/e")"
check "keys update --tier pro (got $(kj tier))" test "$(kj tier)" = '"pro"'
check "keys update --credits 3 (got $(kj credits))" test "$(kj credits)" = 3
keys_err "update revoked" 1 "revoked" update "${k1:0:14}" --add-credits 5 -d "$kd"
"$upres" keys update "${k2:0:14}" --credits unlimited -d "$kd" >/dev/null 2>&1 || bad "keys update back to unlimited"
keys_err "update add to unlimited" 1 "unlimited" update "${k2:0:14}" --add-credits 5 -d "$kd"
check "keys update refused: still unlimited" test "$(kj credits)" = null
keys_err "update no change" 2 "needs a change" update "${k2:0:14}" -d "$kd"
keys_err "update bad tier" 2 "unknown tier 'gold'" update "${k2:0:14}" --tier gold -d "$kd"
keys_err "update credits and add-credits" 2 "one of them" update "${k2:0:14}" --credits 5 --add-credits 5 -d "$kd"
keys_err "update bad add-credits" 2 "bad add-credits" update "${k2:0:14}" --add-credits 0 -d "$kd"
keys_err "update bad quota" 2 "bad quota" update "${k2:0:14}" --quota -2 -d "$kd"
keys_err "update too short" 2 "match any key" update upres_ --quota 1 -d "$kd"
keys_err "update empty ref" 2 "match any key" update "" --quota 1 -d "$kd"
keys_err "update unknown" 1 "no API key matches" update 00000000-0000-4000-8000-000000000000 --quota 1 -d "$kd"
keys_err "update without a key" 2 "needs a key's id" update -d "$kd"
keys_err "add-credits for create" 2 "is for keys update" create --name x --add-credits 1 -d "$kd"
check "keys errors made no key" test "$("$upres" keys list -d "$kd" --json | grep -c '"id"')" = 2
for f in "$kd"/upres.db*; do
  check "no key in $(basename "$f")" test "$(grep -caF -e "$k1" -e "$k2" "$f")" = 0
done
check "the database exists" test -s "$kd/upres.db"

# serve: a bad setting is refused before anything starts (exit 2, one error line naming it)
serve_err() { # what pattern args...
  local what=$1 pat=$2; shift 2
  timeout 20 "$upres" serve -d "$tmp/serve-data" --port 0 "$@" >"$tmp/o" 2>"$tmp/e"
  local rc=$?
  check "serve $what: exit 2 (got $rc)" test $rc = 2
  check "serve $what: one error line (got: $(cat "$tmp/e"))" test "$(grep -c '^upres: error: ' "$tmp/e")" = 1
  check "serve $what: says '$pat'" grep -qi "$pat" "$tmp/e"
}
serve_err "--submit-queue 0" "bad submit-queue '0'" --submit-queue 0
serve_err "--submit-queue x" "bad submit-queue 'x'" --submit-queue x
serve_err "--submit-threads 0" "bad submit-threads '0'" --submit-threads 0
UPRES_SUBMIT_QUEUE=70000 serve_err "UPRES_SUBMIT_QUEUE=70000" "bad submit-queue '70000'"
serve_err "--header-timeout 0" "bad header-timeout '0'" --header-timeout 0
serve_err "--min-body-rate -1" "bad min-body-rate '-1'" --min-body-rate -1
serve_err "--colour p3" "bad colour 'p3'" --colour p3
serve_err "--max-frames 0" "bad max-frames '0'" --max-frames 0
serve_err "--fetch-threads 0" "bad fetch-threads '0'" --fetch-threads 0
serve_err "--fetch-per-key 0" "bad fetch-per-key '0'" --fetch-per-key 0
serve_err "--fetch-per-ip 0" "bad fetch-per-ip '0'" --fetch-per-ip 0
UPRES_FETCH_MIN_RATE=x serve_err "UPRES_FETCH_MIN_RATE=x" "bad fetch-min-rate 'x'"
serve_err "--backend cuda" "bad backend 'cuda': dnnl or ref" --backend cuda
serve_err "--max-body 100" "bad max-body '100': bytes from 1K to 1G" --max-body 100
serve_err "--public-url ftp://x" "bad public-url 'ftp://x': an http:// or https:// URL" --public-url ftp://x
serve_err "--lease 5 --heartbeat 5" "bad heartbeat 5 s: it must be under the lease (5 s)" --lease 5 --heartbeat 5
serve_err "--tiers (no file)" "tier table: unable to open $tmp/nowhere.json" --tiers "$tmp/nowhere.json"
UPRES_PORT=x serve_err "a flag wins over its variable" "bad workers '0': 1 to 256" --port 1 --workers 0
check "serve: a refused setting made no data folder" test ! -e "$tmp/serve-data"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
