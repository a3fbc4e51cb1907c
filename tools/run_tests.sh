#!/usr/bin/env bash
# Second quick-start command: set up the environment and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/setup_env.sh
python -m pytest tests -q -rs "$@"
