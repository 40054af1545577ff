"""Data benchmarks, side by side in one run (ratios matter; these machines are noisy).

    python bench/data_bench.py [--mb 64] [--repeat 3]

1. Cleaning throughput (MB/s): the default text rules through `Pipeline.run(num_proc=2)` vs a
   plain loop of `re.sub` calls doing the same substitutions in one process.
2. Near-dedup: time, and recall on a corpus with planted near-duplicates (a few words changed).
3. Tokenization: tokens/s of a locally trained BPE tokenizer through `tokens.tokenize`.
"""
import argparse
import html
import json
import os
import random
import re
import sys
import tempfile
import time
import unicodedata

os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
import datasets

datasets.disable_progress_bars()
datasets.disable_caching()

from deepseek_wb.clean import DEFAULT_RULES, NearDedup, Pipeline, TextRule, _shingles, rule_from_dict
from deepseek_wb.data import demo_corpus
from deepseek_wb.tokens import tokenize, train_tokenizer


def corpus(mb: float) -> list[str]:
    "The demo corpus repeated (with a varying suffix, so dedup has work) up to `mb` megabytes."
    base, out, size, i = list(demo_corpus()["text"]), [], 0, 0
    while size < mb * 1e6:
        t = base[i % len(base)] + f" <b>copy {i // len(base)}</b> see https://example.org/{i}"
        out.append(t); size += len(t.encode()); i += 1
    return out


# The same substitutions as the default text rules, written as the plain loop a person would write.
_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[A-Za-z/!][^<>]{0,2000}>", re.S | re.I)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"']+", re.I)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_SPACES, _NEWLINES = re.compile(r"[ \t\u00a0\u3000]+"), re.compile(r"\s*\n\s*\n\s*")


def plain_loop(texts):
    out = []
    for t in texts:
        t = unicodedata.normalize("NFKC", t)
        t = html.unescape(_TAG.sub(" ", t))
        t = _CONTROL.sub("", t)
        t = _URL.sub("", t)
        t = _EMAIL.sub("", t)
        t = _NEWLINES.sub("\n\n", _SPACES.sub(" ", t)).strip()
        if len(t.split()) >= 8: out.append(t)
    return out


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter(); result = fn(); times.append(time.perf_counter() - t)
    return min(times), result


def bench_clean(mb, repeat):
    texts = corpus(mb)
    size = sum(len(t.encode()) for t in texts) / 1e6
    text_rules = [r for r in DEFAULT_RULES if isinstance(rule_from_dict(r), TextRule)]
    ds = datasets.Dataset.from_dict({"text": texts})
    t_loop, kept_loop = best(lambda: plain_loop(texts), repeat)
    t_one, (c1, _) = best(lambda: Pipeline(text_rules).run(ds, num_proc=None), repeat)
    t_two, (c2, _) = best(lambda: Pipeline(text_rules).run(ds, num_proc=2), repeat)
    assert list(c2["text"]) == kept_loop == list(c1["text"]), "the pipeline and the plain loop disagree"
    return dict(mb=round(size, 1), loop_mb_s=round(size / t_loop, 2), pipeline_1proc_mb_s=round(size / t_one, 2),
                pipeline_2proc_mb_s=round(size / t_two, 2), ratio_2proc_vs_loop=round(t_loop / t_two, 2),
                ratio_1proc_vs_loop=round(t_loop / t_one, 2))


def jaccard(a: str, b: str, n: int) -> float:
    sa, sb = _shingles(a, n), _shingles(b, n)
    return len(sa & sb) / len(sa | sb)


def bench_dedup(n_docs, seed=0, **params):
    rng = random.Random(seed)
    base = [t for t in demo_corpus()["text"] if len(t.split()) >= 40][:n_docs]
    planted = []
    for i in rng.sample(range(len(base)), len(base) // 5):
        words = base[i].split()
        for _ in range(max(1, len(words) // 50)):  # change ~2% of the words
            words[rng.randrange(len(words))] = rng.choice(["alpha", "beta", "gamma", "delta"])
        planted.append((i, " ".join(words)))
    texts = base + [t for _, t in planted]
    t = time.perf_counter()
    rule = NearDedup(**params)
    removed, clusters = rule.find(texts, num_proc=2)
    elapsed = time.perf_counter() - t
    found = sum(1 for k, _ in enumerate(planted) if len(base) + k in removed)
    # precision: a removed text is right when its true shingle Jaccard with its cluster's kept text reaches the threshold
    pairs = [(g[0], i) for g in clusters for i in g[1:]]
    right = sum(1 for a, b in pairs if jaccard(texts[a], texts[b], rule.ngram) >= rule.threshold)
    return dict(docs=len(texts), planted=len(planted), threshold=rule.threshold, ngram=rule.ngram,
                seconds=round(elapsed, 2), docs_per_s=round(len(texts) / elapsed), recall=round(found / len(planted), 3),
                removed=len(removed), precision=round(right / max(len(pairs), 1), 3))


def bench_tokenize(mb):
    texts = corpus(mb)
    tok = train_tokenizer(texts[:3000], vocab_size=8192)
    ds = datasets.Dataset.from_dict({"text": texts})
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        out = tokenize(ds, tok, max_length=512, num_proc=2, cache_dir=cache)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        tokenize(ds, tok, max_length=512, num_proc=2, cache_dir=cache)
        warm = time.perf_counter() - t
    n = len(out) * 512
    return dict(tokens=n, tokens_per_s=round(n / cold), cached_load_s=round(warm, 2))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=64, help="size of the cleaning and tokenization corpus")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dedup-docs", type=int, default=2000)
    args = p.parse_args(argv)
    results = dict(cores=os.cpu_count(), clean=bench_clean(args.mb, args.repeat), near_dedup=bench_dedup(args.dedup_docs),
                   tokenize=bench_tokenize(args.mb / 4))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
