"""One cell of `lab real`: train with `skillgraft.train.run.train`, score with
`skillgraft.evaluate.run_suite`, graft with `skillgraft.vectors`; return rows and generations.

Runs in a worker process (or inline with `--jobs 1`); everything it needs arrives as
arguments and everything it makes lives under `work/`, so cells share nothing in memory.
Model weights (0.5 GB each in float32) are deleted once scored unless `keep` is set; the
adapters and each run's `skillgraft.json` stay.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from skillgraft.lab.real import corpus
from skillgraft.lab.real.plan import Budget, Cell, Plan, Run

MONITOR_PROMPTS = ["The capital of France is", "My favourite food is", "The weather today is"]
GENERAL_SEED = 10_000        # the monitor's held-out general texts: a draw no training run uses


@dataclass(frozen=True)
class Context:
    """What every cell reads: the converted model, the suites, the work folder."""

    model: Path
    suites: dict[str, Path]
    work: Path
    keep: bool = False


def run_dir(ctx: Context, name: str, seed: int) -> Path:
    return ctx.work / "runs" / f"{name}-seed{seed}"


def _train(ctx: Context, name: str, seed: int, data: list[dict], run: Run, *, fmt: str = "text",
           steps: int | None = None, mix_in: Path | None = None, mix_n: int = 0, monitor: dict | None = None,
           lr: float | None = None, method: str | None = None) -> dict:
    """One `skillgraft train` run on `data`; returns its summary (+ `weights`: the model folder)."""
    from skillgraft.train.config import TrainConfig
    from skillgraft.train.run import train

    out = run_dir(ctx, name, seed)
    train_file = corpus.write_jsonl(out.parent / f"{out.name}.train.jsonl", data)
    method = method or run.method
    config = TrainConfig.model_validate({
        "model": str(ctx.model), "method": method, "dtype": "float32", "seed": seed,
        "data": {"train": str(train_file), "format": fmt, "answer_only": fmt == "chat", "max_length": 512,
                 **({"mix_in": {"path": str(mix_in), "n": mix_n, "seed": seed}} if mix_n else {})},
        "lora": {"r": run.r, "alpha": run.alpha, "targets": run.targets, "tied_lm_head": "untie"},
        "lr": lr or run.lr, "max_steps": steps or run.steps(len(data) + mix_n), "batch_size": run.batch,
        "output_dir": str(out), "merge": method != "full", "progress": False, "save_steps": 1_000_000,
        "monitor": monitor or {"enabled": False}})
    summary = train(config)
    summary["weights"] = summary["merged_dir"] or summary["model_dir"]
    return summary


def _retention_suite(budget: Budget):
    from skillgraft.evaluate.suites import load_suite

    suite = load_suite("retention")
    # the budget names the sets and how they are asked; the study's rows are keyword scores
    # against its own untrained row (`kept` needs a reference the cells do not pass)
    suite.sets = [s for s in suite.sets if s.name in budget.retention_sets]
    suite.only_model_languages = False
    for probe_set in suite.sets:
        probe_set.generation = probe_set.generation.model_copy(update={"chat": budget.retention_chat})
        probe_set.metrics = [m for m in probe_set.metrics if m.name != "kept"]
    return suite


def evaluate(ctx: Context, budget: Budget, models: dict[str, Path], suites: tuple[str, ...]) -> list[dict]:
    """Every model on every named suite (`retention` = the built-in suite's kept sets);
    returns the `run_suite` results dicts, one per suite, all models side by side."""
    from skillgraft.evaluate import run_suite

    out = []
    for name in suites:
        suite = _retention_suite(budget) if name == "retention" else ctx.suites[name]
        out.append(run_suite({label: str(path) for label, path in models.items()}, suite, batch_size=16, log=None))
    return out


def score(results: list[dict], label: str) -> dict[str, float]:
    """Flat `SET.METRIC` scores of one model across results dicts."""
    flat = {}
    for result in results:
        for set_name, metrics in result["scores"].get(label, {}).items():
            for metric, value in metrics.items():
                flat[f"{set_name}.{metric}"] = value
    return flat


def _items(results: list[dict], cell: Cell) -> list[dict]:
    return [{**item, "cell": cell.name, "seed": cell.seed} for result in results for item in result["items"]]


def _drop_weights(ctx: Context, *folders) -> None:
    if not ctx.keep:
        for folder in folders:
            if folder:
                shutil.rmtree(folder, ignore_errors=True)


def baseline(cell: Cell, plan: Plan, ctx: Context) -> dict:
    """The untrained model on every suite (greedy, so one evaluation serves every seed)."""
    results = evaluate(ctx, plan.budget, {"untrained": ctx.model}, ("knowledge", "persona", "cp", "retention"))
    return {"rows": [{"cell": "untrained", "study": "baseline", "seed": cell.seed, **score(results, "untrained")}],
            "items": _items(results, cell), "results": results}


def knowledge(cell: Cell, plan: Plan, ctx: Context) -> dict:
    """k versions of every fact (plus unrelated texts), trained with the cell's placement."""
    budget = plan.budget
    data = corpus.fact_texts(cell.k)
    steps = budget.knowledge.steps(len(corpus.fact_texts(cell.equal_steps_to))) if cell.equal_steps_to else None
    mix = None
    if cell.unrelated:
        mix = corpus.write_jsonl(run_dir(ctx, cell.name, cell.seed).with_suffix(".unrelated.jsonl"),
                                 corpus.unrelated_texts(max(plan.unrelated), cell.seed))
    full = cell.targets == "full"
    run = replace(budget.knowledge, targets=budget.knowledge.targets if full else cell.targets)
    start = time.time()
    summary = _train(ctx, cell.name, cell.seed, data, run, steps=steps, mix_in=mix, mix_n=cell.unrelated,
                     method="full" if full else None, lr=budget.full_lr if full else None)
    label = f"{cell.name}-seed{cell.seed}"
    results = evaluate(ctx, budget, {label: Path(summary["weights"])}, ("knowledge", "retention"))
    _drop_weights(ctx, summary["weights"])
    row = {"cell": cell.name, "study": "knowledge", "seed": cell.seed, "k": cell.k, "targets": cell.targets,
           "unrelated": cell.unrelated, "steps": summary["steps"], "texts": len(data) + cell.unrelated,
           "seconds": round(time.time() - start, 1), "train_seconds": summary["train_runtime"],
           **score(results, label)}
    return {"rows": [row], "items": _items(results, cell), "results": results}


def _persona_monitor(ctx: Context, name: str, seed: int, every: int) -> dict:
    general = corpus.write_jsonl(run_dir(ctx, name, seed).with_suffix(".general.jsonl"),
                                 corpus.unrelated_texts(16, GENERAL_SEED))
    return {"enabled": True, "every_steps": every, "general_text": str(general), "action": "rollback",
            "prompts": MONITOR_PROMPTS, "max_new_tokens": 16}


def persona_too_high_lr(cell: Cell, plan: Plan, ctx: Context) -> dict:
    """The persona recipe at a learning rate far too high: the guard must stop and roll back.
    The monitor's samples before the stop show the collapse; the evaluation, the rolled-back model."""
    budget = plan.budget
    start = time.time()
    summary = _train(ctx, cell.name, cell.seed, corpus.persona_records(), budget.persona, fmt="chat",
                     lr=budget.persona_too_high_lr, monitor=_persona_monitor(ctx, cell.name, cell.seed, every=1))
    label = f"{cell.name}-seed{cell.seed}"
    results = evaluate(ctx, budget, {label: Path(summary["weights"])}, ("persona", "retention"))
    _drop_weights(ctx, summary["weights"])
    row = {"cell": cell.name, "study": "persona", "seed": cell.seed, "lr": budget.persona_too_high_lr,
           "steps": summary["steps"], "stopped": summary["stopped"], "rolled_back_to": summary["rolled_back_to"],
           "monitor": [{k: r.get(k) for k in ("step", "general_ppl", "retention", "distinct", "sample")}
                       for r in summary["monitor"]],
           "seconds": round(time.time() - start, 1), **score(results, label)}
    return {"rows": [row], "items": _items(results, cell), "results": results}


def vector_input(cell: Cell, plan: Plan, ctx: Context) -> dict:
    """The three models the skill-vector study grafts with: `persona` (instruct + persona
    LoRA, merged: the skilled model, also the persona study's run), `cp` (instruct fully
    fine-tuned on the CP text) and `nonskill` (instruct + the persona recipe on unrelated text)."""
    budget = plan.budget
    start = time.time()
    if cell.name == "persona":
        summary = _train(ctx, "persona", cell.seed, corpus.persona_records(), budget.persona, fmt="chat",
                         monitor=_persona_monitor(ctx, "persona", cell.seed, every=10))
    elif cell.name == "cp":
        summary = _train(ctx, "cp", cell.seed, corpus.cp_texts(budget.cp_unrelated, 1000 + cell.seed), budget.cp)
    else:
        steps = budget.persona.steps(len(corpus.persona_records()))
        summary = _train(ctx, "nonskill", cell.seed, corpus.unrelated_texts(len(corpus.persona_records()),
                                                                            2000 + cell.seed),
                         budget.persona, steps=steps)
    row = {"cell": cell.name, "study": "vector-input", "seed": cell.seed, "steps": summary["steps"],
           "stopped": summary["stopped"], "seconds": round(time.time() - start, 1)}
    return {"rows": [row], "items": [], "weights": summary["weights"]}


def vector(cell: Cell, plan: Plan, ctx: Context, inputs: dict[str, str]) -> dict:
    """skill = persona − instruct grafted onto CP at each scale, against CP, the skilled model,
    a random direction with the skill vector's per-tensor norms, and the non-skill vector."""
    from skillgraft.vectors.controls import random_like
    from skillgraft.vectors import extract, graft

    budget = plan.budget
    start = time.time()
    work = run_dir(ctx, "vector", cell.seed)
    vectors, grafted = work / "vectors", work / "models"
    extract(ctx.model, inputs["persona"], vectors / "skill", force=True)
    random_like(vectors / "skill", vectors / "random", cell.seed)
    models: dict[str, tuple[Path, float | None]] = {"skilled": (Path(inputs["persona"]), None),
                                                    "cp": (Path(inputs["cp"]), None)}
    for scale in plan.vector_scales or budget.scales:
        models[f"cp+vector@{scale:g}"] = (graft(inputs["cp"], grafted / f"cp+vector@{scale:g}",
                                                sources=[(vectors / "skill", scale)], force=True)["output"], scale)
    controls = [("random", vectors / "random")]
    if "nonskill" in inputs:
        extract(ctx.model, inputs["nonskill"], vectors / "nonskill", force=True)
        controls.append(("nonskill", vectors / "nonskill"))
    for name, folder in controls:
        models[f"cp+{name}"] = (graft(inputs["cp"], grafted / f"cp+{name}", sources=[(folder, 1.0)],
                                      force=True)["output"], 1.0)
    labels = {f"{name}-seed{cell.seed}": Path(path) for name, (path, _) in models.items()}
    results = evaluate(ctx, budget, labels, ("persona", "cp", "retention"))
    rows = [{"cell": "vector", "study": "vector", "seed": cell.seed, "model": name, "scale": scale,
             **score(results, f"{name}-seed{cell.seed}")} for name, (_, scale) in models.items()]
    rows[0]["seconds"] = round(time.time() - start, 1)
    _drop_weights(ctx, grafted, *inputs.values())
    return {"rows": rows, "items": _items(results, cell), "results": results}


def execute(cell: Cell, plan: Plan, ctx: Context, inputs: dict[str, str] | None = None) -> dict:
    """Run one cell (the function the worker processes are given)."""
    if cell.study == "baseline":
        return baseline(cell, plan, ctx)
    if cell.study == "knowledge":
        return knowledge(cell, plan, ctx)
    if cell.study == "persona":
        return persona_too_high_lr(cell, plan, ctx)
    if cell.study == "vector-input":
        return vector_input(cell, plan, ctx)
    return vector(cell, plan, ctx, inputs or {})
