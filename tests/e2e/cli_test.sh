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

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
