"""`deepseek-wb serve` as a process, driven by real clients: the official `openai` package for
completions, chat and streaming; plain HTTP for errors, overload, a client that leaves and SIGTERM."""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
import torch
from google.protobuf import text_format
from openai import OpenAI
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, BertConfig, GPT2Config

from deepseek_wb.chat import attach_template
from deepseek_wb.data import demo_corpus
from deepseek_wb.tokens import train_tokenizer
from jobs_util import wait_for

PROMPTS = ["def add(a, b):", "Return the list", "x = ", "import os\n", "Sort the items by", "你好，世界", "for i in range(", "class Point:"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    "A tiny GPT-2 (ChatML attached to its tokenizer) and a BERT classifier, saved as training saves them."
    tmp = tmp_path_factory.mktemp("serve")
    tok = train_tokenizer(list(demo_corpus()["text"][:300]), vocab_size=500)
    attach_template(tok, "chatml")
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, vocab_size=len(tok))
    torch.manual_seed(0)
    gpt = AutoModelForCausalLM.from_config(GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=512, tie_word_embeddings=False, **ids))
    bert = AutoModelForSequenceClassification.from_config(BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, max_position_embeddings=128, num_labels=2,
        id2label={0: "no", 1: "yes"}, **ids))
    for name, model in (("gpt", gpt), ("bert", bert)):
        model.save_pretrained(tmp/name)
        tok.save_pretrained(tmp/name)
    return dict(gpt=tmp/"gpt", bert=tmp/"bert", tok=tok, model=gpt.eval(), tmp=tmp)


class Served:
    "`deepseek-wb serve` in a process of its own; the URL it prints."
    def __init__(self, model, *args, status=None):
        cmd = [sys.executable, "-m", "deepseek_wb", "serve", str(model), "--port", "0", *args] + (["--status", str(status)] if status else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        found = re.search(r"on (http://\S+)", line)
        if not found: raise AssertionError(f"no URL from the server: {line!r} {self.proc.stderr.read()}")
        self.url = found.group(1)

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics").text
        return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name + " ") or l.startswith(name + "{"))

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)


@pytest.fixture(scope="module")
def gpt(models):
    s = Served(models["gpt"], "--max-batch", "8")
    yield s
    s.close()


def alone(models, prompt, n):
    "What transformers' own greedy generate writes after `prompt`, alone, ending at EOS or ChatML's end of turn as the server does."
    tok = models["tok"]
    ids, ends = tok(prompt)["input_ids"], [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")]
    with torch.no_grad():
        out = models["model"].generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=ends, pad_token_id=0)
    return models["tok"].decode(out[0, len(ids):], skip_special_tokens=True)


def endless_prompt(models, n=480):
    "A prompt whose greedy continuation runs all `n` tokens without an end token: a request that keeps its seat a while."
    tok = models["tok"]
    ends = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
    for prompt in PROMPTS + [f"item {i}" for i in range(20)]:
        with torch.no_grad():
            out = models["model"].generate(torch.tensor([tok(prompt)["input_ids"]]), max_new_tokens=n, do_sample=False,
                                           eos_token_id=None, pad_token_id=0)[0, -n:].tolist()
        if not ends & set(out): return prompt
    raise AssertionError("no prompt runs on without an end token")


def test_openai_client_completions_chat_and_streams(models, gpt):
    client = OpenAI(base_url=f"{gpt.url}/v1", api_key="unused", max_retries=0)
    test_id = client.models.list().data[0].id
    assert test_id == "gpt"
    done = client.completions.create(model="gpt", prompt=PROMPTS[0], max_tokens=12, temperature=0)
    assert done.choices[0].text == alone(models, PROMPTS[0], 12)
    assert done.usage.completion_tokens == 12 and done.choices[0].finish_reason == "length"
    pieces = [c.choices[0].text for c in client.completions.create(model="gpt", prompt=PROMPTS[0], max_tokens=12, temperature=0, stream=True)]
    assert "".join(pieces) == done.choices[0].text and len(pieces) > 1
    messages = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "列表排序"}]
    reply = client.chat.completions.create(model="gpt", messages=messages, max_tokens=10, temperature=0)
    assert reply.choices[0].message.role == "assistant"
    streamed = client.chat.completions.create(model="gpt", messages=messages, max_tokens=10, temperature=0, stream=True,
                                              stream_options={"include_usage": True})
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    seeded = [client.completions.create(model="gpt", prompt="x", max_tokens=8, temperature=1.0, seed=3).choices[0].text for _ in range(2)]
    assert seeded[0] == seeded[1]


def test_batched_greedy_equals_one_at_a_time(models, gpt):
    "Eight prompts of different lengths at once share the running batch; each reply is what the model writes alone."
    client = OpenAI(base_url=f"{gpt.url}/v1", api_key="unused", max_retries=0)
    lengths = [20, 5, 17, 9, 30, 12, 3, 25]
    decode = lambda part: gpt.metric(f'deepseek_wb_serve_batch_size_{part}{{kind="decode"}}')
    before = decode("sum"), decode("count")
    out = {}
    def ask(i):
        out[i] = client.completions.create(model="gpt", prompt=PROMPTS[i], max_tokens=lengths[i], temperature=0).choices[0].text
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads: t.start()
    for t in threads: t.join(60)
    assert [out[i] for i in range(8)] == [alone(models, p, n) for p, n in zip(PROMPTS, lengths)]
    sequences, steps = decode("sum") - before[0], decode("count") - before[1]
    assert sequences / steps > 1.5  # decode steps were shared (alone, each step would carry one sequence)


def test_errors_in_openais_shape(gpt):
    for body, status, code in [({"model": "gpt-4o", "prompt": "x"}, 404, "model_not_found"),
                               ({"model": "gpt", "prompt": "word " * 600}, 400, "context_length_exceeded"),
                               ({"model": "gpt", "prompt": "x", "top_p": 0}, 400, "invalid_value"),
                               ({"model": "gpt", "prompt": "x", "n": 3}, 400, "invalid_value"),
                               ({"model": "gpt", "prompt": ""}, 400, "empty_prompt")]:
        r = httpx.post(f"{gpt.url}/v1/completions", json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    r = httpx.post(f"{gpt.url}/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "no JSON" in r.json()["error"]["message"]
    r = httpx.post(f"{gpt.url}/v1/completions", content=b"x" * 2_000_001, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert httpx.get(f"{gpt.url}/v1/completions").status_code == 405
    assert httpx.get(f"{gpt.url}/health").json()["status"] == "ok"


def test_a_client_that_leaves_frees_its_sequence(models, gpt):
    endless = endless_prompt(models)  # without the cancel it would run all 450 tokens
    decoded = lambda: gpt.metric('deepseek_wb_serve_batch_size_sum{kind="decode"}')  # tokens the batcher made, read or not
    before = decoded()
    with httpx.stream("POST", f"{gpt.url}/v1/completions", json={"model": "gpt", "prompt": endless, "max_tokens": 450, "stream": True,
                                                                 "temperature": 0}) as r:
        next(r.iter_lines())
    wait_for(lambda: gpt.metric("deepseek_wb_serve_running_sequences") == 0, timeout=20, what="the sequence to leave the batch")
    assert decoded() - before < 400  # the batcher stopped it long before its 450 tokens


def test_full_queue_answers_429_with_retry_after(models):
    s = Served(models["gpt"], "--max-batch", "1", "--max-queue", "1")
    try:
        results = []
        def ask():
            r = httpx.post(f"{s.url}/v1/completions", json={"model": "gpt", "prompt": "x", "max_tokens": 200, "temperature": 0}, timeout=60)
            results.append((r.status_code, r.headers.get("retry-after"), r.json()))
        threads = [threading.Thread(target=ask) for _ in range(6)]
        for t in threads: t.start()
        for t in threads: t.join(120)
        codes = sorted(code for code, _, _ in results)
        assert codes.count(200) >= 2 and codes.count(429) >= 1, codes
        refused = next(r for r in results if r[0] == 429)
        assert int(refused[1]) >= 1 and refused[2]["error"]["type"] == "rate_limit_exceeded"
        assert s.metric("deepseek_wb_serve_rejected_total") == codes.count(429)
        # a queued client that leaves frees its seat in the queue at once, while the batch is still busy
        endless = endless_prompt(models)
        long = threading.Thread(target=lambda: httpx.post(f"{s.url}/v1/completions", timeout=60, json={
            "model": "gpt", "prompt": endless, "max_tokens": 480, "temperature": 0}))
        long.start()
        wait_for(lambda: s.metric("deepseek_wb_serve_running_sequences") == 1, timeout=20, what="the long request to run")
        with httpx.stream("POST", f"{s.url}/v1/completions", json={"model": "gpt", "prompt": "y", "max_tokens": 5, "stream": True}) as r:
            assert r.status_code == 200
        wait_for(lambda: s.metric("deepseek_wb_serve_queue_depth") == 0, timeout=10, what="the queue to free the seat")
        assert s.metric("deepseek_wb_serve_running_sequences") == 1  # the long one still runs: the seat came back early
        r = httpx.post(f"{s.url}/v1/completions", json={"model": "gpt", "prompt": "z", "max_tokens": 2}, timeout=60)
        assert r.status_code == 200, r.text
        long.join(60)
    finally: s.close()


def test_sigterm_drains_what_is_in_flight(models, tmp_path):
    status = tmp_path/"status.json"
    s = Served(models["gpt"], status=status)
    assert json.loads(status.read_text())["state"] == "ready"
    got = {}
    def ask():
        got["r"] = httpx.post(f"{s.url}/v1/completions", json={"model": "gpt", "prompt": "x", "max_tokens": 400, "temperature": 0}, timeout=60)
    t = threading.Thread(target=ask)
    t.start()
    wait_for(lambda: s.metric("deepseek_wb_serve_running_sequences") == 1, timeout=20, what="the request to run")
    s.proc.send_signal(signal.SIGTERM)
    t.join(60)
    assert got["r"].status_code == 200 and got["r"].json()["choices"][0]["text"] == alone(models, "x", 400)  # finished, not cut
    assert s.proc.wait(30) == 0
    assert json.loads(status.read_text())["state"] == "stopped"
    with pytest.raises(httpx.ConnectError): httpx.get(f"{s.url}/health")


def test_classifier_batches_and_answers_labels(models):
    s = Served(models["bert"], "--max-wait-ms", "20")
    try:
        out = []
        def ask(text):
            out.append(httpx.post(f"{s.url}/v1/classify", json={"model": "bert", "input": text}).json())
        threads = [threading.Thread(target=ask, args=(f"text number {i}",)) for i in range(12)]
        for t in threads: t.start()
        for t in threads: t.join(60)
        assert all(r["data"][0]["label"] in ("no", "yes") for r in out)
        assert all(abs(sum(r["data"][0]["probs"].values()) - 1) < 1e-5 for r in out)
        calls = s.metric('deepseek_wb_serve_batch_size_count{kind="batch"}')
        assert calls < 12  # twelve requests in fewer model calls
    finally: s.close()


def test_a_run_with_an_export_is_served_on_onnx_runtime(models, tmp_path):
    from deepseek_wb.export import export_model
    run = tmp_path/"run"
    (run/"final").mkdir(parents=True)
    for f in models["gpt"].iterdir(): (run/"final"/f.name).write_bytes(f.read_bytes())
    (run/"status.json").write_text(json.dumps({"state": "finished"}))
    (run/"config.json").write_text("{}")
    export_model(run)
    s = Served(run)
    try:
        listed = httpx.get(f"{s.url}/v1/models").json()["data"][0]
        assert (listed["id"], listed["runtime"]) == ("run", "onnx")
        r = httpx.post(f"{s.url}/v1/completions", json={"model": "run", "prompt": PROMPTS[0], "max_tokens": 12, "temperature": 0}).json()
        assert r["choices"][0]["text"] == alone(models, PROMPTS[0], 12)
    finally: s.close()
    # the Triton model repository beside it, read by Triton's own schema
    config = triton_schema().ModelConfig()
    text_format.Parse((run/"export"/"triton"/"run"/"config.pbtxt").read_text(), config)
    assert (config.name, config.backend, config.max_batch_size, config.dynamic_batching.max_queue_delay_microseconds) == ("run", "onnxruntime", 32, 5000)
    assert [i.name for i in config.input][:3] == ["input_ids", "attention_mask", "position_ids"]
    assert list(config.input[3].dims) == [4, -1, 16]  # past keys: heads, positions (dynamic), head size; the batch axis is Triton's
    assert (run/"export"/"triton"/"run"/"1"/"model.onnx").samefile(run/"export"/"model.onnx")


def triton_schema():
    "Triton's ModelConfig protobuf module, as tools/test_deps.sh triton leaves it."
    path = os.path.join(sys.prefix, "share", "deepseek_wb_tests", "triton_model_config_pb2.py")
    if not os.path.isfile(path): pytest.fail(f"no {path}: run tools/test_deps.sh triton (make test does)")
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
