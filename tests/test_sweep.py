"""A papermill sweep killed mid-run: the notebook it was running dies with it (kernel included), nothing half-run counts as
finished, and the same command run again finishes the rest."""
import json
import signal
import subprocess
import sys

import psutil

from jobs_util import wait_for


def notebook(path):
    cells = [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "x = 1", "outputs": [], "execution_count": None},
             {"cell_type": "code", "metadata": {}, "source": "import time\ntime.sleep(x)\nfrom deepseek_wb.sweep import record\nrecord(slept=x)",
              "outputs": [], "execution_count": None}]
    path.write_text(json.dumps({"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "python3", "language": "python"}},
                                "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_a_killed_sweep_leaves_nothing_running_and_goes_on(tmp_path):
    nb, out = notebook(tmp_path / "nap.ipynb"), tmp_path / "out"
    cmd = [sys.executable, "-m", "deepseek_wb", "sweep", "nap.ipynb", "-p", "x", "8", "1", "2", "--out", "out", "--json"]  # relative, as typed
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=tmp_path)
    try:
        wait_for(lambda: list(out.glob(".run-*")) and len(psutil.Process(first.pid).children(recursive=True)) >= 2,
                 timeout=120, poll=0.1, what="the first notebook's kernel to start")
        runs = psutil.Process(first.pid).children(recursive=True)  # papermill and the kernel it started
        first.send_signal(signal.SIGKILL)
        first.wait()
        gone, alive = psutil.wait_procs(runs, timeout=30)
        assert not alive, f"still running after the sweep was killed: {[p.cmdline() for p in alive]}"
    finally:
        first.kill()
    assert not list(out.glob("nap-*.ipynb")), "a notebook killed halfway must not be taken for finished"

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    rows = json.loads(again.stdout)
    assert [(r["x"], r["status"], r["slept"]) for r in rows] == [(8, "finished", 8), (1, "finished", 1), (2, "finished", 2)]
    assert not list(out.glob(".run-*"))  # the killed run's private folder was cleared, and the run done again
    third = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert third.returncode == 0 and "3 of 3 combinations finished in an earlier sweep: skipped" in third.stderr
