"""After training: a real run's model evaluated on its own split, its numbers recomputed independently (plain transformers
forward passes scored by deepseek_wb.scores), checkpoints named and forged pointers refused, bad data refused before any
model loads, generated samples, runs compared, and the panel drawing a real report."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import peft
import pytest
import torch
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, GPT2Config,
                          GPT2ForSequenceClassification)

import deepseek_wb.evaluate as ev
from deepseek_wb.chat import tokenize_chat, write_demo_instructions
from deepseek_wb.checkpoints import mark_complete
from deepseek_wb.core import RunPaths, atomic_write_json, read_jsonl
from deepseek_wb.data import DataError
from deepseek_wb.eval_panel import EvalPanel, confusion_figure, metrics_table_html, report_html
from deepseek_wb.evaluate import EvalError, compare_runs, describe_report, evaluate, model_folder, run_config
from deepseek_wb.jobs import launch
from deepseek_wb.scores import classification_scores, generation_scores, lm_scores, regression_scores
from deepseek_wb.tokens import train_tokenizer
from deepseek_wb.train import load_rows
from jobs_util import tiny_config

CLASSIFIER = {"model.task": "classification", "model.num_labels": 16, "data.label_column": "label", "data.packing": False,
              "data.limit": 600, "optimizer.lr": 0.003}


def no_nan(text):
    "JSON that holds no NaN or Infinity (which json.loads would otherwise accept)."
    def refuse(name): raise AssertionError(f"{name} in the report")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "A 16-class GPT-2 classifier and a GPT-2 causal LM on chat data, trained for real at the same time."
    root = tmp_path_factory.mktemp("evaluate")
    chat_data = write_demo_instructions(root/"instructions.jsonl", n=400)
    jobs = [launch(tiny_config(max_steps=30, checkpoint_every=10, eval_every=10, **CLASSIFIER), run_dir=root/"classifier"),
            launch(tiny_config(max_steps=20, checkpoint_every=20, eval_every=20, **{"data.source": str(chat_data),
                   "data.chat_template": "chatml", "data.max_length": 128, "model.max_position": 128, "data.limit": None,
                   "optimizer.lr": 0.003}), run_dir=root/"chat")]
    for job in jobs:
        status = job.wait(timeout=600)
        assert status["state"] == "finished", (status, job.tail(30))
    cls, chat = (j.run_dir for j in jobs)
    return dict(cls=cls, chat=chat, cls_report=evaluate(cls), chat_report=evaluate(chat, samples=4, max_new_tokens=12))


def held_out(run):
    "The rows the job held out, as the job's own load_rows splits them."
    return load_rows(run_config(run), RunPaths(run), rank=1)[1]


def test_classifier_report_equals_scores_of_independent_predictions(runs):
    run, report = runs["cls"], runs["cls_report"]
    rows = held_out(run)
    tok = AutoTokenizer.from_pretrained(run/"final")
    model = AutoModelForSequenceClassification.from_pretrained(run/"final").eval()
    with torch.no_grad():  # one text at a time: no padding, no batching, none of evaluate's code
        logits = torch.cat([model(**tok(t, truncation=True, max_length=64, return_tensors="pt")).logits for t in rows["text"]])
    probs = torch.softmax(logits.double(), -1).numpy()
    expected = classification_scores(rows["label"], probs.argmax(1).tolist(), probs, labels=list(range(16)))
    assert set(report["metrics"]) == set(expected.metrics)
    for name, value in expected.metrics.items():
        assert report["metrics"][name] == (pytest.approx(value, abs=1e-6) if value is not None else None), name
    kept = sorted(set(rows["label"]) | set(probs.argmax(1).tolist()))  # only the classes in the data or predicted are kept
    assert report["details"]["class_ids"] == kept and report["details"]["classes"] == 16
    assert report["details"]["confusion_matrix"] == [[expected.details["confusion_matrix"][i][j] for j in kept] for i in kept]
    names = rows.features["label"].names  # the demo corpus's module families name the classes
    assert [r["label"] for r in report["details"]["per_class"]] == [names[i] for i in kept]
    assert [(r["precision"], r["support"]) for r in report["details"]["per_class"]] == \
        [(pytest.approx(expected.details["per_class"][i]["precision"]), expected.details["per_class"][i]["support"]) for i in kept]
    p_true = probs[np.arange(len(rows)), rows["label"]]
    assert [w["probability"] for w in report["worst"]] == pytest.approx(sorted(p_true)[:len(report["worst"])], abs=1e-6)
    assert report["worst"][0]["label"] in names and report["worst"][0]["source"]
    assert report["data"]["rows"] == len(rows) and report["checkpoint"] == {"asked": "last", "folder": "final", "step": 30}
    assert report["batch_size"] == run_config(run).micro_batch_size  # a run is evaluated in its job's batches
    assert report["higher_is_better"]["log_loss"] is False and report["higher_is_better"]["accuracy"] is True
    job_eval = [r for r in read_jsonl(run/"metrics.jsonl")[0] if r["kind"] == "eval"][-1]  # the job's own, on the same rows
    assert {k: report["metrics"][k] for k in ("accuracy", "f1_macro", "log_loss")} == \
        pytest.approx({k: job_eval[k] for k in ("accuracy", "f1_macro", "log_loss")}, abs=1e-6)
    written = run/"eval"/"report.json"  # whole: the very report, no NaN, nothing half-written left beside it
    assert no_nan(written.read_text()) == report and os.listdir(run/"eval") == ["report.json"]
    text = describe_report(report)
    assert "accuracy" in text and "↓" in text and "_pydecimal" in text


def test_lm_report_equals_examples_run_alone_and_samples_equal_greedy_decoding(runs):
    run, report = runs["chat"], runs["chat_report"]
    cfg, rows = run_config(run), held_out(run)
    tok = AutoTokenizer.from_pretrained(run/"final")
    model = AutoModelForCausalLM.from_pretrained(run/"final").eval()
    loss_sum = tokens = correct = 0
    with torch.no_grad():  # each conversation alone (the job packs them into shared rows)
        for r in tokenize_chat(rows, tok, cfg.data.max_length, packing=False, overlong=cfg.data.overlong):
            logits, labels = model(input_ids=torch.tensor([r["input_ids"]])).logits[0, :-1], torch.tensor(r["labels"][1:])
            m = labels != -100
            loss_sum += torch.nn.functional.cross_entropy(logits[m].double(), labels[m], reduction="sum").item()
            tokens, correct = tokens + int(m.sum()), correct + int((logits[m].argmax(-1) == labels[m]).sum())
    expected = lm_scores(loss_sum, tokens, correct)
    for name, value in expected.metrics.items(): assert report["metrics"][name] == pytest.approx(value, rel=1e-6), name
    assert report["details"]["tokens"] == tokens
    job_eval = [r for r in read_jsonl(run/"metrics.jsonl")[0] if r["kind"] == "eval"][-1]
    assert report["metrics"]["eval_loss"] == pytest.approx(job_eval["eval_loss"], rel=1e-6)
    assert len(report["samples"]) == 4
    stops = [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")]
    for sample, messages in zip(report["samples"], rows["messages"]):
        prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
        new = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False, eos_token_id=stops,
                             pad_token_id=tok.pad_token_id)
        assert sample["output"] == tok.decode(new[0, ids.shape[1]:], skip_special_tokens=True).strip()
        assert (sample["prompt"], sample["reference"]) == (messages[-2]["content"], messages[-1]["content"])
    again = generation_scores([s["output"] for s in report["samples"]], [s["reference"] for s in report["samples"]])
    assert {k: report["metrics"][k] for k in again.metrics} == pytest.approx(again.metrics)
    assert report["worst"][0]["loss"] == max(r["loss"] for r in report["worst"])


def test_model_folder_names_checkpoints_and_refuses_forged_pointers(runs, tmp_path):
    run = tmp_path/"copy"
    shutil.copytree(runs["cls"], run, symlinks=True)
    best = json.loads((run/"checkpoints"/"best").read_text())  # the job's own pointer
    assert model_folder(run) == run/"final"
    assert model_folder(run, "best") == run/"checkpoints"/f"step_{best['step']}"/"model"
    assert model_folder(run, 20) == model_folder(run, "step_20") == run/"checkpoints"/"step_20"/"model"
    report = evaluate(run, checkpoint="best")
    assert report["checkpoint"] == dict(asked="best", folder=f"checkpoints/step_{best['step']}/model", **best)
    assert report["metrics"]["log_loss"] == pytest.approx(best["value"], abs=1e-6)  # the job chose it by eval_loss, on these rows
    with pytest.raises(EvalError, match="there is no checkpoint step_7"): model_folder(run, 7)
    with pytest.raises(EvalError, match="use last, best, or a step number"): model_folder(run, "newest")
    shutil.rmtree(run/"checkpoints"/"step_20"/"model")
    mark_complete(run/"checkpoints"/"step_20", step=20)  # whole, as a checkpoint saved before checkpoints carried a model
    others = ", ".join(map(str, ev.checkpoint_models(run)))
    with pytest.raises(EvalError, match=f"step_20 holds no model/ folder; use --checkpoint STEP with one of {others}"):
        model_folder(run, 20)
    pointer = run/"checkpoints"/"best"
    for forged, why in [("{not json", "is not JSON"), ('{"step": "20"}', 'step "20" is not a step number'),
                        ('{"step": -1}', "step -1 is not a step number"), ('{"step": 1e400}', "step Infinity"),
                        ('{"step": 18446744073709551616}', "is not a step number"), ('{"step": true}', "step true"),
                        ("[20]", "holds a JSON list"), ('{"step": 20}', "step_20 holds no model/ folder"),
                        ('{"step": 5}', "there is no checkpoint step_5"), ("x" * 5000, "is larger than")]:
        pointer.write_text(forged)
        with pytest.raises(EvalError, match=why): model_folder(run, "best")
    pointer.unlink()
    with pytest.raises(EvalError, match="no best checkpoint was recorded"): model_folder(run, "best")
    os.symlink(run/"final"/"config.json", pointer)
    with pytest.raises(EvalError, match="best is a symbolic link"): model_folder(run, "best")
    step = ev.checkpoint_models(run)[-1]
    model = run/"checkpoints"/f"step_{step}"/"model"
    os.symlink(run/"final"/"config.json", model/"extra.json")
    with pytest.raises(EvalError, match="extra.json is a symbolic link"): model_folder(run, step)
    (model/"extra.json").unlink()
    status = json.loads((run/"status.json").read_text())
    for state, error, why in [("failed", "RuntimeError: boom", r"the run failed \(RuntimeError: boom\)"),
                              ("running", None, "the run is still running"), ("stopped", None, "the run was stopped")]:
        atomic_write_json(run/"status.json", dict(status, state=state, error=error))
        assert model_folder(run) == model  # no final model: the newest checkpoint that holds one ...
        shutil.move(run/"checkpoints", tmp_path/"aside")
        with pytest.raises(EvalError, match=f"no final model: {why}"): model_folder(run)  # ... and without one, what there is
        shutil.move(tmp_path/"aside", run/"checkpoints")
    (model/"model.safetensors").write_bytes(b"changed")
    with pytest.raises(EvalError, match=f"checkpoint step_{step} is not whole"): model_folder(run)
    with pytest.raises(EvalError, match="not a run directory"): model_folder(tmp_path)


def test_bad_data_is_refused_before_any_model_loads(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "load_model", lambda *a, **k: pytest.fail("a model was loaded before the data was checked"))
    (tmp_path/"unlabelled.jsonl").write_text('{"text": "Return the socket."}\n')
    with pytest.raises(DataError, match="unlabelled.jsonl:1: no label column 'label'; the columns are: text"):
        evaluate(runs["cls"], data=tmp_path/"unlabelled.jsonl")
    (tmp_path/"unknown.csv").write_text("text,label\nReturn the socket.,3\nParse an email header.,99\n")
    with pytest.raises(DataError, match="unknown.csv:3: label '99' is not a class of this model: use 0..15"):
        evaluate(runs["cls"], data=tmp_path/"unknown.csv")
    (tmp_path/"chat.jsonl").write_text('{"prompt": "Hi", "response": "Hello"}\n')
    with pytest.raises(DataError, match="prompt_response records, but a classification model reads a text and a label"):
        evaluate(runs["cls"], data=tmp_path/"chat.jsonl")
    moved = tmp_path/"moved"  # a run whose relative data path is not where the job read it
    shutil.copytree(runs["chat"], moved, symlinks=True)
    cfg = json.loads((moved/"config.json").read_text())
    atomic_write_json(moved/"config.json", dict(cfg, data=dict(cfg["data"], source="data/instructions.jsonl")))
    with pytest.raises(EvalError, match="data.source: data/instructions.jsonl is not found here"): evaluate(moved)


def test_regression_model_folder_on_a_data_file(runs, tmp_path):
    texts = held_out(runs["cls"])["text"]
    tok = train_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64, num_labels=1,
                                             problem_type="regression", pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                             eos_token_id=tok.eos_token_id)).save_pretrained(tmp_path/"regressor")
    tok.save_pretrained(tmp_path/"regressor")
    labels = [len(t) / 100 for t in texts]
    (tmp_path/"lengths.jsonl").write_text("".join(json.dumps(dict(text=t, label=y)) + "\n" for t, y in zip(texts, labels)))
    report = evaluate(tmp_path/"regressor", data=tmp_path/"lengths.jsonl", out=tmp_path/"report.json")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path/"regressor").eval()
    with torch.no_grad():
        pred = [model(**tok(t, truncation=True, max_length=64, return_tensors="pt")).logits[0, 0].item() for t in texts]
    assert report["task"] == "regression" and report["metrics"] == pytest.approx(regression_scores(labels, pred).metrics, rel=1e-5)
    assert no_nan((tmp_path/"report.json").read_text()) == report and not (tmp_path/"regressor"/"eval").exists()


def test_compare_runs_marks_the_best_run_of_each_metric(runs, tmp_path):
    better = tmp_path/"better"
    shutil.copytree(runs["chat"], better, symlinks=True)
    atomic_write_json(better/"eval"/"report.json", dict(runs["chat_report"], metrics=dict(runs["chat_report"]["metrics"], perplexity=1.5)))
    fresh = tmp_path/"fresh"  # not evaluated: its job's last eval line stands in
    shutil.copytree(runs["cls"], fresh, symlinks=True)
    shutil.rmtree(fresh/"eval")
    table = compare_runs([runs["chat"], better, fresh])
    assert table.attrs["best"]["perplexity"] == "better" and "perplexity" in table.loc["better", "best_in"]
    assert table.loc["fresh", "source"] == "metrics.jsonl" and table.loc["fresh", "step"] == 30
    assert table.loc["chat", "token_accuracy"] == runs["chat_report"]["metrics"]["token_accuracy"]


def test_panel_draws_a_real_report_and_escapes_a_forged_one(runs):
    panel = EvalPanel(runs["cls"], per_page=4)
    assert panel.report == runs["cls_report"] and panel.pages == 8  # 30 held-out rows
    panel.next_button.click()
    assert panel.page == 1 and "page 2 of 8" in panel.where.value and not panel.prev_button.disabled
    k = len(panel.report["details"]["class_ids"])
    assert np.asarray(confusion_figure(panel.report).data[0].z).shape == (k, k)
    assert all(name in metrics_table_html(panel.report) for name in panel.report["metrics"])
    evil = "<img src=x onerror=alert(1)>"
    forged = dict(runs["chat_report"], samples=[dict(prompt=evil, reference=evil, output=evil)], worst=[dict(text=evil, loss=evil)])
    page = report_html(forged)
    assert "<img" not in page and page.count("&lt;img") == 5


# --- hostile run directories and model folders: built by hand in seconds (no training), each refused before any work ---

TEXTS = [f"example number {i} about {'cats' if i % 2 else 'dogs'} and more" for i in range(40)]


def made_run(root: Path, name: str, num_labels: int = 3, id2label=None, lora: bool = False) -> Path:
    "A finished classifier run as a job leaves it (config.json, status.json, final/ with its tokenizer; base/ for LoRA), untrained."
    run = root/name
    run.mkdir()
    data = root/f"{name}.jsonl"
    data.write_text("".join(json.dumps(dict(text=t, label=i % 3)) + "\n" for i, t in enumerate(TEXTS)))
    cfg = tiny_config(**{"model.task": "classification", "model.num_labels": num_labels, "data.label_column": "label",
                         "data.packing": False, "data.source": str(data), "data.limit": None})
    atomic_write_json(run/"config.json", json.loads(cfg.model_dump_json()))
    atomic_write_json(run/"status.json", dict(state="finished", step=10))
    tok = train_tokenizer(TEXTS, vocab_size=300)
    torch.manual_seed(0)
    labels = dict(id2label=id2label, label2id={v: k for k, v in id2label.items()}) if id2label else {}
    model = GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64,
                                                     num_labels=num_labels, pad_token_id=tok.pad_token_id, **labels))
    if lora:
        model.save_pretrained(run/"base")
        model = peft.get_peft_model(model, peft.LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["c_attn"]))
        model.peft_config["default"].base_model_name_or_path = str(run/"base")
    model.save_pretrained(run/"final")
    tok.save_pretrained(run/"final")
    return run


@pytest.fixture
def made(tmp_path):
    return lambda name, **kw: made_run(tmp_path, name, **kw)


def no_load(monkeypatch):
    "Make any model load fail the test: what is refused must be refused before."
    monkeypatch.setattr(ev, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))


def test_model_json_asking_for_code_is_refused(made, monkeypatch):
    run = made("kernels")
    hf = json.loads((run/"final"/"config.json").read_text())
    no_load(monkeypatch)
    for forged, why in [(dict(attn_implementation="kernels-community/flash-attn"), "attn_implementation is \"kernels-community/flash-attn\""),
                        (dict(_attn_implementation="flash_attention_2"), "imports flash-attn"),
                        (dict(quantization_config=dict(quant_method="bitsandbytes", load_in_8bit=True)), "remove quantization_config")]:
        atomic_write_json(run/"final"/"config.json", dict(hf, **forged))
        with pytest.raises(EvalError, match=why): evaluate(run)
    with pytest.raises(EvalError, match="quantization_config"): ev.check_model_json(dict(text_config=[dict(quantization_config=None)]), "x")


def test_weights_come_only_from_regular_files_in_the_folder(made, tmp_path):
    run = made("shards")
    final = run/"final"
    (final/"model.safetensors").rename(tmp_path/"outside.safetensors")
    os.mkfifo(final/"fifo.safetensors")
    for shard in ("../../outside.safetensors", str(tmp_path/"outside.safetensors"), "fifo.safetensors"):
        atomic_write_json(final/"model.safetensors.index.json", dict(weight_map={"score.weight": shard}))
        with pytest.raises(EvalError, match="weights are read only from regular files in the model's folder"):
            ev.load_model(final, "classification")  # no hang on the FIFO, no weights from outside
    with pytest.raises(EvalError, match="fifo.safetensors is a FIFO, not a file"): evaluate(run)


def test_forged_sizes_and_missing_weights_are_refused(made):
    run = made("sizes")
    final = run/"final"
    hf = json.loads((final/"config.json").read_text())
    for change, why in [(dict(n_layer=200_000), "200,000 layers, but the weights hold"),
                        (dict(n_inner=50_000_000), "describes a model of .* numbers, but its weights hold"),
                        (dict(n_layer=3), r"24 missing keys \(transformer.h.1."), (dict(n_embd=16), "shapes of its weights differ")]:
        atomic_write_json(final/"config.json", dict(hf, **change))
        with pytest.raises(EvalError, match=why): ev.load_model(final, "classification")
    atomic_write_json(final/"config.json", hf)
    weights = (final/"model.safetensors").read_bytes()
    (final/"model.safetensors").write_bytes(weights[:len(weights) // 2])
    with pytest.raises(EvalError, match=r"the model cannot be loaded \(SafetensorError") as e: ev.load_model(final, "classification")
    assert "\n" not in str(e.value)  # the command line prints one line
    (final/"tokenizer.json").write_text('{"model": {}}')
    with pytest.raises(EvalError, match=r"the tokenizer cannot be loaded \(KeyError"): evaluate(run)


def test_adapters_other_than_the_workbench_s_and_bases_not_yours_are_refused(made, tmp_path):
    run = made("lora", lora=True)
    report = evaluate(run)
    assert report["data"]["rows"] > 0 and report["batch_size"] == 4  # the job's micro_batch_size
    adapter = json.loads((run/"final"/"adapter_config.json").read_text())
    for change, why in [(dict(peft_type="XLORA", adapters={"0": str(tmp_path)}), 'peft_type "XLORA" is not an adapter the workbench saves'),
                        (dict(r=10**7), "describes an adapter of [0-9,]{13,} numbers, but its weights hold"),
                        (dict(target_modules=["c_attn", "c_fc"]), "do not match what adapter_config.json describes: 2 missing keys")]:
        atomic_write_json(run/"final"/"adapter_config.json", dict(adapter, **change))
        with pytest.raises(EvalError, match=why): ev.load_model(run/"final", "classification", run)
    atomic_write_json(run/"final"/"adapter_config.json", adapter)
    os.chmod(run, 0o775)
    with pytest.raises(EvalError, match="is writable by its group.*so its base/ model is not read"):
        evaluate(run, data=tmp_path/"lora.jsonl")
    os.chmod(run, 0o755)
    (run/"base").rename(tmp_path/"elsewhere")
    os.symlink(tmp_path/"elsewhere", run/"base")  # the review's case: base/ a link, loaded
    with pytest.raises(EvalError, match="base is a symbolic link"): evaluate(run, data=tmp_path/"lora.jsonl")


def test_a_run_not_yours_is_evaluated_only_on_data_you_give(made, tmp_path, monkeypatch):
    run = made("theirs")
    secrets = tmp_path/"secrets"
    secrets.mkdir()
    (secrets/"notes.txt").write_text("my private notes\n" * 50)
    cfg = json.loads((run/"config.json").read_text())  # a forged config naming a folder of yours as its data
    atomic_write_json(run/"config.json", dict(cfg, model=dict(cfg["model"], task="causal_lm"), data=dict(cfg["data"], source=str(secrets),
                                                                                                         label_column=None)))
    os.chmod(run/"config.json", 0o666)
    with monkeypatch.context() as m:
        no_load(m)
        with pytest.raises(EvalError, match="not yours .*config.json is writable by its group and others.*give the data yourself"):
            evaluate(run)
        with pytest.raises(EvalError, match="not yours"): ev.eval_texts(run)
    assert not (run/"eval").exists()
    atomic_write_json(run/"config.json", cfg)
    os.chmod(run/"config.json", 0o666)
    assert evaluate(run, data=tmp_path/"theirs.jsonl", limit=5)["data"]["rows"] == 5


def test_big_heads_keep_their_classes_and_reports_fit(made, tmp_path, monkeypatch):
    run = made("wide", num_labels=4000)
    (tmp_path/"few.jsonl").write_text("".join(json.dumps(dict(text=t, label=i * 7)) + "\n" for i, t in enumerate(TEXTS[:6]))
                                      + "not json: never read with limit 6\n")
    report = evaluate(run, data=tmp_path/"few.jsonl", limit=6)
    details = report["details"]
    assert details["classes"] == 4000 and len(details["class_ids"]) <= 12 and (run/"eval"/"report.json").stat().st_size < 100_000
    assert details["class_ids"][:1] == [0] and len(details["confusion_matrix"]) == len(details["per_class"]) == len(details["class_ids"])
    assert "per class (" in describe_report(report) and "of 4,000" in describe_report(report)
    with pytest.raises(DataError, match="few.jsonl:7"): evaluate(run, data=tmp_path/"few.jsonl")  # without a limit, line 7 is read
    no_load(monkeypatch)
    shutil.rmtree(run/"eval")
    (run/"eval").write_text("")
    with pytest.raises(EvalError, match="eval is in the way"): evaluate(run, data=tmp_path/"few.jsonl")


def test_class_names_reach_messages_escaped(made, tmp_path):
    run = made("escapes", id2label={0: "\x1b]0;owned\x07", 1: "b", 2: "c"})
    (tmp_path/"bad.jsonl").write_text(json.dumps(dict(text="x", label="zzz")) + "\n")
    with pytest.raises(DataError) as e: evaluate(run, data=tmp_path/"bad.jsonl")
    assert "\x1b" not in str(e.value) and r"\x1b]0;owned\x07" in str(e.value)


def test_generation_config_json_is_never_read(runs, tmp_path):
    folder = tmp_path/"final"
    shutil.copytree(runs["chat"]/"final", folder)
    atomic_write_json(folder/"generation_config.json", dict(num_beams=128, length_penalty=1e308, do_sample=True, temperature=50.0))
    rows = held_out(runs["chat"])
    again = ev._samples(ev.load_model(folder, "causal_lm"), ev.load_tokenizer(folder), rows, "chatml", 2, 12)
    assert [s["output"] for s in again] == [s["output"] for s in runs["chat_report"]["samples"][:2]]
