import numpy as np
import pytest

from tunewise.evaluate.compare import (
    bootstrap_ci,
    compare_systems,
    confidence_intervals,
    paired_bootstrap,
    resample_indices,
)
from tunewise.evaluate.cost import InferenceCost
from tunewise.evaluate.results import SystemResult

LABELS = ["a", "b"]
COST = InferenceCost(1, 1.0, 1.0, 0.1, 10.0, "CPU", 0.1, 0.01)


def system(name, preds, refs):
    from tunewise.evaluate.metrics import classification_metrics

    return SystemResult(name, "classification", classification_metrics(preds, refs, LABELS), preds, preds, refs,
                        LABELS, {}, COST)


def test_bootstrap_ci_brackets_the_mean():
    scores = [1.0] * 70 + [0.0] * 30
    lo, hi = bootstrap_ci(scores)
    assert lo < 0.7 < hi
    assert 0.55 < lo and hi < 0.85


def test_paired_bootstrap_sees_a_real_difference_and_not_a_fake_one():
    a, b = [1.0] * 90 + [0.0] * 10, [1.0] * 50 + [0.0] * 50
    assert paired_bootstrap(a, b)["p_value"] < 0.01
    assert paired_bootstrap(a, a)["p_value"] == 1.0  # identical systems: never "better"
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:10])


def test_compare_systems_and_cis():
    refs = ["a", "b"] * 50
    good = system("fine_tuned", refs[:90] + ["b", "a"] * 5, refs)  # 90 % right
    bad = system("zero_shot", ["a"] * 100, refs)  # 50 % right
    comp = compare_systems(good, bad, "accuracy")
    assert comp.difference == pytest.approx(0.4)
    assert comp.ci[0] > 0.2 and comp.p_value < 0.01
    assert compare_systems(bad, good, "accuracy").p_value > 0.99
    ci = confidence_intervals(good, resample_indices(100, 500, 0))
    assert set(ci) == {"accuracy", "macro_f1", "micro_f1", "invalid_rate"}
    assert ci["accuracy"][0] < 0.9 < ci["accuracy"][1]
    assert ci["invalid_rate"] == (0.0, 0.0)


def test_compare_systems_needs_the_same_test_set():
    with pytest.raises(ValueError, match="same test examples"):
        compare_systems(system("x", ["a"], ["a"]), system("y", ["a"], ["b"]), "accuracy")


def test_lower_is_better_for_perplexity():
    def gen(name, nll):
        ex = {"rouge1": [0.0] * 4, "rouge2": [0.0] * 4, "rouge_l": [0.0] * 4, "exact_match": [0.0] * 4,
              "bleu_stats": [[1, 1] + [0] * 8] * 4, "chrf_stats": [[0.0] * 18] * 4,
              "nll": nll, "answer_tokens": [1] * 4}
        return SystemResult(name, "generation", {"perplexity": float(np.exp(np.mean(nll)))}, [""] * 4, [""] * 4,
                            ["r"] * 4, None, ex, COST)

    low, high = gen("fine_tuned", [0.1] * 4), gen("zero_shot", [2.0] * 4)
    comp = compare_systems(low, high, "perplexity", n_resamples=200)
    assert comp.difference < 0 and comp.p_value == 0.0
