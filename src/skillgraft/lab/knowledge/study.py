"""Run the knowledge study's cells for some seeds and write one output folder.

Why it is organised like this: every cell is a pure function of its seed and budget, so
cells run in worker processes (`--jobs`, one torch thread each) and give the same numbers
whatever ran them. The injection, unrelated-text and target-set cells start from the
single-phrasing model (k=1, pronouns, stage 1 + stage 2; two injection cells start from the
k=5 model instead), so base models are built once per seed by the pretraining study and
their state dicts handed to the injection cells.
Every number reported is recomputed from the generations saved in `generations.jsonl`,
and the folder is written and published as every lab study's is (`lab.study_folder`: a temp
sibling published by rename, finished cells kept for `--resume`, a manifest that `skillgraft
verify` checks).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from skillgraft.errors import UserError
from skillgraft.lab.knowledge import conditions as C
from skillgraft.lab.knowledge import model as M
from skillgraft.lab.knowledge import world as W
from skillgraft.lab.knowledge.metrics import cell_scores
from skillgraft.lab.train import Budget, train_lm, train_sft
from skillgraft.lab.study_folder import StudyFolder, cell_file
from skillgraft.lab.workers import Progress, check_out, run_cells


@dataclass(frozen=True)
class Plan:
    """Which cells to run. The default is the full study; `FAST` is the test/demo variant."""

    pretrain: tuple[tuple[int, bool], ...] = ((1, False), (2, False), (3, False), (5, False), (1, True), (5, True))
    inject_k: tuple[int, ...] = (1, 2, 3, 5)
    inject_k_into_k5: tuple[int, ...] = (1, 5)   # the same injection into the pronoun-k5 model
    unrelated: tuple[int, ...] = (10, 100, 1000)
    targets: tuple[str, ...] = C.TARGET_SETS
    budget: C.StudyBudget = field(default_factory=C.StudyBudget)


# The fast variant: the full-name k=1 and k=5 cells with the study's own budgets (its numbers
# equal the full study's seed-0 cells); full names because their k=1/k=5 gap is the larger one.
FAST = Plan(pretrain=((1, True), (5, True)), inject_k=(), inject_k_into_k5=(), unrelated=(), targets=())


def pretrain_name(k: int, fullname: bool) -> str:
    return f"{'fullname' if fullname else 'pronoun'}-k{k}"


def _save(model, tokenizer, models_dir: Path | None, cell: str, seed: int, command: str) -> None:
    """Keep a cell's final model as a plain transformers folder (with `--save-models`), with
    the project's manifest and model card."""
    if models_dir is None:
        return
    from skillgraft.checkpoint import Card, write_manifest
    from skillgraft.lab.train import save_model

    folder = save_model(model, tokenizer, models_dir / f"{cell}-seed{seed}")
    write_manifest(folder, kind="model", inputs=[], options={"cell": cell, "seed": seed},
                   extra={"study": "lab knowledge", "study_command": command},
                   card=Card(title=f"lab knowledge: {cell}, seed {seed}", tags=["lab", "knowledge-study"],
                             summary=f"A tiny Llama trained from scratch by `{command}` (cell `{cell}`, seed "
                                     f"{seed}) on biographies of invented people; docs/knowledge.md describes "
                                     "the cells."))


@dataclass(frozen=True)
class Cell:
    """One training run of the study: a pretraining cell, or an injection cell that starts
    from its seed's pretraining cell `base` ((k, fullname); pronoun-k1 unless said)."""

    name: str
    seed: int
    study: str
    k: int
    fullname: bool = False
    unrelated: int = 0
    targets: str | None = None
    base: tuple[int, bool] = (1, False)

    @property
    def is_injection(self) -> bool:
        return self.study != "pretrain"


def plan_cells(plan: Plan, seed: int) -> tuple[list[Cell], list[Cell]]:
    """The pretraining cells and the injection cells of one seed, in report order."""
    pretrain = [Cell(pretrain_name(k, fn), seed, "pretrain", k, fn) for k, fn in plan.pretrain]
    injection = [Cell(f"inject-k{k}", seed, "inject", k) for k in plan.inject_k]
    injection += [Cell(f"inject-k{k}-into-k5", seed, "inject-into-k5", k, base=(5, False))
                  for k in plan.inject_k_into_k5]
    injection += [Cell(f"inject-k5+unrelated{n}", seed, "unrelated", 5, unrelated=n) for n in plan.unrelated]
    injection += [Cell(f"inject-k5-lora-{t}", seed, "targets", 5, targets=t) for t in plan.targets]
    missing = {c.base for c in injection} - {(c.k, c.fullname) for c in pretrain}
    if missing:
        raise ValueError(f"injection cells need the pretraining cells {sorted(missing)} (k, fullname)")
    return pretrain, injection


def run_pretrain_cell(cell: Cell, budget: C.StudyBudget, models_dir: Path | None, command: str, keep_state: bool):
    """Stage 1, probe, stage 2 (QA + replay), probe; returns the generations and, with
    `keep_state` (an injection starts from this model), the final state dict."""
    tokenizer = M.build_tokenizer()
    world = W.make_world(cell.seed)
    tags = {"cell": cell.name, "study": "pretrain", "k": cell.k, "seed": cell.seed}
    docs = C.pretrain_docs(world, cell.k, cell.fullname)
    model = M.new_model(tokenizer, cell.seed)
    model = train_lm(model, tokenizer, docs, budget.stage1, cell.seed, desc=f"{cell.name} stage 1", quiet=True)
    gens = C.probe(model, tokenizer, world.test_people, k=cell.k, fullname=cell.fullname, seed=cell.seed,
                   tags=tags, extraction=False)   # stored after stage 1? (extraction is asked after stage 2)
    pairs = C.qa_pairs(world.qa_people)
    model = train_sft(model, tokenizer, pairs, budget.stage2, cell.seed, desc=f"{cell.name} stage 2", quiet=True,
                      replay=C.stage2_replay(world, cell.k, cell.fullname, len(pairs)))
    after = C.probe(model, tokenizer, world.test_people, k=cell.k, fullname=cell.fullname, seed=cell.seed, tags=tags)
    gens += [{**g, "probe": "memorization_after_qa"} if g["probe"] == "memorization" else g for g in after]
    _save(model, tokenizer, models_dir, cell.name, cell.seed, command)
    return gens, (model.state_dict() if keep_state else None)


def run_injection_cell(cell: Cell, budget: C.StudyBudget, base_state: dict, models_dir: Path | None,
                       command: str) -> list[dict]:
    """Teach the new people to a copy of the base model; probe them, and the old held-out
    people again (retention, with the base's own biographies)."""
    tokenizer = M.build_tokenizer()
    world = W.make_world(cell.seed)
    model = M.new_model(tokenizer, cell.seed)
    model.load_state_dict(base_state)
    docs, steps = C.injection_docs(world, cell.k, cell.unrelated, budget.inject, cell.seed, cell.base)
    inject = Budget(steps=steps, batch=budget.inject.batch, warmup=budget.inject.warmup,
                    lr=budget.inject.lr if cell.targets is None else budget.lora_lr)
    if cell.targets is None:
        model = train_lm(model, tokenizer, docs, inject, cell.seed, desc=cell.name, quiet=True)
    else:
        model = M.train_lora(model, tokenizer, docs, inject, cell.seed, cell.targets, desc=cell.name, quiet=True)
    tags = {"cell": cell.name, "study": cell.study, "k": cell.k, "seed": cell.seed, "unrelated": cell.unrelated,
            "targets": cell.targets or "full", "base": pretrain_name(*cell.base)}
    _save(model, tokenizer, models_dir, cell.name, cell.seed, command)
    out = C.probe(model, tokenizer, world.injected, k=1, fullname=False, seed=cell.seed, tags=tags)
    base_k, base_fullname = cell.base
    kept = C.probe(model, tokenizer, world.test_people, k=base_k, fullname=base_fullname, seed=cell.seed, tags=tags)
    return out + [{**g, "probe": f"retained_{g['probe']}"} for g in kept]


def run_study_cells(plan: Plan, seeds: list[int], jobs: int, progress: Progress, quiet: bool,
                    models_dir: Path | None, command: str, folder: StudyFolder | None = None) -> list[dict]:
    """Run every cell of every seed on `jobs` worker processes (`lab.workers.run_cells`);
    generations in report order.

    Every cell is a pure function of its seed and budget, so the numbers do not depend on
    `jobs` or on which worker ran what. An injection cell starts as soon as its base model
    exists (before further pretraining cells), so the workers stay busy to the end and base
    states are freed early. Each finished cell's generations are kept by `folder` at once;
    its cells of an earlier run (`folder.finished`) are not run again, except a base whose
    injection cells did not all finish (its weights were not kept).
    """
    cells = {seed: plan_cells(plan, seed) for seed in seeds}
    finished = folder.finished if folder is not None else {}
    results: dict[Cell, list[dict]] = {c: finished[cell_file(c)]["generations"] for seed in seeds
                                       for c in (*cells[seed][0], *cells[seed][1]) if cell_file(c) in finished}
    for seed in seeds:
        for base in cells[seed][0]:
            if any(c.base == (base.k, base.fullname) and c not in results for c in cells[seed][1]):
                results.pop(base, None)
    bases = {seed: {c.base for c in cells[seed][1] if c not in results} for seed in seeds}
    queue = [cell for seed in seeds for cell in cells[seed][0] if cell not in results]
    ready: list[tuple] = []   # injection cells whose base has finished, with its state

    def next_cell() -> tuple | None:
        if ready:
            return ready.pop(0)
        if queue:
            cell = queue.pop(0)
            keep = (cell.k, cell.fullname) in bases[cell.seed]
            return cell, run_pretrain_cell, cell, plan.budget, models_dir, command, keep
        return None

    def on_done(cell: Cell, result) -> None:
        if cell.is_injection:
            results[cell] = result
        else:
            results[cell], base = result
            ready.extend((inj, run_injection_cell, inj, plan.budget, base, models_dir, command)
                         for inj in cells[cell.seed][1] if inj.base == (cell.k, cell.fullname) and inj not in results)
        if folder is not None:
            folder.keep(cell_file(cell), {"generations": results[cell]})
        progress.step(f"seed {cell.seed} {cell.name}")

    run_cells(jobs, quiet, next_cell, on_done)
    return [g for seed in seeds for cell in (*cells[seed][0], *cells[seed][1]) for g in results[cell]]


def summarise(gens: list[dict]) -> list[dict]:
    """The `results` rows (one per cell and seed), in first-seen order, from generations only."""
    scores = cell_scores(gens)
    meta: dict[tuple[str, int], dict] = {}
    for g in gens:
        meta.setdefault((g["cell"], g["seed"]),
                        {k: g[k] for k in ("study", "k", "unrelated", "targets", "base") if k in g})
    rows = []
    for (cell, seed), s in scores.items():
        m = meta[(cell, seed)]
        rows.append({"condition": cell, "k": m["k"], "seed": seed, "memorization": s.get("memorization", 0.0),
                     "extraction": s.get("extraction", 0.0), "n": s["n"], "study": m["study"],
                     **{p: s[p] for p in ("memorization_after_qa", "retained_memorization", "retained_extraction")
                        if p in s},
                     **{extra: m[extra] for extra in ("unrelated", "targets", "base") if extra in m}})
    return rows


def aggregate(rows: list[dict]) -> list[dict]:
    """Per condition over seeds: mean, sample sd, min, max of memorisation and extraction."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["condition"], []).append(r)
    out = []
    for cond, rs in groups.items():
        entry = {"condition": cond, "study": rs[0]["study"], "k": rs[0]["k"], "seeds": [r["seed"] for r in rs]}
        for metric in ("memorization", "extraction", "memorization_after_qa", "retained_memorization",
                       "retained_extraction"):
            vals = [r[metric] for r in rs if metric in r]
            if vals:
                entry[metric] = {"mean": round(statistics.fmean(vals), 4),
                                 "sd": round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0,
                                 "min": min(vals), "max": max(vals), "per_seed": vals}
        for extra in ("unrelated", "targets", "base"):
            if extra in rs[0]:
                entry[extra] = rs[0][extra]
        out.append(entry)
    return out


def conclusion(summary: list[dict]) -> str:
    """One sentence comparing k=1 and k=5 of each pretraining mode (numbers, not a verdict)."""
    by = {s["condition"]: s for s in summary}
    parts = []
    for mode in ("pronoun", "fullname"):
        a, b = by.get(f"{mode}-k1"), by.get(f"{mode}-k5")
        if a and b:
            e1, e5 = a["extraction"]["mean"], b["extraction"]["mean"]
            ratio = f"{e5 / e1:.1f}x" if e1 > 0 else "inf"
            parts.append(f"{mode}: extraction k=1 {e1:.3f} -> k=5 {e5:.3f} ({ratio}), memorisation "
                         f"{a['memorization']['mean']:.3f} / {b['memorization']['mean']:.3f}")
    return "; ".join(parts)


def run_study(plan: Plan, seeds: list[int], out: Path | None, *, force: bool = False, quiet: bool = False,
              command: str = "", plots: bool = True, save_models: bool = False, jobs: int = 1,
              resume: bool = False) -> dict:
    """Run `plan` for `seeds` on `jobs` processes, write `out` (if given), return the JSON payload.

    With `out`, everything is written into a temp sibling first and published by rename at
    the end, and every finished cell is kept in `OUT.finished-cells/` until then
    (`lab.study_folder.StudyFolder`): a study that fails anywhere or is stopped leaves them
    there, and `resume` continues from them.
    """
    from skillgraft import __version__

    check_out(out, force)
    if resume and save_models:
        raise UserError("--resume cannot be used with --save-models: the finished cells' models are not kept")
    start = time.time()
    record = {"plan": asdict(plan), "skillgraft": __version__}
    with StudyFolder(out, force=force, record=record if out is not None else None, resume=resume,
                     prefix="skillgraft-knowledge-") as folder:
        to_run = sum(cell_file(c) not in folder.finished for seed in seeds for cells in plan_cells(plan, seed)
                     for c in cells)
        progress = Progress(to_run, quiet, "knowledge")
        models_dir = folder.path / "models" if (out is not None and save_models) else None
        try:
            gens = run_study_cells(plan, seeds, max(1, min(jobs, to_run)), progress, quiet, models_dir, command,
                                   folder)
        finally:
            progress.close()
        rows = summarise(gens)
        summary = aggregate(rows)
        payload = {"results": rows, "summary": summary, "conclusion": conclusion(summary),
                   "seeds": list(seeds), "seconds": round(time.time() - start, 1), "jobs": jobs,
                   "command": command, "budget": asdict(plan.budget), "resumed_cells": sorted(folder.finished)}

        def write_plots_into(path: Path) -> None:
            if plots:
                from skillgraft.lab.knowledge.plots import write_plots

                write_plots(rows, path / "plots")

        folder.write(payload, gens, options={"seeds": list(seeds), "plan": asdict(plan)},
                     extra={"study": "lab knowledge", "study_command": command, "seconds": payload["seconds"],
                            "model_shape": M.MODEL_SHAPE}, also=write_plots_into)
    return payload
