"""Trained models from real runs export to ONNX with parity, their cache works for generation, INT8 is reported on, and bad input is refused first."""
import fcntl
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, DynamicCache, GPT2Config

import deepseek_wb.export as export
from deepseek_wb.data import demo_corpus
from deepseek_wb.export import (TENSORRT, ExportError, CausalLMWithCache, OnnxCausalLM, ParityError, TOLERANCE, export_model,
                                find_model, gpu_report, load_model, positions, quantize, read_labelled, write_whole)
from deepseek_wb.jobs import launch
from deepseek_wb.tokens import load_tokenizer, train_tokenizer
from jobs_util import tiny_config

RUNS = {  # one short run of each kind, trained once for the module, side by side
    "lora": dict(max_steps=30, checkpoint_every=30, mode="lora", merge_lora=True, **{"lora.r": 4}),
    "classifier": dict(max_steps=30, checkpoint_every=30, **{"model.family": "bert", "model.task": "classification",
                                                             "model.num_labels": 16, "data.label_column": "label",
                                                             "data.packing": False, "optimizer.lr": 0.003}),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    jobs = {name: launch(tiny_config(**values), run_dir=root / name) for name, values in RUNS.items()}
    for name, job in jobs.items():
        status = job.wait(timeout=600)
        assert status["state"] == "finished", (name, status, job.tail(30))
    return {name: job.run_dir for name, job in jobs.items()}


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory):
    "Labelled texts in a JSONL file, as a user would give them: every 64th of the demo corpus, most of its classes."
    ds = demo_corpus()
    rows = ds.select(range(0, len(ds), len(ds) // 64))
    path = tmp_path_factory.mktemp("data") / "eval.jsonl"
    path.write_text("".join(json.dumps(dict(text=t, label=y)) + "\n" for t, y in zip(rows["text"], rows["label"])))
    return path


@pytest.fixture(scope="module")
def lora_export(runs):
    return export_model(runs["lora"])  # final/ is the adapter: merged in before export


def test_lora_run_exports_a_causal_lm_with_its_cache(runs, lora_export):
    r = lora_export
    assert (r["exporter"], r["adapter"], r["lora_merged"], r["task"]) == ("dynamo", "LORA", True, "causal_lm")
    assert r["max_abs_diff"] <= TOLERANCE and len(r["parity"]) >= 3
    shapes = [p["shape"] for p in r["parity"]]
    assert r["trace_shape"] not in shapes
    assert any(s["sequence"] == 1 and s["past"] > 0 for s in shapes) and any(s["past"] == 0 for s in shapes)
    assert r["inputs"]["past_key_values.0.key"][0::2] == ["batch_size", "past_sequence_length"]
    assert r["inputs"]["attention_mask"] == ["batch_size", "past_sequence_length + sequence_length"]
    assert r["outputs"]["present.1.value"][0::2] == ["batch_size", "past_sequence_length + sequence_length"]
    export_dir = runs["lora"] / "export"
    assert json.loads((export_dir / "report.json").read_text()) == json.loads(json.dumps(r))
    assert load_tokenizer(export_dir).get_vocab() == load_tokenizer(runs["lora"] / "final").get_vocab()
    if not torch.cuda.is_available():
        assert r["gpu"]["torch_bf16"] is None and all("no CUDA device" in line for line in r["gpu"]["notes"])


def test_onnx_matches_the_runs_merged_model_at_shapes_never_traced(runs, lora_export):
    """Against merged/ as the job wrote it (merged by the job, not by export): a prompt, decode steps, a padded row."""
    merged = AutoModelForCausalLM.from_pretrained(runs["lora"] / "merged").eval()
    sess = ort.InferenceSession(lora_export["onnx"])
    c = merged.config
    g = torch.Generator().manual_seed(7)
    for batch, past_len, new in [(5, 9, 1), (2, 0, 13), (3, 6, 4)]:
        ids = torch.randint(3, c.vocab_size, (batch, past_len + new), generator=g)
        mask = torch.ones_like(ids)
        mask[0, :2] = 0  # a row padded on the left
        pos, cache = positions(mask), DynamicCache(config=c)
        past = {f"past_key_values.{i}.{kv}": np.zeros((batch, c.n_head, 0, c.n_embd // c.n_head), np.float32)
                for i in range(c.n_layer) for kv in ("key", "value")}
        with torch.no_grad():
            if past_len:
                merged(input_ids=ids[:, :past_len], attention_mask=mask[:, :past_len], position_ids=pos[:, :past_len], cache=cache)
                past = {f"past_key_values.{i}.{kv}": getattr(layer, kv + "s").numpy().copy()
                        for i, layer in enumerate(cache.layers) for kv in ("key", "value")}
            out = merged(input_ids=ids[:, past_len:], attention_mask=mask, position_ids=pos[:, past_len:], cache=cache)
        logits, *present = sess.run(None, dict(input_ids=ids[:, past_len:].numpy(), attention_mask=mask.numpy(),
                                               position_ids=pos[:, past_len:].numpy(), **past))
        real, every = mask[:, past_len:].bool().numpy(), mask.bool().numpy()
        assert np.abs(logits[real] - out.logits.numpy()[real]).max() <= TOLERANCE, (batch, past_len, new)
        for i, layer in enumerate(cache.layers):  # present.{i}.key, present.{i}.value: the whole cache after the step
            for kv, got in zip(("keys", "values"), present[2 * i:2 * i + 2]):
                want = getattr(layer, kv).numpy()
                assert np.abs(np.moveaxis(got, 2, 1)[every] - np.moveaxis(want, 2, 1)[every]).max() <= TOLERANCE


def test_greedy_generation_with_the_cache_gives_torchs_tokens(runs, lora_export):
    merged = AutoModelForCausalLM.from_pretrained(runs["lora"] / "merged").eval()
    tok = load_tokenizer(runs["lora"] / "export")
    prompts = [tok(t)["input_ids"] for t in ("Return a new list", "The default value of the timeout is", "If")]
    got = OnnxCausalLM(lora_export["onnx"]).generate(prompts, max_new_tokens=16, eos_token_id=tok.eos_token_id,
                                                     pad_token_id=tok.pad_token_id)
    for prompt, tokens in zip(prompts, got):
        want = merged.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id)[0, len(prompt):].tolist()
        assert tokens == want


def test_causal_int8_report_gives_perplexity_before_and_after(lora_export, eval_file):
    texts, _ = read_labelled(eval_file, limit=16)
    r = quantize(Path(lora_export["onnx"]).parent, texts, runs=2)["int8"]
    assert r["metric"] == "perplexity" and 1 < r["metric_before"] < 4096 and 1 < r["metric_after"] < 4096
    assert r["metric_before"] != r["metric_after"] and 0.5 < r["agreement"] <= 1 and r["size_ratio"] < 0.5


def test_classifier_run_exports_and_reports_int8_on_labelled_texts(runs, eval_file):
    texts, labels = read_labelled(eval_file, label_column="label")
    r = export_model(runs["classifier"], texts=texts, labels=labels, int8=True, runs=2)
    assert (r["task"], r["family"], r["exporter"]) == ("classification", "bert", "dynamo")
    assert r["max_abs_diff"] <= TOLERANCE and len(r["parity"]) >= 3
    q = r["int8"]
    for key in ("path", "size_ratio", "latency_ratio", "metric", "metric_before", "metric_after", "agreement"):
        assert q[key] is not None, key
    assert q["metric"] == "accuracy" and q["size_ratio"] < 0.5 and q["latency_ratio"] > 0
    assert {(row["model"], row["threads"], row["batch"]) for row in q["latency"]} == \
        {(m, t, b) for m in ("fp32", "int8") for t in (1, "all") for b in (1, 8)}
    # the accuracy and the agreement are those of the models on these texts, computed here independently
    model = AutoModelForSequenceClassification.from_pretrained(runs["classifier"] / "final").eval()
    tok = load_tokenizer(runs["classifier"] / "final")
    batch = tok(texts, truncation=True, max_length=r["max_tokens"], padding=True, return_tensors="pt")
    with torch.no_grad(): torch_pred = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(-1)
    assert q["metric_before"] == pytest.approx(float((torch_pred == torch.tensor(labels)).float().mean()), abs=1.5 / len(texts))
    feed = dict(input_ids=batch["input_ids"].numpy(), attention_mask=batch["attention_mask"].numpy())
    fp32, int8 = (ort.InferenceSession(p).run(None, feed)[0].argmax(-1) for p in (r["onnx"], q["path"]))
    assert q["agreement"] == pytest.approx(float((fp32 == int8).mean()), abs=1.5 / len(texts))  # padded per batch there
    assert q["metric_after"] == pytest.approx(float((int8 == np.array(labels)).mean()), abs=1.5 / len(texts))
    # ONNX Runtime takes batch and sequence sizes that were never traced
    out = ort.InferenceSession(r["onnx"]).run(None, dict(input_ids=np.full((7, 33), 5), attention_mask=np.ones((7, 33), np.int64)))
    assert out[0].shape == (7, 16)


def test_parity_past_the_bound_fails_loudly_and_writes_nothing(runs, tmp_path):
    with pytest.raises(ParityError, match=r"differ by .* at \{'batch': 1, 'sequence': 6"):
        export_model(runs["classifier"], tmp_path / "out", tolerance=1e-12)
    assert not (tmp_path / "out").exists()


@pytest.fixture
def no_loading(monkeypatch):
    "Fail the test if a model is loaded: the errors below must come before any work."
    monkeypatch.setattr(export, "load_model", lambda *a: pytest.fail("the model was loaded before the error"))


def _status(run, **status):
    run.mkdir(exist_ok=True)
    (run / "status.json").write_text(json.dumps(status))
    return run


def test_runs_without_a_final_model_say_why(tmp_path, no_loading):
    for status, says in [(dict(state="running"), "it is still running: wait for it to finish"),
                         (dict(state="failed", error="NonFiniteLoss: 3 non-finite losses"), "it failed (NonFiniteLoss"),
                         (dict(state="stopped", step=12), "stopped at step 12")]:
        with pytest.raises(ExportError, match="has no final model") as e:
            export_model(_status(tmp_path / "run", **status))
        assert says in str(e.value)


def test_bad_model_folders_are_refused_before_loading(tmp_path, no_loading):
    with pytest.raises(ExportError, match="no config.json"):
        export_model(tmp_path, tmp_path / "out")
    folder = tmp_path / "m"
    AutoModelForCausalLM.from_config(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64)).save_pretrained(folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ExportError, match=r"no model.safetensors \(pytorch_model.bin\).*safetensors only"):
        export_model(folder, tmp_path / "out")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, model_type="gpt5_custom", auto_map={"AutoModel": "x.Y"})))
    with pytest.raises(ExportError, match="'gpt5_custom' is no model family transformers ships"):
        export_model(folder, tmp_path / "out")
    (folder / "config.json").write_text(json.dumps(dict(config, architectures=["GPT2DoubleHeadsModel"])))
    (folder / "pytorch_model.bin").rename(folder / "model.safetensors")
    with pytest.raises(ExportError, match="GPT2DoubleHeadsModel is no model export knows"):
        export_model(folder, tmp_path / "out")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="no tokenizer beside the model"):
        export_model(folder, tmp_path / "out")
    (folder / "config.json").write_text("x" * 2_000_000)
    with pytest.raises(ExportError, match="larger than 1,000,000 bytes"):
        export_model(folder, tmp_path / "out")


def test_adapters_that_cannot_be_exported_are_refused(runs, tmp_path, no_loading):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for f in (runs["lora"] / "final").iterdir():
        (adapter / f.name).write_bytes(f.read_bytes())
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps(dict(config, base_model_name_or_path=str(runs["lora"] / "base"))))
    with pytest.raises(ExportError, match=r"names its base model '.*/base': .* give base="):  # outside its run: never followed
        export_model(adapter, tmp_path / "out")
    with pytest.raises(ExportError, match="base /nowhere/base: no such folder"):
        export_model(adapter, tmp_path / "out", base="/nowhere/base")
    (adapter / "adapter_config.json").write_text(json.dumps(dict(config, peft_type="PROMPT_TUNING")))
    with pytest.raises(ExportError, match="a prompt-tuned causal LM cannot be exported"):
        export_model(adapter, tmp_path / "out", base=runs["lora"] / "base")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model-00001-of-00001.safetensors")
    (adapter / "adapter_model.safetensors.index.json").write_text(json.dumps(dict(weight_map={})))  # peft would load a .bin instead
    with pytest.raises(ExportError, match="no adapter_model.safetensors"):
        export_model(adapter, tmp_path / "out", base=runs["lora"] / "base")
    (adapter / "adapter_config.json").write_text(json.dumps(dict(config, peft_type="IA3")))
    with pytest.raises(ExportError, match="peft_type 'IA3' cannot be exported"):
        export_model(adapter, tmp_path / "out")


def test_bad_data_is_refused_before_loading(runs, eval_file, tmp_path, no_loading):
    with pytest.raises(ExportError, match=r"eval.jsonl:1: no value in column 'topic'"):
        read_labelled(eval_file, label_column="topic")
    csv_file = tmp_path / "eval.csv"
    csv_file.write_text("text,label\nfine,3\n")
    with pytest.raises(ExportError, match=r"eval.csv:1: the header has no column 'category'"):
        read_labelled(csv_file, label_column="category")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "label": 1}\n{"text": "b", \n')
    with pytest.raises(ExportError, match=r"broken.jsonl:2: not valid JSON"):
        read_labelled(broken, label_column="label")
    texts, _ = read_labelled(eval_file)
    with pytest.raises(ExportError, match="scored against labels"):
        export_model(runs["classifier"], tmp_path / "out", texts=texts, int8=True)
    with pytest.raises(ExportError, match="label 'spam' .* is no class of this model"):
        export_model(runs["classifier"], tmp_path / "out", texts=texts[:2], labels=[0, "spam"], int8=True)
    with pytest.raises(ExportError, match="holds files and is no export folder"):
        export_model(runs["classifier"], runs["classifier"] / "logs")


def test_a_run_copied_from_another_host_merges_into_its_own_base(runs, tmp_path, no_loading):
    copy = tmp_path / "copied-run"
    for part in ("final", "base"): shutil.copytree(runs["lora"] / part, copy / part)
    shutil.copy(runs["lora"] / "status.json", copy)
    named = json.loads((copy / "final" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(named) == (runs["lora"] / "base").resolve()  # the host it was trained on: there, not here
    assert find_model(copy).base == copy / "base"


# A tiny GPT-2 of our own, exported once: what the tests below break, each a copy.
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    tok = train_tokenizer(list(demo_corpus()["text"][:200]), vocab_size=300)
    model = AutoModelForCausalLM.from_config(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, vocab_size=len(tok),
                                                        bos_token_id=1, eos_token_id=2, pad_token_id=0))
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    export_model(root / "model", root / "export")
    return root


def _copy(tiny, name, tmp_path):
    return Path(shutil.copytree(tiny / name, tmp_path / name))


def test_a_failed_int8_leaves_the_previous_export_as_it_was(tiny, tmp_path, monkeypatch):
    out = _copy(tiny, "export", tmp_path)
    before = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}  # the Triton repository's files too
    monkeypatch.setattr(export, "_quantize_file", lambda *a: (_ for _ in ()).throw(RuntimeError("quantizer crashed")))
    with pytest.raises(RuntimeError, match="quantizer crashed"):
        quantize(out, runs=1)
    with pytest.raises(RuntimeError, match="quantizer crashed"):
        export_model(tiny / "model", out, int8=True, runs=1)
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_quantize_checks_the_report_it_reads_back(tiny, tmp_path):
    out = _copy(tiny, "export", tmp_path)
    report = json.loads((out / "report.json").read_text())
    (out / "report.json").write_text(json.dumps(dict(report, vocab="300", labels=["a"])))
    with pytest.raises(ExportError, match=r"report.json: vocab '300', labels \['a'\]: not what export_model writes"):
        quantize(out)


def test_the_exported_tokenizer_asks_to_run_no_code_and_the_report_lists_every_file(tiny, tmp_path):
    model = _copy(tiny, "model", tmp_path)
    settings = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps(dict(settings, auto_map={"AutoTokenizer": ["mine.Tok", None]})))
    mask = os.umask(0o027)
    try: r = export_model(model, tmp_path / "out")
    finally: os.umask(mask)
    assert "auto_map" not in json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert (tmp_path / "out" / "report.json").stat().st_mode & 0o777 == 0o640  # as any new file: the server may be another user
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o750
    assert set(r["files"]) == {p.name for p in (tmp_path / "out").iterdir()} - {"report.json", "triton"}
    assert (tmp_path / "out" / "triton" / r["triton"]["model"] / "1" / "model.onnx").samefile(tmp_path / "out" / "model.onnx")
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in r["files"].values())


def test_loader_failures_are_one_export_error_naming_the_folder(tiny, tmp_path, capsys):
    model = _copy(tiny, "model", tmp_path)
    (model / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ExportError, match=r"/model: the model cannot be loaded \(SafetensorError: "):
        export_model(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_out_dir_is_made_absolute_and_checked_before_loading(tiny, tmp_path, monkeypatch, no_loading):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match=f"out_dir {tmp_path} holds files and is no export folder"):
        export_model(tiny / "model", ".")
    with pytest.raises(ExportError, match=f"out_dir {tiny} is the model folder or holds it"):
        export_model(tiny / "model", tiny)


def test_a_swap_waits_for_the_lock(tmp_path):
    marked = lambda d: (d / "report.json").write_text(json.dumps(dict(onnx="model.onnx", parity=[], at=time.time_ns())))
    out = write_whole(tmp_path / "out", marked)
    fd = os.open(tmp_path / ".out.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another export in the middle of its swap
    before = (out / "report.json").read_text()
    writer = threading.Thread(target=write_whole, args=(out, marked))
    writer.start()
    time.sleep(0.5)
    assert writer.is_alive() and (out / "report.json").read_text() == before
    os.close(fd)
    writer.join(10)
    assert not writer.is_alive() and (out / "report.json").read_text() != before


@pytest.mark.filterwarnings("ignore:Specified provider")  # onnxruntime's own word that this machine has no TensorRT
def test_gpu_failures_become_notes_and_the_export_is_kept(tiny, monkeypatch):
    """As on a CUDA machine whose bf16 run or TensorRT engine fails: each is a line of the report, never an error."""
    model, _ = load_model(find_model(tiny / "model"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "a GPU that fails")
    monkeypatch.setattr(ort, "get_available_providers", lambda: [TENSORRT, "CPUExecutionProvider"])
    r = gpu_report(CausalLMWithCache(model), tiny / "export" / "model.onnx", 300, sequence=8, batches=(1,), runs=1)
    assert (r["device"], r["torch_bf16"], r["tensorrt"]) == ("a GPU that fails", None, None)
    assert [n.split(":")[0] for n in r["notes"]] == ["torch bf16", "TensorRT"] and all("not measured" in n for n in r["notes"])
