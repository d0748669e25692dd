"""Run `lab real`'s cells for some seeds on worker processes and write one output folder.

The untrained model is scored once (greedy decoding makes it the same for every seed);
every other cell is a pure function of its seed. The skill-vector cell of a seed runs as
soon as its input models exist (ahead of the queue), so the workers stay busy. Every number
in `results.json` is a mean of the per-item scores kept, with each output, in
`generations.jsonl`, and the folder is published by rename (`AtomicFolder`).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from skillgraft.checkpoint import write_file_atomic
from skillgraft.lab.real import cells as X
from skillgraft.lab.real.corpus import write_suites
from skillgraft.lab.real.plan import Cell, Plan
from skillgraft.lab.study_folder import StudyFolder, cell_file
from skillgraft.lab.workers import Progress, check_out, run_cells

# results.json's short metric names -> the `SET.METRIC` scores they come from
METRICS = {"heldout": "heldout.keyword", "tune": "tune.keyword", "heldout_rouge2": "heldout.rouge2",
           "tune_rouge2": "tune.rouge2", "memorization": "memorization.keyword", "style": "persona.style.marker.persona",
           "repetition": "persona.repetition", "copied": "persona.memorization", "cp_keyword": "cp.keyword",
           "retention_score": "retention_en.keyword"}


def first(cell: Cell) -> tuple:
    """Submission order: the skill vector's inputs first (the vector cell waits for them),
    then the longest knowledge runs, the baseline (evaluation only) last."""
    rank = {"vector-input": 0, "knowledge": 1, "persona": 2, "baseline": 3}.get(cell.study, 4)
    return rank, -(5 if cell.equal_steps_to else cell.k), cell.seed


def run_study_cells(plan: Plan, seeds: list[int], jobs: int, ctx: X.Context, progress: Progress,
                    folder: StudyFolder | None = None) -> list[dict]:
    """Every cell of every seed (and the untrained baseline) on `jobs` workers
    (`lab.workers.run_cells`); outputs in plan order.

    Each finished cell's rows, outputs and results are written to `work/cells/` and kept by the
    study's folder (`OUT.finished-cells/`, `StudyFolder.keep`) at once, so a run cut short by anything
    (a failed cell, Ctrl-C, a session limit, kill -9) loses none of them. The cells of such a
    run (`folder.finished`, by file name) are not run again; a finished input of an unfinished
    vector cell runs again, because its weights were not kept."""
    order = [Cell("untrained", seeds[0], "baseline")] + [c for seed in seeds for c in plan.cells(seed)]
    finished = folder.finished if folder is not None else {}
    done: dict[Cell, dict] = {c: finished[cell_file(c)] for c in order if cell_file(c) in finished}
    for cell in [c for c in order if c.needs and c not in done]:
        for needed in [d for d in done if d.seed == cell.seed and d.name in cell.needs]:
            del done[needed]
    queue = sorted((c for c in order if not c.needs and c not in done), key=first)
    waiting = [c for c in order if c.needs and c not in done]

    def ready(cell: Cell) -> bool:
        return all(any(d.name == n and d.seed == cell.seed for d in done) for n in cell.needs)

    def next_cell() -> tuple | None:
        """A cell whose inputs exist goes before the queue (it frees their weights and, being
        the last step of its seed, shows a failure early)."""
        cell = next((c for c in waiting if ready(c)), None)
        if cell is not None:
            waiting.remove(cell)
            inputs = {d.name: done[d]["weights"] for d in done if d.seed == cell.seed and d.name in cell.needs}
            return cell, X.execute, cell, plan, ctx, inputs
        if queue:
            cell = queue.pop(0)
            return cell, X.execute, cell, plan, ctx
        return None

    def on_done(cell: Cell, result: dict) -> None:
        done[cell] = result
        kept = {k: v for k, v in result.items() if k in CELL_KEYS}
        write_file_atomic(ctx.work / "cells" / cell_file(cell), json.dumps(kept) + "\n")
        if folder is not None:
            folder.keep(cell_file(cell), kept)
        progress.step(f"seed {cell.seed} {cell.name}")

    if queue or waiting:
        run_cells(jobs, progress.quiet, next_cell, on_done)
    return [done[c] for c in order]


CELL_KEYS = ("rows", "items", "results")   # what a finished cell keeps (its weights are not kept)


def study_record(plan: Plan, model: Path) -> dict:
    """What must be the same for finished cells to be reused: the plan (budgets included),
    the model and the tool's version."""
    from skillgraft import __version__

    return {"plan": json.loads(json.dumps(plan, default=lambda o: o.__dict__)), "model": str(Path(model).resolve()),
            "skillgraft": __version__}


def rows_of(outputs: list[dict]) -> list[dict]:
    """One row per cell (per model for the vector cell) and seed, with short metric names and
    `retention` = retention score / the untrained model's."""
    rows = [r for out in outputs for r in out["rows"]]
    base = next(r for r in rows if r["study"] == "baseline")[METRICS["retention_score"]]
    out = []
    for r in rows:
        short = {name: r[key] for name, key in METRICS.items() if key in r}
        if "retention_score" in short:
            short["retention"] = short["retention_score"] / base if base else None
        out.append({k: v for k, v in r.items() if "." not in k} | short)
    return out


def summarise(rows: list[dict]) -> list[dict]:
    """Per cell (and vector model) over seeds: mean, sample sd, per-seed values of each metric."""
    groups: dict[tuple[str, str | None], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["cell"], r.get("model")), []).append(r)
    summary = []
    for (cell, model), rs in groups.items():
        entry = {"cell": cell, "model": model, "study": rs[0]["study"], "seeds": [r["seed"] for r in rs]}
        for metric in (*METRICS, "retention", "steps"):
            values = [r[metric] for r in rs if isinstance(r.get(metric), (int, float))]
            if values:
                entry[metric] = {"mean": round(statistics.fmean(values), 4),
                                 "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
                                 "per_seed": [round(v, 4) for v in values]}
        summary.append(entry)
    return summary


def goals(summary: list[dict], rows: list[dict]) -> list[dict]:
    """The issue's goals, each with the measured numbers (means over seeds) and met or not."""
    by = {(s["cell"], s["model"]): s for s in summary}

    def mean(cell: str, metric: str, model: str | None = None) -> float | None:
        entry = by.get((cell, model), {}).get(metric)
        return entry["mean"] if entry else None

    out = []

    def add(goal: str, measured: dict, met: bool | None) -> None:
        out.append({"goal": goal, "measured": measured, "met": met})

    k5, k1 = mean("k5", "heldout"), mean("k1-equal-steps", "heldout")
    if k5 is not None:
        add("knowledge: k=5 held-out keyword >= 0.6", {"k5": k5}, k5 >= 0.6)
        retention = mean("k5", "retention")
        add("knowledge: k=5 retention >= 0.9 of the untrained model's", {"k5": retention},
            None if retention is None else retention >= 0.9)
    if k5 is not None and k1 is not None:
        add("knowledge: k=5 >= 0.15 above k=1 at equal steps (held-out)", {"k5": k5, "k1-equal-steps": k1,
                                                                          "difference": round(k5 - k1, 4)},
            k5 - k1 >= 0.15)
    side_conditions = (
        ("knowledge: seed 003's placement (v, o, gate, up, lm_head) vs all-linear vs q,v vs full fine-tuning "
         "(held-out keyword; reported as measured)", ("k5", "k5-all-linear", "k5-attn-qv", "k5-full")),
        ("knowledge: 0 / 10 / 100 unrelated texts mixed in (held-out keyword; reported as measured)",
         ("k5", "k5+unrelated10", "k5+unrelated100")))
    for goal, cells in side_conditions:
        measured = {cell: mean(cell, "heldout") for cell in cells if mean(cell, "heldout") is not None}
        if k5 is not None and len(measured) > 1:
            add(goal, measured, None)
    style, retention = mean("vector", "style", "skilled"), mean("vector", "retention", "skilled")
    if style is not None:
        add("persona: style rate >= 0.8 with retention >= 0.9", {"style": style, "retention": retention},
            None if retention is None else style >= 0.8 and retention >= 0.9)
    guarded = [r for r in rows if r["cell"] == "persona-too-high-lr"]
    if guarded:
        add("persona: the too-high learning rate is stopped or rolled back by the guard",
            {"stopped": sum(bool(r["stopped"]) for r in guarded), "rolled_back": sum(
                r["rolled_back_to"] is not None for r in guarded), "runs": len(guarded)},
            all(r["stopped"] for r in guarded))
    vec, cp = mean("vector", "style", "cp+vector@1"), mean("vector", "style", "cp")
    if vec is not None and style:
        controls = {name: mean("vector", "style", name) for name in ("cp+random", "cp+nonskill")
                    if mean("vector", "style", name) is not None}
        add("vector: CP+vector@1 style >= 0.7 x the skilled model's, controls <= CP + 0.05",
            {"cp+vector@1": vec, "skilled": style, "ratio": round(vec / style, 4), "cp": cp, **controls},
            vec >= 0.7 * style and all(v <= cp + 0.05 for v in controls.values()))
    return out


def merge_results(results: list[dict]) -> dict:
    """Several `run_suite` results of one suite as one, models side by side (for the report)."""
    merged = {"settings": dict(results[0]["settings"]), "scores": {}, "items": []}
    merged["settings"]["model_order"] = [m for r in results for m in r["settings"]["model_order"]]
    for r in results:
        merged["scores"].update(r["scores"])
        merged["items"] += r["items"]
    return merged


def reports(outputs: list[dict], seed: int) -> dict[str, dict]:
    """The comparison reports of one seed: file name -> merged results."""
    suites: dict[str, dict[str, list[dict]]] = {}
    for out in outputs:
        seed_of = out["rows"][0]["seed"]
        study = out["rows"][0]["study"]
        if "results" not in out or (seed_of != seed and study != "baseline"):
            continue
        page = {"baseline": None, "knowledge": "knowledge", "persona": "persona", "vector": "vector"}[study]
        for result in out["results"]:
            suite = result["settings"]["suite"]["name"]
            for name in ([page] if page else ["knowledge", "persona", "vector"]):
                suites.setdefault(name, {}).setdefault(suite, []).append(result)
    wanted = {"knowledge": "real-knowledge", "persona": "real-persona", "vector": "real-persona"}
    return {f"report-{name}.html": merge_results(per_suite[wanted[name]])
            for name, per_suite in suites.items() if wanted[name] in per_suite and len(per_suite[wanted[name]]) > 1}


def run_study(plan: Plan, seeds: list[int], model: Path, out: Path | None, *, jobs: int = 1, force: bool = False,
              quiet: bool = False, keep_models: bool = False, command: str = "", resume: bool = False) -> dict:
    """Run `plan` for `seeds` from the converted `model`; write `out` (if given); return the payload.

    With `out`, every finished cell is also kept in `OUT.finished-cells/` until the study is
    published; a study that fails anywhere (a cell, the goals, the reports, publication) or is
    stopped leaves them there, and `resume` continues from them."""
    check_out(out, force)
    start = time.time()
    with StudyFolder(out, force=force, record=study_record(plan, model), resume=resume,
                     prefix="skillgraft-real-") as folder:
        tmp, finished = folder.path, folder.finished
        ctx = X.Context(model=model, suites=write_suites(tmp / "suites"), work=tmp, keep=keep_models)
        (tmp / "cells").mkdir()
        for name, output in finished.items():
            (tmp / "cells" / name).write_text(json.dumps(output) + "\n")
        order = [Cell("untrained", seeds[0], "baseline")] + [c for s in seeds for c in plan.cells(s)]
        progress = Progress(sum(cell_file(c) not in finished for c in order), quiet, "real")
        try:
            outputs = run_study_cells(plan, seeds, jobs, ctx, progress, folder)
        finally:
            progress.close()
        return write_outputs(folder, outputs, plan, seeds, model, jobs=jobs, keep_models=keep_models,
                             command=command, start=start, resumed=sorted(finished))


def write_outputs(folder: StudyFolder, outputs: list[dict], plan: Plan, seeds: list[int], model: Path, *, jobs: int,
                  keep_models: bool, command: str, start: float, resumed: list[str]) -> dict:
    """The payload (rows, summary, goals) and, into the study's folder, results.json,
    generations.jsonl, the reports and the manifest."""
    from skillgraft.report import write_report

    rows = rows_of(outputs)
    summary = summarise(rows)
    payload = {"results": rows, "summary": summary, "goals": goals(summary, rows), "seeds": list(seeds),
               "seconds": round(time.time() - start, 1), "jobs": jobs, "command": command,
               "resumed_cells": resumed,
               "budget": json.loads(json.dumps(plan.budget, default=lambda o: o.__dict__))}

    def write_reports(path: Path) -> None:
        for name, results in reports(outputs, seeds[0]).items():
            write_report(results, path / name, title=f"lab real, seed {seeds[0]}: {name[7:-5]}")

    folder.write(payload, [item for output in outputs for item in output["items"]],
                 inputs=[{"role": "model", "path": str(model)}],
                 options={"seeds": list(seeds), "jobs": jobs, "keep_models": keep_models},
                 extra={"study": "lab real", "command": command, "seconds": payload["seconds"],
                        "resumed_cells": resumed}, also=write_reports)
    return payload
