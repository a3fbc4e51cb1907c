#!/usr/bin/env bash
# First quick-start command: set up the environment, then run the built-in
# demo end to end (make the demo data, convert it, train source-only and
# every method, evaluate, print the mIoU table). Extra arguments go to
# tools/run_demo.py (e.g. --methods source_only cdga, --seeds 0 1 2).
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/setup_env.sh
python tools/run_demo.py "$@"
