"""Every shipped config is valid, and DeepSpeed's own parser accepts its JSON."""
from pathlib import Path

import pytest

from deepseek_wb.config import DEEPSPEED_KEYS, RunConfig, check_file, deepspeed_parse
from deepseek_wb.shipped import example, examples

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [e.path for e in examples()]


def test_examples_exist():
    names = {p.name for p in SHIPPED}
    assert {"tiny-cpu.yaml", "seed-zero3-offload.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_example_is_valid_and_parsed_by_deepspeed(path):
    cfg, problems = check_file(path, parse=False)
    assert cfg is not None, [str(p) for p in problems]
    assert not [p for p in problems if p.field != "data.source"], [str(p) for p in problems]
    ds = cfg.to_deepspeed()
    parsed = deepspeed_parse(ds, cfg.world_size)
    assert parsed.train_batch_size == cfg.effective_batch_size
    assert parsed.gradient_accumulation_steps == cfg.gradient_accumulation_steps
    assert parsed.zero_optimization_stage == cfg.zero.stage
    assert parsed.gradient_clipping == cfg.gradient_clipping
    assert parsed.float16_config.enabled == (cfg.precision == "fp16")
    assert parsed.bfloat16_config.enabled == (cfg.precision == "bf16")


def test_seed_example():
    cfg = RunConfig.load(example("seed-zero3-offload").path)
    parsed = deepspeed_parse(cfg.to_deepspeed(), cfg.world_size)
    assert (parsed.train_batch_size, parsed.gradient_accumulation_steps) == (4096, 16)
    assert parsed.float16_config.enabled and parsed.float16_config.loss_scale == 0  # dynamic loss scaling
    assert parsed.zero_optimization_stage == 3
    assert parsed.zero_config.offload_optimizer.device == "cpu"


def test_tiny_cpu_runs_here():
    """tiny-cpu must pass the hardware checks of a CPU-only machine like CI's."""
    from deepseek_wb.env import Hardware
    cfg, problems = check_file(example("tiny-cpu").path,
                               hardware=Hardware(cpu_cores=2, ram_gb=24, fp16=False, bf16=True))
    assert cfg is not None and problems == []


def test_known_keys_cover_what_deepspeed_reads():
    """DEEPSPEED_KEYS must include every top-level key the installed DeepSpeed's parser looks up."""
    read = set()

    class Spy(dict):
        def get(self, k, d=None):
            read.add(k)
            return super().get(k, d)

        def __contains__(self, k):
            read.add(k)
            return super().__contains__(k)

        def __getitem__(self, k):
            read.add(k)
            return super().__getitem__(k)

    deepspeed_parse(Spy(train_batch_size=8, train_micro_batch_size_per_gpu=8))
    assert read and read <= DEEPSPEED_KEYS, sorted(read - DEEPSPEED_KEYS)


CPU_RUNS = ["tiny-cpu", "bert-mlm-tiny", "classify-tiny", "lora-llama-small"]


@pytest.mark.parametrize("name", CPU_RUNS)
def test_shipped_example_run_as_shipped_has_no_findings(name):
    """Whole runs of the CPU-sized examples as shipped, recorded by tools/example_runs.py, come out healthy.

    The recorded config must still be the shipped one: change an example and this fails until its run is recorded again."""
    import json
    from deepseek_wb.diagnose import diagnose
    run = ROOT / "nbs" / "fixtures" / name
    recorded = RunConfig.model_validate(json.loads((run / "config.json").read_text()))
    assert recorded == RunConfig.load(example(name).path), \
        f"the shipped {name} changed since its run was recorded: python tools/example_runs.py {name}"
    train = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"kind":"train"' in l]
    assert train and train[-1]["step"] == recorded.max_steps  # the whole run, not a part of it
    assert diagnose(run) == [], [str(f) for f in diagnose(run)]
