"""Task metrics shared by training (early stopping, best checkpoint) and evaluation, so that a metric means
the same thing in both. A core module: it imports nothing from the stages.

- text.py: BLEU, chrF, ROUGE, exact match against one or several references (generation);
- slots.py: slot error rate of data-to-text outputs (E2E-style meaning representations);
- extraction.py: JSON validity, field-level precision/recall/F1, schema validity (extraction);
- user.py: `module:function` metrics from the user's own code."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tunewise.metrics.extraction import EXTRACTION_METRICS, extraction_examples, resampled_extraction
from tunewise.metrics.slots import SlotChecker, resampled_slots, slot_examples
from tunewise.metrics.text import TEXT_METRICS, resampled_text, text_examples
from tunewise.metrics.user import call_metric, higher_is_better, is_user_metric, load_metric, metric_key

LOWER_IS_BETTER = {"loss", "invalid_rate", "perplexity", "slot_error_rate"}
# Metrics of generated answers, by the task types they apply to (user metrics apply to any).
GENERATED = {**{m: ("generation",) for m in [*TEXT_METRICS, "slot_error_rate"]},
             **{m: ("extraction",) for m in [*EXTRACTION_METRICS, "json_schema_valid"]}}
TEACHER_FORCED = ("loss", "answer_exact_match")  # what Trainer's own evaluation pass computes

__all__ = ["GENERATED", "LOWER_IS_BETTER", "SlotChecker", "TrainingMetric", "score_generated", "training_metric"]


@dataclass(frozen=True)
class TrainingMetric:
    """A train.early_stopping.metric, resolved: `key` is its name in Trainer's logs (eval_ prefixed)."""

    name: str  # built-in name or the user's module:function
    key: str
    generated: bool  # needs generated answers (else Trainer's teacher-forced pass computes it)

    @property
    def greater_is_better(self) -> bool:
        if is_user_metric(self.name):
            return higher_is_better(self.name)
        return self.name not in LOWER_IS_BETTER


def training_metric(name: str, task: str | None = None) -> TrainingMetric:
    """Resolve `eval_loss`, `rouge_l`, `eval_bleu`, `my_metrics:recall`, ...; ValueError names the choices."""
    bare = name.removeprefix("eval_")
    if bare in TEACHER_FORCED:
        return TrainingMetric(name=bare, key=f"eval_{bare}", generated=False)
    if is_user_metric(name):
        return TrainingMetric(name=name, key=f"eval_{metric_key(name)}", generated=True)
    if bare not in GENERATED:
        raise ValueError(f"unknown metric {name!r}: use eval_loss, eval_answer_exact_match, one of "
                         f"{', '.join(sorted(GENERATED))}, or module:function")
    if task is not None and task not in GENERATED[bare]:
        raise ValueError(f"{bare} is a metric of {' or '.join(GENERATED[bare])} tasks, not {task}")
    return TrainingMetric(name=bare, key=f"eval_{bare}", generated=True)


def score_generated(name: str, predictions: list[str], references: list[list[str]], inputs: list[str],
                    slots: SlotChecker | None = None, schema: dict | None = None) -> float:
    """One generated-answer metric over a whole set, as evaluation computes it. `references`: every
    reference of each example (the first is the one extraction and user metrics compare with)."""
    whole = np.arange(len(predictions))[None, :]
    if is_user_metric(name):
        return call_metric(load_metric(name), name, predictions, [r[0] for r in references])
    if name == "slot_error_rate":
        examples = slot_examples(slots or SlotChecker.from_inputs(inputs), inputs, predictions)
        return float(resampled_slots(examples, whole)["slot_error_rate"][0])
    if name in TEXT_METRICS:
        return float(resampled_text(text_examples(predictions, references), whole)[name][0])
    examples = extraction_examples(predictions, [r[0] for r in references], schema)
    return float(resampled_extraction(examples, whole)[name][0])
