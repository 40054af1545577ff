"""fp16 with dynamic loss scaling, end to end in a real job, on a CPU without fp16 hardware.

DeepSpeed refuses fp16 on a CPU whose oneDNN has no fp16 kernels (this machine's). The job's ranks
here import a `sitecustomize` that lifts only that device check, so DeepSpeed's real fp16 optimizers
(ZeRO 1 and 2; at stage 0 DeepSpeed leaves the loss unscaled, which the config check refuses) and dynamic loss scaler run (torch computes fp16 on the CPU in software, slowly). The initial scale
is set far too high, so the first steps overflow: the scale must come down, the overflowing steps
must be skipped and counted, the LR schedule must follow the steps taken, and training must finish
with finite losses. GPUs run the same code without the lift; this is no measure of fp16 speed."""
import dataclasses
import math

import pytest

from deepseek_wb import env as env_module
from deepseek_wb.diagnose import diagnose
from deepseek_wb.jobs import launch
from jobs_util import tiny_config

LIFT = '''
import deepspeed.accelerator.cpu_accelerator as cpu
cpu.CPU_Accelerator.is_fp16_supported = lambda self: True
cpu.CPU_Accelerator.supported_dtypes = lambda self: [__import__("torch").float, __import__("torch").bfloat16, __import__("torch").float16]
'''


@pytest.mark.parametrize("stage", [1, 2])
def test_fp16_dynamic_loss_scaling(tmp_path, monkeypatch, stage):
    hw = env_module.local_hardware()
    if hw.gpus: pytest.skip("a GPU machine runs fp16 for real")
    monkeypatch.setattr(env_module, "_LOCAL", [dataclasses.replace(hw, fp16=True)])  # past our own hardware check
    lift = tmp_path / "lift"
    lift.mkdir()
    (lift / "sitecustomize.py").write_text(LIFT)
    cfg = tiny_config(precision="fp16", max_steps=30, log_every=1, checkpoint_every=1000, gradient_clipping=1.0,
                      **{"zero.stage": stage, "fp16.initial_scale_power": 32, "fp16.loss_scale_window": 1000,
                         "fp16.hysteresis": 1, "schedule.warmup_steps": 5})
    job = launch(cfg, run_dir=tmp_path / "run", env={"PYTHONPATH": str(lift)})
    assert job.wait(timeout=600)["state"] == "finished", job.status()
    train = job.metrics("train")
    scales = [r["loss_scale"] for r in train]
    assert all(s is not None for s in scales), scales  # read from the right optimizer attribute at this stage
    assert scales[-1] < 2 ** 32 and scales == sorted(scales, reverse=True), scales  # came down, never back up (window 1000)
    skipped = train[-1]["skipped_steps"]
    assert 0 < skipped < 30 and scales[-1] == 2 ** 32 / 2 ** skipped  # each overflow halved it once (hysteresis 1)
    assert all(math.isfinite(r["loss"]) for r in train)
    assert not [f for f in diagnose(job.run_dir) if f.kind in ("lr_not_smooth", "loss_scale_collapse")], diagnose(job.run_dir)
