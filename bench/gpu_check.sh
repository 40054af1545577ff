#!/usr/bin/env bash
# One prepared GPU check (bench/gpu_check.py says what it measures): one command, one table, runs/gpu-check.json.
#   bash bench/gpu_check.sh              on a GPU machine (about 8 minutes on one H200)
#   bash bench/gpu_check.sh --cpu-smoke  here, to know that it runs (CI runs this)
# Python: $PYTHON, else .venv/bin/python, else python3. Where it lacks a job-side dependency, the wheels in .whl/
# (bench/gpu_wheels.sh fetches them, with their SHA256SUMS, for a machine with no network) are checked against
# those sums and installed first, into a fresh private folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
NEEDS="import deepspeed, datasets, fastcore, pydantic, starlette, uvicorn, datasketch, crc32c, rouge_score, nltk"
site=""
if ! "$PY" -c "$NEEDS" >/dev/null 2>&1 && [ -f .whl/SHA256SUMS ]; then
    wheels=()
    while IFS= read -r line; do  # only "<sha256>  <name>.whl" lines naming a file in .whl/: nothing else reaches pip
        [[ "$line" =~ ^[0-9a-f]{64}\ \ ([A-Za-z0-9._+!-]+\.whl)$ ]] || { echo ".whl/SHA256SUMS: not a wheel's line: $line" >&2; exit 1; }
        wheels+=(".whl/${BASH_REMATCH[1]}")
    done < .whl/SHA256SUMS
    (cd .whl && sha256sum --quiet --strict -c SHA256SUMS) || { echo "the wheels in .whl/ do not match .whl/SHA256SUMS: fetch them again" >&2; exit 1; }
    site=$(mktemp -d -t gpu-check-site.XXXXXX)
    trap 'rm -rf "$site"' EXIT
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" -- "${wheels[@]}"
    export PYTHONPATH=$site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
"$PY" bench/gpu_check.py "$@"  # not exec: the private folder goes when it ends
