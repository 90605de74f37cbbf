#!/usr/bin/env bash
# Install (if needed) and run the whole test suite. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
PY=${PYTHON:-python3}
# Two worker processes, each test file whole on one of them (its module fixtures built
# once); pass -n 0 to run in this process (e.g. to use a debugger).
exec "$PY" -m pytest tests -q -p no:cacheprovider -n 2 --dist loadfile "$@"
