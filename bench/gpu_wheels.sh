#!/usr/bin/env bash
# Wheels of deepseek_wb's job-side dependencies for a GPU machine that lacks them and cannot reach PyPI (Python 3.12,
# x86-64 Linux, torch, transformers, peft, onnx and onnxruntime already there), and their SHA256SUMS, which
# bench/gpu_check.sh checks before it installs them. Run here, where PyPI can be reached. Versions: this checkout's .venv's.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
BINARY=(hjson datasets dill multiprocess fastcore nltk defusedxml pydantic pydantic-core annotated-types typing-inspection
        datasketch crc32c starlette uvicorn)
BUILT=(deepspeed rouge-score)  # published as source only: built here into pure-Python wheels (DeepSpeed's ops build on first use)
pinned() {
    for name in "$@"; do
        version=$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
        [ -n "$version" ] || { echo "$name is not installed in $PY's environment: run 'make setup' first" >&2; exit 1; }
        echo "$name==$version"
    done
}
binary=$(pinned "${BINARY[@]}"); built=$(pinned "${BUILT[@]}")
rm -rf .whl && mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl $binary
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl $built
(cd .whl && sha256sum -- *.whl > SHA256SUMS)
exclude=$(git rev-parse --git-path info/exclude 2>/dev/null || true)
if [ -n "$exclude" ] && ! grep -qx '/.whl/' "$exclude" 2>/dev/null; then echo '/.whl/' >> "$exclude"; fi
cat .whl/SHA256SUMS; du -sh .whl
