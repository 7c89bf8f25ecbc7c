"""Task metrics, computed from per-example records so that any resample of the test set (bootstrap CIs,
paired comparisons) can be re-scored cheaply. Classification answers are matched to the label set;
anything else counts as invalid."""

from __future__ import annotations

import math
import re

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

INVALID = "<invalid>"
CLASSIFICATION_METRICS = ["accuracy", "macro_f1", "micro_f1", "invalid_rate"]
GENERATION_METRICS = ["rouge1", "rouge2", "rouge_l", "bleu", "chrf", "exact_match", "perplexity"]


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


# ---- generation -----------------------------------------------------------------------------------------

def _exact(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def generation_examples(predictions: list[str], references: list[str]) -> dict[str, list]:
    """Per-example ROUGE F-measures, exact match, and sacrebleu's sufficient statistics for BLEU and chrF
    (corpus scores are sums of these, so resamples are re-scored without re-tokenising)."""
    from rouge_score import rouge_scorer  # heavy

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    rouge = [scorer.score(r, p) for p, r in zip(predictions, references)]
    return {
        "rouge1": [s["rouge1"].fmeasure for s in rouge],
        "rouge2": [s["rouge2"].fmeasure for s in rouge],
        "rouge_l": [s["rougeL"].fmeasure for s in rouge],
        "exact_match": [float(_exact(p, r)) for p, r in zip(predictions, references)],
        # The same private-but-stable hooks sacrebleu's own paired bootstrap (significance.py) uses.
        "bleu_stats": [list(map(float, s)) for s in BLEU()._extract_corpus_statistics(predictions, [references])],
        "chrf_stats": [list(map(float, s)) for s in CHRF()._extract_corpus_statistics(predictions, [references])],
    }


def resampled_generation(examples: dict[str, list], idx: np.ndarray) -> dict[str, np.ndarray]:
    out = {m: np.asarray(examples[m], dtype=float)[idx].mean(1) for m in ("rouge1", "rouge2", "rouge_l",
                                                                         "exact_match")}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF())):
        stats = np.asarray(examples[f"{name}_stats"], dtype=float)
        sums = stats[idx].sum(1)
        out[name] = np.array([metric._compute_score_from_stats(row.tolist()).score for row in sums])
    if examples.get("nll") is not None:
        nll, tokens = np.asarray(examples["nll"], dtype=float), np.asarray(examples["answer_tokens"], dtype=float)
        out["perplexity"] = np.exp(nll[idx].sum(1) / np.maximum(1, tokens[idx].sum(1)))
    return out


def generation_metrics(examples: dict[str, list]) -> dict:
    """The generation metrics of the whole test set, from its per-example records (`generation_examples`, and
    `nll` / `answer_tokens` for perplexity)."""
    whole = np.arange(len(examples["exact_match"]))[None, :]
    return {m: float(v[0]) for m, v in resampled_generation(examples, whole).items()}


def perplexity(nll: list[float], tokens: list[int]) -> float:
    return math.exp(sum(nll) / max(1, sum(tokens)))
