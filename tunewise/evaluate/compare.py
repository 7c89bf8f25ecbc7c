"""Confidence intervals and paired comparisons by bootstrap resampling of test examples.

Hand-written (numpy, a few lines) because scipy.stats.bootstrap has no paired two-system test and
resampling indices once lets every metric share the same resamples."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tunewise.evaluate.results import Comparison, SystemResult


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


def resample_indices(n: int, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_resamples, n) test-example indices drawn with replacement. Every system is re-scored on the same
    rows, so CIs and paired differences come from one set of resamples."""
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def confidence_intervals(system: SystemResult, idx: np.ndarray, confidence: float = 0.95
                         ) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CI of every metric the system has."""
    alpha = (1 - confidence) / 2
    return {m: (float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha)))
            for m, v in system.resampled(idx).items() if m in system.metrics}


def compare_systems(a: SystemResult, b: SystemResult, metric: str, n_resamples: int = 1000, seed: int = 0,
                    idx: np.ndarray | None = None) -> Comparison:
    """Does `a` beat `b` on `metric`? Paired bootstrap over the same test examples: the difference a − b,
    its 95 % CI, and p = the share of resamples where a is not better (lower is better for perplexity and error
    rates)."""
    if a.references != b.references:
        raise ValueError(f"{a.name} and {b.name} were not scored on the same test examples in the same order")
    idx = resample_indices(len(a.references), n_resamples, seed) if idx is None else idx
    d = a.resampled(idx)[metric] - b.resampled(idx)[metric]
    not_better = d >= 0 if a.lower_is_better(metric) else d <= 0
    return Comparison(a.name, b.name, metric, a.metrics[metric] - b.metrics[metric],
                      (float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975))), float(not_better.mean()))
