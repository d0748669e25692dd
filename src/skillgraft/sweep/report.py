"""`sweep report DIR`: the trials as CSV, the best trial or Pareto front as a table, parameter
importances, and plots (history, Pareto front, each parameter against each objective) in one
self-contained HTML page, like the comparison report: PNG data URIs, inline styles, escaped
text, and the same image-count check a headless browser reads.
"""

from __future__ import annotations

from pathlib import Path

from skillgraft.errors import UserError
from skillgraft.report.plots import figure_to_data_uri

TEMPLATE = Path(__file__).with_name("report.html.jinja")


def open_study(folder: Path, storage: str | None, name: str | None):
    import optuna

    from skillgraft.sweep.study import open_storage, quiet_optuna, shown, storage_url

    quiet_optuna()
    if storage is None and not (Path(folder) / "study.db").is_file():
        raise UserError(f"{folder}: no study.db here; give the sweep folder, or --storage URL for a shared study")
    url = storage_url(folder, storage)
    opened = open_storage(url, heartbeat=10)
    name = name or Path(folder).resolve().name
    if name not in {s.study_name for s in opened.get_all_studies()}:
        raise UserError(f"{shown(url)}: no study named {name!r} (pass --study NAME)")
    return optuna.load_study(study_name=name, storage=opened), url


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def history_plot(study, names: list[str]) -> str:
    """Each objective against trial number, with the best so far."""
    from skillgraft.sweep.results import completed

    plt = _plt()
    trials = completed(study)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for i, (ax, name) in enumerate(zip(axes[0], names)):
        xs = [t.number for t in trials]
        ys = [t.values[i] for t in trials]
        ax.scatter(xs, ys, s=14, label="trial")
        pick = max if study.directions[i].name == "MAXIMIZE" else min
        best = [pick(ys[:j + 1]) for j in range(len(ys))]
        ax.step(xs, best, where="post", color="C3", label="best so far")
        ax.set_xlabel("trial")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8)
    return figure_to_data_uri(fig)


def pareto_plot(study, names: list[str], on_front: set[int]) -> str | None:
    """The first two objectives, front highlighted (only for several objectives)."""
    from skillgraft.sweep.results import completed, feasible

    if len(names) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    trials = completed(study)
    groups = (("front", [t for t in trials if t.number in on_front], "C3"),
              ("other", [t for t in trials if t.number not in on_front and feasible(t)], "C0"),
              ("infeasible", [t for t in trials if not feasible(t)], "0.7"))
    for label, group, color in groups:
        if group:
            ax.scatter([t.values[0] for t in group], [t.values[1] for t in group], s=18, color=color, label=label)
    labels: dict[tuple, list[str]] = {}   # the front's trial numbers (as tables name them), one label per point
    for t in groups[0][1]:
        labels.setdefault((t.values[0], t.values[1]), []).append(f"#{t.number}")
    for point, numbers in labels.items():
        ax.annotate(" ".join(numbers), point, textcoords="offset points", xytext=(4, 3), fontsize=7, color="C3")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.legend(fontsize=8)
    return figure_to_data_uri(fig)


def slice_plot(study, names: list[str]) -> str | None:
    """Each parameter (rows) against each objective (columns)."""
    from skillgraft.sweep.results import completed

    trials = completed(study)
    params = sorted({p for t in trials for p in t.params})
    if not params:
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(params), len(names), figsize=(3.6 * len(names), 2.6 * len(params)), squeeze=False)
    for r, param in enumerate(params):
        for c, name in enumerate(names):
            ax = axes[r][c]
            pairs = [(t.params[param], t.values[c]) for t in trials if param in t.params]
            labels = sorted({str(x) for x, _ in pairs}) if any(isinstance(x, (str, bool)) for x, _ in pairs) else None
            xs = [labels.index(str(x)) if labels else x for x, _ in pairs]
            ax.scatter(xs, [y for _, y in pairs], s=12)
            if labels:
                ax.set_xticks(range(len(labels)), labels, fontsize=7)
            ax.set_xlabel(param, fontsize=8)
            ax.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    return figure_to_data_uri(fig)


def importances(study, names: list[str]) -> dict[str, dict[str, float]] | str:
    """Importances per objective from Optuna's default evaluator (PED-ANOVA in Optuna 5, which
    ranks what leads to low values, so maximised objectives are negated), or why there are none."""
    import warnings

    import optuna

    from skillgraft.sweep.results import completed

    warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")  # negated below
    if len(completed(study)) < 2:
        return "fewer than two completed trials"
    out = {}
    for i, name in enumerate(names):
        try:
            sign = -1.0 if study.directions[i].name == "MAXIMIZE" else 1.0
            out[name] = optuna.importance.get_param_importances(study, target=lambda t, i=i, s=sign: s * t.values[i])
        except (RuntimeError, ValueError) as exc:
            return str(exc)
    return out


def text_table(best: list[dict], names: list[str]) -> str:
    from skillgraft.sweep.results import format_params

    lines = ["trial  " + "  ".join(names) + "  params"]
    for entry in best:
        values = "  ".join(f"{v:.4g}" for v in entry["values"])
        params = format_params(entry["params"])
        lines.append(f"#{entry['number']:<5} {values}  {params}")
    return "\n".join(lines)


def importance_text(importance: dict[str, dict[str, float]] | str, top: int = 5) -> str:
    """The importances as terminal lines: each objective's `top` parameters (all in report.html)."""
    if isinstance(importance, str):
        return f"importances: none ({importance})"
    lines = ["importances (Optuna's default evaluator; every parameter in report.html):"]
    for name, ranked in importance.items():
        shown = ", ".join(f"{param} {value:.2f}" for param, value in list(ranked.items())[:top])
        lines.append(f"  {name}: {shown}")
    return "\n".join(lines)


def write_sweep_report(folder: Path, storage: str | None = None, name: str | None = None) -> dict:
    """Write `FOLDER/report/{trials.csv, report.html}` and each plot of the page as a PNG beside
    it (history.png, front.png, parameters.png: for a document that shows the front); returns
    paths, the front and importances."""
    import base64

    import jinja2

    from skillgraft.checkpoint.publish import write_file_atomic
    from skillgraft.sweep.results import front_entries, objective_names, rows, to_csv
    from skillgraft.sweep.study import CONFIG_ATTR, shown

    folder = Path(folder)
    study, url = open_study(folder, storage, name)
    names = objective_names(study.user_attrs[CONFIG_ATTR])
    table = rows(study)
    best = front_entries(study, folder)
    importance = importances(study, names)
    plots = [("History", "history", history_plot(study, names)) if best else None,
             ("Pareto front", "front", pareto_plot(study, names, {e["number"] for e in best})) if best else None,
             ("Parameters against objectives", "parameters", slice_plot(study, names)) if best else None]
    plots = [plot for plot in plots if plot and plot[2]]
    out = folder / "report"
    csv_path = write_file_atomic(out / "trials.csv", to_csv(table))
    images = {stem: str(write_file_atomic(out / f"{stem}.png", base64.b64decode(uri.partition(",")[2])))
              for _, stem, uri in plots}
    plots = [(title, uri) for title, _, uri in plots]
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(TEMPLATE.read_text(encoding="utf-8")).render(
        study=study.study_name, storage=shown(url), names=names,
        directions=[d.name.lower() for d in study.directions], best=best, rows=table,
        importance=importance, plots=plots, multi=len(names) > 1)
    html_path = write_file_atomic(out / "report.html", html)
    return {"html": str(html_path), "csv": str(csv_path), "images": images, "study": study.study_name,
            "storage": shown(url), "objectives": names, "best": best, "importances": importance, "trials": len(table),
            "table": text_table(best, names), "importance_text": importance_text(importance)}
