"""bench/gpu_check.sh in its CPU mode: the prepared GPU check runs end to end before a GPU is there.

Real jobs, a real export and two real servers, tiny: the figures mean nothing, the shape of the
result and every path through the script (a job that runs, a job the config check refuses, the
checkpointing pair, the export, the serving pair) are what is checked."""
import json
import os
import subprocess
import sys
from pathlib import Path

from deepseek_wb.env import local_hardware

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_in_its_cpu_mode(tmp_path):
    out = tmp_path / "gpu-check.json"
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu-smoke", "--out", str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["cpu_smoke"] and r["device"] == "CPU" and r["peak"]["flops"] > 0
    assert {row["name"] for row in r["environment"]["rows"]} >= {"Python", "torch", "DeepSpeed"}
    jobs = {j["job"]: j for j in r["jobs"]}
    assert list(jobs) == ["bf16 ZeRO-2", "bf16 ZeRO-3", "fp16 ZeRO-1", "bf16 ZeRO-2 checkpointing"]
    for name in ("bf16 ZeRO-2", "bf16 ZeRO-3", "bf16 ZeRO-2 checkpointing"):
        j = jobs[name]
        assert j["state"] == "finished", j
        assert j["tokens_per_s"] > 0 and 0 < j["mfu"] and j["plan_gb"] > 0 and j["memory_vs_plan"] is None  # no GPU memory here
    fp16 = jobs["fp16 ZeRO-1"]
    if local_hardware().fp16:  # a CPU with AVX512-FP16 (Sapphire Rapids and later) trains in fp16: the scale is read back
        assert fp16["state"] == "finished" and fp16["loss_scale"] > 0 and fp16["skipped_steps"] >= 0, fp16
    else:  # the config check refuses fp16 where the hardware has none, and the script says why
        assert fp16["state"] == "not run" and "fp16" in fp16["reason"], fp16
    assert set(r["checkpointing"]) == {"memory_change", "step_time_change"}
    e = r["export"]
    assert e["max_abs_diff"] <= 1e-4 and set(e["onnx_cpu_ms"]) == {"batch_1_ms", "batch_8_ms"}
    assert e["torch_bf16_gpu_ms"] is None and any("no CUDA device" in n for n in e["notes"])
    s = r["serving"]
    assert s["clients"] == 32 and [row["server"] for row in s["rows"]] == ["max-batch 1", "default"]
    assert all(row["requests"] > 0 and row["errors"] == 0 for row in s["rows"]) and s["ratio"] > 0
    assert "MFU >= 45% in bf16" in r["goals"][0] and "not measured" in r["goals"][1]
    assert "GPU check" in done.stdout and "goals:" in done.stdout  # the table
