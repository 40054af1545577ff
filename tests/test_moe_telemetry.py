"""MoE telemetry end to end on a real tiny DeepSeek-V3: the router hooks count what the model routes (plain, LoRA,
gradient checkpointing, ZeRO-3), the forced collapse is written, read back and diagnosed, and forged moe lines
cannot break or bloat the reader."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, DeepseekV3Config

from deepseek_wb.config import RunConfig
from deepseek_wb.diagnose import diagnose
from deepseek_wb.metrics import MAX_LAYERS, read_metrics
from deepseek_wb.telemetry import MoeStats, RunWriter, moe_routers

TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=3,
            first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4, n_routed_experts=4, n_shared_experts=1,
            num_experts_per_tok=2, n_group=1, topk_group=1, q_lora_rank=32, kv_lora_rank=16, qk_rope_head_dim=8,
            qk_nope_head_dim=8, v_head_dim=16, max_position_embeddings=256)
EXPERTS, TOP_K, BATCH = 4, 2, (3, 24)


def tiny(seed: int = 0):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(DeepseekV3Config(**TINY))


def force(model, winners=(0, 1)):
    "Make every router choose `winners` (DeepSeek-V3 adds e_score_correction_bias to the scores it picks by)."
    bias = torch.zeros(EXPERTS)
    bias[list(winners)] = 10.0
    for _, router, _, _ in moe_routers(model): router.e_score_correction_bias.copy_(bias)


def routed(model, moe, **kw):
    batch = torch.randint(0, 512, BATCH)
    moe.arm()
    out = model(input_ids=batch, **kw)
    return out, moe.collect()


def test_loads_and_token_counts():
    model = tiny()
    moe = MoeStats(model)
    _, layers = routed(model, moe)
    assert sorted(layers) == ["layers.1.mlp", "layers.2.mlp"]  # layer 0 is dense (first_k_dense_replace=1)
    for s in layers.values():
        assert len(s["load"]) == EXPERTS and abs(sum(s["load"]) - 1) < 1e-5
        assert s["tokens"] == BATCH[0] * BATCH[1] * TOP_K and s["top_k"] == TOP_K
        assert 1 <= s["imbalance"] <= EXPERTS / TOP_K + 1e-6
    model(input_ids=torch.randint(0, 512, BATCH))
    assert moe.counts == {}  # collected and disarmed: the next forward counts nothing


def test_forced_router_imbalance_is_the_most_there_can_be():
    model = tiny()
    force(model)
    _, layers = routed(model, MoeStats(model))
    for s in layers.values():
        assert s["load"] == [0.5, 0.5, 0.0, 0.0] and s["imbalance"] == EXPERTS / TOP_K


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpoint_recompute_is_not_counted(reentrant):
    model = tiny()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    model.train()
    moe = MoeStats(model)
    batch = torch.randint(0, 512, BATCH)
    moe.arm()
    model(input_ids=batch, labels=batch, use_cache=False).loss.backward()  # the backward runs each block's forward again
    assert {s["tokens"] for s in moe.collect().values()} == {BATCH[0] * BATCH[1] * TOP_K}


def test_lora_wrapped_model():
    from peft import LoraConfig, get_peft_model
    base = tiny()
    force(base)
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear"))  # peft 0.21 wraps the router and the experts too
    moe = MoeStats(model)
    assert moe.layers == {"layers.1.mlp": (EXPERTS, TOP_K), "layers.2.mlp": (EXPERTS, TOP_K)}
    _, layers = routed(model, moe)
    assert [s["load"] for s in layers.values()] == [[0.5, 0.5, 0.0, 0.0]] * 2


def test_forced_collapse_is_written_read_and_diagnosed(tmp_path):
    cfg = RunConfig.from_dict(dict(max_steps=100, log_every=10, schedule=dict(warmup_steps=5), model=dict(family="deepseek_v3")))
    cfg.save(tmp_path/"config.json")
    model = tiny()
    force(model)
    moe, w = MoeStats(model), RunWriter(tmp_path, tensorboard=False)
    for step in range(10, 101, 10):
        for _ in range(2):  # two micro batches per optimizer step, as with gradient accumulation
            moe.arm()
            model(input_ids=torch.randint(0, 512, BATCH))
        w.train(step, loss=2.0, grad_norm=1.0)  # no lr: the LR check is not what is tested
        w.moe(step, moe.collect())
    w.close()
    m = read_metrics(tmp_path)
    assert list(m.moe) == ["layers.1.mlp", "layers.2.mlp"] and m.bad_lines == 0
    layer = m.moe["layers.1.mlp"]
    assert layer.load.shape == (10, EXPERTS) and layer.top_k == TOP_K
    assert np.all(layer.tokens == 2 * BATCH[0] * BATCH[1] * TOP_K) and np.all(layer.imbalance == EXPERTS / TOP_K)
    (f,) = diagnose(tmp_path)
    assert f.kind == "expert_collapse"
    hit = f.evidence["layers"][0]
    assert (hit["dead"], hit["dominant"], hit["steps"]) == ([2, 3], True, [80, 100])
    assert f.changes["optimizer.lr"] == pytest.approx(cfg.optimizer.lr / 2, rel=1e-2) and "e_score_correction_bias" in f.advice
    f.apply(cfg)  # the changes make a valid config


def test_healthy_router_raises_nothing(tmp_path):
    RunConfig.from_dict(dict(max_steps=100, model=dict(family="deepseek_v3"))).save(tmp_path/"config.json")
    w, rng = RunWriter(tmp_path, tensorboard=False), np.random.default_rng(0)
    for step in range(10, 101, 10):
        w.train(step, loss=2.0, grad_norm=1.0)  # no lr: the LR check is not what is tested
        load = rng.dirichlet([100.0] * EXPERTS)
        w.moe(step, {"layers.1.mlp": dict(load=load.tolist(), imbalance=float(load.max() * EXPERTS), tokens=4096, top_k=TOP_K)})
    assert diagnose(tmp_path) == []


def test_reader_survives_forged_moe_lines(tmp_path):
    line = lambda step, layers: json.dumps({"kind": "moe", "time": 1.0, "step": step, "layers": layers})
    ok = dict(load=[0.25] * 4, imbalance=1.0, tokens=64, top_k=2)
    lines = [line(1, {"layers.1.mlp": ok}),
             line(2, {f"l{i}": ok for i in range(100_000)}),  # a huge layer dict: the first MAX_LAYERS - 1 more, no more
             line(3, {"layers.1.mlp": dict(ok, load=["a", "b", "c", "d"])}),  # not numbers: the line is skipped
             line(4, {"layers.1.mlp": dict(ok, load=None)}), line(5, {"layers.1.mlp": "load"}),
             line(6, {"layers.1.mlp": dict(ok, load=[float("nan")] * 4, imbalance=float("nan"))}),  # kept as NaN
             line(7, {"layers.1.mlp": dict(ok, load=[1e308, -1e308, 0, 0], imbalance=float("inf"))}),
             '{"kind":"moe","step":8,"layers":{"x":{"load":[' + "0," * 100_000 + '0]}}}',  # longer than MAX_EXPERTS
             '{"kind":"moe","step":9,"layers":{"x":{"load":[1]',  # torn
             line(10, {"layers.1.mlp": ok})]
    (tmp_path/"metrics.jsonl").write_text("\n".join(lines) + "\n")
    m = read_metrics(tmp_path)
    assert m.bad_lines == 5
    assert len(m.moe) == MAX_LAYERS and m.parser.ignored_layers == 100_000 - (MAX_LAYERS - 1)
    assert sum(l.load.size for l in m.moe.values()) <= 4 * (4 + MAX_LAYERS)  # what the lines held, no more
    first = m.moe["layers.1.mlp"]
    assert first.step.tolist() == [1, 6, 7, 10] and np.isnan(first.load[1]).all() and np.isinf(first.imbalance[2])
    assert [f.kind for f in diagnose(tmp_path)] == ["unreadable_lines"]  # the skipped lines; NaN and 1e308 are no collapse


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: a host sync is only a sync there")
def test_counting_does_not_sync_the_device():
    model = tiny().cuda()
    moe = MoeStats(model)
    name, router, n, _ = moe_routers(model)[0]
    hook = moe._hook(name, n)
    idx = torch.randint(0, n, (4096, TOP_K), device="cuda")
    moe.arm()
    torch.cuda.set_sync_debug_mode("error")  # any host sync raises
    try:
        for _ in range(3): hook(router, (), (None, None, idx))
    finally: torch.cuda.set_sync_debug_mode("default")
    assert moe.collect()[name]["tokens"] == 3 * idx.numel()


ZERO3 = """
import os, sys, torch, deepspeed
from transformers import AutoModelForCausalLM, DeepseekV3Config
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE
from deepseek_wb.distributed import all_reduce
from deepseek_wb.telemetry import MoeStats
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(DeepseekV3Config(**{tiny}))
deepspeed.utils.set_z3_leaf_modules(model, [DeepseekV3MoE])
ds = dict(train_micro_batch_size_per_gpu={b}, gradient_accumulation_steps=2, zero_optimization=dict(stage=3),
          optimizer=dict(type="AdamW", params=dict(lr=1e-3, torch_adam=True)))
engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds)
moe = MoeStats(engine.module)
for micro in range(2):
    moe.arm()
    batch = torch.randint(0, 512, ({b}, {t}))
    engine.backward(engine(input_ids=batch, labels=batch).loss)
    engine.step()
assert engine.global_steps == 1  # both micro batches in one optimizer step
layers = moe.collect(all_reduce)
print("MOE", sorted(layers), sorted({{s["tokens"] for s in layers.values()}}), [round(sum(s["load"]), 5) for s in layers.values()])
"""


def test_zero3_counts(tmp_path):
    """Under ZeRO-3 (MoE blocks as leaf modules, as the job sets them) the router hooks fire and count every micro batch."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    script = tmp_path/"zero3.py"
    script.write_text(textwrap.dedent(ZERO3.format(tiny=TINY, b=BATCH[0], t=BATCH[1])))
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    line = next((l for l in out.stdout.splitlines() if l.startswith("MOE ")), None)
    assert line, out.stdout[-2000:] + out.stderr[-4000:]
    assert line == f"MOE ['layers.1.mlp', 'layers.2.mlp'] [{2 * BATCH[0] * BATCH[1] * TOP_K}] [1.0, 1.0]", line
