#!/usr/bin/env bash
# The GPU benchmark suite in one call (benchmarks/README.md, "GPU suite"; the steps: benchmarks/gpu_suite.py).
#
#   bash benchmarks/gpu_suite.sh [--out DIR] [--wheels DIR] [--steps a,b] [--budget STEP=SECONDS]
#   bash benchmarks/gpu_suite.sh --dry-run [--out DIR]       # every step at toy sizes on the CPU
#
# The interpreter is $PYTHON, else the repository's .venv where there is one, else python3. The repository root
# goes on PYTHONPATH, so the package need not be installed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$repo/.venv/bin/python" ]]; then PYTHON="$repo/.venv/bin/python"; else PYTHON="python3"; fi
fi
export PYTHONPATH="$repo:$here${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
cd "$repo"
exec "$PYTHON" "$here/gpu_suite.py" "$@"
