"""Every task and mode trains end to end and leaves a model other tools can load."""
import socket

import pytest
import torch

from deepseek_wb.jobs import launch
from jobs_util import events, losses, tiny_config

CASES = {
    "bert-mlm-full-cleaned": {"model.family": "bert", "model.task": "masked_lm", "data.packing": False,
                              "data.clean": [{"rule": "html"}, {"rule": "whitespace"}, {"rule": "length", "min_tokens": 8},
                                             {"rule": "exact_dedup"}]},
    "gpt2-classification-prompt": {"model.task": "classification", "model.num_labels": 16, "data.label_column": "label",
                                   "data.packing": False, "mode": "prompt", "optimizer.lr": 0.01, "data.max_length": 40},
    "llama-causal-lora-zero3-merged": {"model.family": "llama", "mode": "lora", "merge_lora": True, "model.num_heads": 4,
                                       "zero.stage": 3},
    "gpt2-zero3-gradient-checkpointing": {"zero.stage": 3, "gradient_checkpointing": True},
}


@pytest.mark.parametrize("name", CASES)
def test_task_and_mode_train_and_save(tmp_path, name):
    cfg = tiny_config(max_steps=6, checkpoint_every=3, eval_every=3, **CASES[name])
    job = launch(cfg, run_dir=tmp_path / name)
    status = job.wait(timeout=600)
    assert status["state"] == "finished", (status, job.tail(30))
    assert sorted(losses(job.run_dir)) == list(range(1, 7))
    assert job.metrics("eval") and all(torch.isfinite(torch.tensor(r["eval_loss"])) for r in job.metrics("eval"))
    started = events(job.run_dir, "started")[0]
    if cfg.mode == "full":
        assert started["trainable_params"] == started["params"]
    else:
        assert 0 < started["trainable_params"] < 0.2 * started["params"]
    if cfg.data.clean:
        import json
        report = json.loads((job.run_dir / "data_report.json").read_text())
        assert [r["rule"]["rule"] for r in report["clean"]["rules"]] == [r["rule"] for r in cfg.data.clean]
    final = job.run_dir / "final"
    if cfg.mode == "full":
        from transformers import AutoModel
        AutoModel.from_pretrained(final)
    else:  # the adapter names a base it can be loaded with, on its own
        from peft import PeftConfig, PeftModel
        from transformers import AutoTokenizer
        from deepseek_wb.models import _auto_class
        adapter = PeftConfig.from_pretrained(final)
        assert adapter.peft_type.value == {"lora": "LORA", "prompt": "PROMPT_TUNING"}[cfg.mode]
        assert adapter.base_model_name_or_path == str((job.run_dir / "base").resolve())
        base = _auto_class(cfg.model.task).from_pretrained(adapter.base_model_name_or_path)
        tuned = PeftModel.from_pretrained(base, final).eval()
        ids = AutoTokenizer.from_pretrained(final)("Return the value.", return_tensors="pt")["input_ids"]
        logits = tuned(input_ids=ids).logits
        assert torch.isfinite(logits).all()
        if cfg.merge_lora:  # merged from the weights ZeRO-3 gathered: the same model as base + adapter
            merged = _auto_class(cfg.model.task).from_pretrained(job.run_dir / "merged").eval()
            torch.testing.assert_close(merged(input_ids=ids).logits, logits, atol=1e-5, rtol=1e-4)


def test_nan_guard_fails_the_run_with_a_clear_message(tmp_path):
    """A local model whose weights hold an Inf (a corrupt checkpoint) gives non-finite losses: skipped, counted, then failed."""
    from deepseek_wb.data import demo_corpus
    from deepseek_wb.models import build_model
    from deepseek_wb.tokens import train_tokenizer
    base = tiny_config()
    model = build_model(base)
    with torch.no_grad():
        model.transformer.h[0].ln_1.weight[0] = float("inf")
    model.save_pretrained(tmp_path / "corrupt")
    train_tokenizer(list(demo_corpus()["text"][:300]), vocab_size=base.model.vocab_size).save_pretrained(tmp_path / "corrupt")
    cfg = tiny_config(max_steps=20, checkpoint_every=10, nan_tolerance=3, **{"model.path": str(tmp_path / "corrupt")})
    job = launch(cfg, run_dir=tmp_path / "nan")
    status = job.wait(timeout=600)
    skipped = events(job.run_dir, "nan_skipped")
    assert status["state"] == "failed" and "3 non-finite losses in a row at step 1" in status["error"], status
    assert [e["in_a_row"] for e in skipped] == [1, 2, 3]
    assert not job.metrics("train")  # no step was taken on a non-finite loss


def test_port_in_use_is_reported_as_such(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); s.listen()
        job = launch(tiny_config(max_steps=4), procs=2, run_dir=tmp_path / "port", master_port=s.getsockname()[1])
        status = job.wait(timeout=300)
    assert status["state"] == "failed" and "port is in use" in status["error"], status
