"""The learning-rate range test from the command line: a real job whose LR grows exponentially, read back into a suggestion,
and a run the diagnosis takes as on its schedule."""
import json
import subprocess
import sys
from pathlib import Path

SMALL = ["data.limit=300", "data.max_length=64", "model.hidden_size=64", "model.max_position=64", "eval_batches=1"]


def test_lr_find_suggests_a_rate_within_the_range(tmp_path):
    done = subprocess.run([sys.executable, "-m", "deepseek_wb", "lr-find", "tiny-cpu", *SMALL, f"output_root={tmp_path}",
                           "--steps", "50", "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["points"] >= 20 and found["lr_range"][0] < found["suggested_lr"] < found["lr_range"][1], found
    assert found["suggested_lr"] <= found["lowest_loss_lr"] * 3, found  # in the fall, not past the blow-up
    run = Path(found["run_dir"])
    config = json.loads((run / "config.json").read_text())
    assert config["schedule"]["kind"] == "exponential" and config["optimizer"]["lr"] == 1e-7 and config["schedule"]["final_lr"] == 1.0
    diagnosis = subprocess.run([sys.executable, "-m", "deepseek_wb", "diagnose", str(run), "--json"], capture_output=True, text=True,
                               timeout=300)
    assert diagnosis.returncode == 0, diagnosis.stderr
    assert "lr_not_smooth" not in diagnosis.stdout  # the logged LR is the exponential schedule's, step by step
