"""Task metrics, computed from per-example records so that any resample of the test set (bootstrap CIs,
paired comparisons) can be re-scored cheaply. Classification answers are matched to the label set;
anything else counts as invalid. Generation and extraction metrics are defined in the core `tunewise.metrics`
(training's early stopping uses the same definitions); this module puts them together per task."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from tunewise.config import RunConfig
from tunewise.data import PreparedData
from tunewise.metrics.extraction import extraction_examples, load_schema, resampled_extraction
from tunewise.metrics.slots import SlotChecker, looks_like_mr, resampled_slots, slot_examples
from tunewise.metrics.text import TEXT_METRICS, resampled_text, text_examples
from tunewise.metrics.user import metric_key, resampled_user

INVALID = "<invalid>"
CLASSIFICATION_METRICS = ["accuracy", "macro_f1", "micro_f1", "invalid_rate"]
GENERATION_METRICS = [*TEXT_METRICS, "perplexity", "slot_error_rate"]


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()


def parse_label(text: str, labels: list[str]) -> str:
    """The label the answer names: exactly, or as the only label it mentions (plural allowed).
    An answer naming two labels ("business and entertainment") is invalid, not a lucky first guess."""
    t = _norm(text)
    by_norm = {_norm(lab): lab for lab in labels}
    if t in by_norm:
        return by_norm[t]
    mentioned = {lab for key, lab in by_norm.items() if re.search(rf"\b{re.escape(key)}s?\b", t)}
    # "card arrival" mentions both "card" and "card arrival": the longer, more specific label wins.
    mentioned = {m for m in mentioned if not any(m != o and _norm(m) in _norm(o) for o in mentioned)}
    return mentioned.pop() if len(mentioned) == 1 else INVALID


# ---- classification -------------------------------------------------------------------------------------

def _codes(values: list[str], labels: list[str]) -> np.ndarray:
    index = {lab: i for i, lab in enumerate(labels)}
    return np.array([index.get(v, len(labels)) for v in values], dtype=np.int64)  # len(labels) = invalid


def _confusions(ref: np.ndarray, pred: np.ndarray, k: int, idx: np.ndarray) -> np.ndarray:
    """(R, k, k+1) confusion matrices, one per resample (row of idx), by one bincount over all of them."""
    r = idx.shape[0]
    flat = (np.arange(r)[:, None] * k * (k + 1) + ref[idx] * (k + 1) + pred[idx]).ravel()
    return np.bincount(flat, minlength=r * k * (k + 1)).reshape(r, k, k + 1)


def resampled_classification(references: list[str], predictions: list[str], labels: list[str],
                             idx: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, macro/micro F1 over the label set and invalid rate for every resample of the test set.

    Hand-vectorised because sklearn's f1_score costs ~1 ms a call, 1,000 resamples × systems × metrics
    adds up; the point estimates agree with sklearn (tested)."""
    k = len(labels)
    conf = _confusions(_codes(references, labels), _codes(predictions, labels), k, idx).astype(float)
    n = idx.shape[1]
    tp = np.diagonal(conf[:, :, :k], axis1=1, axis2=2)
    fp = conf[:, :, :k].sum(axis=1) - tp
    fn = conf.sum(axis=2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * tp / (2 * tp + fp + fn))  # sklearn's zero_division=0
        micro = np.nan_to_num(2 * tp.sum(1) / (2 * tp.sum(1) + fp.sum(1) + fn.sum(1)))
    return {"accuracy": tp.sum(1) / n, "macro_f1": f1.mean(1), "micro_f1": micro,
            "invalid_rate": conf[:, :, k].sum(1) / n}


def classification_metrics(predictions: list[str], references: list[str], labels: list[str]) -> dict:
    whole = np.arange(len(references))[None, :]
    return {m: float(v[0]) for m, v in resampled_classification(references, predictions, labels, whole).items()}


def per_class(predictions: list[str], references: list[str], labels: list[str]) -> dict:
    """Per-class precision/recall/F1/support and the confusion matrix (rows: truth; columns: labels+invalid)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support  # heavy

    p, r, f, s = precision_recall_fscore_support(references, predictions, labels=labels, zero_division=0)
    matrix = confusion_matrix(references, predictions, labels=[*labels, INVALID])[: len(labels)]
    return {"per_class": {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                                "support": int(s[i])} for i, lab in enumerate(labels)},
            "confusion": {"labels": labels, "columns": [*labels, INVALID], "matrix": matrix.tolist()}}


# ---- generation and extraction ----------------------------------------------------------------------------

@dataclass
class AnswerScoring:
    """What scoring a generation or extraction task's answers needs beyond the answers themselves."""

    task: str
    slots: SlotChecker | None = None  # slot error rate on (data-to-text inputs)
    schema: dict | None = None  # extraction: the JSON Schema outputs must satisfy


def answer_scoring(cfg: RunConfig, data: PreparedData) -> AnswerScoring:
    """The task's scoring: slot errors when eval.slot_errors says so (auto: every test input is an
    attribute[value] list), its vocabulary of known values from every split's inputs."""
    slots = None
    on = cfg.eval.slot_errors
    if cfg.task.type == "generation" and on is not False and data.test:
        if on is True or all(looks_like_mr(r.input_text) for r in data.test):
            slots = SlotChecker.from_inputs(r.input_text for r in [*data.train, *data.val, *data.test])
    schema = load_schema(cfg.task.json_schema) if cfg.task.type == "extraction" else None
    return AnswerScoring(task=cfg.task.type, slots=slots, schema=schema)


def generation_examples(predictions: list[str], references: list[str] | list[list[str]],
                        inputs: list[str] | None = None, scoring: AnswerScoring | None = None) -> dict[str, list]:
    """Per-example statistics of every metric of the task: text metrics (generation; `references` may hold
    several per example), slot errors (with `scoring.slots` and the `inputs`), JSON fields (extraction)."""
    scoring = scoring or AnswerScoring(task="generation")
    if scoring.task == "extraction":
        first = [r if isinstance(r, str) else r[0] for r in references]
        return extraction_examples(predictions, first, scoring.schema)
    out = text_examples(predictions, references)
    if scoring.slots is not None and inputs is not None:
        out.update(slot_examples(scoring.slots, inputs, predictions))
    return out


def resampled_generation(examples: dict[str, list], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric the per-example statistics support, on every resample (row of `idx`)."""
    out = resampled_extraction(examples, idx) if "json_valid" in examples else resampled_text(examples, idx)
    if "slot_total" in examples:
        out.update(resampled_slots(examples, idx))
    if examples.get("nll") is not None:
        nll, tokens = np.asarray(examples["nll"], dtype=float), np.asarray(examples["answer_tokens"], dtype=float)
        out["perplexity"] = np.exp(nll[idx].sum(1) / np.maximum(1, tokens[idx].sum(1)))
    return out


def user_resampled(specs: list[str], predictions: list[str], references: list[str], idx: np.ndarray
                   ) -> dict[str, np.ndarray]:
    """User metrics (module:function) on every resample, keyed by their result name."""
    return {metric_key(s): resampled_user(s, predictions, references, idx) for s in specs}


def generation_metrics(examples: dict[str, list]) -> dict:
    """The metrics of the whole test set, from its per-example records (`generation_examples`, and `nll` /
    `answer_tokens` for perplexity)."""
    n = len(next(v for k, v in examples.items() if not k.endswith("_stats")))
    whole = np.arange(n)[None, :]
    return {m: float(v[0]) for m, v in resampled_generation(examples, whole).items()}


def perplexity(nll: list[float], tokens: list[int]) -> float:
    return math.exp(sum(nll) / max(1, sum(tokens)))
