#!/usr/bin/env bash
# Install (if needed) and run the whole test suite. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
PY=${PYTHON:-python3}
exec "$PY" -m pytest tests -q -p no:cacheprovider "$@"
