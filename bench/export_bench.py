"""INT8 against fp32 on a trained classifier, side by side in one run on this machine.

    python bench/export_bench.py [--steps 600] [--runs 30] [--per-tensor] [--quick]

A BERT classifier of a realistic small size (hidden 256, 4 layers, sequences of 128 tokens, 4.3M
parameters) is trained by a deepseek_wb job on the demo corpus (16 classes: which library family a
docstring is from), exported with `export_model` and quantized with `quantize`: size, median latency
(batch 1 and 8, one thread and all cores) and accuracy on held-out texts, fp32 and INT8.
Goals (issue #12): size <= 0.27x, latency <= 0.5x at batch 1 on one thread, accuracy drop <= 1 point.
Run it on an otherwise idle machine: latency on shared cores means little. `--quick` trains a tiny
model for a few steps, to check that the benchmark runs. `--per-tensor` quantizes the same export a
second time with one scale per weight tensor instead of one per output channel, and reports both.
Writes runs/export-bench.json.
"""
import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOALS = dict(size_ratio=0.27, latency_ratio=0.5, accuracy_drop=0.01)
MODEL = {"model.family": "bert", "model.task": "classification", "model.num_labels": 16, "model.hidden_size": 256,
         "model.num_layers": 4, "model.num_heads": 4, "model.intermediate_size": 1024, "model.vocab_size": 4096,
         "model.max_position": 128, "data.max_length": 128}
QUICK = {"model.hidden_size": 64, "model.num_layers": 2, "model.intermediate_size": 128, "model.vocab_size": 1024}


def split_corpus(folder: Path, eval_rows: int, seed: int = 0) -> tuple[Path, Path]:
    "The demo corpus as train.jsonl and a held-out eval.jsonl of `eval_rows` rows."
    from deepseek_wb.data import demo_corpus
    ds = demo_corpus()
    rows = [dict(text=t, label=y) for t, y in zip(ds["text"], ds["label"])]
    random.Random(seed).shuffle(rows)
    paths = folder / "train.jsonl", folder / "eval.jsonl"
    for path, part in zip(paths, (rows[eval_rows:], rows[:eval_rows])):
        path.write_text("".join(json.dumps(r) + "\n" for r in part))
    return paths


def train(folder: Path, train_file: Path, eval_file: Path, steps: int, quick: bool) -> Path:
    "A classifier trained by a deepseek_wb job; its run directory."
    from deepseek_wb.config import RunConfig
    from deepseek_wb.jobs import launch
    cfg = RunConfig.load(ROOT / "deepseek_wb" / "examples" / "tiny-cpu.yaml", **{
        **MODEL, **(QUICK if quick else {}), "data.source": str(train_file), "data.eval_source": str(eval_file),
        "data.label_column": "label", "data.packing": False, "micro_batch_size": 16, "max_steps": steps,
        "checkpoint_every": steps, "eval_every": steps, "log_every": max(1, steps // 10), "activations_every": 0,
        "optimizer.lr": 5e-4, "schedule.warmup_steps": max(1, steps // 10), "model.dropout": 0.1})
    job = launch(cfg, run_dir=folder / "run")
    status = job.wait(timeout=3600)
    if status["state"] != "finished": sys.exit(f"training failed: {status}\n{job.tail(30)}")
    return job.run_dir


def table(q: dict) -> str:
    "fp32 and INT8 side by side, with the ratios and the goals."
    ms = {(r["model"], r["threads"], r["batch"]): r["ms"] for r in q["latency"]}
    w = 36
    lines = [f"{'':{w}}{'fp32':>10}{'int8':>10}{'int8/fp32':>11}   goal",
             f"{'size (MB)':{w}}{q['sizes']['fp32'] / 1e6:>10.2f}{q['sizes']['int8'] / 1e6:>10.2f}{q['size_ratio']:>11.3f}   "
             f"<= {GOALS['size_ratio']}"]
    for (model, threads, batch), fp32 in ms.items():
        if model != "fp32": continue
        int8 = ms["int8", threads, batch]
        goal = f"<= {GOALS['latency_ratio']}" if (threads, batch) == (1, 1) else ""
        label = f"latency ms, batch {batch}, {'1 thread' if threads == 1 else 'all cores'}"
        lines.append(f"{label:{w}}{fp32:>10.2f}{int8:>10.2f}{int8 / fp32:>11.3f}   {goal}")
    drop = q["metric_before"] - q["metric_after"]
    lines.append(f"{'accuracy':{w}}{q['metric_before']:>10.4f}{q['metric_after']:>10.4f}{-drop * 100:>+10.2f}pt   "
                 f"drop <= {GOALS['accuracy_drop'] * 100:g} pt")
    lines.append(f"{'argmax agreement':{w}}{'':>20}{q['agreement']:>11.4f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600, help="training steps of the classifier")
    p.add_argument("--runs", type=int, default=30, help="timed runs per latency figure (their median is reported)")
    p.add_argument("--eval-rows", type=int, default=600, help="held-out texts to measure accuracy on")
    p.add_argument("--quick", action="store_true", help="a tiny model, a few steps: check that the benchmark runs")
    p.add_argument("--per-tensor", action="store_true", help="also quantize with one scale per weight tensor, and compare")
    p.add_argument("--out", default=str(ROOT / "runs" / "export-bench.json"))
    args = p.parse_args(argv)
    if args.quick: args.steps, args.runs, args.eval_rows = 8, 3, 48
    from deepseek_wb.export import export_model, quantize, read_labelled
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        tmp = Path(tmp)
        train_file, eval_file = split_corpus(tmp, args.eval_rows)
        t = time.time()
        run = train(tmp, train_file, eval_file, args.steps, args.quick)
        trained_s = time.time() - t
        texts, labels = read_labelled(eval_file, label_column="label")
        report = export_model(run, texts=texts, labels=labels, int8=True, runs=args.runs)
        per_tensor = quantize(Path(report["onnx"]).parent, texts, labels, per_channel=False, runs=args.runs)["int8"] if args.per_tensor else None
    q = report["int8"]
    met = dict(size_ratio=q["size_ratio"] <= GOALS["size_ratio"], latency_ratio=q["latency_ratio"] <= GOALS["latency_ratio"],
               accuracy_drop=q["metric_before"] - q["metric_after"] <= GOALS["accuracy_drop"])
    print(f"BERT classifier ({'quick: tiny' if args.quick else 'hidden 256, 4 layers, 128 tokens'}), {args.steps} steps "
          f"({trained_s:.0f} s), {len(texts)} held-out texts, {q['cores']} cores, latency at {q['eval']['max_length']} tokens; "
          f"max |ONNX - torch| {report['max_abs_diff']:.1e}\n")
    print(table(q))
    if per_tensor: print("\nthe same export, one scale per weight tensor:\n" + table(per_tensor))
    print("\ngoals met:", ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in met.items()),
          "(quick: a tiny model; the goals are for the full run)" if args.quick else "")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(quick=args.quick, steps=args.steps, train_seconds=trained_s, eval_texts=len(texts),
                                   max_abs_diff=report["max_abs_diff"], parity=report["parity"], int8=q, int8_per_tensor=per_tensor, goals=GOALS, met=met,
                                   versions=report["versions"]), indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
