"""Two search workers sharing one study in a real PostgreSQL server, started on loopback for the test (Debian's postgresql)."""
import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest

from deepseek_wb.jobs import Job, free_port
from jobs_util import wait_for

BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
SMALL = ["data.limit=300", "data.max_length=64", "model.hidden_size=64", "model.max_position=64", "max_steps=12", "eval_every=3",
         "log_every=3", "checkpoint_every=100", "eval_batches=2", "activations_every=0", "eval.samples=0", "schedule.warmup_steps=0"]


@pytest.fixture(scope="module")
def postgres():
    "A PostgreSQL server of its own on a free loopback port (as the postgres user when the tests run as root: it refuses root)."
    if not BIN: pytest.skip("PostgreSQL is not installed (make setup installs Debian's postgresql)")
    bindir = Path(BIN[-1]).parent
    data = Path(tempfile.mkdtemp(prefix="tune-pg-"))
    as_user = []
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        os.chown(data, pg.pw_uid, pg.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run(as_user + [str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "tuner", "--no-sync"],
                   check=True, capture_output=True)
    subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "log"), "-w", "start", "-o",
                              f"-h 127.0.0.1 -p {port} -k {data} -c fsync=off"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://tuner@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def test_two_workers_share_one_study_in_postgresql(postgres, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("optimizer.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n")
    cmd = [sys.executable, "-m", "deepseek_wb", "tune", "tiny-cpu", *SMALL, f"output_root={tmp_path}", "--space", str(space), "--storage", postgres,
           "--study", "shared", "--trials", "4", "--pruner", "none", "--json"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # the second joins once the study exists and a trial of the first runs
        wait_for(lambda: (tmp_path / "shared" / "trial-0000" / "status.json").is_file(), timeout=300, poll=0.2, what="trial 0")
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        out, err = first.communicate(timeout=600)
    finally:
        first.kill()
    assert first.returncode == 0 and second.returncode == 0, err + second.stderr
    for summary in (json.loads(out), json.loads(second.stdout)):
        assert summary["storage"] == postgres and summary["study"] == "shared"
    study = optuna.load_study(study_name="shared", storage=postgres)
    tuners = {t.user_attrs["tuner"]["pid"] for t in study.trials}
    assert len(tuners) == 2, "both workers ran trials"
    # the total: 4, or one more when both workers finished a trial at the same moment and each started another
    assert 4 <= len(study.trials) <= 5 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["locks"] + [f"trial-{t.number:04d}" for t in study.trials]
    assert all(Job(tmp_path / "shared" / f"trial-{t.number:04d}").state == "finished" for t in study.trials)
    assert len({t.params["optimizer.lr"] for t in study.trials}) == len(study.trials)  # no trial drawn twice
