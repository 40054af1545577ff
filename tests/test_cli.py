"""The installed `deepseek-wb` command, run as a user runs it."""
import json
import os
import shutil
import subprocess
import sys

import pytest

EXE = shutil.which("deepseek-wb") or pytest.skip("deepseek-wb is not installed", allow_module_level=True)
EXE = os.path.abspath(EXE)  # `make test` puts .venv/bin on PATH as a relative path; some tests run in another folder


def run(*args, cwd=None):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_env_json():
    r = run("env", "--json")
    assert r.returncode in (0, 1), r.stderr
    report = json.loads(r.stdout)  # stdout is JSON and nothing else
    names = {row["name"] for row in report["rows"]}
    assert {"Python", "torch", "CUDA available", "DeepSpeed", "DeepSpeed ops", "fp16 training", "bf16 training"} <= names
    assert report["ok"] == (r.returncode == 0)
    assert report["facts"]["torch"]


def test_env_text_says_plainly_when_there_is_no_gpu():
    r = run("env")
    if json.loads(run("env", "--json").stdout)["facts"]["cuda_available"]:
        pytest.skip("this machine has a GPU")
    assert "no GPU" in r.stdout


def test_config_check_valid_and_invalid(tmp_path):
    ok = run("config", "check", "tiny-cpu", "--here")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "valid" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("micro_batch_size: 4\ntrain_batch_size: 10\nzero:\n  stage: 1\n  offload_param: true\nmax_step: 5\n")
    r = run("config", "check", str(bad))
    assert r.returncode == 1
    for field, line in (("train_batch_size", 2), ("zero.offload_param", 5), ("max_step", 6)):
        assert f"{bad}:{line}: error: {field}" in r.stdout, r.stdout
    assert "did you mean 'max_steps'" in r.stdout


def test_config_check_json_and_overrides():
    r = run("config", "check", "tiny-cpu", "precision=fp16", "zero.stage=1", "gradient_clipping=0", "--json")
    out = json.loads(r.stdout)
    assert out["valid"] and r.returncode == 0  # fp16 is legal in itself; --here would reject it on a CPU
    assert any(p["field"] == "gradient_clipping" and p["level"] == "warning" for p in out["problems"])


def test_config_deepspeed_prints_only_json():
    r = run("config", "deepspeed", "seed-zero3-offload")
    assert r.returncode == 0, r.stderr
    ds = json.loads(r.stdout)
    assert ds["train_batch_size"] == 4096 and ds["zero_optimization"]["stage"] == 3


def test_config_deepspeed_refuses_an_invalid_config():
    r = run("config", "deepspeed", "tiny-cpu", "zero.offload_optimizer=true")
    assert r.returncode == 1 and r.stdout == ""
    assert "zero.offload_optimizer" in r.stderr


def test_usage_error_exit_code():
    r = run("config")
    assert r.returncode == 2 and "usage" in r.stderr


def test_module_probe_is_json():
    r = subprocess.run([sys.executable, "-m", "deepseek_wb.env", "--probe"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1])["torch"]


def test_data_inspect_names_file_and_line(tmp_path):
    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "fine too"}\n{"text": broken}\n')
    r = run("data", "inspect", str(bad))
    assert r.returncode == 1 and f"{bad}:3" in r.stderr, r.stderr
    ok = run("data", "inspect", str(bad), "--lenient", "--json")
    out = json.loads(ok.stdout)
    assert ok.returncode == 0 and out["rows"] == 2 and out["problems"] == {"malformed_json": 1}
    assert out["where"]["malformed_json"] == [f"{bad}:3"]


def test_data_inspect_missing_column_lists_columns(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("body,topic\nhello there,a\n")
    r = run("data", "inspect", str(f))
    assert r.returncode == 1 and "the columns are: body, topic" in r.stderr


def test_data_clean_writes_data_and_report(tmp_path):
    out = tmp_path / "clean.parquet"
    r = run("data", "clean", "demo", str(out), "--rules", "html", "whitespace", "length:min_tokens=20", "exact_dedup")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "clean.parquet.report.json").read_text())
    assert [x["rule"] for x in report["pipeline"]] == ["html", "whitespace", "length", "exact_dedup"]
    removed = sum(x["removed"] for x in report["clean"]["rules"])
    assert report["clean"]["rows_out"] == report["clean"]["rows_in"] - removed
    import datasets
    ds = datasets.Dataset.from_parquet(str(out))
    assert len(ds) == report["clean"]["rows_out"] and all(len(t.split()) >= 20 for t in ds["text"])


def test_overrides_after_options():
    """The README's own line: `key=value` overrides may follow the options, for every command that takes them."""
    cfg = "tiny-cpu"
    r = run("config", "check", cfg, "--here", "optimizer.lr=1e-4")
    assert r.returncode == 0 and "valid" in r.stdout, r.stdout + r.stderr
    r = run("config", "check", cfg, "max_steps=50", "--json", "optimizer.lr=2", "checkpoint_every=25")
    assert r.returncode == 1 and [p["field"] for p in json.loads(r.stdout)["problems"]] == ["optimizer.lr"], r.stdout
    r = run("config", "deepspeed", cfg, "zero.stage=0", "zero.offload_optimizer=true")
    assert r.returncode == 1 and "zero.offload_optimizer" in r.stderr
    for command in ("launch", "train"):  # refused by the check: nothing starts
        r = run(command, cfg, "--procs", "1", "zero.stage=0", "--run-dir", "unused", "zero.offload_optimizer=true")
        assert r.returncode == 1 and "zero.offload_optimizer" in r.stderr, r.stderr


def test_a_leftover_word_is_a_usage_error():
    r = run("config", "check", "tiny-cpu", "--here", "lr")
    assert r.returncode == 2 and "unrecognized arguments: lr (an override is written key=value" in r.stderr, r.stderr
    r = run("status", "somewhere", "max_steps=5")  # status takes no overrides
    assert r.returncode == 2 and "unrecognized arguments: max_steps=5" in r.stderr, r.stderr


def test_data_clean_never_replaces_what_it_did_not_write(tmp_path):
    corpus = tmp_path / "data" / "corpus.jsonl"
    corpus.parent.mkdir()
    corpus.write_text("".join(json.dumps({"text": f"row number {i} of a small corpus"}) + "\n" for i in range(5)))
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    (tmp_path / "notes.jsonl.report.json").write_text("my notes")
    for out in (keep, corpus.parent, corpus, tmp_path / "notes.jsonl"):
        r = run("data", "clean", str(corpus), str(out), "--force", cwd=tmp_path)
        assert r.returncode == 1 and str(out) in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert "cleaning" not in r.stderr  # refused before the pipeline runs
    r = run("data", "clean", str(corpus), ".", "--force", cwd=tmp_path)
    assert r.returncode == 1 and "current folder" in r.stderr, r.stderr
    assert (keep / "notes.txt").read_text() == "mine" and (tmp_path / "notes.jsonl.report.json").read_text() == "my notes"
    assert corpus.is_file() and not (tmp_path / "notes.jsonl").exists()


def test_data_clean_force_replaces_its_own_output(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"row number {i} of a small corpus"}) + "\n" for i in range(5)))
    out = tmp_path / "clean.jsonl"
    assert run("data", "clean", str(corpus), str(out), "--rules", "whitespace").returncode == 0
    again = run("data", "clean", str(corpus), str(out), "--rules", "whitespace", "length:min_tokens=100")
    assert again.returncode == 1 and "--force" in again.stderr and len(out.read_text().splitlines()) == 5
    forced = run("data", "clean", str(corpus), str(out), "--rules", "whitespace", "exact_dedup", "--force")
    assert forced.returncode == 0, forced.stderr
    report = json.loads((tmp_path / "clean.jsonl.report.json").read_text())
    assert [r["rule"] for r in report["pipeline"]] == ["whitespace", "exact_dedup"]


def test_data_clean_output_with_a_trailing_slash(tmp_path):
    """`out/` is the folder `out`: its report goes beside it (out.report.json), so --force later finds only its own files."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"row number {i} of a small corpus"}) + "\n" for i in range(5)))
    r = run("data", "clean", str(corpus), "out/", "--rules", "whitespace", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.report.json").is_file() and not (tmp_path / "out" / ".report.json").exists()
    again = run("data", "clean", str(corpus), "out/", "--rules", "whitespace", "exact_dedup", "--force", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert [x["rule"] for x in json.loads((tmp_path / "out.report.json").read_text())["pipeline"]] == ["whitespace", "exact_dedup"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl", "out", "out.report.json"]


def test_data_clean_rules_file_without_aliases(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"text": "a row"}) + "\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text("- &r {rule: html}\n- *r\n")
    r = run("data", "clean", str(corpus), str(tmp_path / "out.jsonl"), "--rules-file", str(rules))
    assert r.returncode == 1 and f"{rules}:1: YAML anchors and aliases are not accepted in a rules file; write the values out" in r.stderr, r.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_config_deepspeed_refuses_extras_that_touch_files_or_the_network(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\ndeepspeed:\n  wandb: {enabled: true}\n  flops_profiler: {enabled: true, output_file: victim.txt}\n")
    r = run("config", "deepspeed", str(cfg))
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert "deepspeed.wandb" in r.stderr and "deepspeed.flops_profiler.output_file" in r.stderr


def test_data_inspect_names_a_chat_format_and_locates_bad_records(tmp_path):
    f = tmp_path / "chats.jsonl"
    f.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
                 '{"messages": [{"role": "assistant", "content": "first"}]}\n'
                 '{"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]}\n')
    r = run("data", "inspect", str(f), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["format"] == "messages" and out["records"] == 1
    assert out["report"]["problems"] == {"turns_out_of_order": 1, "unknown_role": 1}
    assert out["report"]["details"]["unknown_role"][0][0] == f"{f}:3"
