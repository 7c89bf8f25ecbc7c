"""Confidence intervals and paired comparisons by bootstrap resampling of test examples.

Hand-written (numpy, a few lines) because scipy.stats.bootstrap has no paired two-system test and
resampling indices once lets every metric share the same resamples."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def bootstrap_ci(scores: Sequence[float], n_resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0, statistic: Callable[[np.ndarray], float] = np.mean) -> tuple[float, float]:
    """Percentile CI of `statistic` over per-example scores (e.g. 1/0 correctness)."""
    x = np.asarray(scores, dtype=float)
    if len(x) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_resamples, len(x)))
    stats = np.array([statistic(x[i]) for i in idx])
    alpha = (1 - confidence) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_resamples: int = 1000, seed: int = 0) -> dict:
    """Does system A beat system B on the same examples? Returns the mean difference A − B, its 95 % CI,
    and p = the share of resamples where A does not beat B (one-sided)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError("paired bootstrap needs scores for the same examples in the same order")
    d = x - y
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_resamples, len(d)))
    means = d[idx].mean(axis=1)
    return {"difference": float(d.mean()), "ci": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))],
            "p_value": float((means <= 0).mean())}
