from tunewise.evaluate.compare import compare_systems
from tunewise.evaluate.cost import InferenceCost
from tunewise.evaluate.forgetting import ForgettingResult
from tunewise.evaluate.metrics import classification_metrics
from tunewise.evaluate.results import SystemResult
from tunewise.evaluate.verdict import make_verdict

LABELS = ["a", "b"]
REFS = ["a", "b"] * 50


def system(name, n_right, prompt_tokens=50.0, dollars=0.01):
    preds = REFS[:n_right] + [("b" if r == "a" else "a") for r in REFS[n_right:]]
    cost = InferenceCost(100, prompt_tokens, 1.0, 0.1, 100.0, "CPU", 0.1, dollars)
    return SystemResult(name, "classification", classification_metrics(preds, REFS, LABELS), preds, preds, REFS,
                        LABELS, {}, cost)


def forgetting(flagged):
    return ForgettingResult("mc.jsonl", 50, 0.8, 0.6 if flagged else 0.8, 0.25 if flagged else 0.0, (-0.3, -0.1),
                            "p.jsonl", 20, 0.01, flagged, ["general accuracy fell 25%"] if flagged else [])


def verdict_for(ft_right, flagged=False):
    systems = {"zero_shot": system("zero_shot", 50), "few_shot": system("few_shot", 70, 900, 0.2),
               "fine_tuned": system("fine_tuned", ft_right, 60, 0.02)}
    comps = [compare_systems(systems["fine_tuned"], s, "accuracy") for n, s in systems.items() if n != "fine_tuned"]
    return make_verdict(systems, comps, forgetting(flagged))


def test_ship_when_clearly_better_and_nothing_forgotten():
    v = verdict_for(95)
    assert v.ship and v.best_baseline == "few_shot" and v.reasons == []
    assert "+0.250" in v.text and "$0.02 per 1,000" in v.text and "$0.2 for few-shot" in v.text
    assert v.text.endswith("→ ship.")


def test_no_ship_when_not_better_than_the_best_baseline():
    v = verdict_for(71)
    assert not v.ship
    assert "does not beat few-shot" in v.reasons[0]
    assert "don't ship, because it does not beat few-shot" in v.text


def test_no_ship_when_it_forgets():
    v = verdict_for(95, flagged=True)
    assert not v.ship and v.reasons == ["general accuracy fell 25%"]


def test_no_verdict_without_baselines():
    assert not make_verdict({"fine_tuned": system("fine_tuned", 90)}, [], None).ship


def _imbalanced(name, preds_a_wrong, preds_b_right):
    """200 examples, 180 of class a and 20 of b: `preds_a_wrong` a's called b, `preds_b_right` b's called b."""
    refs = ["a"] * 180 + ["b"] * 20
    preds = ["b"] * preds_a_wrong + ["a"] * (180 - preds_a_wrong) + ["b"] * preds_b_right + \
        ["a"] * (20 - preds_b_right)
    cost = InferenceCost(200, 50.0, 1.0, 0.1, 100.0, "CPU", 0.1, 0.01)
    return SystemResult(name, "classification", classification_metrics(preds, refs, LABELS), preds, preds, refs,
                        LABELS, {}, cost)


def test_the_audits_metric_decides_an_imbalanced_task():
    # The fine-tuned model always answers the majority class: 90 % accuracy against the baseline's 80 %, but
    # macro-F1 0.47 against 0.69, since it never finds a b.
    systems = {"few_shot": _imbalanced("few_shot", 40, 20), "fine_tuned": _imbalanced("fine_tuned", 0, 0)}
    comps = [compare_systems(systems["fine_tuned"], systems["few_shot"], m) for m in ("accuracy", "macro_f1")]
    on_accuracy = make_verdict(systems, comps, None, metric="accuracy")
    assert on_accuracy.ship and on_accuracy.metric == "accuracy"
    on_f1 = make_verdict(systems, comps, None, metric="macro_f1", metric_reason="classes are imbalanced 9:1")
    assert not on_f1.ship and on_f1.metric == "macro_f1"
    assert on_f1.text.startswith("The fine-tuned model scores macro-F1 0.474 (the verdict's metric: classes are "
                                 "imbalanced 9:1)")
    assert "does not beat few-shot on macro-F1" in on_f1.reasons[0]


def test_without_a_recommendation_the_first_headline_metric_decides():
    assert verdict_for(95).metric == "accuracy"
