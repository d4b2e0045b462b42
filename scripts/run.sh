#!/usr/bin/env bash
# run.sh - set up, build, and upscale the bundled sample image 4x with the
# default model, printing where the result is. (The HTTP server comes with
# `upres serve`, a later step; see README.)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/scripts/setup.sh"
mkdir -p "$repo/out"
"$repo/build/upres" upscale -i "$repo/samples/astronaut_128.png" -o "$repo/out/astronaut_128_x4.png" "$@"
echo "result: $repo/out/astronaut_128_x4.png"
