"""The monitoring report: one self-contained HTML file with the checks, the verdict and the plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from tunewise.figures import pyplot, to_data_uri


def _fig(w: float = 6.0, h: float = 3.2):
    return pyplot().subplots(figsize=(w, h))


def _done(fig, ax) -> str:
    ax.grid(alpha=0.3)
    ax.legend()
    return to_data_uri(fig)


def drift_plots(ref_emb, emb, ref_len, cur_len, ref_pred: dict, cur_pred: dict, mmd) -> dict[str, str]:
    from sklearn.decomposition import PCA  # heavy

    plots = {}
    xy = PCA(n_components=2, random_state=0).fit_transform(np.concatenate([ref_emb, emb]))
    fig, ax = _fig(5.5, 4.2)
    ax.scatter(*xy[: len(ref_emb)].T, s=8, alpha=0.5, label="training data")
    ax.scatter(*xy[len(ref_emb):].T, s=8, alpha=0.7, label="recent traffic", color="#d62728")
    ax.set_title("input embeddings (PCA)")
    plots["embeddings"] = _done(fig, ax)

    fig, ax = _fig()
    ax.hist(mmd.null, bins=30, alpha=0.7, label="permutation null")
    ax.axvline(mmd.mmd2, color="#d62728", label=f"observed MMD² (p={mmd.p_value:.3f})")
    ax.set_xlabel("MMD²")
    plots["mmd"] = _done(fig, ax)

    fig, ax = _fig()
    bins = np.linspace(0, max(max(ref_len), max(cur_len)) + 1, 30)
    ax.hist(ref_len, bins=bins, alpha=0.6, density=True, label="training data")
    ax.hist(cur_len, bins=bins, alpha=0.6, density=True, label="recent traffic", color="#d62728")
    ax.set_xlabel("words per input")
    plots["length"] = _done(fig, ax)

    fig, ax = _fig()
    keys = sorted(set(ref_pred) | set(cur_pred))
    x = np.arange(len(keys))
    ax.bar(x - 0.2, [ref_pred.get(k, 0) for k in keys], 0.4, label="training")
    ax.bar(x + 0.2, [cur_pred.get(k, 0) for k in keys], 0.4, label="recent traffic", color="#d62728")
    ax.set_xticks(x, keys, rotation=30, ha="right")
    ax.set_ylabel("share")
    plots["predictions"] = _done(fig, ax)
    return plots


def write_monitor_report(result, path: Path) -> Path:
    env = Environment(loader=PackageLoader("tunewise", "monitor/templates"), autoescape=select_autoescape())
    path.write_text(env.get_template("monitor.html.j2").render(r=result), encoding="utf-8")
    return path
