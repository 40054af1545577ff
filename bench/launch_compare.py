"""A job's fixed costs in two checkouts, side by side in one run: launch to first metric line, and launch to
every process gone (what a test or a notebook waiting on the job sees).

    python bench/launch_compare.py OLD_CHECKOUT NEW_CHECKOUT [--runs 3] [--procs 2]

Each run is a tiny job (the tests' `tiny_config`: a 2-layer GPT-2, 12 steps, a checkpoint every 4, on the
demo data) launched from a fresh process whose `deepseek_wb` is the checkout's own; the two checkouts take
turns, so that a change in the machine's load hits both alike. Make the old one with
`git worktree add /tmp/old REV`. Run it on an otherwise idle machine.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ONE = r'''
import json, os, sys, tempfile, time
sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
import deepseek_wb
assert deepseek_wb.__file__.startswith(sys.argv[1]), deepseek_wb.__file__
from deepseek_wb.core import read_jsonl
from deepseek_wb.env import local_hardware
from deepseek_wb.jobs import launch
from jobs_util import tiny_config
local_hardware(); cfg = tiny_config()  # probed and checked before the clock starts
with tempfile.TemporaryDirectory() as tmp:
    start, first, metrics = time.time(), None, os.path.join(tmp, "run", "metrics.jsonl")
    job = launch(cfg, procs=int(sys.argv[2]), run_dir=os.path.join(tmp, "run"))
    while first is None and job.alive():
        if os.path.exists(metrics) and any(r.get("kind") == "train" for r in read_jsonl(metrics)[0]): first = time.time() - start
        time.sleep(0.05)
    state = job.wait(timeout=600)["state"]
    print(json.dumps(dict(state=state, first_metric_s=first, all_gone_s=time.time() - start)))
'''


def one(checkout: Path, procs: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout), "HF_HUB_OFFLINE": "1", "PYTHONSAFEPATH": "1"}  # not the current folder's package
    out = subprocess.run([sys.executable, "-c", ONE, str(checkout), str(procs)], capture_output=True, text=True, env=env, timeout=900)
    if out.returncode != 0: sys.exit(f"{checkout}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--procs", type=int, default=2)
    args = p.parse_args(argv)
    runs = {"old": [], "new": []}
    for i in range(args.runs):
        for name in ("old", "new"):
            r = one(getattr(args, name).resolve(), args.procs)
            runs[name].append(r)
            print(f"run {i + 1} {name}: first metric {r['first_metric_s']:.1f} s, all gone {r['all_gone_s']:.1f} s, {r['state']}", flush=True)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("first_metric_s", "all_gone_s")} for name, rs in runs.items()}
    result = dict(procs=args.procs, runs=runs, median=med,
                  new_over_old={k: round(med["new"][k] / med["old"][k], 3) for k in ("first_metric_s", "all_gone_s")})
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
