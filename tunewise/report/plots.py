"""Plots as inline PNG data URIs, so the report is one self-contained file."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display; set before pyplot is imported anywhere

import matplotlib.pyplot as plt
import numpy as np

from tunewise.figures import to_data_uri

COLORS = {"zero_shot": "#9e9e9e", "few_shot": "#f0a030", "classical": "#7b68ee", "fine_tuned": "#2a9d4b"}


def loss_curve(train: list[tuple[float, float]], val: list[tuple[float, float]]) -> str | None:
    if not train and not val:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    if train:
        ax.plot(*zip(*train), ".-", label="training loss", color="#1f77b4")
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", color="#d62728")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (answer tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    return to_data_uri(fig)


def metric_bars(values: dict[str, dict[str, float]], ci: dict[str, dict[str, list[float]]],
                metrics: list[str], titles: dict[str, str]) -> str:
    """One panel per metric; a bar per system with its bootstrap CI as a whisker."""
    systems = list(values)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        names = [s for s in systems if m in values[s]]
        v = np.array([values[s][m] for s in names])
        lo = np.array([ci.get(s, {}).get(m, [values[s][m]] * 2)[0] for s in names])
        hi = np.array([ci.get(s, {}).get(m, [values[s][m]] * 2)[1] for s in names])
        ax.bar(range(len(names)), v, color=[COLORS.get(s, "#4c72b0") for s in names],
               yerr=np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)]), capsize=5)
        ax.set_xticks(range(len(names)), [titles.get(s, s) for s in names], rotation=25, ha="right", fontsize=8)
        ax.set_title(m)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("held-out test split (whiskers: 95 % bootstrap CI)", fontsize=9)
    return to_data_uri(fig)


def confusion_plot(confusion: dict, title: str) -> str:
    """Row-normalised confusion matrix (truth × prediction, with an 'invalid' column); counts written in
    the cells while there are few enough classes to read them."""
    matrix = np.array(confusion["matrix"], dtype=float)
    labels, columns = confusion["labels"], confusion["columns"]
    k = len(labels)
    size = min(14, 2.5 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    norm = matrix / np.maximum(1, matrix.sum(1, keepdims=True))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    fontsize = 8 if k <= 12 else 5
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(k), labels, fontsize=fontsize)
    if k <= 15:
        for i in range(k):
            for j in range(len(columns)):
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.04, label="share of the true class")
    return to_data_uri(fig)


def cost_bars(inference: dict[str, dict], titles: dict[str, str]) -> str:
    """Prompt tokens per request and dollars per 1,000 requests, side by side."""
    names = list(inference)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    panels = [("prompt_tokens_per_request", "prompt tokens / request"),
              ("dollars_per_1k_requests", "$ per 1,000 requests (measured)")]
    for ax, (key, label) in zip(axes, panels):
        vals = [inference[n].get(key) or 0 for n in names]
        ax.bar(range(len(names)), vals, color=[COLORS.get(n, "#4c72b0") for n in names])
        ax.set_xticks(range(len(names)), [titles.get(n, n) for n in names], rotation=25, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    return to_data_uri(fig)


def forgetting_plot(forgetting: dict) -> str:
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    vals = [forgetting["base_accuracy"], forgetting["tuned_accuracy"]]
    ax.bar([0, 1], vals, color=["#9e9e9e", "#2a9d4b"])
    ax.set_xticks([0, 1], ["base", "fine-tuned"])
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"general multiple choice ({forgetting['questions']} questions)", fontsize=9)
    for x, v in enumerate(vals):
        ax.text(x, v + 0.02, f"{v:.2f}", ha="center")
    return to_data_uri(fig)
