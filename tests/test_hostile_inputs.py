"""Inputs from someone else that once got further than they should: each is refused, skipped or shown escaped."""
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import deepseek_wb.data as data
from deepseek_wb.chat import MAX_TURNS, check_messages, load_chat
from deepseek_wb.data import DataError, load_texts
from deepseek_wb.jobs import Job
from deepseek_wb.sources import LINEAGE, describe_lineage
from deepseek_wb.tokens import load_tokenizer, train_tokenizer

ESCAPES = "\x1b]52;c;aGk=\x07\x1b[2J"  # set the clipboard, clear the screen


def bomb(path, rows=4000, size=100_000):
    "A few KB of Parquet that decode to rows x size bytes: one huge value, dictionary-encoded and compressed."
    big = "x" * size
    table = pa.table({"text": pa.array([big] * rows).dictionary_encode(), "prompt": [big] * rows, "response": [big] * rows})
    pq.write_table(table, path, compression="zstd", use_dictionary=True)
    return path


def test_a_parquet_decompression_bomb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MIN_DECODED", 8 << 20)  # the floor, lowered so the test stays small
    path = bomb(tmp_path / "bomb.parquet")
    assert path.stat().st_size < 100_000
    with pytest.raises(DataError, match="decodes to more than"):
        load_texts(path)
    with pytest.raises(DataError, match="decodes to more than"):
        load_chat(path, "prompt_response")


def test_links_and_fifos_in_a_data_folder_are_not_read(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"text": "a real row"}\n')
    secret = tmp_path / "secret.txt"
    secret.write_text("FAKE_SECRET=1\n")
    (folder / "env.txt").symlink_to(secret)  # as a link to /proc/self/environ would be
    os.mkfifo(folder / "pipe.txt")  # reading it would wait forever
    ds, _ = load_texts(folder)
    assert ds["text"] == ["a real row"]


def test_a_tokenizer_folder_naming_a_model_class_is_refused(tmp_path):
    tok = train_tokenizer(["some text to train on"] * 20, vocab_size=300)
    tok.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(dict(config, tokenizer_class="GPT2LMHeadModel")))
    with pytest.raises(ValueError, match="is not a tokenizer class"):
        load_tokenizer(tmp_path)


def test_too_many_turns_is_a_bad_record():
    turns = [{"role": r, "content": "a"} for _ in range(MAX_TURNS) for r in ("user", "assistant")]
    _, problem = check_messages(turns)
    assert problem[0] == "too_many_turns"


def test_a_forged_run_directory_prints_no_escape_sequence(tmp_path):
    (tmp_path / "status.json").write_text(json.dumps({"state": "failed" + ESCAPES, "error": "boom" + ESCAPES}))
    (tmp_path / LINEAGE).write_text(json.dumps({"sources": [{"source": "x" + ESCAPES, "weight": ESCAPES}]}))
    shown = repr(Job(tmp_path)) + describe_lineage(json.loads((tmp_path / LINEAGE).read_text()))
    assert "\x1b" not in shown and "\x07" not in shown and "\\x1b]52" in shown
    assert describe_lineage({"sources": 5, "clean": []})  # a wrong shape is shown as nothing, not a crash
