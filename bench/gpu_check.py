"""One prepared GPU check: the environment, real training jobs in bf16 and fp16 at each ZeRO stage,
gradient checkpointing, the exported model and the server, on one GPU, in one run.

    bash bench/gpu_check.sh [--cpu-smoke] [--steps 40] [--out runs/gpu-check.json]

On a GPU (at most about 8 minutes on one H200):
1. The environment report (CUDA, NCCL, cuDNN, TensorCores, DeepSpeed): rows that are checks should pass.
2. A matrix-product peak in bf16, measured now (8192 x 8192 x 8192, ten timed after three warm-ups).
3. Real jobs (`launch`) of the shipped gpt2-100m config (124M parameters, 512 tokens, micro batch 8,
   4 accumulation steps): bf16 and fp16 (dynamic loss scaling: the scale and the skipped steps read
   back) at ZeRO 1, 2 and 3, ZeRO-3 with optimizer offload, and ZeRO-2 with gradient checkpointing
   (against the same without). Tokens/s from the job's own train lines (median after the first
   steps), MFU = tokens/s x (6 x parameters + 12 x layers x sequence x hidden) / the peak, and the
   job's peak GPU memory against the hardware plan's estimate for the same config.
4. The exported model (`export_model`: a GPT-2 with its key/value cache): ONNX Runtime on the CPU
   against torch bf16 on the GPU, and TensorRT where ONNX Runtime has its provider.
5. The server: generation throughput at 32 clients, `--max-batch 1` against the default.
Prints one table and writes the figures as JSON (`--out`).

`--cpu-smoke` runs the same code on a CPU with tiny models and fewer jobs (bf16 at ZeRO 2 and 3,
fp16 at ZeRO 1, which a CPU without fp16 refuses in the config check, and ZeRO-2 with gradient
checkpointing), so the script is known to work before a GPU is there. Its figures mean nothing.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
EXAMPLES = ROOT / "deepseek_wb" / "examples"  # shipped configs read as files: a stray gpt2-100m.yaml here changes nothing
JOBS = [  # label, precision, ZeRO stage, optimizer offload, gradient checkpointing
    ("bf16 ZeRO-1", "bf16", 1, False, False),
    ("bf16 ZeRO-2", "bf16", 2, False, False),
    ("bf16 ZeRO-3", "bf16", 3, False, False),
    ("fp16 ZeRO-1", "fp16", 1, False, False),
    ("fp16 ZeRO-2", "fp16", 2, False, False),
    ("fp16 ZeRO-3", "fp16", 3, False, False),
    ("bf16 ZeRO-3 offload", "bf16", 3, True, False),
    ("bf16 ZeRO-2 checkpointing", "bf16", 2, False, True),
]
SMOKE_JOBS = ["bf16 ZeRO-2", "bf16 ZeRO-3", "fp16 ZeRO-1", "bf16 ZeRO-2 checkpointing"]
SMOKE_MODEL = {"model.hidden_size": 64, "model.num_layers": 2, "model.num_heads": 4, "model.vocab_size": 1024,
               "model.max_position": 128, "data.max_length": 128, "micro_batch_size": 4, "gradient_accumulation_steps": 1,
               "data.limit": 400}
MFU_GOAL, PLAN_GOAL = 0.45, 0.10


def say(line: str):
    print(line, file=sys.stderr, flush=True)


NOTEBOOK_ONLY = {"ipywidgets", "plotly"}  # the notebook's libraries: a GPU machine that only trains and serves may lack them


def environment() -> dict:
    "The environment report's rows; the failed ones by name (the notebook's libraries apart)."
    from deepseek_wb.env import env_report
    report = env_report()
    rows = [asdict(r) for r in report.rows]
    return dict(ok=report.ok, rows=rows, failed=[r["name"] for r in rows if r["status"] == "fail" and r["name"] not in NOTEBOOK_ONLY],
                notebook_only_missing=[r["name"] for r in rows if r["status"] == "fail" and r["name"] in NOTEBOOK_ONLY],
                hardware=asdict(report.hardware))


def matmul_peak(gpu: bool, n: int, repeat: int = 10) -> dict:
    "FLOP/s of an n x n x n matrix product: bf16 on the GPU, float32 on a CPU; the mean of `repeat` after three warm-ups."
    import torch
    device, dtype = ("cuda", torch.bfloat16) if gpu else ("cpu", torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    for _ in range(3): a @ b
    sync()
    start = time.perf_counter()
    for _ in range(repeat): a @ b
    sync()
    return dict(dtype=str(dtype).removeprefix("torch."), n=n, flops=2 * n ** 3 * repeat / (time.perf_counter() - start))


def job_config(precision: str, stage: int, offload: bool, checkpointing: bool, steps: int, smoke: bool, tokenizer: str | None):
    "The gpt2-100m config (tiny with `smoke`) for one row of the matrix."
    from deepseek_wb.config import RunConfig
    values = {"precision": precision, "zero.stage": stage, "zero.offload_optimizer": offload, "gradient_checkpointing": checkpointing,
              "max_steps": steps, "log_every": 1, "eval_every": steps * 10, "checkpoint_every": steps * 10, "activations_every": 0,
              "schedule.warmup_steps": 2, "model.dropout": 0.0, **(SMOKE_MODEL if smoke else {})}
    if tokenizer: values["model.tokenizer_path"] = tokenizer
    return RunConfig.load(EXAMPLES / "gpt2-100m.yaml", **values)


def flops_per_token(cfg) -> float:
    "Model FLOPs per trained token: 6 x parameters, plus attention's 12 x layers x sequence x hidden (recomputation not counted)."
    shape = cfg.model.shape()
    return 6 * shape["params"] + 12 * shape["num_layers"] * cfg.data.max_length * shape["hidden_size"]


def planned_gb(cfg, gpu_gb: float) -> float:
    "The hardware plan's GPU memory for `cfg` on one GPU of `gpu_gb`, with its own stage and offload."
    from deepseek_wb.config import plan_for
    plan = plan_for(cfg, gpu_memory_gb=gpu_gb, gpus_per_node=1, num_gpus=1, zero_stage=cfg.zero.stage,
                    offload_optimizer=cfg.zero.offload_optimizer, offload_param=cfg.zero.offload_param)
    return plan["rows"][0]["gpu_total_gb"]


def run_job(label: str, spec: tuple, args, folder: Path, peak: float, gpu_gb: float, tokenizer: str | None) -> dict:
    "One real job of the matrix, and its figures from its own metrics."
    from deepseek_wb.config import ConfigError
    from deepseek_wb.jobs import launch
    _, precision, stage, offload, checkpointing = spec
    row = dict(job=label, precision=precision, zero_stage=stage, offload_optimizer=offload, gradient_checkpointing=checkpointing)
    start = time.monotonic()
    try:
        cfg = job_config(precision, stage, offload, checkpointing, args.steps, args.cpu_smoke, tokenizer)
        job = launch(cfg, run_dir=folder / label.replace(" ", "-"))  # checked against this machine first
    except ConfigError as e: return row | dict(state="not run", reason=str(e).strip().splitlines()[-1].strip())
    status = job.wait(timeout=args.job_timeout)
    row |= dict(state=status.get("state"), seconds=round(time.monotonic() - start, 1), run_dir=str(job.run_dir))
    if status.get("state") != "finished":
        job.kill()
        return row | dict(reason=str(status.get("error") or status.get("stop_reason") or status)[:300])
    train = job.metrics("train")[args.skip:] or job.metrics("train")
    if not train: return row | dict(state="no metrics", reason="the job finished without a train line")
    tokens = statistics.median(r["tokens_per_s"] for r in train)
    mem_gb = max(r.get("mem_mb") or 0 for r in train) / 1024
    plan = planned_gb(cfg, gpu_gb)
    on_gpu = not args.cpu_smoke  # on a CPU the job's memory figure is the process's resident memory: no measure of the plan
    row |= dict(params=cfg.model.shape()["params"], tokens_per_s=round(tokens), mfu=round(tokens * flops_per_token(cfg) / peak, 4),
                peak_memory_gb=round(mem_gb, 2), plan_gb=plan, memory_vs_plan=round(mem_gb / plan - 1, 3) if plan and on_gpu else None,
                final_loss=train[-1]["loss"])
    if precision == "fp16": row |= dict(loss_scale=train[-1].get("loss_scale"), skipped_steps=train[-1].get("skipped_steps"))
    return row


def exported(folder: Path, gpt: Path, runs: int) -> dict:
    "The GPT-2 exported with its cache: ONNX Runtime on the CPU (all cores) against torch bf16 on the GPU (and TensorRT where there)."
    from deepseek_wb.export import export_model, latency_table
    report = export_model(gpt, folder / "export", runs=runs)
    sequence = min(128, report["max_tokens"] or 128)  # what the export's GPU report times
    cpu = {f"batch_{r['batch']}_ms": round(r["ms"], 3) for r in latency_table(dict(onnx=Path(report["onnx"])), None, None, sequence,
                                                                             report["vocab"], threads=(0,), runs=runs)}
    gpu = report["gpu"]
    ratio = {b: round(gpu["torch_bf16"][b] / cpu[b], 3) for b in cpu} if gpu.get("torch_bf16") else None
    return dict(max_abs_diff=report["max_abs_diff"], sequence=sequence, onnx_cpu_ms=cpu, torch_bf16_gpu_ms=gpu.get("torch_bf16"),
                tensorrt_ms=gpu.get("tensorrt"), gpu_vs_cpu=ratio, device=gpu.get("device"), notes=gpu.get("notes", []))


def serving(gpt: Path, clients: int, seconds: float) -> dict:
    "Generation at `clients` closed-loop clients: `--max-batch 1` against the default, in turn, on the same model."
    from serve_bench import PROMPTS, Server, measure
    body = lambda i: dict(model="m", prompt=PROMPTS[i % len(PROMPTS)], max_tokens=32, temperature=0)
    servers = {"max-batch 1": Server(gpt, "--max-batch", "1", "--max-queue", "1024"), "default": Server(gpt, "--max-queue", "1024")}
    try: rows = measure(servers, "/v1/completions", body, [clients], seconds)
    finally:
        for s in servers.values(): s.close()
    by = {r["server"]: r for r in rows}
    return dict(clients=clients, rows=rows, ratio=round(by["default"]["rps"] / by["max-batch 1"]["rps"], 2))


def table(result: dict) -> str:
    "The figures as one plain-text table."
    out = [f"GPU check {result['date']} on {result['device']} ({'CPU smoke: figures mean nothing' if result['cpu_smoke'] else 'GPU'})",
           f"environment: {'all checks pass' if not result['environment']['failed'] else 'FAILED: ' + ', '.join(result['environment']['failed'])}",
           f"matmul peak: {result['peak']['flops'] / 1e12:.1f} TFLOP/s ({result['peak']['dtype']}, n={result['peak']['n']})", "",
           f"{'job':<26} {'state':<9} {'tokens/s':>10} {'MFU':>7} {'mem GB':>8} {'plan GB':>8} {'vs plan':>8} {'scale':>8} {'skipped':>7}"]
    for r in result["jobs"]:
        if r["state"] != "finished":
            out.append(f"{r['job']:<26} {r['state']:<9} {r.get('reason', '')}"); continue
        vs = f"{r['memory_vs_plan']:+.1%}" if r["memory_vs_plan"] is not None else "-"
        out.append(f"{r['job']:<26} {r['state']:<9} {r['tokens_per_s']:>10} {r['mfu']:>7.1%} {r['peak_memory_gb']:>8.2f} {r['plan_gb']:>8.2f} "
                   f"{vs:>8} {r.get('loss_scale') or '-':>8} {r.get('skipped_steps', '-'):>7}")
    if (gc := result.get("checkpointing")): out += ["", f"gradient checkpointing: memory {gc['memory_change']:+.1%}, step time {gc['step_time_change']:+.1%}"]
    e = result["export"]
    out += [""] + ([f"export: FAILED: {e['error']}"] if "error" in e else
                   [f"export (max |ONNX - torch| {e['max_abs_diff']:.1e}): ONNX Runtime CPU {e['onnx_cpu_ms']}, torch bf16 GPU "
                    f"{e['torch_bf16_gpu_ms']}, TensorRT {e['tensorrt_ms']}"] + [f"  {n}" for n in e["notes"]])
    s = result["serving"]
    out += [f"serving: FAILED: {s['error']}"] if "error" in s else [
        f"serving at {s['clients']} clients: " + ", ".join(f"{r['server']} {r['rps']:.1f} req/s (p99 {r['p99_ms']:.0f} ms, batch "
                                                           f"{r['mean_batch']:.1f})" for r in s["rows"]) + f": {s['ratio']}x"]
    out += ["", "goals: " + "; ".join(result["goals"])]
    return "\n".join(out)


def goals(result: dict) -> list[str]:
    "Each goal, met or not, in words."
    best = max((r for r in result["jobs"] if r["state"] == "finished" and r["precision"] == "bf16"), key=lambda r: r["mfu"], default=None)
    out = [f"MFU >= {MFU_GOAL:.0%} in bf16: " + (f"{best['mfu']:.1%} ({best['job']}): {'met' if best['mfu'] >= MFU_GOAL else 'NOT met'}"
                                                  if best else "no bf16 job finished")]
    plans = [r for r in result["jobs"] if r["state"] == "finished" and r["memory_vs_plan"] is not None]
    off = [r for r in plans if abs(r["memory_vs_plan"]) > PLAN_GOAL]
    out.append(f"plan within {PLAN_GOAL:.0%} of measured memory: " + ("met for every job" if plans and not off else
               "NOT met for " + ", ".join(f"{r['job']} ({r['memory_vs_plan']:+.1%})" for r in off) if off else
               "not measured: no job's GPU memory was read"))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-smoke", action="store_true", help="tiny models and four jobs on a CPU: check that the script runs")
    p.add_argument("--steps", type=int, default=None, help="steps per job (default 40; 6 with --cpu-smoke)")
    p.add_argument("--skip", type=int, default=None, help="first steps left out of tokens/s (default 10; 2 with --cpu-smoke)")
    p.add_argument("--job-timeout", type=float, default=300, help="seconds one job may take (default 300)")
    p.add_argument("--out", default=str(ROOT / "runs" / "gpu-check.json"))
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from deepseek_wb.core import atomic_write_json
    gpu = torch.cuda.is_available()
    if not gpu and not args.cpu_smoke: sys.exit("no GPU here (torch.cuda.is_available() is False): run with --cpu-smoke to check the script")
    args.steps = args.steps or (6 if args.cpu_smoke else 40)
    args.skip = args.skip if args.skip is not None else (2 if args.cpu_smoke else 10)
    result = dict(date=time.strftime("%Y-%m-%d %H:%M"), cpu_smoke=args.cpu_smoke, device=torch.cuda.get_device_name() if gpu else "CPU",
                  torch=torch.__version__, steps=args.steps)
    started, out = time.monotonic(), Path(args.out)
    save = lambda: atomic_write_json(out, result)  # after each stage: a run cut short keeps what it measured
    say("environment ..."); result["environment"] = environment()
    result["peak"] = matmul_peak(gpu, 8192 if gpu else 512)
    gpu_gb = torch.cuda.get_device_properties(0).total_memory / 2**30 if gpu else 24.0
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        folder, tokenizer, result["jobs"] = Path(tmp), None, []
        for spec in JOBS:
            if args.cpu_smoke and spec[0] not in SMOKE_JOBS: continue
            say(f"job {spec[0]} ...")
            try: row = run_job(spec[0], spec, args, folder, result["peak"]["flops"], gpu_gb, tokenizer)
            except Exception as e: row = dict(job=spec[0], precision=spec[1], state="error", reason=f"{type(e).__name__}: {e}"[:500])
            result["jobs"].append(row); save()
            if row["state"] == "finished" and not tokenizer: tokenizer = str(Path(row["run_dir"]) / "tokenizer")  # the rest reuse it
        done = {r["job"]: r for r in result["jobs"] if r["state"] == "finished"}
        if {"bf16 ZeRO-2", "bf16 ZeRO-2 checkpointing"} <= done.keys() and done["bf16 ZeRO-2"]["peak_memory_gb"] > 0:
            off, on = done["bf16 ZeRO-2"], done["bf16 ZeRO-2 checkpointing"]
            result["checkpointing"] = dict(memory_change=round(on["peak_memory_gb"] / off["peak_memory_gb"] - 1, 3),
                                           step_time_change=round(off["tokens_per_s"] / on["tokens_per_s"] - 1, 3))
        from serve_bench import build
        try: gpt, why = build(folder / "models", quick=args.cpu_smoke)["gpt"], None
        except Exception as e: gpt, why = None, f"building the model to export and serve: {type(e).__name__}: {e}"[:500]
        for stage, measure in (("export", lambda: exported(folder, gpt, runs=5 if args.cpu_smoke else 20)),
                               ("serving", lambda: serving(gpt, 32, 2.0 if args.cpu_smoke else 10.0))):
            say(f"{stage} ...")
            try: result[stage] = measure() if gpt else dict(error=why)
            except Exception as e: result[stage] = dict(error=f"{type(e).__name__}: {e}"[:500])  # the rest still runs
            save()
    result["goals"], result["seconds"] = goals(result), round(time.monotonic() - started, 1)
    save()
    print(table(result))
    print(f"\n{result['seconds']} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
