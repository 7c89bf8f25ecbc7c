"""Plots as inline PNG data URIs, so the report is one self-contained file."""

from __future__ import annotations

import base64
import io


def _to_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def loss_curve(train: list[tuple[float, float]], val: list[tuple[float, float]]) -> str | None:
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    if train:
        ax.plot(*zip(*train), label="training loss", color="#1f77b4")
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", color="#d62728")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (answer tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    uri = _to_data_uri(fig)
    plt.close(fig)
    return uri
