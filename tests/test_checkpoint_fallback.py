"""A resume never trusts a checkpoint blindly: real two-rank jobs whose newest checkpoint is damaged or forged.

One run saves checkpoints at steps 4, 8 and 12. Each case copies it, damages steps 12 and 8 (two
ways at once, so that one relaunch checks two) and relaunches the copy: the resume must reject both
with their reasons, take step 4, and train steps 5-12 to exactly the losses of the undamaged run. A pickle payload never runs; a run directory others could
have written is refused before anything in it is loaded.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from deepseek_wb.checkpoints import MARKER, UntrustedRunDirError
from deepseek_wb.jobs import launch
from jobs_util import events, losses, tiny_config

CFG = dict(max_steps=12, checkpoint_every=4, keep_last=5, **{"zero.stage": 2})


class Payload:
    "What a forged checkpoint holds: unpickling it runs a command."
    def __init__(self, witness):
        self.witness = str(witness)

    def __reduce__(self):
        return (os.system, (f"touch {self.witness}",))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    "The undamaged run: its directory and its losses."
    job = launch(tiny_config(**CFG), procs=2, run_dir=tmp_path_factory.mktemp("ref") / "run")
    assert job.wait(timeout=600)["state"] == "finished", job.tail(30)
    assert [e["step"] for e in events(job.run_dir, "checkpoint_saved")] == [4, 8, 12]
    return job.run_dir, losses(job.run_dir)


def copy_run(reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference[0], run, symlinks=True)
    return run


def resize_in_marker(ckpt, name):
    "Forge the marker too, as an attacker would, so that only the loader stands in the way."
    marker = json.loads((ckpt / MARKER).read_text())
    marker["files"][name] = (ckpt / name).stat().st_size
    (ckpt / MARKER).write_text(json.dumps(marker))


def delete_shard(ckpt, witness):
    (ckpt / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    return "zero_pp_rank_1_mp_rank_00_optim_states.pt is missing"


def truncate_model_states(ckpt, witness):
    f = ckpt / "mp_rank_00_model_states.pt"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return "was truncated or changed"


def garble_marker(ckpt, witness):
    (ckpt / MARKER).write_bytes(b"\x00\xffgarbage")
    return "cannot be read"


def payload_in_model_states(ckpt, witness):
    torch.save({"module": {}, "extra": Payload(witness)}, ckpt / "mp_rank_00_model_states.pt")
    resize_in_marker(ckpt, "mp_rank_00_model_states.pt")
    return "posix.system, which is not plain data"


def payload_in_rank1_rng(ckpt, witness):
    torch.save({"python": Payload(witness)}, ckpt / "rng_rank1.pt")
    resize_in_marker(ckpt, "rng_rank1.pt")
    return "rng_rank1.pt asks to build posix.system"


def zeros_of_the_same_size(ckpt, witness):
    f = ckpt / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    f.write_bytes(bytes(f.stat().st_size))
    return "cannot be read as a torch checkpoint"


PAIRS = [(payload_in_rank1_rng, delete_shard), (truncate_model_states, payload_in_model_states),
         (garble_marker, zeros_of_the_same_size)]


@pytest.mark.parametrize("newest,next_newest", PAIRS, ids=lambda f: f.__name__)
def test_damaged_checkpoints_fall_back_to_the_newest_whole_one(reference, tmp_path, newest, next_newest):
    """Steps 12 and 8 damaged two ways: both rejected with their reasons, step 4 taken, the run ends as if never hurt."""
    run, witness = copy_run(reference, tmp_path), tmp_path / "payload-ran"
    expected = {12: newest(run / "checkpoints" / "step_12", witness), 8: next_newest(run / "checkpoints" / "step_8", witness)}
    job = launch(tiny_config(**CFG), procs=2, run_dir=run)
    assert job.wait(timeout=600)["state"] == "finished", job.tail(30)
    rejected = events(run, "checkpoint_rejected")
    assert [r["step"] for r in rejected] == [12, 8], rejected
    assert all(expected[r["step"]] in r["reason"] for r in rejected), rejected
    resumed = events(run, "resumed")[-1]
    assert resumed["step"] == 4 and resumed["rejected"] == ["step_12", "step_8"], resumed
    after = losses(run, after_last_resume=True)
    assert sorted(after) == list(range(5, 13)) and after == {s: reference[1][s] for s in after}  # exactly, not close
    kept = sorted(p.name.split("-")[0] for p in (run / "checkpoints" / "rejected").iterdir())
    assert kept == ["step_12", "step_8"]  # set aside for a look, never deleted
    assert (run / "checkpoints" / "step_12" / MARKER).is_file()  # saved anew by the resumed run
    assert not witness.exists()


def test_when_no_checkpoint_loads_the_run_fails_and_says_so(reference, tmp_path):
    run = copy_run(reference, tmp_path)
    for step in (4, 8, 12):
        (run / "checkpoints" / f"step_{step}" / "mp_rank_00_model_states.pt").unlink()
    job = launch(tiny_config(**CFG), procs=2, run_dir=run)
    status = job.wait(timeout=600)
    assert status["state"] == "failed" and "none of the 3 checkpoints" in status["error"], status
    assert [e["step"] for e in events(run, "checkpoint_rejected")] == [12, 8, 4]


@pytest.mark.parametrize("where", ["run", "checkpoints", "shard", "link"])
def test_a_run_directory_others_could_write_is_refused_before_anything_runs(reference, tmp_path, where):
    """Refused by launch before a process starts, and by the job itself when started by hand; the payload never runs."""
    run, witness, victim = copy_run(reference, tmp_path), tmp_path / "payload-ran", tmp_path / "victim"
    payload_in_model_states(run / "checkpoints" / "step_12", witness)
    victim.mkdir(); (victim / "keep.txt").write_text("mine")
    target = {"run": run, "checkpoints": run / "checkpoints", "link": run / "final",
              "shard": run / "checkpoints" / "step_8" / "mp_rank_00_model_states.pt"}[where]
    if where == "link":
        shutil.rmtree(target); target.symlink_to(victim)  # the job would write the final model through it
        expected = f"{target} is a symbolic link"
    else:
        target.chmod(target.stat().st_mode | 0o022)
        expected = f"{target} is writable by its group and others"
    before = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(UntrustedRunDirError, match="someone else may have written it") as refused:
        launch(tiny_config(**CFG), procs=2, run_dir=run)
    assert expected in str(refused.value)
    job = subprocess.run([sys.executable, "-m", "deepseek_wb.train", str(run / "config.json"), "--run-dir", str(run)],
                         capture_output=True, text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert job.returncode == 2 and "UntrustedRunDirError" in job.stderr and expected in job.stderr, job.stderr[-2000:]
    assert sorted(p.name for p in run.rglob("*")) == before and (victim / "keep.txt").read_text() == "mine"
    assert list(victim.iterdir()) == [victim / "keep.txt"] and not witness.exists()
