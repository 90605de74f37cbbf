#!/usr/bin/env bash
# Install uamix-fairseq and its dependencies into the current Python environment.
#   bash scripts/install.sh          # the package
#   bash scripts/install.sh test     # plus the test-only dependencies
# fairseq-fixed builds from source and needs torch, cython and numpy at build time:
# installing those first and building without isolation keeps pip from pulling a
# second (multi-GB) torch into a throw-away build environment.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extra=""
[ "${1:-}" = "test" ] && extra="[test]"

if ! "$PY" -c "import torch" 2>/dev/null; then
  # The CPU build we test with; any torch >= 2.1 works if you install your own first.
  "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q "setuptools>=61" wheel cython numpy
# compat editable mode: the repo root goes on sys.path (a .pth file), so Hydra can list
# the hydra_plugins/ namespace package; the default finder-based mode hides it from
# pkgutil.iter_modules, and plain key=value overrides of plugin fields would fail.
"$PY" -m pip install -q --no-build-isolation --use-pep517 -e ".${extra}" \
  --config-settings editable_mode=compat
"$PY" -c "import uamix_fairseq, fairseq; print('uamix_fairseq', uamix_fairseq.__version__, 'with fairseq', fairseq.__version__)"
