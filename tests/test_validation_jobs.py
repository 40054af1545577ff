"""The job's evaluations as real jobs: the task's metrics over every rank's rows, the best checkpoint, early stopping,
and regression (one output, MSE loss)."""
import json

import pytest
from transformers import AutoConfig

from deepseek_wb.checkpoints import complete_checkpoints, read_best
from deepseek_wb.data import demo_corpus
from deepseek_wb.jobs import launch
from deepseek_wb.scores import is_better
from jobs_util import events, tiny_config

CLASSIFIER = {"model.task": "classification", "model.num_labels": 16, "data.label_column": "label", "data.packing": False,
              "data.max_length": 40}


def evals(job) -> dict:
    return {r["step"]: r for r in job.metrics("eval")}


def kept_best(lines: dict, metric: str, steps) -> int:
    "The step the best checkpoint should be at: the first of the checkpoint steps whose metric no later one beats."
    best = None
    for s in steps:
        if best is None or is_better(metric, lines[s].get(metric), lines[best].get(metric)): best = s
    return best


def test_two_ranks_best_checkpoint_and_early_stopping(tmp_path):
    "A classifier on two ranks: F1 from both ranks' predictions picks the best checkpoint; no gain of 0.5 stops it early."
    cfg = tiny_config(world_size=2, max_steps=40, eval_every=4, checkpoint_every=4, keep_last=1,
                      **{**CLASSIFIER, "eval.metric": "f1_macro", "eval.patience": 2, "eval.min_delta": 0.5})
    job = launch(cfg, procs=2, run_dir=tmp_path/"clf")
    status = job.wait(timeout=900)
    assert status["state"] == "finished", (status, job.tail(30))
    lines = evals(job)
    assert sorted(lines) == [4, 8, 12], lines  # two evaluations without a gain of 0.5 after the first: stopped at 12
    assert {"eval_loss", "accuracy", "f1_macro", "precision_macro", "log_loss"} <= set(lines[12]), lines[12]
    assert "f1_macro did not improve by more than 0.5 for 2 evaluations" in status["stop_reason"]
    stopped = events(job.run_dir, "early_stopped")
    assert [(e["step"], e["best_step"]) for e in stopped] == [(12, 4)]
    best = read_best(job.run_dir/"checkpoints")
    assert best["step"] == kept_best(lines, "f1_macro", [4, 8, 12]) and best["metric"] == "f1_macro"
    assert best["value"] == lines[best["step"]]["f1_macro"]
    kept = [n for n, _ in complete_checkpoints(job.run_dir/"checkpoints")]
    assert kept == sorted({best["step"], 12}), kept  # keep_last 1, and the best beside it
    assert (best["path"]/"model"/"model.safetensors").is_file() and (job.run_dir/"final"/"model.safetensors").is_file()


def test_regression_trains_and_logs_its_metrics(tmp_path):
    "A regressor of a number read from the text (its length): MSE loss, and the eval lines carry MSE, MAE, R2 and correlations."
    data = tmp_path/"lengths.jsonl"
    rows = demo_corpus().select(range(300))
    data.write_text("".join(json.dumps(dict(text=t, chars=len(t) / 1000)) + "\n" for t in rows["text"]))
    cfg = tiny_config(max_steps=8, eval_every=4, checkpoint_every=4, **{"model.task": "regression", "data.source": str(data),
                      "data.label_column": "chars", "data.packing": False, "data.max_length": 40, "eval.metric": "r2"})
    job = launch(cfg, run_dir=tmp_path/"reg")
    status = job.wait(timeout=600)
    assert status["state"] == "finished", (status, job.tail(30))
    lines = evals(job)
    assert {"eval_loss", "mse", "mae", "r2", "pearson", "spearman"} <= set(lines[8]), lines[8]
    assert lines[8]["eval_loss"] == pytest.approx(lines[8]["mse"], rel=1e-5)  # the loss is the mean squared error
    assert all(r.get("accuracy") is None for r in job.metrics("train"))  # a regressor has no accuracy
    saved = AutoConfig.from_pretrained(job.run_dir/"final")
    assert (saved.num_labels, saved.problem_type) == (1, "regression")
    assert read_best(job.run_dir/"checkpoints")["metric"] == "r2"
