"""Run the knowledge study's cells for some seeds and write one output folder.

Why it is organised like this: the injection, unrelated-text and target-set cells all start
from the same single-phrasing model (k=1, pronouns, stage 1 + stage 2), so that model is
built once per seed by the pretraining study and reused (state dict copied in memory).
Every number reported is recomputed from the generations saved in `generations.jsonl`,
and the folder is written to a temp sibling and published by rename (DESIGN.md).
"""

from __future__ import annotations

import contextlib
import copy
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from skillgraft.checkpoint.publish import AtomicFolder, check_output
from skillgraft.errors import UserError
from skillgraft.lab.knowledge import conditions as C
from skillgraft.lab.knowledge import model as M
from skillgraft.lab.knowledge import world as W
from skillgraft.lab.knowledge.metrics import cell_scores
from skillgraft.lab.train import Schedule


@dataclass(frozen=True)
class Plan:
    """Which cells to run. The default is the full study; `FAST` is the test/demo variant."""

    pretrain: tuple[tuple[int, bool], ...] = ((1, False), (2, False), (3, False), (5, False), (1, True), (5, True))
    inject_k: tuple[int, ...] = (1, 2, 3, 5)
    unrelated: tuple[int, ...] = (10, 100, 1000)
    targets: tuple[str, ...] = C.TARGET_SETS
    budget: C.Budget = field(default_factory=C.Budget)


# The fast variant: the full-name k=1 and k=5 cells with the study's own budgets (its numbers
# equal the full study's seed-0 cells); full names because their k=1/k=5 gap is the larger one.
FAST = Plan(pretrain=((1, True), (5, True)), inject_k=(), unrelated=(), targets=())


def pretrain_name(k: int, fullname: bool) -> str:
    return f"{'fullname' if fullname else 'pronoun'}-k{k}"


class Progress:
    """A tqdm bar over the study's cells on stderr, and one line per finished cell
    (the lines survive in logs, the bar does not). `--quiet` silences both."""

    def __init__(self, total: int, quiet: bool):
        from tqdm.auto import tqdm

        self.quiet, self.start = quiet, time.time()
        self.bar = tqdm(total=total, desc="knowledge cells", file=sys.stderr, disable=quiet, leave=False)

    def step(self, what: str) -> None:
        self.bar.update(1)
        if not self.quiet:
            self.bar.write(f"[knowledge] {self.bar.n}/{self.bar.total} {what} ({time.time() - self.start:.0f} s)",
                           file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def _save(model, tokenizer, models_dir: Path | None, cell: str, seed: int, command: str) -> None:
    """Keep a cell's final model as a plain transformers folder (with `--save-models`)."""
    if models_dir is None:
        return
    from skillgraft import __version__
    from skillgraft.lab.train import save_model

    folder = save_model(model, tokenizer, models_dir / f"{cell}-seed{seed}")
    (folder / "skillgraft.json").write_text(json.dumps({
        "kind": "model", "tool": "skillgraft", "version": __version__, "study": "lab knowledge", "cell": cell,
        "seed": seed, "command": command}, indent=2) + "\n")


def _run_seed(plan: Plan, seed: int, tokenizer, progress: Progress, quiet: bool,
              models_dir: Path | None = None, command: str = "") -> list[dict]:
    """All cells of one seed; returns their generations (tagged with cell, seed and probe)."""
    world = W.make_world(seed)
    b = plan.budget
    gens: list[dict] = []
    base_for_injection = None
    for k, fullname in plan.pretrain:
        name = pretrain_name(k, fullname)
        tags = {"cell": name, "study": "pretrain", "k": k, "seed": seed}
        model = M.new_model(tokenizer, seed)
        model = M.train_text(model, tokenizer, C.pretrain_docs(world, k, fullname), b.stage1, seed,
                             desc=f"{name} stage 1", quiet=True)
        gens += C.probe(model, tokenizer, world.test_people, k=k, fullname=fullname, seed=seed, tags=tags,
                        extraction=False)  # stored after stage 1? (extraction is asked after stage 2)
        model = M.train_sft(model, tokenizer, C.qa_pairs(world.qa_people), b.stage2, seed,
                            desc=f"{name} stage 2", quiet=True)
        after = C.probe(model, tokenizer, world.test_people, k=k, fullname=fullname, seed=seed, tags=tags)
        gens += [{**g, "probe": "memorization_after_qa"} if g["probe"] == "memorization" else g for g in after]
        _save(model, tokenizer, models_dir, name, seed, command)
        if (k, fullname) == (1, False):
            base_for_injection = copy.deepcopy(model.state_dict())
        progress.step(f"seed {seed} {name}")
    if not (plan.inject_k or plan.unrelated or plan.targets):
        return gens
    if base_for_injection is None:
        raise ValueError("the injection cells need the pronoun-k1 pretraining cell")

    def fresh():
        model = M.new_model(tokenizer, seed)
        model.load_state_dict(base_for_injection)
        return model

    def inject(name: str, k: int, n_unrelated: int = 0, targets: str | None = None, study: str = "inject"):
        docs, steps = C.injection_docs(world, k, n_unrelated, b.inject, seed)
        schedule = Schedule(steps=steps, batch=b.inject.batch, lr=b.inject.lr if targets is None else b.lora_lr,
                            warmup=b.inject.warmup)
        if targets is None:
            model = M.train_text(fresh(), tokenizer, docs, schedule, seed, desc=name, quiet=True)
        else:
            model = M.train_text_lora(fresh(), tokenizer, docs, schedule, seed, targets, desc=name, quiet=True)
        tags = {"cell": name, "study": study, "k": k, "seed": seed, "unrelated": n_unrelated,
                "targets": targets or "full"}
        progress.step(f"seed {seed} {name}")
        _save(model, tokenizer, models_dir, name, seed, command)
        out = C.probe(model, tokenizer, world.injected, k=1, fullname=False, seed=seed, tags=tags)
        # retention: the held-out people of stage 1, probed again after the injection
        kept = C.probe(model, tokenizer, world.test_people, k=1, fullname=False, seed=seed, tags=tags)
        return out + [{**g, "probe": f"retained_{g['probe']}"} for g in kept]

    for k in plan.inject_k:
        gens += inject(f"inject-k{k}", k)
    for n in plan.unrelated:
        gens += inject(f"inject-k5+unrelated{n}", 5, n_unrelated=n, study="unrelated")
    for t in plan.targets:
        gens += inject(f"inject-k5-lora-{t}", 5, targets=t, study="targets")
    return gens


def summarise(gens: list[dict]) -> list[dict]:
    """The `results` rows (one per cell and seed), in first-seen order, from generations only."""
    scores = cell_scores(gens)
    meta: dict[tuple[str, int], dict] = {}
    for g in gens:
        meta.setdefault((g["cell"], g["seed"]), {k: g[k] for k in ("study", "k", "unrelated", "targets") if k in g})
    rows = []
    for (cell, seed), s in scores.items():
        m = meta[(cell, seed)]
        rows.append({"condition": cell, "k": m["k"], "seed": seed, "memorization": s.get("memorization", 0.0),
                     "extraction": s.get("extraction", 0.0), "n": s["n"], "study": m["study"],
                     **{p: s[p] for p in ("memorization_after_qa", "retained_memorization", "retained_extraction")
                        if p in s},
                     **({"unrelated": m["unrelated"], "targets": m["targets"]} if "targets" in m else {})})
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
        for extra in ("unrelated", "targets"):
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


def check_out(out: Path | None, force: bool) -> None:
    """Reject an --out that cannot be published before any training starts."""
    if out is None:
        return
    check_output(out, [], force=force, option="--out")
    if not out.parent.exists():
        raise UserError(f"--out {out}: parent folder {out.parent} does not exist")


def run_study(plan: Plan, seeds: list[int], out: Path | None, *, force: bool = False, quiet: bool = False,
              command: str = "", plots: bool = True, save_models: bool = False) -> dict:
    """Run `plan` for `seeds`, write `out` (if given), return the JSON payload.

    With `out`, everything is written into a temp sibling first and published by rename at
    the end (`AtomicFolder`), so an interrupted run never leaves a half-written folder under
    the final name.
    """
    from skillgraft import __version__
    from skillgraft.lab.train import set_threads

    check_out(out, force)
    set_threads(1)
    start = time.time()
    with AtomicFolder(out) if out is not None else contextlib.nullcontext() as tmp:
        tokenizer = M.build_tokenizer()
        per_seed = len(plan.pretrain) + len(plan.inject_k) + len(plan.unrelated) + len(plan.targets)
        progress = Progress(per_seed * len(seeds), quiet)
        models_dir = tmp / "models" if (tmp is not None and save_models) else None
        if quiet:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()   # "Writing model shards" bars of --save-models
        gens: list[dict] = []
        try:
            for seed in seeds:
                gens += _run_seed(plan, seed, tokenizer, progress, quiet, models_dir, command)
        finally:
            progress.close()
        rows = summarise(gens)
        summary = aggregate(rows)
        payload = {"results": rows, "summary": summary, "conclusion": conclusion(summary),
                   "seeds": list(seeds), "seconds": round(time.time() - start, 1), "command": command,
                   "budget": asdict(plan.budget)}
        if tmp is not None:
            _write(tmp, payload, gens, plan, plots=plots, version=__version__)
    return payload


def _write(tmp: Path, payload: dict, gens: list[dict], plan: Plan, *, plots: bool, version: str) -> None:
    """Write results, generations, plots and the manifest into `tmp` (AtomicFolder publishes it)."""
    from skillgraft.lab.knowledge.plots import write_plots

    (tmp / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    with (tmp / "generations.jsonl").open("w") as fh:
        for g in gens:
            fh.write(json.dumps(g) + "\n")
    written = write_plots(payload["results"], tmp / "plots") if plots else []
    (tmp / "skillgraft.json").write_text(json.dumps({
        "kind": "study", "tool": "skillgraft", "version": version, "study": "lab knowledge",
        "command": payload["command"], "seeds": payload["seeds"], "seconds": payload["seconds"],
        "model_shape": M.MODEL_SHAPE, "plan": asdict(plan),
        "files": ["results.json", "generations.jsonl", *[f"plots/{p.name}" for p in written]],
        "models": sorted(p.name for p in (tmp / "models").iterdir()) if (tmp / "models").is_dir() else []},
        indent=2) + "\n")
