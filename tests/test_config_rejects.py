"""Every kind of bad config is rejected before anything runs, and the error names its field."""
import json
import os
import subprocess
import sys

import pytest

from deepseek_wb.config import ConfigError, RunConfig, check, check_file
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
    ("run name with a newline", dict(name="a\nb"), "name", "control"),
    ("run name a remote shell would run", dict(name="x;touch${IFS}PWNED;#"), "name", "shell character"),
    ("run name with a space", dict(name="my run"), "name", "no space"),
    ("run name too long for a folder", dict(name="x" * 250), "name", "200 bytes"),
    ("output_root with a NUL", dict(output_root="runs\0x"), "output_root", "NUL"),
    # the deepspeed extras: no paths for DeepSpeed, no metrics sent away, no other checkpoint loading
    ("flops profile written over any file", dict(deepspeed={"flops_profiler": {"enabled": True, "output_file": "/home/me/.bashrc"}}),
     "deepspeed.flops_profiler.output_file", "file or folder"),
    ("NVMe offload folder", dict(deepspeed={"zero_optimization": {"offload_param": {"device": "nvme", "nvme_path": "/mnt/x"}}}),
     "deepspeed.zero_optimization.offload_param.nvme_path", "file or folder"),
    ("a path five levels down", dict(deepspeed={"data_efficiency": {"data_sampling": {"curriculum_learning": {"curriculum_metrics": {
        "seqlen": {"index_to_sample_path": "/x"}}}}}}),
     "deepspeed.data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.seqlen.index_to_sample_path", "file or folder"),
    ("a path in a list", dict(deepspeed={"compile": {"passes": [{"dump_dir": "/x"}]}}), "deepspeed.compile.passes.0.dump_dir", "file or folder"),
    ("metrics sent to Weights & Biases", dict(deepspeed={"wandb": {"enabled": True}}), "deepspeed.wandb", "over the network"),
    ("metrics sent to Comet", dict(deepspeed={"comet": {"enabled": True, "api_key": "k"}}), "deepspeed.comet", "over the network"),
    ("checkpoints sent to Nebula", dict(deepspeed={"nebula": {"enabled": True}}), "deepspeed.nebula", "Nebula"),
    ("DeepSpeed's TensorBoard writer", dict(deepspeed={"tensorboard": {"enabled": True, "output_path": "/tmp/x"}}),
     "deepspeed.tensorboard", "outside the run directory"),
    ("DeepSpeed's CSV monitor", dict(deepspeed={"csv_monitor": {"enabled": True, "job_name": "../../x"}}),
     "deepspeed.csv_monitor", "outside the run directory"),
    ("autotuning's files", dict(deepspeed={"autotuning": {"enabled": True}}), "deepspeed.autotuning", "autotuning_metric.json"),
    ("universal checkpoints unpickled", dict(deepspeed={"checkpoint": {"load_universal": True}}),
     "deepspeed.checkpoint.load_universal", "weights_only=False"),
    ("another checkpoint writer", dict(deepspeed={"checkpoint": {"writer": {"type": "fast", "decoupled": True}}}),
     "deepspeed.checkpoint.writer", "checkpoints"),
    ("the legacy checkpoint format", dict(deepspeed={"checkpoint": {"checkpoint_serialization": False}}),
     "deepspeed.checkpoint.checkpoint_serialization", "checkpoints"),
    ("node-local checkpoint storage", dict(deepspeed={"checkpoint": {"use_node_local_storage": True}}),
     "deepspeed.checkpoint.use_node_local_storage", "checkpoints"),
    ("another checkpoint engine", dict(deepspeed={"datastates_ckpt": {"host_cache_size": 1}}), "deepspeed.datastates_ckpt", "checkpoint engine"),
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


def test_harmless_deepspeed_extras_pass():
    """A profiler that prints to the log, the communication logger and checkpoint tag validation stay available."""
    extras = {"flops_profiler": {"enabled": True, "profile_step": 2}, "comms_logger": {"enabled": True},
              "checkpoint": {"tag_validation": "Fail"}}
    cfg, problems = check(dict(deepspeed=extras), hardware=CPU)
    assert cfg is not None and problems == [], [str(p) for p in problems]
    assert cfg.to_deepspeed()["checkpoint"] == {"tag_validation": "Fail"}


@pytest.mark.parametrize("extras", [{"flops_profiler": {"enabled": True, "output_file": "victim.txt"}}, {"wandb": {"enabled": True}},
                                    {"checkpoint": {"load_universal": True}}, {"tensorboard": {"enabled": True}}])
def test_to_deepspeed_never_emits_a_refused_extra(extras):
    """A RunConfig built or changed without `check` cannot carry them to DeepSpeed either."""
    with pytest.raises(ValueError, match="deepspeed"): RunConfig(deepspeed=extras).to_deepspeed()
    cfg = RunConfig()
    cfg.deepspeed.update(extras)
    with pytest.raises(ValueError, match="remove deepspeed."): cfg.to_deepspeed()


def test_a_refused_extra_names_its_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: x\ndeepspeed:\n  flops_profiler:\n    enabled: true\n    output_file: /home/me/.bashrc\n")
    _, problems = check_file(f)
    assert [(p.field, p.line) for p in problems] == [("deepspeed.flops_profiler.output_file", 5)]


BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))


@pytest.mark.parametrize("text,field,line,phrase", [
    (BOMB, "(anchors)", 1, "anchors and aliases are not accepted in a config file"),
    ("name: x\noptimizer: &o {lr: 0.001}\n", "(anchors)", 2, "anchors and aliases"),
    ("name: x\n<<: {max_steps: 5}\nbase: &b {}\n", "(anchors)", 3, "anchors and aliases"),
    ("name: x\n" + "#\n" * 600_000, "(file)", None, "larger than 1,000,000 bytes"),
    ("deepspeed: " + "{a: " * 40 + "1" + "}" * 40 + "\n", "(file)", None, "nested more than 32 levels"),
    ("deepspeed: " + "[" * 5000 + "]" * 5000 + "\n", "(file)", None, "nested more than 32 levels"),
    ("name: x\x07\n", "(syntax)", None, "special characters"),
])
def test_files_no_reader_can_choke_on(tmp_path, text, field, line, phrase):
    """An alias bomb, an oversized or deeply nested file, a control character: a clear error at once, naming the line."""
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e: RunConfig.load(f)
    [p] = e.value.problems
    assert (p.field, p.line) == (field, line) and phrase in f"{p.message} {p.fix}", str(p)
    if field == "(anchors)": assert p.fix == "write the values out"


def test_deep_json_is_refused(tmp_path):
    f = tmp_path / "c.json"
    for depth in (40, 700, 5000):  # past the cap; past what copy.deepcopy survives; past what json itself parses
        f.write_text('{"deepspeed": ' + '{"a": ' * depth + "1" + "}" * (depth + 1))
        with pytest.raises(ConfigError, match="nested more than 32 levels"): RunConfig.load(f)


OWN_CODE = """import pathlib
pathlib.Path({marker!r}).write_text("code from the folder ran")
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
class Config(GPT2Config): model_type = "own"
class Model(GPT2LMHeadModel): config_class = Config
class Tok(PreTrainedTokenizerFast): pass
"""

LOADERS = """
import sys
from deepseek_wb.config import CustomCodeRefused, ModelConfig, RunConfig, check, hf_config
from deepseek_wb.models import build_base, build_tokenizer
from deepseek_wb.tokens import load_tokenizer
folder = sys.argv[1]
for name, load in (("hf_config", lambda: hf_config(ModelConfig(path=folder))), ("load_tokenizer", lambda: load_tokenizer(folder)),
                   ("build_tokenizer", lambda: build_tokenizer(RunConfig(model=dict(path=folder)))),
                   ("build_base", lambda: build_base(RunConfig(model=dict(path=folder))))):
    try: load(); print(name, "loaded")
    except CustomCodeRefused as e: print(name, "refused", "never runs code" in str(e))
print("check", [p.field for p in check(dict(model=dict(path=folder)), parse=False)[1]])
"""


def test_a_model_folder_cannot_run_its_own_code(tmp_path):
    """A folder whose config asks for classes of its own (auto_map): refused, and its code never runs, even with a 'y' on stdin."""
    folder, marker = tmp_path / "model", tmp_path / "ran"
    folder.mkdir()
    (folder / "own.py").write_text(OWN_CODE.format(marker=str(marker)))
    auto_map = {"AutoConfig": "own.Config", "AutoModelForCausalLM": "own.Model", "AutoTokenizer": ["own.Tok", "own.Tok"]}
    (folder / "config.json").write_text(json.dumps(dict(model_type="own", n_embd=32, n_layer=1, n_head=2, vocab_size=64, auto_map=auto_map)))
    (folder / "tokenizer_config.json").write_text(json.dumps(dict(auto_map={"AutoTokenizer": ["own.Tok", "own.Tok"]})))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))  # where transformers would copy the code
    r = subprocess.run([sys.executable, "-c", LOADERS, str(folder)], input="y\n" * 20, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["hf_config refused True", "load_tokenizer refused True", "build_tokenizer refused True",
                                     "build_base refused True", "check ['model.path']"], r.stdout + r.stderr
    assert not marker.exists() and "run the custom code" not in r.stdout + r.stderr
