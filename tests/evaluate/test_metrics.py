import math
import random

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, f1_score

from tunewise.evaluate.metrics import (
    INVALID,
    classification_metrics,
    generation_examples,
    generation_metrics,
    parse_label,
    per_class,
    perplexity,
    resampled_classification,
    resampled_generation,
)

LABELS = ["business", "sport", "card", "card arrival"]


@pytest.mark.parametrize("text,expected", [
    ("sport", "sport"), ("Sport.", "sport"), ("The topic is sports.", "sport"),
    ("card arrival", "card arrival"), ("it is about my card arrival", "card arrival"),
    ("business and sport", INVALID), ("weather", INVALID), ("", INVALID),
])
def test_parse_label(text, expected):
    assert parse_label(text, LABELS) == expected


def random_predictions(n=300, seed=0):
    rng = random.Random(seed)
    refs = [rng.choice(LABELS) for _ in range(n)]
    preds = [r if rng.random() < 0.5 else rng.choice([*LABELS, INVALID]) for r in refs]
    return preds, refs


def sklearn_metrics(preds, refs):
    return {"accuracy": accuracy_score(refs, preds),
            "macro_f1": f1_score(refs, preds, labels=LABELS, average="macro", zero_division=0),
            "micro_f1": f1_score(refs, preds, labels=LABELS, average="micro", zero_division=0),
            "invalid_rate": sum(p == INVALID for p in preds) / len(preds)}


def test_classification_metrics_agree_with_sklearn():
    preds, refs = random_predictions()
    assert classification_metrics(preds, refs, LABELS) == pytest.approx(sklearn_metrics(preds, refs))


def test_resampled_classification_equals_scoring_each_resample():
    preds, refs = random_predictions(60, seed=1)
    idx = np.random.default_rng(0).integers(0, 60, size=(5, 60))
    got = resampled_classification(refs, preds, LABELS, idx)
    for r, row in enumerate(idx):
        expected = sklearn_metrics([preds[i] for i in row], [refs[i] for i in row])
        assert {m: v[r] for m, v in got.items()} == pytest.approx(expected)


def test_per_class_and_confusion():
    preds = ["sport", "sport", INVALID, "business"]
    refs = ["sport", "business", "sport", "business"]
    out = per_class(preds, refs, ["business", "sport"])
    assert out["confusion"]["columns"] == ["business", "sport", INVALID]
    assert out["confusion"]["matrix"] == [[1, 1, 0], [0, 1, 1]]
    assert out["per_class"]["sport"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert out["per_class"]["business"]["precision"] == 1.0


PREDS = ["the cat sat on the mat", "hello world", "a b c d e f", "totally different answer here", "x"]
REFS = ["the cat sat on a mat", "hello world", "a b c d x f", "something else", "x"]


def test_generation_metrics_agree_with_the_libraries():
    got = generation_metrics(generation_examples(PREDS, REFS))
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(r, p) for p, r in zip(PREDS, REFS)]
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS]).score)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(PREDS, [REFS]).score)
    assert got["rouge_l"] == pytest.approx(np.mean([s["rougeL"].fmeasure for s in scores]))
    assert got["rouge2"] == pytest.approx(np.mean([s["rouge2"].fmeasure for s in scores]))
    assert got["exact_match"] == pytest.approx(2 / 5)
    assert "perplexity" not in got


def test_resampled_generation_equals_scoring_each_resample():
    ex = generation_examples(PREDS, REFS)
    ex["nll"], ex["answer_tokens"] = [1.0, 2.0, 3.0, 4.0, 5.0], [1, 2, 2, 4, 1]
    idx = np.array([[0, 0, 3, 4, 2], [1, 2, 3, 3, 3]])
    got = resampled_generation(ex, idx)
    for r, row in enumerate(idx):
        p, ref = [PREDS[i] for i in row], [REFS[i] for i in row]
        assert got["bleu"][r] == pytest.approx(sacrebleu.corpus_bleu(p, [ref]).score)
        assert got["chrf"][r] == pytest.approx(sacrebleu.corpus_chrf(p, [ref]).score)
        nll = sum(ex["nll"][i] for i in row)
        assert got["perplexity"][r] == pytest.approx(math.exp(nll / sum(ex["answer_tokens"][i] for i in row)))


def test_perplexity():
    assert perplexity([2.0, 4.0], [2, 4]) == pytest.approx(math.e)
