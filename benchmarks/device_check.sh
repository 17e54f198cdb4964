#!/usr/bin/env bash
# One-shot device check (benchmarks/device_check.py): throughput, LoRA/full speed-up, memory envelope
# and MFU of esm2-650m, prott5, ankh-large and esm2-3b on the GPU in use, in a few minutes; writes
# device_check.json and device_check.md under --out (default $OUT).
#   bash benchmarks/device_check.sh                        # a GPU session, $OUT set
#   bash benchmarks/device_check.sh --smoke --out DIR      # CPU, tiny models, seconds (CI runs this)
# $PYTHON: the interpreter to use (default python3); plm_bench must be installed in it.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c "import plm_bench" 2>/dev/null; then
    echo "device_check: $python cannot import plm_bench; install this checkout first: $python -m pip install --no-deps --no-build-isolation -e ." >&2
    exit 2
fi
export PYTHONUNBUFFERED=1  # progress lines as they happen, also into a pipe or a log
exec "$python" benchmarks/device_check.py "$@"
