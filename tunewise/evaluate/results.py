"""What evaluation produces: one SystemResult per system (with per-example scores, so any two systems
scored on the same frozen test set can be compared later by paired bootstrap) and the EvalResult."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tunewise.evaluate.cost import InferenceCost
from tunewise.evaluate.metrics import resampled_classification, resampled_generation, user_resampled
from tunewise.metrics import LOWER_IS_BETTER
from tunewise.metrics.user import higher_is_better, metric_key

HEADLINE = {"classification": ["accuracy", "macro_f1"], "generation": ["rouge_l", "bleu"],
            "extraction": ["json_f1", "json_valid"]}
# Compared (paired bootstrap) beside the headline metrics whenever every system has them.
SECONDARY = ["slot_error_rate", "json_schema_valid"]


@dataclass
class SystemResult:
    name: str
    task: str  # classification | generation | extraction
    metrics: dict[str, float]
    outputs: list[str]  # raw model output (or the classical model's label), one per test example
    predictions: list[str]  # parsed label (classification) or the text itself
    references: list[str]  # the first reference of each example (what two systems are matched on)
    labels: list[str] | None
    examples: dict[str, list]  # per-example scores and statistics (metrics.generation_examples)
    inference: InferenceCost
    extra: dict = field(default_factory=dict)  # k, shot selection, classification mode...
    user_metrics: list[str] = field(default_factory=list)  # eval.metrics: module:function, re-run per resample

    def resampled(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric on every resample (row of test-example indices)."""
        if self.task == "classification":
            out = resampled_classification(self.references, self.predictions, self.labels or [], idx)
        else:
            out = resampled_generation(self.examples, idx)
        return {**out, **user_resampled(self.user_metrics, self.predictions, self.references, idx)}

    def add_user_metrics(self, specs: list[str]) -> SystemResult:
        """Score the user metrics (eval.metrics) on the whole test set; resamples re-run them."""
        self.user_metrics = list(specs)
        whole = np.arange(len(self.references))[None, :]
        self.metrics.update({m: float(v[0]) for m, v in user_resampled(specs, self.predictions, self.references,
                                                                       whole).items()})
        return self

    def lower_is_better(self, metric: str) -> bool:
        if metric in LOWER_IS_BETTER:
            return True
        return any(metric_key(s) == metric and not higher_is_better(s) for s in self.user_metrics)

    def example_correct(self) -> list[bool]:
        """Per example: the right label (classification), an exact match with a reference (generation), the
        reference object field for field (extraction)."""
        if self.task == "classification":
            return [p == r for p, r in zip(self.predictions, self.references)]
        key = "json_exact_match" if self.task == "extraction" else "exact_match"
        return [bool(x) for x in self.examples[key]]

    def example_scores(self) -> list[float]:
        """Per-example headline score: 1/0 correct (classification), ROUGE-L against the best reference
        (generation), field F1 (extraction)."""
        if self.task == "classification":
            return [float(p == r) for p, r in zip(self.predictions, self.references)]
        if self.task == "extraction":
            ex = self.examples
            return [2 * t / (p + r) if p + r else 0.0 for t, p, r in zip(ex["json_tp"], ex["json_pred_fields"],
                                                                        ex["json_ref_fields"])]
        return list(self.examples["rouge_l"])

    def inference_json(self) -> dict:
        return {**self.inference.to_json(), **self.extra}


@dataclass
class Comparison:
    """Paired bootstrap of `a` − `b` on one metric over the same test examples."""

    a: str
    b: str
    metric: str
    difference: float
    ci: tuple[float, float]
    p_value: float  # share of resamples where a is not better than b (one-sided)

    def to_json(self) -> dict:
        return {"a": self.a, "b": self.b, "metric": self.metric, "difference": self.difference,
                "ci": list(self.ci), "p_value": self.p_value}
