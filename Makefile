# Two doors: `make quickstart` and `make test`. Both set up .venv first (once, again when
# pyproject.toml changes). torch goes in on its own and first: a bare `torch` requirement
# can pull a multi-GB CUDA build. Override TORCH for a GPU build.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
PAPERMILL_TIMEOUT ?= 600

.PHONY: setup wordnet tcmalloc postgresql quickstart test test-sync test-docs test-notebooks test-pytest test-browser test-quickstart clean

setup: $(VENV)/.ready wordnet tcmalloc

# WordNet 3.0 for synonym augmentation, from Debian's packages when this machine has apt and root.
wordnet:
	@if [ -f /usr/share/wordnet/data.noun ] || [ -n "$$DEEPSEEK_WB_WORDNET" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base >/dev/null; \
	else echo "note: WordNet is not installed; synonym augmentation needs 'apt-get install wordnet-base'"; fi

# tcmalloc, which CPU jobs run on when it is there (10-15% faster steps than glibc's malloc; see BENCHMARKS.md).
tcmalloc:
	@if ldconfig -p 2>/dev/null | grep -q libtcmalloc; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null; \
	else echo "note: tcmalloc is not installed; CPU jobs run 10-15% faster with it ('apt-get install libtcmalloc-minimal4')"; fi

# PostgreSQL (the tests only), for the test of search workers sharing a study in a database (the test starts its own server on loopback).
postgresql:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "note: PostgreSQL is not installed; its search test is skipped ('apt-get install postgresql')"; fi

$(VENV)/.ready: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

quickstart: setup
	mkdir -p runs
	$(BIN)/papermill nbs/tutorials/quickstart.ipynb runs/quickstart.ipynb -k python3 \
	    --cwd nbs/tutorials --execution-timeout $(PAPERMILL_TIMEOUT)
	@echo "executed notebook: runs/quickstart.ipynb"

test: setup postgresql test-sync test-docs test-notebooks test-pytest test-browser test-quickstart

# The notebooks are the source: exporting and cleaning them must change nothing that is committed.
test-sync: setup
	PATH=$(BIN):$$PATH nbdev-export
	PATH=$(BIN):$$PATH nbdev-clean
	$(BIN)/python tools/readme.py --check
	$(BIN)/python tools/check_imports.py
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	    changed=$$(git status --porcelain -- nbs deepseek_wb README.md); \
	    if [ -n "$$changed" ]; then echo "notebooks, package or README out of step:"; echo "$$changed"; \
	        git --no-pager diff --stat; exit 1; fi; fi

# The docs site's pre-processing into _proc/ (what Quarto renders from). Called through the API:
# the nbdev-proc-nbs command first tries to install Quarto with sudo.
test-docs: setup
	$(BIN)/python -c "from nbdev.serve import proc_nbs; proc_nbs(force=True)"

# The tutorials are left to test-quickstart, which runs them once with small parameters as papermill batch runs.
test-notebooks: setup
	PATH=$(BIN):$$PATH HF_HUB_OFFLINE=1 nbdev-test --n-workers 2 --skip-folder-re '^([_.]|tutorials$$)'

test-pytest: setup
	PYTHON=$(BIN)/python tools/test_deps.sh ssh triton
	PATH=$(BIN):$$PATH HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not browser"

# The quickstart in JupyterLab, driven by headless Chromium; screenshots land in runs/browser-artifacts/.
test-browser: setup
	PYTHON=$(BIN)/python tools/test_deps.sh browser
	PATH=$(BIN):$$PATH HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests/test_browser.py -m browser

# The tutorials as batch runs: papermill with small parameters, as a scheduled notebook would run them.
test-quickstart: setup
	mkdir -p runs
	PATH=$(BIN):$$PATH HF_HUB_OFFLINE=1 $(BIN)/papermill nbs/tutorials/quickstart.ipynb runs/quickstart-ci.ipynb \
	    -k python3 --cwd nbs/tutorials --execution-timeout $(PAPERMILL_TIMEOUT) -p max_steps 20 -p warmup_steps 2 -p gpu_memory_gb 24 -p data_limit 600
	PATH=$(BIN):$$PATH HF_HUB_OFFLINE=1 $(BIN)/papermill nbs/tutorials/chat.ipynb runs/chat-ci.ipynb \
	    -k python3 --cwd nbs/tutorials --execution-timeout $(PAPERMILL_TIMEOUT) -p max_steps 20 -p warmup_steps 2 -p data_limit 300
	PATH=$(BIN):$$PATH HF_HUB_OFFLINE=1 $(BIN)/papermill nbs/tutorials/serving.ipynb runs/serving-ci.ipynb \
	    -k python3 --cwd nbs/tutorials --execution-timeout $(PAPERMILL_TIMEOUT) -p max_steps 10 -p warmup_steps 2 -p load_seconds 3

clean:
	rm -rf $(VENV) runs _docs _proc
