"""A search whose tuner is killed mid-trial, run again: the trial it left is failed and its job stopped, no trial runs twice,
and the study ends with the total asked for."""
import json
import subprocess
import sys

import optuna

from deepseek_wb.jobs import Job
from jobs_util import wait_for

# Trials of about ten seconds: the killed tuner's trial is still training when the search is run again (it is killed after a first step).
SMALL = ["data.limit=300", "data.max_length=64", "model.hidden_size=64", "model.max_position=64", "max_steps=400", "eval_every=100",
         "log_every=5", "checkpoint_every=1000", "eval_batches=2", "activations_every=0", "eval.samples=0", "schedule.warmup_steps=0"]


def test_a_killed_search_resumes_without_repeating_a_trial(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("optimizer.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n")
    cmd = [sys.executable, "-m", "deepseek_wb", "tune", "tiny-cpu", *SMALL, f"output_root={tmp_path}", "--space", str(space),
           "--trials", "3", "--pruner", "none", "--json"]
    root = tmp_path / "tiny-cpu-tune"
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for(lambda: (root / "trial-0001" / "status.json").is_file() and Job(root / "trial-0001").metrics("train"),
                 timeout=300, poll=0.2, what="trial 1's job to train")
    finally:
        first.kill()  # the tuner alone: its trial's job is a process group of its own, and lives on
        first.communicate()
    orphan = Job(root / "trial-0001")
    assert orphan.alive(), "the job of the killed tuner's trial should outlive it"

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "trials 1 were left running by a search that ended" in again.stderr
    summary = json.loads(again.stdout)
    assert (summary["trials"], summary["complete"], summary["failed"], summary["running"]) == (3, 2, 1, 0)
    assert summary["best"]["trial"] in (0, 2)
    assert not orphan.alive() and orphan.state == "stopped"  # stopped through its own stop request, with a checkpoint
    study = optuna.load_study(study_name="tiny-cpu-tune", storage=f"sqlite:///{root / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert sorted(p.name for p in root.iterdir()) == ["locks", "study.db", "trial-0000", "trial-0001", "trial-0002"]
    assert study.trials[0].params != study.trials[2].params  # the resumed sampler drew anew
    for t in (0, 2):
        assert Job(root / f"trial-{t:04d}").state == "finished"
    side = subprocess.run([sys.executable, "-m", "deepseek_wb", "compare", str(root / "trial-0000"), str(root / "trial-0001"),
                           str(root / "trial-0002"), "--json"], capture_output=True, text=True, timeout=120)
    assert side.returncode == 0, side.stderr
    compared = json.loads(side.stdout)
    assert list(compared["settings"]) == ["trial-0000", "trial-0001", "trial-0002"]
    assert set(compared["settings"]["trial-0000"]) == {"optimizer.lr"}  # the one setting the trials do not share
    results = compared["results"]
    assert [results[t]["state"] for t in results] == ["finished", "stopped", "finished"]
    assert results["trial-0000"]["steps"] == 400 and results["trial-0001"]["steps"] < 400
    assert study.trials[0].value <= results["trial-0000"]["eval_loss"]  # the trial's value is its best evaluation; this, its last
