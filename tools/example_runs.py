"""Run shipped examples exactly as shipped and keep what the diagnosis reads, as test fixtures.

    python tools/example_runs.py [NAME ...]     # default: every example a CPU can run in minutes

Each run's `metrics.jsonl` and `config.json` land in `nbs/fixtures/<name>/`, where
`tests/test_examples.py` checks that the diagnosis finds nothing wrong with them. The larger
examples (`gpt2-100m`, `seed-zero3-offload`) are for GPUs and are not run here.
"""
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "deepseek_wb" / "examples"  # the shipped configs, read as files: a stray tiny-cpu.yaml here changes nothing
CPU_EXAMPLES = ["tiny-cpu", "bert-mlm-tiny", "classify-tiny", "lora-llama-small"]


def run(name: str) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / name
        cmd = [str(Path(sys.executable).parent / "deepseek-wb"), "train", str(EXAMPLES / f"{name}.yaml"), "--run-dir", str(run_dir)]
        if subprocess.run(cmd, cwd=tmp).returncode != 0:
            raise SystemExit(f"{name}: the run failed (its log is above)")
        out = ROOT / "nbs" / "fixtures" / name
        out.mkdir(parents=True, exist_ok=True)
        for f in ("metrics.jsonl", "config.json"):
            shutil.copy(run_dir / f, out / f)
        return out


if __name__ == "__main__":
    for name in sys.argv[1:] or CPU_EXAMPLES:
        print(f"{name}: {run(name)}", flush=True)
