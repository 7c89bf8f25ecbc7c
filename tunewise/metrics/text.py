"""Reference-based text metrics with any number of references per example (BLEU, chrF, ROUGE, exact match).

Per-example statistics are kept, not scores, so that any resample of the test set (bootstrap CIs, paired
comparisons) is re-scored without re-tokenising: corpus BLEU and chrF are functions of summed sufficient
statistics, ROUGE and exact match are means of per-example values."""

from __future__ import annotations

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

ROUGE_TYPES = {"rouge1": "rouge1", "rouge2": "rouge2", "rouge_l": "rougeL"}
TEXT_METRICS = ["rouge1", "rouge2", "rouge_l", "bleu", "chrf", "exact_match"]


def as_reference_lists(references: list[str] | list[list[str]]) -> list[list[str]]:
    """One list of references per example (a plain string is a list of one)."""
    return [[r] if isinstance(r, str) else list(r) for r in references]


def reference_streams(references: list[list[str]]) -> list[list[str | None]]:
    """sacrebleu's layout: stream j holds every example's j-th reference, None where an example has fewer
    (sacrebleu skips None, which is how it scores a variable number of references)."""
    width = max((len(r) for r in references), default=1)
    return [[refs[j] if j < len(refs) else None for refs in references] for j in range(width)]


def _exact(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def text_examples(predictions: list[str], references: list[str] | list[list[str]]) -> dict[str, list]:
    """Per-example ROUGE F-measures against the best reference (max over references, as the E2E challenge
    scores ROUGE-L), exact match with any reference, and sacrebleu's sufficient statistics for corpus BLEU
    and chrF over all references."""
    from rouge_score import rouge_scorer  # heavy

    refs = as_reference_lists(references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES.values()), use_stemmer=True)
    rouge = [scorer.score_multi(r, p) for p, r in zip(predictions, refs)]
    streams = reference_streams(refs)
    out: dict[str, list] = {name: [s[key].fmeasure for s in rouge] for name, key in ROUGE_TYPES.items()}
    out["exact_match"] = [float(any(_exact(p, x) for x in r)) for p, r in zip(predictions, refs)]
    # The same private-but-stable hooks sacrebleu's own paired bootstrap (significance.py) uses.
    out["bleu_stats"] = [list(map(float, s)) for s in BLEU()._extract_corpus_statistics(predictions, streams)]
    out["chrf_stats"] = [list(map(float, s)) for s in CHRF()._extract_corpus_statistics(predictions, streams)]
    return out


def resampled_text(examples: dict[str, list], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Every text metric on every resample (row of `idx`)."""
    out = {m: np.asarray(examples[m], dtype=float)[idx].mean(1) for m in (*ROUGE_TYPES, "exact_match")}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF())):
        sums = np.asarray(examples[f"{name}_stats"], dtype=float)[idx].sum(1)
        out[name] = np.array([metric._compute_score_from_stats(row.tolist()).score for row in sums])
    return out
