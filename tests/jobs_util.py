"""Helpers for the tests that run real training jobs."""
import json
import os
import signal
import time
from pathlib import Path

import psutil

from deepseek_wb.config import RunConfig
from deepseek_wb.core import read_jsonl
from deepseek_wb.jobs import leader_check
from deepseek_wb.shipped import EXAMPLES

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**values) -> RunConfig:
    "A seconds-long run: a 2-layer GPT-2 with dropout on shuffled demo data, a loss line every step."
    base = {"data.limit": 300, "data.max_length": 64, "model.hidden_size": 64, "model.max_position": 64,
            "model.dropout": 0.1, "micro_batch_size": 4, "max_steps": 12, "checkpoint_every": 4, "log_every": 1,
            "eval_every": 1000, "activations_every": 0, "schedule.warmup_steps": 2}
    return RunConfig.load(EXAMPLES/"tiny-cpu.yaml", **{**base, **values})


def losses(run_dir, after_last_resume=False) -> dict:
    "Step -> train loss (of the last attempt at each step, or only those logged after the last resume)."
    recs, _ = read_jsonl(Path(run_dir) / "metrics.jsonl")
    if after_last_resume:
        idx = max(i for i, r in enumerate(recs) if r.get("event") == "resumed")
        recs = recs[idx:]
    return {r["step"]: r["loss"] for r in recs if r.get("kind") == "train"}


def wait_for(predicate, timeout=300, poll=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise TimeoutError(f"timed out waiting for {what}")


def events(run_dir, name):
    recs, _ = read_jsonl(Path(run_dir) / "metrics.jsonl")
    return [r for r in recs if r.get("event") == name]


def kill_group(job, sig=signal.SIGKILL):
    "Send `sig` to the job's process group (a crash), once it is proven the job's own, and wait for it to end."
    pgid, problem = leader_check(job.run_dir, json.loads((Path(job.run_dir) / "status.json").read_text()))
    assert pgid, f"not the job's process group: {problem or 'nothing runs'}"
    os.killpg(pgid, sig)
    wait_for(lambda: not job.alive(), timeout=60, what="the process group to die")


def group_processes(pgid):
    out = []
    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return out
