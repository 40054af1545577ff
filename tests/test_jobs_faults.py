"""Reliability of training jobs: these tests launch real DeepSpeed jobs and really kill them."""
import json
import subprocess
import sys
import time
import warnings

import pytest

from deepseek_wb.checkpoints import complete_checkpoints, latest_checkpoint
from deepseek_wb.jobs import launch
from jobs_util import events, group_processes, kill_group, losses, tiny_config, wait_for

STAGES = [0, 2, 3]


@pytest.mark.parametrize("stage", STAGES)
def test_exact_resume_after_sigkill(tmp_path, stage):
    """2 ranks, dropout, shuffled data: a run killed after a checkpoint and relaunched logs the same losses."""
    cfg = tiny_config(**{"zero.stage": stage})
    straight = launch(cfg, procs=2, run_dir=tmp_path / "straight")
    assert straight.wait(timeout=600)["state"] == "finished", straight.status()
    reference = losses(straight.run_dir)
    assert sorted(reference) == list(range(1, 13))

    def crashed_then_resumed(name, env=None):
        job = launch(cfg, procs=2, run_dir=tmp_path / name)
        wait_for(lambda: any(e["step"] == 4 for e in events(job.run_dir, "checkpoint_saved")), what="the step-4 checkpoint")
        kill_group(job)  # a crash: no chance to save anything more
        assert job.status()["state"] == "failed"
        again = launch(cfg, procs=2, run_dir=tmp_path / name, env=env)
        assert again.wait(timeout=600)["state"] == "finished", again.status()
        resumed_at = events(again.run_dir, "resumed")[-1]["step"]
        return resumed_at, losses(again.run_dir, after_last_resume=True)

    resumed_at, after = crashed_then_resumed("resumed")
    assert resumed_at >= 4 and sorted(after) == list(range(resumed_at + 1, 13))
    assert after == {s: reference[s] for s in after}  # exactly equal, not close

    # the control: without restoring the RNG states the same resume differs, so the test can fail. The RNG
    # states are saved and restored per rank whatever the ZeRO stage: one stage's control shows it for all.
    if stage == STAGES[0]:
        _, control = crashed_then_resumed("control", env={"DEEPSEEK_WB_RESTORE_RNG": "0"})
        assert any(control[s] != reference[s] for s in control)


def test_sigkill_during_checkpoint_saves(tmp_path):
    """Killed at many moments of a run that saves every step, a relaunch always takes the newest whole checkpoint."""
    cfg = tiny_config(max_steps=30, checkpoint_every=1, keep_last=3)
    run_dir, ckpts = tmp_path / "run", tmp_path / "run" / "checkpoints"
    job, kills = launch(cfg, procs=2, run_dir=run_dir), 0
    for delay in (0.0, 0.05, 0.1, 0.15, 0.2, 0.3):
        start = len(events(run_dir, "checkpoint_saved"))
        wait_for(lambda: len(events(run_dir, "checkpoint_saved")) > start or not job.alive(), what="a new checkpoint")
        if not job.alive():
            break
        time.sleep(delay)
        kill_group(job)
        kills += 1
        whole = complete_checkpoints(ckpts)
        assert whole, "no whole checkpoint after a save was reported"
        for _, path in whole:  # every checkpoint that claims to be whole has every rank's files
            assert (path / "rng_rank0.pt").is_file() and (path / "rng_rank1.pt").is_file()
        newest = whole[-1][0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert latest_checkpoint(ckpts)[0] == newest
        before = len(events(run_dir, "resumed"))
        job = launch(cfg, procs=2, run_dir=run_dir)
        wait_for(lambda: len(events(run_dir, "resumed")) > before, what="the resume")
        assert events(run_dir, "resumed")[-1]["step"] == newest
    assert kills >= 4
    assert job.wait(timeout=600)["state"] == "finished", job.status()
    assert sorted(losses(run_dir)) == list(range(1, 31))


def test_sigterm_saves_and_exits_then_continues(tmp_path):
    cfg = tiny_config(max_steps=1000, checkpoint_every=500)
    job = launch(cfg, procs=2, run_dir=tmp_path / "run")
    wait_for(lambda: len(losses(job.run_dir)) >= 3, what="three steps")
    pgid = job.status()["pgid"]
    t = time.monotonic()
    status = job.stop(grace=30)
    assert time.monotonic() - t < 30 and status["state"] == "stopped", status
    assert not group_processes(pgid)
    stopped_at = status["step"]
    assert job.checkpoints()[-1] == stopped_at
    again = launch(cfg, procs=2, run_dir=tmp_path / "run", max_steps=stopped_at + 2)
    assert again.wait(timeout=600)["state"] == "finished"
    assert events(again.run_dir, "resumed")[-1]["step"] == stopped_at
    assert sorted(losses(again.run_dir, after_last_resume=True)) == [stopped_at + 1, stopped_at + 2]


def test_one_rank_killed_fails_the_job_and_leaves_nothing(tmp_path):
    job = launch(tiny_config(max_steps=1000, checkpoint_every=500), procs=2, run_dir=tmp_path / "run")
    wait_for(lambda: len(losses(job.run_dir)) >= 2, what="two steps")
    pgid = job.status()["pgid"]
    rank1 = [p for p in group_processes(pgid) if "--local_rank=1" in " ".join(p.cmdline())]
    assert len(rank1) == 1
    rank1[0].kill()
    t = time.monotonic()
    wait_for(lambda: job.status()["state"] == "failed", timeout=60, what="the job to be reported failed")
    wait_for(lambda: not group_processes(pgid), timeout=60 - (time.monotonic() - t), what="every process to exit")
    assert time.monotonic() - t < 60
    assert job.status()["error"]


def test_a_new_process_attaches_and_sees_everything(tmp_path):
    """The launching process goes away (a kernel restart); a fresh one attaches and follows the job to its end."""
    cfg_path = tmp_path / "cfg.yaml"
    tiny_config(max_steps=8).save(cfg_path)
    code = (f"from deepseek_wb.jobs import launch; j = launch({str(cfg_path)!r}, procs=2, run_dir={str(tmp_path / 'run')!r}); "
            "print(j.run_dir)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)  # launches, then exits at once
    follow = ("import json; from deepseek_wb.jobs import Job; j = Job.attach(" + repr(str(tmp_path / "run")) + "); "
              "s = j.wait(timeout=600); print(json.dumps(dict(state=s['state'], steps=[r['step'] for r in j.metrics('train')])))")
    out = subprocess.run([sys.executable, "-c", follow], capture_output=True, text=True, timeout=700, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"state": "finished", "steps": list(range(1, 9))}
