"""Languages written without spaces: Chinese documents pass the default cleaning, and their near-duplicates are
found as well as English ones.

The Chinese documents are the shipped slice of the demo corpus (paragraphs of Debian's manpages-zh, one page
each); the English ones are the standard library's docstrings. Near-duplicates are planted by small random edits:
2% of the units (at least one) changed, inserted or deleted; characters in Chinese, words in English."""
import json
import random
from importlib.resources import files

import datasets
import pytest

from deepseek_wb.clean import DEFAULT_RULES, ExactDedup, Length, NearDedup, Pipeline, Unicode, _shingles, text_units
from deepseek_wb.data import demo_corpus
from deepseek_wb.tokens import train_tokenizer

PARAGRAPH = "列出指定文件（默认为当前目录）的信息。如果既没有指定任何一个排序选项，也没有指定显示格式，则按字母排序。"


@pytest.fixture(scope="module")
def zh() -> list[str]:
    return list(demo_corpus(lang="zh")["text"])


def test_the_slice_is_real_prose_with_its_licence_beside_it(zh):
    corpora = files("deepseek_wb") / "corpora"
    assert len((corpora / "zh.jsonl").read_bytes()) < 1_000_000
    rows = [json.loads(line) for line in (corpora / "zh.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(zh) >= 300 and len({r["source"] for r in rows}) == len(rows)  # one page each
    readme = (corpora / "README.md").read_text(encoding="utf-8")
    assert "manpages-zh" in readme and "GFDL-1.2+" in readme and (corpora / "GFDL-1.2.txt").is_file()
    assert all(sum(len(u) == 1 for u in text_units(t)) > len(t) / 3 for t in zh)  # mostly Chinese characters


def test_chinese_documents_pass_the_default_pipeline(zh):
    by_words = sum(len(t.split()) < 8 for t in zh)  # what the length rule removed when it counted whitespace words
    cleaned, report = Pipeline(DEFAULT_RULES).run(datasets.Dataset.from_dict({"text": zh}))
    by = {r.rule["rule"]: r for r in report.rules}
    print(f"{by_words} of {len(zh)} under 8 whitespace words; kept {report.rows_out}\n{report}")
    assert by_words > len(zh) / 10
    assert by["length"].removed == 0
    assert report.rows_out >= len(zh) - by["near_dedup"].removed - by["exact_dedup"].removed >= 0.97 * len(zh)


def test_a_short_chinese_paragraph_and_an_english_sentence_are_kept():
    rule = Length(**{k: v for k, v in DEFAULT_RULES[6].items() if k != "rule"})
    assert rule.min_tokens == 8 and 45 <= len(PARAGRAPH) <= 55 and len(PARAGRAPH.split()) == 1
    sentence = "An English sentence of exactly nine words is kept."
    assert (rule(PARAGRAPH), rule(sentence)) == (PARAGRAPH, sentence)
    assert rule("太短了。") is None and rule("Too short.") is None


def edit(text: str, rng: random.Random, chinese: bool, alphabet: list[str]) -> str:
    "`text` with 2% of its units (at least one) changed, inserted or deleted: characters in Chinese, words in English."
    units = list(text) if chinese else text.split()
    for _ in range(max(1, len(units) // 50)):
        i, op = rng.randrange(len(units)), rng.choice("cid")
        if op == "c": units[i] = rng.choice(alphabet)
        elif op == "i": units.insert(i, rng.choice(alphabet))
        else: del units[i]
    return ("" if chinese else " ").join(units)


def jaccard(a: str, b: str, n: int = 3) -> float:
    sa, sb = _shingles(a, n), _shingles(b, n)
    return len(sa & sb) / len(sa | sb)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_near_duplicates_are_found_in_chinese_as_in_english(lang, zh):
    rng = random.Random(0)
    if lang == "zh": base = zh
    else: base = [t for t in demo_corpus()["text"] if len(t.split()) >= 40][:len(zh)]
    alphabet = sorted({c for t in base for c in t if not c.isspace()}) if lang == "zh" else ["alpha", "beta", "gamma", "delta"]
    picked = rng.sample(range(len(base)), 200)
    texts = base + [edit(base[i], rng, lang == "zh", alphabet) for i in picked]
    rule = NearDedup()
    removed, clusters = rule.find(texts)
    recall = sum(len(base) + k in removed for k in range(len(picked))) / len(picked)
    # distinct documents put together: a false merge when their own shingles barely overlap
    merged = [(g[0], i) for g in clusters for i in g[1:] if i < len(base)]
    false = [(a, b) for a, b in merged if jaccard(texts[a], texts[b]) < 0.5]
    print(f"{lang}: recall {recall:.3f} over {len(picked)} pairs; {len(merged)} of {len(base)} originals merged "
          f"(true Jaccard {[round(jaccard(texts[a], texts[b]), 2) for a, b in merged]}), {len(false)} false")
    assert recall >= 0.95
    assert len(false) <= 0.01 * len(base)


def test_chinese_text_keeps_its_characters():
    assert Length(max_tokens=5, action="truncate")(PARAGRAPH) == PARAGRAPH[:5]
    assert Length(max_tokens=4, action="truncate")("使用 ls 命令列出目录") == "使用 ls 命"
    assert text_units("カタカナとひらがな、한국어") == list("カタカナとひらがな、한국어")
    assert ExactDedup().find([PARAGRAPH, PARAGRAPH.replace("，", ", "), PARAGRAPH[::-1]])[0] == {1}


def test_the_unicode_rule_says_what_it_rewrote_and_can_keep_fullwidth_punctuation():
    text = "注意：（默认）不按ＡＢＣ排序！"
    assert Unicode()(text) == "注意:(默认)不按ABC排序!"
    assert Unicode(keep_fullwidth_punct=True)(text) == "注意：（默认）不按ABC排序！"
    _, report = Pipeline(["unicode"]).run(datasets.Dataset.from_dict({"text": [text, "plain ascii"]}))
    details = report.rules[0].details
    assert details["rewritten"] == {"full-width punctuation": 4, "full-width letters and digits": 3}
    assert "keep_fullwidth_punct" in details["note"] and "full-width punctuation 4" in str(report)


def test_the_runs_tokenizer_counts_and_cuts(zh):
    tok = train_tokenizer(zh, vocab_size=1000)
    pipeline = Pipeline([dict(rule="length", min_tokens=8, max_tokens=30, action="truncate")], tokenizer=tok)
    count = lambda t: len(tok(t, add_special_tokens=False)["input_ids"])
    long = [t for t in zh if count(t) > 30][:40]
    out, report = pipeline.run(datasets.Dataset.from_dict({"text": long}), num_proc=2)  # the tokenizer travels to workers
    assert report.rules[0].changed == len(long) == len(out)
    assert all(t.startswith(c) and 0 < count(c) <= 30 for t, c in zip(long, out["text"]))
    assert pipeline.to_list() == [dict(rule="length", min_tokens=8, max_tokens=30, action="truncate", tokenizer=None)]
