"""DeepSeek-V3's architecture and chat fine-tuning as real DeepSpeed jobs, from the shipped examples."""
import json

import pytest
import torch

from deepseek_wb.config import RunConfig
from deepseek_wb.jobs import launch
from deepseek_wb.shipped import EXAMPLES
from jobs_util import events, losses

SHORT = {"max_steps": 6, "checkpoint_every": 3, "eval_every": 3, "log_every": 1, "schedule.warmup_steps": 2,
         "activations_every": 0}

# full and LoRA, ZeRO 0/2/3, 1 and 2 ranks: each value at least once, and ZeRO-3 on 2 ranks both ways
# (the case where a rank whose tokens skip an expert would wait forever without the MoE leaf modules)
MOE_CASES = {"full-zero0-1rank": ("full", 0, 1), "lora-zero2-2ranks": ("lora", 2, 2),
             "full-zero3-2ranks": ("full", 3, 2), "lora-zero3-2ranks": ("lora", 3, 2)}


def moe_config(mode, stage, world, **values):
    return RunConfig.load(EXAMPLES/"deepseek-v3-tiny.yaml",
                          **{**SHORT, "data.limit": 400, "data.max_length": 64, "micro_batch_size": 4, "mode": mode,
                             "zero.stage": stage, "world_size": world, **values})


@pytest.mark.parametrize("name", MOE_CASES)
def test_deepseek_v3_tiny_trains(tmp_path, name):
    mode, stage, world = MOE_CASES[name]
    job = launch(moe_config(mode, stage, world), run_dir=tmp_path / name, procs=world)
    status = job.wait(timeout=600)  # a ZeRO-3 hang would end here, as a timeout
    assert status["state"] == "finished", (status, job.tail(30))
    assert sorted(losses(job.run_dir)) == list(range(1, 7))
    started = events(job.run_dir, "started")[0]
    assert (started["trainable_params"] == started["params"]) == (mode == "full")
    final = job.run_dir / "final"
    from transformers import AutoModelForCausalLM
    if mode == "full":
        model = AutoModelForCausalLM.from_pretrained(final)
        assert model.config.model_type == "deepseek_v3" and model.config.n_routed_experts == 8
    else:
        from peft import PeftModel
        adapter = json.loads((final / "adapter_config.json").read_text())
        base = AutoModelForCausalLM.from_pretrained(adapter["base_model_name_or_path"])
        model = PeftModel.from_pretrained(base, final)
    assert torch.isfinite(model(input_ids=torch.tensor([[5, 6, 7, 8]])).logits).all()


def test_chat_sft_tiny_trains_on_the_replies(tmp_path):
    cfg = RunConfig.load(EXAMPLES/"chat-sft-tiny.yaml", **SHORT)
    job = launch(cfg, run_dir=tmp_path / "chat")
    status = job.wait(timeout=600)
    assert status["state"] == "finished", (status, job.tail(30))
    assert events(job.run_dir, "started")[0]["format"] == "messages"
    lineage = json.loads((job.run_dir / "lineage.json").read_text())
    assert lineage["format"] == "messages" and lineage["sources"][0]["source"] == "demo-chat"
    assert lineage["train_rows"] + lineage["eval_rows"] == lineage["sources"][0]["rows"]
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(job.run_dir / "final")
    assert "<|im_start|>" in tok.chat_template  # the template the run trained with travels with the model
    assert len(tok("<|im_start|>", add_special_tokens=False)["input_ids"]) == 1
    assert job.metrics("eval") and all(r["eval_loss"] == r["eval_loss"] for r in job.metrics("eval"))
