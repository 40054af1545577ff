"""Monitoring benchmarks, side by side in one run on this machine (read the ratios).

    python bench/monitor_bench.py [--seconds 40] [--lines 1000000]

1. The kernel's CPU while a live Monitor follows a running job, against the same kernel idle for the
   same time: a real Jupyter kernel (jupyter_client), the panel displayed so that its widget messages
   are really sent, a tiny job logging every 10 steps (the default) and every step (goal: <= 2% of one core).
2. Update latency: from the moment the job appends a line (its `time` field) to the moment the kernel
   has redrawn the chart with it (goal: p95 <= 1 s).
3. The job's cost of writing metrics: a train line (JSON append and flush, TensorBoard scalars) and an
   activation line, timed in this process, against the median step time of the same job
   (goal: <= 2% of the step time at one line per step).
4. Reading a long run: a metrics file of `--lines` lines through read_metrics, and downsampling it.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FOLLOW = r'''
import time, deepseek_wb.monitor as M
from IPython.display import display
stamps = []
_redraw = M._redraw
def _timed(self):
    _redraw(self); stamps.append((time.time(), int(self.metrics.step)))
M._redraw = _timed
mon = M.Monitor(RUN_DIR)  # the default interval
display(mon)
'''


def run_kernel_code(kc, code, timeout=120):
    "Execute `code` in the kernel, draining its messages; return the text it printed."
    msg_id = kc.execute(code)
    out = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id: continue
        if msg["msg_type"] == "stream": out.append(msg["content"]["text"])
        if msg["msg_type"] == "error": raise RuntimeError("\n".join(msg["content"]["traceback"]))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle": return "".join(out)


def drain(kc, seconds):
    "Receive whatever the kernel sends (widget updates included) for `seconds`; return the count of comm messages."
    end, comms = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        try: msg = kc.get_iopub_msg(timeout=0.2)
        except Exception: continue
        comms += msg["msg_type"] == "comm_msg"
    return comms


def follow_bench(seconds: float, log_every: int) -> dict:
    from jupyter_client import KernelManager
    from deepseek_wb.jobs import launch
    from deepseek_wb.metrics import read_metrics
    sys.path.insert(0, str(ROOT / "tests"))
    from jobs_util import tiny_config, wait_for
    tmp = Path(tempfile.mkdtemp())
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(tmp), env={**os.environ, "HF_HUB_OFFLINE": "1"})
    kc = km.client(); kc.start_channels(); kc.wait_for_ready(timeout=120)
    kernel = psutil.Process(km.provisioner.process.pid)
    job = launch(tiny_config(max_steps=100_000, checkpoint_every=100_000, log_every=log_every, activations_every=10 * log_every),
                 run_dir=tmp / "run")
    try:
        wait_for(lambda: len(read_metrics(job.run_dir).train) >= 5, timeout=600, what="the job's first lines")
        run_kernel_code(kc, "import deepseek_wb.monitor, plotly, ipywidgets")  # imports are not following
        cpu0 = kernel.cpu_times(); t0 = time.monotonic()
        drain(kc, seconds)
        idle = (sum(kernel.cpu_times()[:2]) - sum(cpu0[:2])) / (time.monotonic() - t0)

        run_kernel_code(kc, f"RUN_DIR = {str(job.run_dir)!r}\n" + FOLLOW)
        drain(kc, 3)  # the first draw and the first diagnosis
        cpu0 = kernel.cpu_times(); t0 = time.monotonic()
        comms = drain(kc, seconds)
        following = (sum(kernel.cpu_times()[:2]) - sum(cpu0[:2])) / (time.monotonic() - t0)
        stamps = json.loads(run_kernel_code(kc, "import json; print(json.dumps(stamps))"))
    finally:
        job.stop(grace=20)
        kc.stop_channels(); km.shutdown_kernel(now=True)
    m = read_metrics(job.run_dir)
    written = dict(zip(m.train["step"].astype(int), m.train["time"]))
    latencies, drawn = [], {s for s in written if s <= stamps[0][1]}  # the history the panel opened with is not latency
    for t, step in stamps[1:]:  # each new line's latency: its write time to the first redraw that includes it
        for s in [s for s in written if s <= step and s not in drawn]:
            latencies.append(t - written[s]); drawn.add(s)
    step_time = float(np.median(m.train["step_time_s"].dropna()))
    return dict(seconds=seconds, kernel_cpu_idle=idle, kernel_cpu_following=following, comm_messages=comms,
                redraws=len(stamps), lines=len(latencies), latency_p50=float(np.percentile(latencies, 50)),
                latency_p95=float(np.percentile(latencies, 95)), latency_max=float(np.max(latencies)),
                lines_per_s=len(latencies) / seconds, job_step_time_s=step_time)


def writer_cost(n: int = 2000) -> dict:
    from deepseek_wb.telemetry import RunWriter
    w = RunWriter(Path(tempfile.mkdtemp()), tensorboard=True)
    line = dict(epoch=0, loss=2.345678, accuracy=0.25, lr=1e-4, grad_norm=1.2345, loss_scale=None, tokens_per_s=12345.6,
                samples_per_s=100.0, step_time_s=0.1, mem_mb=1234.5, nan_skipped=0, tokens=123456)
    layers = {f"layer_{i}": dict(mean=0.01, std=1.0, hist=[1 / 16] * 16) for i in range(2)}
    t0 = time.perf_counter()
    for s in range(n): w.train(s, **line)
    train = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for s in range(n // 10): w.activations(s, layers)
    act = (time.perf_counter() - t0) / (n // 10)
    w.close()
    return dict(train_line_s=train, act_line_s=act)


def read_bench(lines: int) -> dict:
    from deepseek_wb.metrics import downsample, read_metrics
    d = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    with open(d / "metrics.jsonl", "w") as f:
        for s in range(1, lines + 1):
            if s % 100 == 0:
                f.write(json.dumps({"kind": "act", "time": 1.0, "step": s, "layers": {f"layer_{i}": {"mean": 0.0, "std": 1.0, "hist": [0.0625] * 16} for i in range(4)}}) + "\n")
            else:
                f.write(json.dumps({"kind": "train", "time": 1.0, "step": s, "epoch": 0, "loss": float(rng.random()), "accuracy": 0.3,
                                    "lr": 1e-4, "grad_norm": 1.2, "tokens_per_s": 12345.6, "samples_per_s": 100.1, "step_time_s": 0.1,
                                    "mem_mb": 1234.5, "nan_skipped": 0}, separators=(",", ":")) + "\n")
    size = (d / "metrics.jsonl").stat().st_size
    t0 = time.perf_counter(); m = read_metrics(d); train = m.train; act = m.act; read = time.perf_counter() - t0
    t0 = time.perf_counter(); downsample(train["step"].to_numpy(), train["loss"].to_numpy(), 2000); ds = time.perf_counter() - t0
    return dict(lines=lines, mb=size / 2 ** 20, read_s=read, downsample_s=ds, rows=len(train), act_rows=len(act.step))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--lines", type=int, default=1_000_000)
    args = ap.parse_args()
    print(f"machine: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2 ** 30:.0f} GB", flush=True)

    runs = {n: follow_bench(args.seconds, n) for n in (10, 1)}  # the shipped log_every, and a line every step
    print(f"\n1. following a running job for {args.seconds:.0f} s in a real kernel (goal <= 2% of one core)")
    print(f"   {'log_every':>9}  {'lines/s':>7}  {'redraws':>7}  {'messages':>8}  {'kernel idle':>11}  {'following':>9}")
    for n, f in runs.items():
        print(f"   {n:>9}  {f['lines_per_s']:>7.1f}  {f['redraws']:>7}  {f['comm_messages']:>8}  {f['kernel_cpu_idle']:>11.2%}  "
              f"{f['kernel_cpu_following']:>9.2%}")
    print("\n2. line written -> chart redrawn (goal p95 <= 1 s)")
    for n, f in runs.items():
        print(f"   log_every {n:>2}: p50 {f['latency_p50']:.2f} s, p95 {f['latency_p95']:.2f} s, max {f['latency_max']:.2f} s over {f['lines']} lines")
    f = runs[1]

    w = writer_cost()
    print(f"\n3. writing metrics in the job: a train line {w['train_line_s'] * 1e6:.0f} us, an activation line "
          f"{w['act_line_s'] * 1e6:.0f} us; the job's median step {f['job_step_time_s'] * 1e3:.1f} ms")
    print(f"   at one line per step: {w['train_line_s'] / f['job_step_time_s']:.2%} of the step time, at log_every 10: "
          f"{w['train_line_s'] / f['job_step_time_s'] / 10:.2%}   (goal <= 2%)")

    r = read_bench(args.lines)
    print(f"\n4. read_metrics on {r['lines']:,} lines ({r['mb']:.0f} MB): {r['read_s']:.2f} s; "
          f"downsampling {r['rows']:,} points to 2,000: {r['downsample_s'] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
