"""Matplotlib figures as inline PNG data URIs, so the run report, the data card and the monitoring report are
each one self-contained HTML file."""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def pyplot():
    """matplotlib.pyplot on the Agg backend: figures are only ever written to files, no display is needed."""
    import matplotlib  # heavy

    matplotlib.use("Agg")  # before pyplot is first imported
    import matplotlib.pyplot as plt  # heavy

    return plt


def to_data_uri(fig: Figure) -> str:
    """The figure as a PNG data URI; the figure is closed (pyplot keeps every open figure alive)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
