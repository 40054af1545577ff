#!/usr/bin/env bash
# Wheels of deepseek_wb's job-side dependencies for a GPU machine that lacks them and cannot reach PyPI (Python 3.12,
# x86-64 Linux, torch, transformers, peft, onnx and onnxruntime already there). Run here, where PyPI can be reached;
# bench/gpu_check.sh installs whatever is in .whl/ before it starts. Versions: those of this checkout's .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
BINARY=(hjson datasets dill multiprocess fastcore nltk defusedxml pydantic pydantic-core annotated-types typing-inspection
        datasketch crc32c starlette uvicorn)
BUILT=(deepspeed rouge-score)  # published as source only: built here into pure-Python wheels (DeepSpeed's ops build on first use)
pinned() { for name in "$@"; do echo "$name==$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')"; done; }
rm -rf .whl && mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d .whl $(pinned "${BINARY[@]}")
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl $(pinned "${BUILT[@]}")
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
ls -1 .whl; du -sh .whl
