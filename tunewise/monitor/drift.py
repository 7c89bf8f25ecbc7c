"""Drift statistics: a kernel two-sample test on embeddings, and PSI on lengths and predicted labels.

The MMD permutation test is written out (numpy, ~20 lines) because neither scipy nor scikit-learn has one and
the libraries that do (alibi-detect, torch-two-sample) pull in far more than they would add here."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class MMDResult:
    mmd2: float
    p_value: float
    bandwidth: float
    null: list[float] = field(repr=False)


def _sq_dists(x: np.ndarray) -> np.ndarray:
    sq = (x * x).sum(1)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)


def _mmd2(k: np.ndarray, idx_x: np.ndarray, idx_y: np.ndarray) -> float:
    # Unbiased estimate (Gretton et al. 2012, eq. 3): diagonal terms left out of the within-sample means.
    kxx, kyy, kxy = k[np.ix_(idx_x, idx_x)], k[np.ix_(idx_y, idx_y)], k[np.ix_(idx_x, idx_y)]
    m, n = len(idx_x), len(idx_y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int = 500, seed: int = 0) -> MMDResult:
    """Is sample y drawn from the same distribution as x? RBF kernel, median-heuristic bandwidth, p-value by
    permuting the pooled sample (exact under the null, whatever the embedding distribution)."""
    if len(x) < 2 or len(y) < 2:
        raise ValueError("the MMD test needs at least two examples in each sample")
    pooled = np.concatenate([x, y]).astype(np.float64)
    d2 = _sq_dists(pooled)
    bandwidth = float(np.median(d2[np.triu_indices(len(pooled), 1)])) or 1.0
    k = np.exp(-d2 / bandwidth)
    m = len(x)
    idx = np.arange(len(pooled))
    observed = _mmd2(k, idx[:m], idx[m:])
    rng = np.random.default_rng(seed)
    null = []
    for _ in range(permutations):
        p = rng.permutation(idx)
        null.append(_mmd2(k, p[:m], p[m:]))
    p_value = (1 + sum(v >= observed for v in null)) / (1 + permutations)
    return MMDResult(observed, float(p_value), bandwidth, null)


def psi(expected: dict[str, float], actual: dict[str, float], eps: float = 1e-4) -> float:
    """Population stability index over categories (share of each; missing = 0, floored at eps)."""
    keys = sorted(set(expected) | set(actual))
    e = np.array([max(expected.get(k, 0.0), eps) for k in keys])
    a = np.array([max(actual.get(k, 0.0), eps) for k in keys])
    e, a = e / e.sum(), a / a.sum()
    return float(((a - e) * np.log(a / e)).sum())


def shares(values: list) -> dict[str, float]:
    n = max(1, len(values))
    out: dict[str, float] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1 / n
    return out


def binned_shares(reference: list[float], actual: list[float], bins: int = 10) -> tuple[dict, dict]:
    """Shares per bin, bins cut at the reference's quantiles (so each holds ~1/bins of the reference)."""
    edges = np.unique(np.quantile(np.asarray(reference, dtype=float), np.linspace(0, 1, bins + 1)[1:-1]))

    def count(v: list[float]) -> dict:
        return shares([int(b) for b in np.searchsorted(edges, np.asarray(v, dtype=float), side="right")])

    return count(reference), count(actual)
