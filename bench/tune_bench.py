"""What pruning saves in a search: the same seeded search of real jobs run twice, without a pruner and with the median
pruner, side by side: the training steps the trials ran, the best value found, the trials pruned, the time.

    .venv/bin/python bench/tune_bench.py [--trials 10] [--steps 60] [--json]

Both searches draw the same trials (the sampler is seeded, and TPE draws its first ten at random), so the difference is
what pruning stopped. The goal: >= 40% fewer training steps, the best value within 2% of the unpruned search's.
"""
import argparse
import json
import tempfile
import time

from deepseek_wb.tune import GLOBAL_BATCH, search

SPACE = {"optimizer.lr": {"low": 1e-5, "high": 3e-2, "log": True}, GLOBAL_BATCH: {"choices": [4, 8, 16]}}


def run(pruner: str, trials: int, steps: int, root: str) -> dict:
    small = {"data.limit": 600, "data.max_length": 64, "model.hidden_size": 64, "model.max_position": 64, "max_steps": steps,
             "eval_every": max(1, steps // 6), "log_every": max(1, steps // 12), "checkpoint_every": 10 * steps, "eval_batches": 4,
             "activations_every": 0, "eval.samples": 0, "schedule.warmup_steps": 0, "output_root": root}
    started = time.perf_counter()
    found = search("tiny-cpu", space=SPACE, trials=trials, pruner=pruner, study=f"bench-{pruner}", poll=0.2,
                   say=lambda line: print(f"  [{pruner}] {line}", flush=True), **small)
    table = found.table()
    return dict(pruner=pruner, trials=len(table), pruned=int((table.state == "pruned").sum()), steps=int(table.steps.sum()),
                best=found.best_trial.value, best_params=found.best_trial.params, seconds=round(time.perf_counter() - started, 1))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--steps", type=int, default=60, help="training steps of a trial that is not pruned")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="tune-bench-") as root:
        plain, pruned = run("none", args.trials, args.steps, root), run("median", args.trials, args.steps, root)
    saved = 1 - pruned["steps"] / plain["steps"]
    gap = abs(pruned["best"] - plain["best"]) / abs(plain["best"])
    out = dict(without=plain, median=pruned, steps_saved=round(saved, 3), best_gap=round(gap, 4),
               goal_met=saved >= 0.40 and gap <= 0.02)
    if args.json: print(json.dumps(out, indent=2)); return
    print(f"\n{'':22}{'no pruner':>14}{'median':>14}")
    for key, label in (("trials", "trials"), ("pruned", "pruned"), ("steps", "training steps"), ("best", "best eval_loss"),
                       ("seconds", "seconds")):
        a, b = plain[key], pruned[key]
        print(f"{label:22}{a:>14.6g}{b:>14.6g}" if isinstance(a, float) else f"{label:22}{a:>14}{b:>14}")
    print(f"\nsteps saved by pruning: {saved:.1%} (goal >= 40%); best value gap: {gap:.2%} (goal <= 2%): "
          f"{'met' if out['goal_met'] else 'not met'}")


if __name__ == "__main__":
    main()
