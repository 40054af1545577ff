"""The ~100M end of the model range: GPT-2, BERT and Llama of the shipped 100M shape build, train a
few steps as a real job (one CPU process, fp32 here), checkpoint and save; the hardware plan counts
the same parameters the job does."""
import math

import pytest

from deepseek_wb.config import RunConfig, plan_for
from deepseek_wb.jobs import launch
from deepseek_wb.shipped import EXAMPLES
from jobs_util import events, losses

SMALL_BATCH = {"precision": "fp32", "zero.stage": 0, "gradient_checkpointing": False, "data.limit": 300,
               "data.max_length": 128, "micro_batch_size": 2, "gradient_accumulation_steps": 1, "max_steps": 2,
               "checkpoint_every": 2, "eval_every": 1000, "log_every": 1, "activations_every": 1,
               "schedule.warmup_steps": 1}
FAMILIES = {"gpt2": {}, "bert": {"model.task": "masked_lm", "data.packing": False}, "llama": {}}


@pytest.mark.parametrize("family", FAMILIES)
def test_100m_model_trains(tmp_path, family):
    cfg = RunConfig.load(EXAMPLES/"gpt2-100m.yaml", **{**SMALL_BATCH, "model.family": family, **FAMILIES[family]})
    job = launch(cfg, run_dir=tmp_path / family)
    status = job.wait(timeout=900)
    assert status["state"] == "finished", (status, job.tail(30))
    params = events(job.run_dir, "started")[0]["params"]
    assert 80e6 < params < 130e6, params
    planned = plan_for(cfg)["params"]
    assert abs(planned - params) / params < 0.05, (planned, params)
    assert sorted(losses(job.run_dir)) == [1, 2] and all(math.isfinite(v) for v in losses(job.run_dir).values())
    acts = [r for r in job.metrics("act")]
    assert acts and len(acts[-1]["layers"]) == 12  # every block of the 12 recorded
    assert job.checkpoints() == [2]
    assert (job.run_dir / "final" / "model.safetensors").is_file()
