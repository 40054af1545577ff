#!/usr/bin/env bash
# Installs what the tests need beyond the Python environment, when missing:
#   - Debian's chromium, for tests/test_browser.py (Python's playwright drives it; its own browser
#     download is not used);
#   - openssh-server and pdsh, for the over-ssh test in tests/test_multinode.py (it starts its own
#     sshd on loopback with a throwaway key; no system service is started or changed).
# System packages come from apt-get (as root); playwright from pip into the current environment.
# Idempotent. Usage: tools/test_deps.sh  (venv active, or PYTHON=.venv/bin/python tools/test_deps.sh)
set -euo pipefail
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
did=""
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1 || missing+=(openssh-server)
command -v pdsh >/dev/null 2>&1 || missing+=(pdsh)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "test_deps: missing ${missing[*]} and this is not root with apt-get: install them" >&2; exit 1
    fi
    log=$(mktemp)
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
    rm -f "$log"; did="installed ${missing[*]} (apt-get); "
fi
if ! "$PYTHON" -c "import playwright.sync_api" >/dev/null 2>&1; then
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "playwright>=1.40"
    did="${did}installed playwright into $("$PYTHON" -c 'import sys; print(sys.prefix)'); "
fi
echo "test_deps: ${did:-nothing to install; }$(chromium --version 2>/dev/null), $(pdsh -V 2>&1 | head -1)," \
     "playwright $("$PYTHON" -c 'from importlib.metadata import version; print(version("playwright"))')"
