"""Packing benchmark: non-padding tokens per second on the demo instruction set, side by side in one run (read the ratios).

    python bench/packing_bench.py [--steps 60] [--skip 10]

The chat example (the shipped `chat-sft-tiny`: LoRA on a tiny DeepSeek-V3-shaped model, ChatML, loss on the replies, max_length 256,
micro batch 8) trained three ways, each for `--steps` optimizer steps, rates from step `skip` to the last:
1. a deepseek_wb job (`launch`) with packing on, as the example ships;
2. the same job with `data.packing: false` (one example a row, padded to the longest of its batch);
3. Hugging Face Trainer with the padding collator people write for SFT (`DataCollatorForSeq2Seq`, labels padded
   with -100), the same model, tokenizer, rows and DeepSpeed config, as plain Python runs it (glibc's malloc) and
   once more with tcmalloc preloaded (the job's allocator on a CPU), so the allocator's share is visible.
Every arm gets the same expected number of non-padding tokens per optimizer step: the packed job's 8 rows hold
8 x (real tokens per packed row); the unpacked arms get the micro batch whose examples hold as many on average.
Tokens are counted from the rows (padding never counts): the job's metrics lines (`tokens`), the Trainer's collator.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "deepseek_wb" / "examples"  # the shipped configs, read as files: a stray tiny-cpu.yaml here changes nothing
EXAMPLE = EXAMPLES / "chat-sft-tiny.yaml"  # a shipped config


def config(steps, **extra):
    from deepseek_wb.config import RunConfig
    return RunConfig.load(EXAMPLE, **{"max_steps": steps, "checkpoint_every": steps * 10, "eval_every": steps * 10, "log_every": 1,
                                      "activations_every": 0, "schedule.warmup_steps": 2, **extra})


def token_rate(times, tokens, skip):
    "Non-padding tokens per second from the end of step `skip` to the last step; `tokens[i]` is step i+1's count."
    return sum(tokens[skip:]) / (times[-1] - times[skip - 1])


def job_rate(cfg, run_dir, skip):
    "Launch `cfg` as a real job; its non-padding tokens/s, steps/s and (for a check) the median of its own `tokens_per_s`."
    from deepseek_wb.core import read_jsonl
    from deepseek_wb.jobs import launch
    job = launch(cfg, run_dir=run_dir, procs=1, env={"OMP_NUM_THREADS": str(os.cpu_count())})
    assert job.wait(timeout=1800)["state"] == "finished", job.status()
    recs = [r for r in read_jsonl(Path(run_dir) / "metrics.jsonl")[0] if r["kind"] == "train"]
    cumulative = [r["tokens"] for r in recs]
    tokens = [b - a for a, b in zip([0] + cumulative, cumulative)]
    times = [r["time"] for r in recs]
    own = sorted(r["tokens_per_s"] for r in recs[skip:])
    return dict(tokens_per_s=token_rate(times, tokens, skip), steps_per_s=(len(times) - skip) / (times[-1] - times[skip - 1]),
                own_tokens_per_s_median=own[len(own) // 2], tokens_per_step=sum(tokens[skip:]) / len(tokens[skip:]))


def prepared(cfg, tokenizer_dir, scratch):
    "The run's training rows tokenized packed and one per row (as the job does), with the run's own tokenizer."
    from deepseek_wb.core import RunPaths
    from deepseek_wb.tokens import load_tokenizer
    from deepseek_wb.train import load_rows, tokenized
    Path(scratch).mkdir(parents=True, exist_ok=True)
    rows, _, report = load_rows(cfg, RunPaths(Path(scratch)), 0)
    tok = load_tokenizer(tokenizer_dir)
    return {p: tokenized(cfg.model_copy(update=dict(data=cfg.data.model_copy(update=dict(packing=p)))), rows, tok, report["format"],
                         report, "train") for p in (True, False)}


TRAINER = r'''
import json, sys, time, torch
from deepseek_wb.config import RunConfig
from deepseek_wb.core import RunPaths
from deepseek_wb.distributed import default_dist_env
from deepseek_wb.models import apply_mode, build_base
from deepseek_wb.tokens import load_tokenizer
from deepseek_wb.train import load_rows, tokenized
from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments
cfg = RunConfig.model_validate_json(sys.argv[1]); default_dist_env()
tok = load_tokenizer(sys.argv[2])
rows, _, report = load_rows(cfg, RunPaths(__import__("pathlib").Path(sys.argv[3])), 0)
train = tokenized(cfg, rows, tok, report["format"], report, "train")  # data.packing is false: one example a row
torch.manual_seed(cfg.seed)
base = build_base(cfg, tok); base.config.use_cache = False
model = apply_mode(base, cfg)
pad = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
tokens, times = [], []
def collate(features):  # counts the real tokens of each batch as it is made (batch i is step i's: no accumulation)
    tokens.append(sum(len(f["input_ids"]) for f in features)); return pad(features)
class Clock(TrainerCallback):
    def on_step_end(self, *a, **k): times.append(time.time())
ds = cfg.to_deepspeed(); ds.pop("scheduler")
o = cfg.optimizer  # the Trainer insists that its own arguments agree with the DeepSpeed config
args = TrainingArguments(output_dir=sys.argv[3] + "/hf", per_device_train_batch_size=cfg.micro_batch_size, max_steps=cfg.max_steps,
                         gradient_accumulation_steps=cfg.gradient_accumulation_steps, learning_rate=o.lr,
                         adam_beta1=o.betas[0], adam_beta2=o.betas[1], adam_epsilon=o.eps, weight_decay=o.weight_decay,
                         max_grad_norm=cfg.gradient_clipping, deepspeed=ds, report_to=[], save_strategy="no", seed=cfg.seed,
                         logging_strategy="no", use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, disable_tqdm=True)
Trainer(model=model, args=args, train_dataset=train, data_collator=collate, callbacks=[Clock()]).train()
print(json.dumps(dict(times=times, tokens=tokens[:len(times)])))
'''


def trainer_rate(cfg, tokenizer_dir, scratch, skip, env):
    "Run the Trainer arm in a fresh process; its non-padding tokens/s and steps/s."
    out = subprocess.run([sys.executable, "-c", TRAINER, cfg.model_dump_json(), str(tokenizer_dir), str(scratch)], capture_output=True,
                         text=True, timeout=1800, env={**os.environ, "OMP_NUM_THREADS": str(os.cpu_count()), **env})
    if out.returncode != 0: raise RuntimeError(out.stderr[-3000:])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    t = r["times"]
    return dict(tokens_per_s=token_rate(t, r["tokens"], skip), steps_per_s=(len(t) - skip) / (t[-1] - t[skip - 1]),
                tokens_per_step=sum(r["tokens"][skip:]) / len(r["tokens"][skip:]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--skip", type=int, default=10, help="steps left out of the rates (start-up)")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from deepseek_wb.env import tcmalloc
    from deepseek_wb.tokens import fill_ratio
    t0, load = time.time(), os.getloadavg()[0]
    packed_cfg = config(args.steps)
    res, lib = {}, tcmalloc()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        res["deepseek_wb, packed"] = job_rate(packed_cfg, tmp / "packed", args.skip)
        tok_dir = tmp / "packed" / "tokenizer"  # the job's own tokenizer: every arm uses it
        sets = prepared(packed_cfg, tok_dir, tmp / "prep")
        L = packed_cfg.data.max_length
        real = {k: sum(map(len, v["input_ids"])) for k, v in sets.items()}
        per_row, per_example = real[True] / len(sets[True]), real[False] / len(sets[False])
        batch = round(packed_cfg.micro_batch_size * per_row / per_example)  # same expected real tokens per step
        lengths = [len(x) for x in sets[False]["input_ids"]]
        rng = random.Random(0)  # the padded arms' share of real tokens in their slots, over random batches
        draws = [rng.sample(lengths, batch) for _ in range(2000)]
        padded_fill = sum(map(sum, draws)) / sum(batch * max(d) for d in draws)
        padded_cfg = config(args.steps, **{"data.packing": False, "micro_batch_size": batch})
        res["deepseek_wb, padded"] = job_rate(padded_cfg, tmp / "padded", args.skip)
        res["HF Trainer, padded"] = trainer_rate(padded_cfg, tok_dir, tmp / "hf", args.skip, {})
        if lib: res["HF Trainer, padded, tcmalloc"] = trainer_rate(padded_cfg, tok_dir, tmp / "hf2", args.skip, {"LD_PRELOAD": lib})
    ours = res["deepseek_wb, packed"]["tokens_per_s"]
    out = dict(cores=os.cpu_count(), load_at_start=round(load, 2), job_allocator=lib or "glibc", steps=args.steps, skip=args.skip,
               examples=len(sets[False]), packed_rows=len(sets[True]), fill_ratio_packed=round(fill_ratio(sets[True], L), 3), fill_ratio_padded=round(padded_fill, 3),
               tokens_per_example=round(per_example, 1), tokens_per_packed_row=round(per_row, 1), unpacked_micro_batch=batch,
               arms={k: {n: round(x, 3) for n, x in v.items()} for k, v in res.items()},
               packed_vs={k: round(ours / v["tokens_per_s"], 3) for k, v in res.items() if k != "deepseek_wb, packed"},
               seconds=round(time.time() - t0))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
