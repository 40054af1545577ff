"""Every kind of bad config is rejected before anything runs, and the error names its field."""
import pytest

from deepseek_wb.config import RunConfig, check
from deepseek_wb.env import Hardware

CPU = Hardware(gpus=[], cpu_cores=2, ram_gb=24, fp16=False, bf16=True)

# (what is wrong, config data, the field the error must name, a phrase the message or fix must contain)
BAD = [
    ("batch arithmetic", dict(micro_batch_size=4, gradient_accumulation_steps=16, world_size=8, train_batch_size=4096),
     "train_batch_size", "4 x 16 x 8 = 512"),
    ("fp16 and bf16 both on", dict(precision="fp16", deepspeed={"bf16": {"enabled": True}}), "precision", "both on"),
    ("bf16 and fp16 both on", dict(precision="bf16", deepspeed={"fp16": {"enabled": True}}), "precision", "both on"),
    ("precision the hardware cannot run", dict(precision="fp16"), "precision", "not supported on this hardware"),
    ("fp16 at ZeRO 0 (DeepSpeed leaves the loss unscaled)", dict(precision="fp16", zero={"stage": 0}), "zero.stage", "zero.stage: 1"),
    ("optimizer offload at stage 0", dict(zero={"stage": 0, "offload_optimizer": True}), "zero.offload_optimizer", "stage 1, 2 or 3"),
    ("parameter offload below stage 3", dict(zero={"stage": 2, "offload_optimizer": True, "offload_param": True}),
     "zero.offload_param", "stage 3"),
    ("misspelled top-level key", dict(precison="bf16"), "precison", "did you mean 'precision'"),
    ("misspelled nested key", dict(optimizer={"wieght_decay": 0.1}), "optimizer.wieght_decay", "did you mean 'weight_decay'"),
    ("misspelled DeepSpeed key", dict(deepspeed={"gradient_cliping": 1.0}), "deepspeed.gradient_cliping", "did you mean 'gradient_clipping'"),
    ("DeepSpeed key owned by the run config", dict(deepspeed={"train_batch_size": 64}), "deepspeed.train_batch_size", "instead"),
    ("negative learning rate", dict(optimizer={"lr": -1e-4}), "optimizer.lr", "> 0"),
    ("learning rate above 1", dict(optimizer={"lr": 3.0}), "optimizer.lr", "<= 1"),
    ("zero micro batch", dict(micro_batch_size=0), "micro_batch_size", ">= 1"),
    ("zero accumulation", dict(gradient_accumulation_steps=0), "gradient_accumulation_steps", ">= 1"),
    ("checkpoint_every zero", dict(checkpoint_every=0), "checkpoint_every", "> 0"),
    ("checkpoint_every negative", dict(checkpoint_every=-5), "checkpoint_every", "> 0"),
    ("wrong type", dict(max_steps="many"), "max_steps", "int"),
    ("wrong type nested", dict(zero={"offload_optimizer": "sometimes"}), "zero.offload_optimizer", "bool"),
    ("a section that is not a mapping", dict(optimizer=0.001), "optimizer", "mapping"),
    ("ZeRO stage out of range", dict(zero={"stage": 4}), "zero.stage", "<= 3"),
    ("unknown precision", dict(precision="fp8"), "precision", "fp32"),
    ("beta out of range", dict(optimizer={"betas": [0.9, 1.5]}), "optimizer.betas", "[0, 1)"),
    ("heads do not divide hidden", dict(model={"hidden_size": 100, "num_heads": 3}), "model.num_heads", "divisible"),
    ("masked LM on a causal model", dict(model={"family": "gpt2", "task": "masked_lm"}), "model.task", "bert"),
    ("classification without labels", dict(model={"task": "classification"}), "data.label_column", "label"),
    ("sequence longer than positions", dict(data={"max_length": 1024}, model={"max_position": 512}), "data.max_length", "512"),
    ("prompt tokens past the positions", dict(mode="prompt", data={"max_length": 512}, model={"max_position": 512}),
     "data.max_length", "virtual prompt tokens"),
    ("missing model directory", dict(model={"path": "/nonexistent/model"}), "model.path", "no such model directory"),
    ("warmup as long as training", dict(max_steps=100, checkpoint_every=50, schedule={"warmup_steps": 100}),
     "schedule.warmup_steps", "shorter"),
    ("seed past numpy's 32 bits", dict(seed=2**32), "seed", "< 4294967296"),
    ("negative seed", dict(seed=-1), "seed", ">= 0"),
    ("infinite gradient clipping", dict(gradient_clipping=float("inf")), "gradient_clipping", "finite"),
    ("gradient clipping nan (as YAML .nan)", dict(gradient_clipping=float("nan")), "gradient_clipping", "finite"),
    ("gradient clipping 'inf' as text", dict(gradient_clipping="inf"), "gradient_clipping", "finite"),
    ("learning rate nan", dict(optimizer={"lr": float("nan")}), "optimizer.lr", "finite"),
    ("weight decay inf", dict(optimizer={"weight_decay": float("inf")}), "optimizer.weight_decay", "finite"),
    ("eps nan", dict(optimizer={"eps": float("nan")}), "optimizer.eps", "finite"),
    ("beta nan", dict(optimizer={"betas": [0.9, float("nan")]}), "optimizer.betas.1", "finite"),
    ("eval fraction nan", dict(data={"eval_fraction": float("nan")}), "data.eval_fraction", "finite"),
    ("dropout nan", dict(model={"dropout": float("nan")}), "model.dropout", "finite"),
    ("final LR ratio nan", dict(schedule={"min_lr_ratio": float("nan")}), "schedule.min_lr_ratio", "finite"),
    ("infinite fp16 loss scale", dict(fp16={"loss_scale": float("inf")}), "fp16.loss_scale", "finite"),
    ("infinite minimum loss scale", dict(fp16={"min_loss_scale": float("inf")}), "fp16.min_loss_scale", "finite"),
    ("LoRA dropout inf", dict(mode="lora", lora={"dropout": float("inf")}), "lora.dropout", "finite"),
    ("run name climbing out of output_root", dict(name="../../home/me"), "name", "letters, digits"),
    ("run name with a separator", dict(name="a/b"), "name", "'/'"),
    ("run name with a backslash", dict(name="a\\b"), "name", "'\\'"),
    ("run name '..'", dict(name=".."), "name", "'..'"),
    ("empty run name", dict(name=""), "name", "empty"),
    ("blank run name", dict(name="   "), "name", "empty"),
    ("run name with a newline", dict(name="a\nb"), "name", "control characters"),
    ("run name too long for a folder", dict(name="x" * 250), "name", "200 bytes"),
    ("output_root with a NUL", dict(output_root="runs\0x"), "output_root", "NUL"),
]


@pytest.mark.parametrize("what,data,field,phrase", BAD, ids=[b[0] for b in BAD])
def test_rejected_naming_its_field(what, data, field, phrase):
    cfg, problems = check(data, hardware=CPU)
    assert cfg is None, f"{what}: accepted"
    errors = [p for p in problems if p.level == "error"]
    named = [p for p in errors if p.field == field]
    assert named, f"{what}: no error names {field}: {[str(p) for p in errors]}"
    assert any(phrase in f"{p.message} {p.fix}" for p in named), [str(p) for p in named]


def test_at_least_fifteen_kinds():
    assert len({b[2] for b in BAD}) >= 15


def test_every_problem_at_once():
    """One pass lists schema errors and cross-field errors together, without noise from the bad fields."""
    data = dict(micro_batch_size=4, gradient_accumulation_steps=16, world_size=8, train_batch_size=4096,
                precison="bf16", checkpoint_every=0, zero={"stage": 0, "offload_optimizer": True})
    _, problems = check(data)
    assert {p.field for p in problems if p.level == "error"} == {
        "train_batch_size", "precison", "checkpoint_every", "zero.offload_optimizer"}


WARN = [
    ("fp16 without clipping", dict(precision="fp16", gradient_clipping=0, zero={"stage": 1}), "gradient_clipping"),
    ("high full fine-tuning LR", dict(optimizer={"lr": 0.01}), "optimizer.lr"),
    ("checkpoint after the end", dict(max_steps=100, checkpoint_every=500), "checkpoint_every"),
    ("more processes than devices", dict(world_size=16), "world_size"),
    ("metrics open to the network", dict(prometheus_port=9100, prometheus_host="0.0.0.0"), "prometheus_host"),
    ("metrics on all interfaces", dict(prometheus_port=9100, prometheus_host=""), "prometheus_host"),
    ("metrics on a LAN address", dict(prometheus_port=9100, prometheus_host="192.168.1.5"), "prometheus_host"),
    ("metrics on a host name", dict(prometheus_port=9100, prometheus_host="node7"), "prometheus_host"),
]


@pytest.mark.parametrize("what,data,field", WARN, ids=[w[0] for w in WARN])
def test_risky_but_legal_is_a_warning(what, data, field):
    gpu = Hardware(gpus=[dict(name="A100", memory_gb=80, capability="8.0")] * 8, cpu_cores=32, ram_gb=512, fp16=True, bf16=True)
    cfg, problems = check(data, hardware=gpu)
    assert cfg is not None, [str(p) for p in problems]
    assert any(p.field == field and p.level == "warning" for p in problems), [str(p) for p in problems]


def test_defaults_are_clean():
    cfg, problems = check({}, hardware=CPU)
    assert cfg == RunConfig() and problems == []


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_metrics_are_quiet(host):
    _, problems = check(dict(prometheus_port=9100, prometheus_host=host), parse=False)
    assert problems == [], [str(p) for p in problems]


def test_an_unused_metrics_host_is_quiet():
    """Without a port nothing listens, whatever the host says."""
    assert check(dict(prometheus_host="0.0.0.0"), parse=False)[1] == []


@pytest.mark.parametrize("name", ["tiny-cpu", "run_2", "Ünïcode-名前", "a.b", "x" * 200])
def test_good_run_names(name):
    cfg, problems = check(dict(name=name), parse=False)
    assert cfg is not None and cfg.name == name, [str(p) for p in problems]


def test_a_bad_value_cannot_be_assigned_either():
    cfg = RunConfig()
    for field, value in (("name", "../x"), ("gradient_clipping", float("inf")), ("seed", 2**32)):
        with pytest.raises(ValueError): setattr(cfg, field, value)
