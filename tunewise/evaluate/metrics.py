"""Task metrics. Classification answers are matched to the label set; anything else counts as invalid."""

from __future__ import annotations

import re

INVALID = "<invalid>"


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


def classification_metrics(predictions: list[str], references: list[str], labels: list[str]) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(references, predictions)),
        "macro_f1": float(f1_score(references, predictions, labels=labels, average="macro", zero_division=0)),
        "invalid_rate": sum(p == INVALID for p in predictions) / max(1, len(predictions)),
    }


def generation_metrics(predictions: list[str], references: list[str]) -> dict:
    import sacrebleu
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge_l = sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references))
    bleu = sacrebleu.corpus_bleu(predictions, [references]).score
    return {"rouge_l": rouge_l / max(1, len(predictions)), "bleu": float(bleu)}
