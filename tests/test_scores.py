"""The task metrics of `deepseek_wb.scores` agree with the libraries they come from (scikit-learn, scipy,
sacrebleu, rouge-score) on hand-made fixtures to 1e-9, are None (with a reason) where undefined, and
refuse bad input with an error that says what to do. Fast: no jobs, no models."""
import json
import math
import warnings

import numpy as np
import pytest
import sacrebleu
import scipy.stats
from rouge_score import rouge_scorer
from sklearn import metrics as skm

from deepseek_wb.scores import (METRICS, TASK_METRICS, TASKS, CjkTokenizer, classification_scores, generation_scores,
                                has_cjk, higher_is_better, is_better, lm_scores, regression_scores, score)


def close(a, b):
    assert a is not None and math.isclose(a, b, rel_tol=0, abs_tol=1e-9), (a, b)


BIN_TRUE = [0, 1, 1, 0, 1, 0, 1, 1, 0, 0]
BIN_PRED = [0, 1, 0, 0, 1, 1, 1, 1, 0, 1]
BIN_P1 = np.array([0.2, 0.9, 0.4, 0.1, 0.7, 0.6, 0.8, 0.95, 0.3, 0.55])
BIN_PROBS = np.column_stack([1 - BIN_P1, BIN_P1])

TRI_LABELS = ["cat", "dog", "fox"]
TRI_TRUE = ["cat", "dog", "fox", "cat", "fox", "fox", "dog", "cat"]
TRI_PRED = ["cat", "dog", "fox", "dog", "dog", "fox", "dog", "fox"]
TRI_PROBS = np.array([[.7, .2, .1], [.1, .8, .1], [.2, .3, .5], [.3, .6, .1],
                      [.3, .4, .3], [.1, .1, .8], [.25, .5, .25], [.4, .1, .5]])


def check_against_sklearn(s, y_true, y_pred, probs, labels):
    close(s["accuracy"], skm.accuracy_score(y_true, y_pred))
    for avg in ("macro", "micro"):
        close(s[f"precision_{avg}"], skm.precision_score(y_true, y_pred, average=avg, zero_division=0.0))
        close(s[f"recall_{avg}"], skm.recall_score(y_true, y_pred, average=avg, zero_division=0.0))
        close(s[f"f1_{avg}"], skm.f1_score(y_true, y_pred, average=avg, zero_division=0.0))
    pr, rc, f1, n = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0.0)
    rows = s.details["per_class"]
    assert [r["label"] for r in rows] == labels == s.details["labels"]
    for r, *expected in zip(rows, pr, rc, f1, n):
        for got, want in zip((r["precision"], r["recall"], r["f1"], r["support"]), expected): close(got, want)
    assert s.details["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    close(s["log_loss"], skm.log_loss(y_true, probs, labels=labels))


def test_binary_classification_matches_sklearn():
    s = classification_scores(BIN_TRUE, BIN_PRED, probs=BIN_PROBS)
    check_against_sklearn(s, BIN_TRUE, BIN_PRED, BIN_PROBS, [0, 1])
    close(s["roc_auc"], skm.roc_auc_score(BIN_TRUE, BIN_P1))
    close(s["accuracy"], 7 / 10)  # by hand: examples 2, 5 and 9 are wrong
    assert s.details["confusion_matrix"] == [[3, 2], [1, 4]]


def test_three_classes_with_named_labels_match_sklearn():
    s = classification_scores(TRI_TRUE, TRI_PRED, probs=TRI_PROBS, labels=TRI_LABELS)
    check_against_sklearn(s, TRI_TRUE, TRI_PRED, TRI_PROBS, TRI_LABELS)
    close(s["roc_auc"], skm.roc_auc_score(TRI_TRUE, TRI_PROBS, multi_class="ovr", average="macro", labels=TRI_LABELS))
    close(s["accuracy"], 5 / 8)


def test_probabilities_columns_are_class_indices_by_default():
    y_true, y_pred = [0, 1, 2, 0, 2, 2, 1, 0], [0, 1, 2, 1, 1, 2, 1, 2]
    s = classification_scores(y_true, y_pred, probs=TRI_PROBS)
    check_against_sklearn(s, y_true, y_pred, TRI_PROBS, [0, 1, 2])
    close(s["roc_auc"], skm.roc_auc_score(y_true, TRI_PROBS, multi_class="ovr"))


def test_a_class_never_predicted_has_precision_zero_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = classification_scores(["a", "b", "c", "c"], ["a", "a", "c", "c"])
    assert s.details["per_class"][1] == dict(label="b", precision=0.0, recall=0.0, f1=0.0, support=1)
    close(s["precision_macro"], (0.5 + 0.0 + 1.0) / 3)
    assert s["roc_auc"] is None and s["log_loss"] is None and "no probabilities" in s.details["undefined"]["roc_auc"]


def test_roc_auc_is_none_when_a_class_is_absent_from_y_true():
    probs = [[.9, .05, .05], [.6, .3, .1], [.2, .7, .1], [.1, .6, .3]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = classification_scores([0, 0, 1, 1], [0, 0, 1, 1], probs=probs)
    assert s["roc_auc"] is None and "class 2 never occurs in y_true" in s.details["undefined"]["roc_auc"]
    close(s["log_loss"], skm.log_loss([0, 0, 1, 1], probs, labels=[0, 1, 2]))
    assert classification_scores([1, 1], [1, 0], probs=[[.2, .8], [.6, .4]])["roc_auc"] is None  # binary, one class only


@pytest.mark.parametrize("kwargs, message", [
    (dict(y_true=[0, 1, 1], y_pred=[0, 1]), "lengths differ"),
    (dict(y_true=[0, 1], y_pred=[0, 1], probs=[[0.6, 0.6], [0.5, 0.5]]), "row 0 sums to 1.2"),
    (dict(y_true=[0, 1], y_pred=[0, 1], probs=[[0.5, 0.5], [0.5, 0.50001]]), "row 1 sums to 1.00001"),
    (dict(y_true=[0, 1], y_pred=[0, 1], probs=[[1.5, -0.5], [0, 1]]), "not logits"),
    (dict(y_true=[0, 1, 1], y_pred=[0, 1, 1], probs=[[0.5, 0.5], [0.5, 0.5]]), "2 rows for 3 examples"),
    (dict(y_true=[0, 1], y_pred=[0, 1], probs=[[1, 0, 0], [0, 1, 0]], labels=[0, 1]), "3 columns for 2 labels"),
    (dict(y_true=["x", "y"], y_pred=["x", "y"], probs=[[1, 0], [0, 1]]), "pass labels="),
    (dict(y_true=[0, 3], y_pred=[0, 1], labels=[0, 1]), "hold [3]"),
    (dict(y_true=[], y_pred=[]), "empty"),
])
def test_bad_classification_input_is_refused(kwargs, message):
    with pytest.raises(ValueError) as e: classification_scores(**kwargs)
    assert message in str(e.value), str(e.value)


def test_probability_rows_within_the_tolerance_are_accepted_without_warnings():
    probs = np.array([[0.5, 0.5 + 5e-7], [0.25, 0.75]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = classification_scores([0, 1], [0, 1], probs=probs)
    close(s["log_loss"], skm.log_loss([0, 1], probs / probs.sum(1, keepdims=True)))


REG_TRUE = [3.0, -0.5, 2.0, 7.0, 4.2, 1.1, 0.0]
REG_PRED = [2.5, 0.0, 2.0, 8.0, 4.0, 1.7, -0.3]


def test_regression_matches_sklearn_and_scipy():
    s = regression_scores(REG_TRUE, REG_PRED)
    close(s["mse"], skm.mean_squared_error(REG_TRUE, REG_PRED))
    close(s["mae"], skm.mean_absolute_error(REG_TRUE, REG_PRED))
    close(s["r2"], skm.r2_score(REG_TRUE, REG_PRED))
    close(s["pearson"], scipy.stats.pearsonr(REG_TRUE, REG_PRED).statistic)
    close(s["spearman"], scipy.stats.spearmanr(REG_TRUE, REG_PRED).statistic)
    close(regression_scores([1.0, 2.0], [1.0, 4.0])["mse"], 2.0)  # by hand: (0 + 4) / 2


def test_undefined_correlations_are_none_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flat_pred = regression_scores(REG_TRUE, [2.0] * len(REG_TRUE))
        flat_true = regression_scores([1.0] * 3, [1.0, 2.0, 3.0])
        one = regression_scores([1.0], [2.0])
    assert flat_pred["pearson"] is None and flat_pred["spearman"] is None
    assert "y_pred is constant" in flat_pred.details["undefined"]["pearson"]
    close(flat_pred["r2"], skm.r2_score(REG_TRUE, [2.0] * len(REG_TRUE)))
    assert flat_true["r2"] is None and flat_true["pearson"] is None and "y_true is constant" in flat_true.details["undefined"]["r2"]
    assert one["r2"] is None and one["spearman"] is None and one["mse"] == 1.0


def test_bad_regression_input_is_refused():
    for args, message in [(([1.0, 2.0], [1.0]), "lengths differ"), (([1.0, math.inf], [1.0, 2.0]), "y_true[1] is not a finite"),
                          ((["a"], [1.0]), "must be numbers"), (([[1.0]], [1.0]), "non-empty list of numbers")]:
        with pytest.raises(ValueError) as e: regression_scores(*args)
        assert message in str(e.value), str(e.value)


def test_perplexity_is_exp_of_the_mean_token_loss():
    s = lm_scores(loss_sum=2.0 * 400, tokens=400, correct=100)
    close(s["perplexity"], math.e ** 2)
    close(s["eval_loss"], 2.0)
    close(s["token_accuracy"], 0.25)
    capped = lm_scores(loss_sum=1e9, tokens=1)
    assert capped["perplexity"] == math.exp(50) and capped.details["perplexity_capped"] is True
    assert lm_scores(float("inf"), 3)["perplexity"] is None and lm_scores(1.0, 3)["token_accuracy"] is None


@pytest.mark.parametrize("args, message", [((-1.0, 5), "never negative"), ((1.0, 0), "positive count"), ((1.0, 2.5), "positive count"),
                                           ((1.0, 5, 6), "between 0 and tokens")])
def test_bad_lm_input_is_refused(args, message):
    with pytest.raises(ValueError) as e: lm_scores(*args)
    assert message in str(e.value)


EN_PRED = ["the cat sat on the mat", "A dog ran  home\n", "it is raining today in the city", "hello world"]
EN_REF = ["the cat sat on a mat", "A dog ran home", "today it rains in the city", "goodbye world"]
ZH_PRED = ["今天天气很好，我们去公园散步。", "他喜欢读书", "这个模型的效果不错", "明天下雨"]
ZH_REF = ["今天的天气很好，我们去公园走走。", "他喜欢读书", "这个模型效果很好", "后天晴天"]


class CharTokenizer:
    "An independent oracle for Chinese prose: each letter or digit character one token (punctuation dropped)."
    def tokenize(self, text): return [c for c in text.lower() if c.isalnum()]


def mean_rouge_l(preds, refs, **kwargs):
    scorer = rouge_scorer.RougeScorer(["rougeL"], **kwargs)
    return float(np.mean([scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs)]))


def test_english_generation_matches_sacrebleu_and_rouge_score():
    s = generation_scores(EN_PRED, EN_REF)
    close(s["bleu"], sacrebleu.corpus_bleu(EN_PRED, [EN_REF]).score)
    close(s["rouge_l"], mean_rouge_l(EN_PRED, EN_REF))  # the library's default tokenizer: the same tokens on ASCII
    close(s["exact_match"], 1 / 4)  # the second pair differs only in whitespace
    assert s.details["bleu_tokenize"] == "13a" and "tok:13a" in s.details["bleu_signature"]


def test_chinese_generation_uses_character_tokens():
    s = generation_scores(ZH_PRED, ZH_REF)
    close(s["bleu"], sacrebleu.corpus_bleu(ZH_PRED, [ZH_REF], tokenize="zh").score)
    assert s.details["bleu_tokenize"] == "zh"
    close(s["rouge_l"], mean_rouge_l(ZH_PRED, ZH_REF, tokenizer=CharTokenizer()))
    assert mean_rouge_l(ZH_PRED, ZH_REF) == 0.0 < s["rouge_l"]  # rouge-score's default tokenizer drops every Chinese character
    assert sacrebleu.corpus_bleu(ZH_PRED, [ZH_REF]).score != s["bleu"]  # 13a would see each sentence as one word
    close(s["exact_match"], 1 / 4)


def test_the_cjk_tokenizer():
    assert CjkTokenizer().tokenize("用 Python3 训练ＧＰＴ，Café!") == ["用", "python3", "训", "练", "gpt", "café"]
    text = "It's the 2nd time: e-mail me_now, OK?"
    assert CjkTokenizer().tokenize(text) == rouge_scorer.RougeScorer(["rougeL"])._tokenizer.tokenize(text)
    assert has_cjk("ひらがな") and has_cjk("한국어") and has_cjk("汉字") and not has_cjk("Ünïcödé, ½")


def test_bad_generation_input_is_refused():
    for args, message in [((["a"], ["a", "b"]), "lengths differ"), ((["a", 3], ["a", "b"]), "predictions[1] is int"),
                          (([], []), "non-empty list"), (("abc", ["abc"]), "non-empty list")]:
        with pytest.raises(ValueError) as e: generation_scores(*args)
        assert message in str(e.value), str(e.value)


def test_the_registry():
    assert set(TASK_METRICS) == set(TASKS)
    assert {n for names in TASK_METRICS.values() for n in names} == set(METRICS)
    assert not higher_is_better("log_loss") and not higher_is_better("mse") and higher_is_better("rouge_l")
    assert is_better("eval_loss", 1.0, 2.0) and not is_better("eval_loss", 2.0, 1.0) and is_better("f1_macro", 0.2, None)
    assert not is_better("f1_macro", None, 0.2) and not is_better("f1_macro", 0.5, 0.5) and not is_better("f1_macro", math.nan, 0.1)
    with pytest.raises(ValueError, match="unknown metric 'perplexty': did you mean 'perplexity'"): is_better("perplexty", 1, 2)
    with pytest.raises(ValueError, match="known: accuracy"): higher_is_better("qqqq")


def test_score_dispatches_and_returns_every_metric_of_the_task_as_json():
    inputs = dict(classification=dict(y_true=BIN_TRUE, y_pred=BIN_PRED, probs=BIN_PROBS),
                  regression=dict(y_true=REG_TRUE, y_pred=[2.0] * len(REG_TRUE)),
                  causal_lm=dict(loss_sum=12.0, tokens=4), masked_lm=dict(loss_sum=12.0, tokens=4, correct=1),
                  generation=dict(predictions=ZH_PRED, references=ZH_REF))
    for task, kwargs in inputs.items():
        s = score(task, **kwargs)
        assert list(s.metrics) == TASK_METRICS[task]
        assert set(s.details["undefined"]) == {k for k, v in s.metrics.items() if v is None}
        json.dumps(s.to_dict(), allow_nan=False)
    close(score("classification", **inputs["classification"])["f1_macro"], skm.f1_score(BIN_TRUE, BIN_PRED, average="macro"))
    with pytest.raises(ValueError, match="did you mean 'regression'"): score("regresion", y_true=[1.0], y_pred=[1.0])
    with pytest.raises(ValueError, match=r"lm_scores\(loss_sum"): score("causal_lm", loss=1.0, tokens=3)
