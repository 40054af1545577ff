#!/usr/bin/env bash
# One prepared GPU check (bench/gpu_check.py says what it measures): one command, one table, runs/gpu-check.json.
#   bash bench/gpu_check.sh            on a GPU machine (about 8 minutes on one H200)
#   bash bench/gpu_check.sh --cpu-smoke  here, to know that it runs (CI runs this)
# Python: $PYTHON, else .venv/bin/python, else python3. Where it lacks a job-side dependency, the wheels in .whl/
# (bench/gpu_wheels.sh fetches them, for a machine with no network) are installed first, into /tmp/gpu-check-site.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
NEEDS="import deepspeed, datasets, fastcore, pydantic, starlette, uvicorn, datasketch, crc32c, rouge_score, nltk"
if ! "$PY" -c "$NEEDS" >/dev/null 2>&1 && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-check-site .whl/*.whl
    export PYTHONPATH=/tmp/gpu-check-site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
exec "$PY" bench/gpu_check.py "$@"
