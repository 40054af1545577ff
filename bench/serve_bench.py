"""The server under load on loopback: batching against one request at a time, side by side in one run.

    python bench/serve_bench.py [--runtime torch|onnx] [--seconds 8] [--clients 1 8 32 64] [--quick]

Two models built from configs with a tokenizer trained on the demo corpus: a GPT-2 (hidden 256, 4
layers) for generation and a BERT classifier of the same size, served in torch (`--runtime onnx`: exported
with `export_model` and served on ONNX Runtime). Each is served twice
by `deepseek-wb serve` in processes of their own, `--max-batch 1` and the default (32), and loaded by
1, 8, 32 and 64 closed-loop clients (each sends its next request when its answer comes; generation: a
prompt and 32 tokens; classification: a docstring of the demo corpus of 150 to 400 characters) for a fixed
time; the two servers take turns at each client count, so that a change in the machine's load hits
both alike. Figures: requests/s, tokens/s (generation), p50 and p99 latency, the mean batch per model
call and the mean model call's time (from the server's /metrics).
Goals (issue #13): generation at 32 clients >= 2x the requests/s of --max-batch 1; classification
p99 <= max-wait + 2 model calls' time (the batch's, at that load).
Run it on an otherwise idle machine. Writes runs/serve-bench.json.
"""
import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["def add(a, b):", "Return the sorted list of", "import os\n", "class Point:", "for i in range(", "请把列表排序", "x = ",
           "Parse the arguments and"]
MAX_WAIT_MS = 5.0


def build(folder: Path, quick: bool) -> dict[str, Path]:
    "A GPT-2 and a BERT classifier saved with a tokenizer trained here; their folders."
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, BertConfig, GPT2Config
    from deepseek_wb.data import demo_corpus
    from deepseek_wb.tokens import train_tokenizer
    tok = train_tokenizer(list(demo_corpus()["text"][:2000]), vocab_size=2000)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, vocab_size=len(tok))
    size = dict(n_embd=64, n_layer=2, n_head=4) if quick else dict(n_embd=256, n_layer=4, n_head=4)
    torch.manual_seed(0)
    gpt = AutoModelForCausalLM.from_config(GPT2Config(n_positions=512, **size, **ids))
    bert = AutoModelForSequenceClassification.from_config(BertConfig(
        hidden_size=size["n_embd"], num_hidden_layers=size["n_layer"], num_attention_heads=size["n_head"],
        intermediate_size=4 * size["n_embd"], max_position_embeddings=512, num_labels=4, **ids))
    out = {}
    for name, model in (("gpt", gpt), ("bert", bert)):
        model.save_pretrained(folder/name)
        tok.save_pretrained(folder/name)
        out[name] = folder/name
    return out


class Server:
    "`deepseek-wb serve` in a process of its own."
    def __init__(self, model: Path, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "deepseek_wb", "serve", str(model), "--port", "0", "--name", "m", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        found = re.search(r"on (http://\S+)", self.proc.stdout.readline())
        if not found: sys.exit(f"the server did not start: {model} {args}")
        self.url = found.group(1)

    def metrics(self) -> dict[str, float]:
        "The server's batch and model-time sums and counts, summed over kinds of call (decode only for generation)."
        out = {}
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            m = re.match(r'deepseek_wb_serve_(batch_size|model_seconds)_(sum|count)\{kind="(decode|batch)"\} (\S+)', line)
            if m: out[f"{m[1]}_{m[2]}"] = float(m[4])
        return out

    def close(self):
        self.proc.terminate()
        self.proc.wait(60)


async def load(url: str, route: str, body, clients: int, seconds: float) -> dict:
    "`clients` closed-loop clients for `seconds`: each request's latency and tokens."
    latencies, tokens, errors = [], [], 0
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients + 4)) as http:
        async def client(k: int):
            nonlocal errors
            i = k
            while time.monotonic() < stop:
                t0 = time.monotonic()
                r = await http.post(f"{url}{route}", json=body(i))
                if r.status_code != 200: errors += 1; continue
                latencies.append(time.monotonic() - t0)
                tokens.append(r.json().get("usage", {}).get("completion_tokens", 0))
                i += clients
        start = time.monotonic()
        await asyncio.gather(*(client(k) for k in range(clients)))
        took = time.monotonic() - start
    lat = np.array(latencies) * 1000
    return dict(requests=len(lat), errors=errors, seconds=took, rps=len(lat) / took, tokens_per_s=sum(tokens) / took,
                p50_ms=float(np.percentile(lat, 50)) if len(lat) else None, p99_ms=float(np.percentile(lat, 99)) if len(lat) else None)


def measure(servers: dict[str, Server], route: str, body, clients: list[int], seconds: float) -> list[dict]:
    "Each client count against each server in turn: a row per (clients, server)."
    rows = []
    for n in clients:
        for label, server in servers.items():
            before = server.metrics()
            row = asyncio.run(load(server.url, route, body, n, seconds))
            after = server.metrics()
            d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            calls = d.get("batch_size_count") or 1
            row |= dict(clients=n, server=label, mean_batch=d.get("batch_size_sum", 0) / calls,
                        model_call_ms=1000 * d.get("model_seconds_sum", 0) / calls)
            rows.append(row)
            print(f"{route:<16} {n:>3} clients  {label:<12} {row['rps']:8.1f} req/s {row['tokens_per_s']:8.0f} tok/s  "
                  f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  batch {row['mean_batch']:5.1f}  call {row['model_call_ms']:6.2f} ms",
                  flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="load per client count and server (default 8)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--max-tokens", type=int, default=32, help="tokens per generation request (default 32)")
    ap.add_argument("--runtime", choices=["onnx", "torch"], default="torch", help="serve the model folders (default) or their exports")
    ap.add_argument("--quick", action="store_true", help="tiny models, 2 s per point: check that the benchmark runs")
    args = ap.parse_args()
    seconds = 2.0 if args.quick else args.seconds
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        folders = build(Path(tmp), args.quick)
        if args.runtime == "onnx":
            from deepseek_wb.export import export_model
            folders = {name: Path(export_model(folder, Path(tmp)/f"{name}-export")["onnx"]).parent for name, folder in folders.items()}
        result = dict(runtime=args.runtime, clients=args.clients, seconds=seconds, max_tokens=args.max_tokens, max_wait_ms=MAX_WAIT_MS)
        from deepseek_wb.data import demo_corpus
        texts = [t for t in demo_corpus()["text"] if 150 <= len(t) <= 400][:400]  # docstrings of a few sentences, 40 to 110 tokens
        gen = lambda i: dict(model="m", prompt=PROMPTS[i % len(PROMPTS)], max_tokens=args.max_tokens, temperature=0)
        cls = lambda i: dict(model="m", input=texts[i % len(texts)])
        for task, folder, route, body in (("generation", folders["gpt"], "/v1/completions", gen),
                                          ("classification", folders["bert"], "/v1/classify", cls)):
            servers = {"max-batch 1": Server(folder, "--max-batch", "1", "--max-queue", "1024"),
                       "default": Server(folder, "--max-queue", "1024", "--max-wait-ms", str(MAX_WAIT_MS))}
            try: result[task] = measure(servers, route, body, args.clients, seconds)
            finally:
                for s in servers.values(): s.close()
    rows = {(r["clients"], r["server"]): r for r in result["generation"]}
    if 32 in args.clients:
        result["generation_ratio_at_32"] = rows[32, "default"]["rps"] / rows[32, "max-batch 1"]["rps"]
        print(f"generation at 32 clients: {result['generation_ratio_at_32']:.2f}x the requests/s of --max-batch 1 (goal >= 2x)")
    checks = []
    for r in result["classification"]:
        if r["server"] != "default": continue
        bound = MAX_WAIT_MS + 2 * r["model_call_ms"]
        checks.append(dict(clients=r["clients"], p99_ms=r["p99_ms"], bound_ms=bound, met=r["p99_ms"] <= bound))
        print(f"classification at {r['clients']:>2} clients: p99 {r['p99_ms']:.1f} ms, max-wait + 2 model calls {bound:.1f} ms: "
              f"{'met' if r['p99_ms'] <= bound else 'NOT met'}")
    result["classification_p99"] = checks
    out = ROOT/"runs"/"serve-bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
