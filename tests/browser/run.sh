#!/usr/bin/env bash
# run.sh - the browser tests of the web page: bash tests/browser/run.sh PATH/TO/upres [FILE.test.mjs...]
#
# ctest runs it as the test browser/page (CMakeLists.txt), with UPRES_TEST_MODELS,
# UPRES_SHARED_DATA and UPRES_SANITIZE as the e2e tests get them. It checks that the
# browser and playwright-core are there (scripts/setup.sh installs both; CI runs it
# first, so their absence is a failure, not a skip), then runs every *.test.mjs here
# (or the ones named) one file at a time with node's test runner, and prints where the
# screenshots went (UPRES_ARTIFACTS, default <binary's folder>/browser-artifacts).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
upres=${1:-$here/../../build/upres}
shift || true
[ -x "$upres" ] || { echo "browser tests: no upres binary at $upres" >&2; exit 1; }
export UPRES_BIN=$(cd "$(dirname "$upres")" && pwd)/$(basename "$upres")
chromium=${UPRES_CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium" ] || { echo "browser tests: no browser at $chromium: scripts/setup.sh installs Debian's chromium" >&2; exit 1; }
[ -f "$here/node_modules/playwright-core/package.json" ] \
  || { echo "browser tests: tests/browser/node_modules/playwright-core is missing: scripts/setup.sh installs it (npm ci)" >&2; exit 1; }
command -v node >/dev/null || { echo "browser tests: node is missing: scripts/setup.sh installs it" >&2; exit 1; }
export UPRES_ARTIFACTS=${UPRES_ARTIFACTS:-$(dirname "$UPRES_BIN")/browser-artifacts}
rm -rf "$UPRES_ARTIFACTS" && mkdir -p "$UPRES_ARTIFACTS"

if [ $# -gt 0 ]; then files=("$@"); else files=("$here"/*.test.mjs); fi
status=0
start=$SECONDS
node --test --test-concurrency=1 --test-reporter=spec "${files[@]}" || status=$?
echo "browser tests: $((SECONDS - start)) s; screenshots and server logs in $UPRES_ARTIFACTS"
exit $status
