"""Training benchmarks, side by side in one run on this machine (read the ratios).

    python bench/train_bench.py [--steps 60] [--skip 10]

1. Steps/s of a deepseek_wb job vs a bare DeepSpeed loop (same model, batch, steps, DeepSpeed
   config) vs Hugging Face Trainer with the same DeepSpeed config; a ~10M-parameter GPT-2 on the
   CPU, one process. The job runs on tcmalloc when the machine has it (as every CPU job does); the
   loop and the Trainer run as plain Python would, and once more with tcmalloc preloaded, to show
   what the allocator is worth on its own. Tokens/s and model FLOPs utilisation against a matmul
   peak measured here, now.
2. Gradient checkpointing on vs off: peak memory and step time (fresh process each).
3. Two ranks vs one rank (deepseek_wb jobs).
4. Launch to first metric line: cold (DeepSpeed's communication op built from scratch in an empty
   extensions folder) and warm.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "deepseek_wb" / "examples"  # the shipped configs, read as files: a stray tiny-cpu.yaml here changes nothing
MODEL = {"model.hidden_size": 320, "model.num_layers": 6, "model.num_heads": 5, "model.vocab_size": 8192,
         "model.max_position": 128, "data.max_length": 128, "micro_batch_size": 8, "model.dropout": 0.0}


def config(steps, **extra):
    from deepseek_wb.config import RunConfig
    return RunConfig.load(EXAMPLES / "tiny-cpu.yaml", **{**MODEL, "max_steps": steps, "checkpoint_every": steps * 10,
                                                         "log_every": 1, "eval_every": steps * 10, "activations_every": 0,
                                                         "schedule.warmup_steps": 2, **extra})


def step_times_from_job(run_dir):
    from deepseek_wb.core import read_jsonl
    recs, _ = read_jsonl(Path(run_dir) / "metrics.jsonl")
    return [r["time"] for r in recs if r["kind"] == "train"]


def rate(times, skip):
    "Steps per second between step `skip` and the last step."
    t = times[skip - 1:]
    return (len(t) - 1) / (t[-1] - t[0])


BARE = r'''
import json, sys, time, torch, deepspeed
from deepseek_wb.config import RunConfig
from deepseek_wb.models import build_model
from deepseek_wb.distributed import default_dist_env
cfg = RunConfig.model_validate_json(sys.argv[1]); default_dist_env()
torch.manual_seed(0)
model = build_model(cfg)
engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=cfg.to_deepspeed())
data = torch.randint(5, cfg.model.vocab_size, (cfg.max_steps, cfg.micro_batch_size, cfg.data.max_length))
times = []
for i in range(cfg.max_steps):
    out = engine(input_ids=data[i], labels=data[i])
    engine.backward(out.loss); engine.step(); out.loss.item()
    times.append(time.time())
print(json.dumps(times))
'''

TRAINER = r'''
import json, sys, time, torch, os
from deepseek_wb.config import RunConfig
from deepseek_wb.models import build_model
from deepseek_wb.distributed import default_dist_env
from transformers import Trainer, TrainingArguments, TrainerCallback
cfg = RunConfig.model_validate_json(sys.argv[1]); default_dist_env()
torch.manual_seed(0)
model = build_model(cfg)
data = torch.randint(5, cfg.model.vocab_size, (cfg.max_steps * cfg.micro_batch_size, cfg.data.max_length))
class DS(torch.utils.data.Dataset):
    def __len__(self): return len(data)
    def __getitem__(self, i): return dict(input_ids=data[i], labels=data[i])
times = []
class Clock(TrainerCallback):
    def on_step_end(self, *a, **k): times.append(time.time())
ds = cfg.to_deepspeed()
ds.pop("scheduler")
o = cfg.optimizer  # the Trainer insists that its own arguments agree with the DeepSpeed config
args = TrainingArguments(output_dir=sys.argv[2], per_device_train_batch_size=cfg.micro_batch_size, max_steps=cfg.max_steps,
                         gradient_accumulation_steps=cfg.gradient_accumulation_steps, learning_rate=o.lr,
                         adam_beta1=o.betas[0], adam_beta2=o.betas[1], adam_epsilon=o.eps, weight_decay=o.weight_decay,
                         max_grad_norm=cfg.gradient_clipping, deepspeed=ds, report_to=[], save_strategy="no",
                         logging_strategy="no", use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, disable_tqdm=True)
Trainer(model=model, args=args, train_dataset=DS(), callbacks=[Clock()]).train()
print(json.dumps(times))
'''


def run_script(code, *args, env=None):
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=1800,
                         env={**os.environ, "OMP_NUM_THREADS": str(os.cpu_count()), **(env or {})})
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def matmul_peak(n=2048, repeat=10):
    import torch
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(repeat): a @ b
    return 2 * n ** 3 * repeat / (time.perf_counter() - t)


def model_flops_per_step(cfg):
    "6 x parameters x tokens, plus attention (12 x layers x seq x hidden per token), for a forward and backward."
    shape = cfg.model.shape()
    tokens = cfg.micro_batch_size * cfg.data.max_length * cfg.world_size * cfg.gradient_accumulation_steps
    return 6 * shape["params"] * tokens + 12 * shape["num_layers"] * cfg.data.max_length * shape["hidden_size"] * tokens


def bench_throughput(steps, skip):
    from deepseek_wb.env import tcmalloc
    from deepseek_wb.jobs import launch
    cfg = config(steps)
    lib = tcmalloc()
    with tempfile.TemporaryDirectory() as tmp:
        job = launch(cfg, run_dir=Path(tmp) / "wb", procs=1, env={"OMP_NUM_THREADS": str(os.cpu_count())})
        assert job.wait(timeout=1800)["state"] == "finished", job.status()
        rates = dict(deepseek_wb=rate(step_times_from_job(job.run_dir), skip))
        for name, code in (("bare_deepspeed", BARE), ("hf_trainer", TRAINER)):
            for suffix, env in (("", {}), ("_tcmalloc", {"LD_PRELOAD": lib} if lib else None)):
                if env is None: continue
                try: rates[name + suffix] = rate(run_script(code, cfg.model_dump_json(), str(Path(tmp) / "hf"), env=env), skip)
                except RuntimeError as e: rates[name + suffix + "_error"] = str(e).strip().splitlines()[-1]
    ours = rates["deepseek_wb"]
    peak = matmul_peak()
    flops = model_flops_per_step(cfg)
    return dict(params=cfg.model.shape()["params"], tokens_per_step=cfg.micro_batch_size * cfg.data.max_length, job_allocator=lib or "glibc",
                steps_per_s={k: round(v, 3) if isinstance(v, float) else v for k, v in rates.items()},
                ours_vs={k: round(ours / v, 3) for k, v in rates.items() if k != "deepseek_wb" and isinstance(v, float)},
                tokens_per_s=round(ours * cfg.micro_batch_size * cfg.data.max_length),
                matmul_peak_gflops=round(peak / 1e9, 1), mfu=round(ours * flops / peak, 4))


CKPT = r'''
import json, resource, sys, time, torch
from deepseek_wb.config import RunConfig
from deepseek_wb.models import build_model
cfg = RunConfig.model_validate_json(sys.argv[1])
torch.manual_seed(0)
model = build_model(cfg); model.train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
x = torch.randint(5, cfg.model.vocab_size, (cfg.micro_batch_size, cfg.data.max_length))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times = []
for i in range(6):
    t = time.perf_counter(); out = model(input_ids=x, labels=x); out.loss.backward(); opt.step(); opt.zero_grad(); times.append(time.perf_counter() - t)
print(json.dumps(dict(peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, before_mb=base / 1024, step_s=sorted(times[1:])[2])))
'''


def bench_checkpointing():
    res = {}
    for on in (False, True):
        cfg = config(6, **{"gradient_checkpointing": on, "data.max_length": 512, "model.max_position": 512, "micro_batch_size": 8})
        res["on" if on else "off"] = run_script(CKPT, cfg.model_dump_json())
    off, on = res["off"], res["on"]
    grow = lambda r: r["peak_mb"] - r["before_mb"]
    return dict(off=off, on=on, training_memory_change=round(grow(on) / grow(off) - 1, 3), step_time_change=round(on["step_s"] / off["step_s"] - 1, 3))


def bench_ranks(steps, skip):
    from deepseek_wb.jobs import launch
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for procs in (1, 2):
            job = launch(config(steps), run_dir=Path(tmp) / f"p{procs}", procs=procs)
            assert job.wait(timeout=1800)["state"] == "finished", job.status()
            out[procs] = rate(step_times_from_job(job.run_dir), skip)
    tokens = MODEL["micro_batch_size"] * MODEL["data.max_length"]
    return dict(steps_per_s={1: round(out[1], 3), 2: round(out[2], 3)},
                tokens_per_s={1: round(out[1] * tokens), 2: round(out[2] * tokens * 2)},
                tokens_ratio_2_vs_1=round(out[2] * 2 / out[1], 3))


def first_metric_time(procs, env):
    from deepseek_wb.jobs import launch
    with tempfile.TemporaryDirectory() as tmp:
        t = time.time()
        job = launch(config(3), run_dir=Path(tmp) / "run", procs=procs, env=env)
        while not step_times_from_job(job.run_dir):
            if not job.alive(): raise RuntimeError(job.status())
            time.sleep(0.05)
        first = step_times_from_job(job.run_dir)[0] - t
        job.wait(timeout=600)
        return round(first, 1)


def bench_launch():
    ext = tempfile.mkdtemp(prefix="torch-ext-")
    try:
        cold = first_metric_time(2, {"TORCH_EXTENSIONS_DIR": ext})
        warm = first_metric_time(2, {"TORCH_EXTENSIONS_DIR": ext})
    finally:
        shutil.rmtree(ext, ignore_errors=True)
    return dict(two_ranks_cold_s=cold, two_ranks_warm_s=warm, one_rank_s=first_metric_time(1, {}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--skip", type=int, default=10, help="steps left out of the rates (start-up)")
    p.add_argument("--only", nargs="*", default=["throughput", "checkpointing", "ranks", "launch"])
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = dict(cores=os.cpu_count())
    if "throughput" in args.only: results["throughput"] = bench_throughput(args.steps, args.skip)
    if "checkpointing" in args.only: results["gradient_checkpointing"] = bench_checkpointing()
    if "ranks" in args.only: results["ranks"] = bench_ranks(args.steps // 2, args.skip // 2)
    if "launch" in args.only: results["launch_to_first_metric"] = bench_launch()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
