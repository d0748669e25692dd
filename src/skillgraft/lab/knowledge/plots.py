"""PNG plots of the study, in the evaluation layer's report style (Agg, dpi 96, tight boxes).

Every plot shows each seed as a point and the mean as a line/bar, so the seed spread is
visible rather than summarised away; memorisation is drawn next to extraction (dashed),
because "stored but not extractable" is the point of the study.
"""

from __future__ import annotations

import statistics
from pathlib import Path

UNRELATED_X0 = 1   # N=0 is drawn at x=1 on the log axis (labelled 0)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _series(rows, pick, x_of):
    """{x: [(memorization, extraction) per seed]} for the rows `pick` selects."""
    out: dict = {}
    for r in rows:
        if pick(r):
            out.setdefault(x_of(r), []).append((r["memorization"], r["extraction"]))
    return dict(sorted(out.items()))


def _draw(ax, series, label, color):
    xs = list(series)
    for i, metric in ((1, "extraction"), (0, "memorisation")):
        means = [statistics.fmean(v[i] for v in series[x]) for x in xs]
        style = "-" if i == 1 else "--"
        ax.plot(xs, means, style, color=color, label=f"{label} {metric}", marker="o" if i == 1 else None)
        for x in xs:
            ax.scatter([x] * len(series[x]), [v[i] for v in series[x]], color=color, s=12, alpha=0.5)


def _finish(fig, ax, path: Path, *, ylabel: str, title: str, ylim=(-0.02, 1.02), xlabel: str | None = None) -> Path:
    """Label the axes, add the legend and save: the part every plot shares."""
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # outside: never hides a point
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    plt = _plt()
    fig.savefig(path, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_vs_k(rows, path: Path) -> Path | None:
    plt = _plt()
    groups = [("pronoun (pretrain)", lambda r: r["study"] == "pretrain" and r["condition"].startswith("pronoun")),
              ("full name (pretrain)", lambda r: r["study"] == "pretrain" and r["condition"].startswith("fullname")),
              ("injected into pronoun-k1 model", lambda r: r["study"] == "inject"),
              ("injected into pronoun-k5 model", lambda r: r["study"] == "inject-into-k5")]
    fig, ax = plt.subplots(figsize=(6, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ks: set = set()
    for i, (label, pick) in enumerate(groups):
        series = _series(rows, pick, lambda r: r["k"])
        if series:
            _draw(ax, series, label, colors[i])
            ks.update(series)
    if not ks:
        plt.close(fig)
        return None
    ax.set_xticks(sorted(ks))  # whole phrasings only
    return _finish(fig, ax, path, xlabel="k (phrasings per person)", ylabel="accuracy on held-out / injected people",
                   title="QA extraction vs k (points = seeds)")


def plot_vs_unrelated(rows, path: Path) -> Path | None:
    plt = _plt()
    pick = lambda r: r["condition"] == "inject-k5" or r["study"] == "unrelated"  # noqa: E731
    series = _series(rows, pick, lambda r: max(r.get("unrelated", 0), UNRELATED_X0))
    if len(series) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    _draw(ax, series, "injected k=5", plt.rcParams["axes.prop_cycle"].by_key()["color"][2])
    ax.set_xscale("log")
    ax.set_xticks(list(series))
    ax.set_xticklabels(["0" if x == UNRELATED_X0 else str(x) for x in series])
    return _finish(fig, ax, path, xlabel="unrelated texts mixed into the injection",
                   ylabel="accuracy on injected people", title="Injection vs unrelated texts (points = seeds)")


def plot_targets(rows, path: Path) -> Path | None:
    plt = _plt()
    order = ["full", "attn-qv", "knowledge", "all-linear"]
    pick = lambda r: r["condition"] == "inject-k5" or r["study"] == "targets"  # noqa: E731
    series = _series(rows, pick, lambda r: r.get("targets", "full"))
    if len(series) < 2:
        return None
    names = [n for n in order if n in series]
    fig, ax = plt.subplots(figsize=(6, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, (i, metric) in enumerate(((0, "memorisation"), (1, "extraction"))):
        xs = [n + (j - 0.5) * 0.38 for n in range(len(names))]
        means = [statistics.fmean(v[i] for v in series[name]) for name in names]
        ax.bar(xs, means, width=0.36, color=colors[j], label=metric, alpha=0.8)
        for x, name in zip(xs, names):
            ax.scatter([x] * len(series[name]), [v[i] for v in series[name]], color="black", s=10, zorder=3)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(["full FT" if n == "full" else f"LoRA {n}" for n in names])
    return _finish(fig, ax, path, ylabel="accuracy on injected people (k=5)", ylim=(0, 1.05),
                   title="Injection by trained parameters (equal steps; dots = seeds)")


def write_plots(rows, folder: Path) -> list[Path]:
    """Write every plot the rows have data for; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    made = [plot_vs_k(rows, folder / "extraction_vs_k.png"),
            plot_vs_unrelated(rows, folder / "extraction_vs_unrelated.png"),
            plot_targets(rows, folder / "extraction_by_target.png")]
    return [p for p in made if p is not None]
