#!/usr/bin/env bash
# Installs what tests/test_browser.py needs, when missing: Debian's chromium (apt-get, as root) and
# Python's playwright (pip, into the current environment; its own browser download is not used).
# Idempotent. Usage: tools/browser_deps.sh  (venv active, or PYTHON=.venv/bin/python tools/browser_deps.sh)
set -euo pipefail
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
did=""
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "browser_deps: chromium is missing and this is not root with apt-get: install Debian's chromium" >&2; exit 1
    fi
    log=$(mktemp)
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
        >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
    rm -f "$log"; did="installed chromium (apt-get); "
fi
if ! "$PYTHON" -c "import playwright.sync_api" >/dev/null 2>&1; then
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "playwright>=1.40"
    did="${did}installed playwright into $("$PYTHON" -c 'import sys; print(sys.prefix)'); "
fi
echo "browser_deps: ${did:-nothing to install; }$(chromium --version 2>/dev/null), playwright $("$PYTHON" -c 'from importlib.metadata import version; print(version("playwright"))')"
