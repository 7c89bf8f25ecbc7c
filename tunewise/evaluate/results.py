"""What evaluation produces: one SystemResult per system (with per-example scores, so any two systems
scored on the same frozen test set can be compared later by paired bootstrap) and the EvalResult."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tunewise.evaluate.cost import InferenceCost
from tunewise.evaluate.metrics import resampled_classification, resampled_generation

HEADLINE = {"classification": ["accuracy", "macro_f1"], "generation": ["rouge_l", "bleu"]}
LOWER_IS_BETTER = {"invalid_rate", "perplexity"}


@dataclass
class SystemResult:
    name: str
    task: str  # classification | generation
    metrics: dict[str, float]
    outputs: list[str]  # raw model output (or the classical model's label), one per test example
    predictions: list[str]  # parsed label (classification) or the text itself
    references: list[str]
    labels: list[str] | None
    examples: dict[str, list]  # per-example scores and statistics (metrics.generation_examples)
    inference: InferenceCost
    extra: dict = field(default_factory=dict)  # k, shot selection, classification mode...

    def resampled(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric on every resample (row of test-example indices)."""
        if self.task == "classification":
            return resampled_classification(self.references, self.predictions, self.labels or [], idx)
        return resampled_generation(self.examples, idx)

    def example_correct(self) -> list[bool]:
        """Per example: the right label (classification) or an exact match (generation)."""
        if self.task == "classification":
            return [p == r for p, r in zip(self.predictions, self.references)]
        return [bool(x) for x in self.examples["exact_match"]]

    def example_scores(self) -> list[float]:
        """Per-example headline score: 1/0 correct (classification) or ROUGE-L (generation)."""
        if self.task == "classification":
            return [float(p == r) for p, r in zip(self.predictions, self.references)]
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
