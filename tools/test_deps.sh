#!/usr/bin/env bash
# Installs what some tests need beyond the Python environment, when missing:
#   ssh      openssh-server and pdsh, for the over-ssh launch in tests/test_multinode.py (it starts its own
#            sshd on loopback with a throwaway key; no system service is started or changed). Optional:
#            without them, and without root to install them, those tests skip.
#   browser  Debian's chromium and Python's playwright, for tests/test_browser.py (playwright drives
#            Debian's chromium; its own browser download is not used). Required by that test.
#   triton   Triton's model config schema (model_config_pb2.py from the tritonclient wheel, taken out of it:
#            the package itself pins an older ml-dtypes), which tests/test_serve.py parses config.pbtxt with.
# System packages come from apt-get (as root); playwright from pip into the current environment.
# Idempotent. Usage: tools/test_deps.sh [ssh] [browser] [triton]   (all when none is named; venv active, or PYTHON=...)
set -euo pipefail
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
groups="${*:-ssh browser triton}"
did=""

apt_install() {  # apt_install REQUIRED PACKAGE...: install when root with apt-get; else fail (REQUIRED=1) or warn
    local required=$1; shift
    [ $# -gt 0 ] || return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "test_deps: missing $* and this is not root with apt-get: install them" >&2
        [ "$required" = 1 ] && exit 1; return 0
    fi
    local log; log=$(mktemp)
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"; } \
        >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
    rm -f "$log"; did="${did}installed $* (apt-get); "
}

if [[ " $groups " == *" ssh "* ]]; then
    missing=()
    [ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1 || missing+=(openssh-server)
    command -v pdsh >/dev/null 2>&1 || missing+=(pdsh)
    apt_install 0 "${missing[@]}"
fi
if [[ " $groups " == *" browser "* ]]; then
    missing=()
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    apt_install 1 "${missing[@]}"
    if ! "$PYTHON" -c "import playwright.sync_api" >/dev/null 2>&1; then
        "$PYTHON" -m pip install --quiet --disable-pip-version-check "playwright>=1.40"
        did="${did}installed playwright into $("$PYTHON" -c 'import sys; print(sys.prefix)'); "
    fi
fi
if [[ " $groups " == *" triton "* ]]; then
    dest="$("$PYTHON" -c 'import sys; print(sys.prefix)')/share/deepseek_wb_tests"
    if [ ! -f "$dest/triton_model_config_pb2.py" ]; then
        tmp=$(mktemp -d)
        "$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check "tritonclient>=2.40" -d "$tmp" 2>/dev/null
        mkdir -p "$dest"
        "$PYTHON" - "$tmp" "$dest/triton_model_config_pb2.py" <<'PY'
import glob, sys, zipfile
wheel = zipfile.ZipFile(glob.glob(sys.argv[1] + "/tritonclient-*.whl")[0])
open(sys.argv[2], "wb").write(wheel.read("tritonclient/grpc/model_config_pb2.py"))
PY
        rm -rf "$tmp"; did="${did}Triton's model config schema into $dest; "
    fi
fi
echo "test_deps ($groups): ${did:-nothing to install}"
