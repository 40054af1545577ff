"""Packing: several examples per row with per-example position ids, so attention never crosses examples.

The test the issue asks for: the loss of a packed batch equals the loss of its examples computed one at a
time (token-weighted mean over every labelled token, atol 1e-5), on a tiny Llama and a tiny DeepSeek-V3
built from configs, float32, with sdpa and eager attention, for text (tokens.tokenize) and chat
(chat.tokenize_chat) rows.
"""
import functools
import random

import datasets
import pytest
import torch
import transformers

from deepseek_wb.chat import TEMPLATES, attach_template, chat_texts, demo_instructions, tokenize_chat
from deepseek_wb.data import demo_corpus
from deepseek_wb.tokens import IGNORE, collate_causal, fill_ratio, pack_examples, pack_lengths, text_pieces, tokenize, train_tokenizer

VOCAB = 512


def tiny(family: str, attn: str):
    "A tiny model of `family` built from a config, in eval mode (no dropout), float32, without a key/value cache."
    torch.manual_seed(0)
    if family == "llama":
        cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0)
    else:
        cfg = transformers.DeepseekV3Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                                            num_hidden_layers=2, first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
                                            n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, n_group=1, topk_group=1,
                                            q_lora_rank=32, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
                                            max_position_embeddings=256, pad_token_id=0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation=attn, dtype=torch.float32).eval()
    model.config.use_cache = False  # with a cache transformers builds no block mask from position ids (see test_a_cache_leaks)
    return model


@functools.lru_cache(maxsize=1)
def tokenizer():
    tok = train_tokenizer(list(demo_corpus()["text"][:800]) + list(chat_texts(demo_instructions(300))), vocab_size=VOCAB,
                          extra_specials=TEMPLATES["chatml"].special_tokens)
    assert attach_template(tok, "chatml") == [] and len(tok) == VOCAB
    return tok


def examples_of(row: dict) -> list[tuple[list[int], list[int]]]:
    "The examples a packed row holds, as (input_ids, labels), split where the positions restart."
    starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["position_ids"])]
    return [(row["input_ids"][a:z], row["labels"][a:z]) for a, z in zip(starts, starts[1:])]


def loss_one_by_one(model, rows) -> float:
    "The token-weighted mean loss over every labelled token, each example run alone."
    total = count = 0
    for row in rows:
        for ids, labels in examples_of(row):
            n = sum(1 for t in labels[1:] if t != IGNORE)
            if n:
                out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
                total, count = total + out.loss.item() * n, count + n
    return total / count


def logits_gap(model, rows, batch) -> float:
    "The largest difference between the logits of the packed batch and those of its examples run alone."
    logits, gap = model(**batch).logits, 0.0
    for r, row in enumerate(rows):
        at = 0
        for ids, _ in examples_of(row):
            alone = model(input_ids=torch.tensor([ids])).logits[0]
            gap, at = max(gap, (logits[r, at:at + len(ids)] - alone).abs().max().item()), at + len(ids)
    return gap


def busiest(ds, k=4):
    "The `k` rows that hold the most examples."
    return sorted(ds, key=lambda r: -r["position_ids"].count(0))[:k]


@functools.lru_cache(maxsize=2)
def packed_rows(kind: str):
    if kind == "text":
        ds = tokenize(demo_corpus().select(range(300)), tokenizer(), max_length=64)
    else:
        ds = tokenize_chat(demo_instructions(200), tokenizer(), max_length=160, template="chatml")
    rows = busiest(ds)
    assert all(r["position_ids"].count(0) >= 2 for r in rows)
    return rows


@pytest.mark.parametrize("family", ["llama", "deepseek_v3"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("kind", ["text", "chat"])
def test_packed_loss_equals_one_by_one(family, attn, kind):
    model, rows = tiny(family, attn), packed_rows(kind)
    with torch.no_grad():
        batch = collate_causal(rows, pad_id=tokenizer().pad_token_id, pad_to=192)
        assert "attention_mask" not in batch
        packed = model(**batch).loss.item()
        alone = loss_one_by_one(model, rows)
        gap = logits_gap(model, rows, batch)
    assert packed == pytest.approx(alone, abs=1e-5)
    assert gap < 1e-4  # not only the mean: every position sees exactly its own example


def test_a_cache_leaks():
    "Why the model trains with use_cache=False: with a cache, the block mask is not built and attention crosses examples."
    model, rows = tiny("llama", "sdpa"), packed_rows("text")
    batch = collate_causal(rows, pad_id=0)
    with torch.no_grad():
        assert logits_gap(model, rows, batch) < 1e-4
        model.config.use_cache = True
        assert logits_gap(model, rows, batch) > 1e-2


def test_padded_batch_loss_equals_one_by_one():
    "Padding stays an option: rows not packed get an attention mask, and the pads take no loss."
    model = tiny("llama", "sdpa")
    rows = list(tokenize_chat(demo_instructions(8), tokenizer(), max_length=128, template="chatml", packing=False))
    with torch.no_grad():
        batch = collate_causal(rows, pad_id=tokenizer().pad_token_id)
        assert batch["attention_mask"].sum().item() == sum(len(r["input_ids"]) for r in rows) < batch["input_ids"].numel()
        padded = model(**batch).loss.item()
        as_packed = [dict(r, position_ids=list(range(len(r["input_ids"])))) for r in rows]  # one example per row
        alone = loss_one_by_one(model, as_packed)
    assert padded == pytest.approx(alone, abs=1e-5)


def test_first_label_of_every_example_is_ignored():
    rows = packed_rows("chat") + packed_rows("text")
    for row in rows:
        for ids, labels in examples_of(row):
            assert labels[0] == IGNORE
    batch = collate_causal(rows[:2], pad_id=0, pad_to=192)
    assert (batch["labels"][:, -1] == IGNORE).all()  # padding carries no label


def test_pack_lengths_places_every_example_once():
    rng = random.Random(0)
    lengths = [rng.randint(1, 100) for _ in range(3000)]
    rows = pack_lengths(lengths, 128)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 128 for r in rows)
    assert rows == pack_lengths(lengths, 128)
    assert sum(lengths) / (len(rows) * 128) > 0.97


def test_long_texts_are_cut_with_positions_from_zero():
    pieces = text_pieces([list(range(10, 30)), [5]], max_length=8, eos=2)
    assert pieces == [list(range(10, 18)), list(range(18, 26)), [26, 27, 28, 29, 2], [5, 2]]
    packed = pack_examples(pieces, pieces, 8)
    assert all(p[0] == 0 for p in packed["position_ids"])
    assert sorted(len(r) for r in packed["input_ids"]) == [7, 8, 8]  # 5 + 2 share a row


def test_fill_ratio_of_packed_text():
    ds = tokenize(demo_corpus().select(range(300)), tokenizer(), max_length=64)
    assert fill_ratio(ds, 64) > 0.95
    assert fill_ratio(datasets.Dataset.from_dict({"input_ids": [[1, 2], [3]]}), 4) == 3 / 8
