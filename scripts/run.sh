#!/usr/bin/env bash
# run.sh - set up (packages, models, Swagger UI), build, and start the server
# with its embedded defaults: SQLite and files in ./data, models from
# ./models, http://127.0.0.1:8089/api/v1. Extra arguments go to
# `upres serve` (see `build/upres serve -h`). Ctrl-C stops it cleanly.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/scripts/setup.sh"
cd "$repo"
echo "upres: starting on http://127.0.0.1:8089/api/v1 (API docs: http://127.0.0.1:8089/api/v1/docs)"
echo "upres: try  curl -F image=@samples/astronaut_128.png -F scale=4 http://127.0.0.1:8089/api/v1/upscale"
exec "$repo/build/upres" serve "$@"
