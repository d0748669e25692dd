"""Matplotlib figures as `data:image/png;base64,…` URIs, so a report needs no other file.

The Agg backend is forced: reports are rendered on headless machines.
"""

from __future__ import annotations

import base64
import io
import math


def figure_to_data_uri(fig) -> str:
    """PNG bytes of `fig` as a data URI; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def metric_bars(set_name: str, scores: dict[str, dict[str, float | None]], models: list[str]) -> str | None:
    """One small bar chart per headline metric of a set, a bar per model; None when no numbers."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    metrics = sorted({m for model in models for m, v in scores.get(model, {}).items()
                      if "." not in m and v is not None})
    if not metrics:
        return None
    cols = min(4, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    short = [f"M{i + 1}" for i in range(len(models))]
    for ax, metric in zip(axes.flat, metrics):
        values = [scores.get(model, {}).get(metric) or 0.0 for model in models]
        ax.bar(short, values, color=[colors[i % len(colors)] for i in range(len(models))])
        ax.set_title(metric, fontsize=10)
        ax.tick_params(labelsize=8)
        top = max(values + [1.0]) if all(0 <= v <= 1 for v in values) else max(values) * 1.15 or 1.0
        ax.set_ylim(0, top)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    return figure_to_data_uri(fig)
