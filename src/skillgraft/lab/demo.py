"""The demo: graft the shipped skill vector onto the shipped CP model and measure, with controls.

Why these models and controls: the skill (answer a question from context with one name, then
stop) was fine-tuned only in language A; CP was continued-pretrained in language B and never
saw the skill. If `cp + r·(skilled − base)` answers held-out B questions, the vector carried
the skill across languages. Two controls rule out "any nudge does it": a random direction
with the same per-tensor norm as the skill vector, and the vector of a fine-tuning on a
different task (`nonskill − base`, same budget and format). The upper bound is CP fine-tuned
on the skill directly in B. All grafting goes through the graft core (`skillgraft.vectors`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from skillgraft.lab import world as W
from skillgraft.lab.evaluate import Generation, run_items, score_table

SHIPPED = Path(__file__).parent / "shipped"
N_EVAL = 200
EXCLUDE = (r"embed_tokens", r"lm_head")
MODEL_ORDER = ("base", "cp", "skilled", "cp+vector", "cp+random", "cp+nonskill", "upper")


def shipped_available(root: Path = SHIPPED) -> bool:
    """True when all shipped lab checkpoints are present."""
    return all((root / name / "config.json").is_file() for name in ("base", "cp", "skilled", "nonskill", "upper"))


def shipped_seed(root: Path = SHIPPED) -> int:
    """The seed of the `lab build` that made the checkpoints under `root` (from its lab.json)."""
    return int(json.loads((root / "lab.json").read_text())["seed"])


def make_models(work: Path, scales, seed: int, root: Path = SHIPPED) -> list[tuple[str, float | None, Path]]:
    """Extract the vectors, build the grafted models; returns (name, scale, folder) rows."""
    from skillgraft.vectors import extract, graft
    from skillgraft.vectors.controls import random_like

    extract(root / "base", root / "skilled", work / "vector", exclude=EXCLUDE)
    extract(root / "base", root / "nonskill", work / "nonskill-vector", exclude=EXCLUDE)
    random_like(work / "vector", work / "random-vector", seed)
    rows: list[tuple[str, float | None, Path]] = [("base", None, root / "base"), ("cp", None, root / "cp"),
                                                  ("skilled", None, root / "skilled")]
    for r in scales:
        out = work / f"cp+vector@{r:g}"
        graft(root / "cp", out, sources=[(work / "vector", r)])
        rows.append(("cp+vector", float(r), out))
    graft(root / "cp", work / "cp+random", sources=[(work / "random-vector", 1.0)])
    graft(root / "cp", work / "cp+nonskill", sources=[(work / "nonskill-vector", 1.0)])
    rows += [("cp+random", 1.0, work / "cp+random"), ("cp+nonskill", 1.0, work / "cp+nonskill"),
             ("upper", None, root / "upper")]
    return rows


def evaluate_models(rows, world: W.World, seed: int, n: int = N_EVAL) -> list[Generation]:
    """Greedy generations of every model on `n` held-out language-B skill items."""
    from transformers.utils import logging as hf_logging

    from skillgraft.evaluate.backends.hf import load_pretrained

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    items = W.skill_items(world, "B", "heldout", n, seed=1000 + seed)
    gens: list[Generation] = []
    for name, scale, folder in rows:
        model, tokenizer = load_pretrained(str(folder))
        gens += run_items(model, tokenizer, items, name=name, scale=scale, lang="B")
    return gens


def answer_in_output(gens: list[Generation], model: str) -> float:
    """Share of `model`'s outputs that contain the gold name anywhere (what it "knows")."""
    mine = [g for g in gens if g.model == model]
    return sum(g.answer in g.output.split() for g in mine) / max(1, len(mine))


def conclusion(results: list[dict], cp_knows: float | None = None) -> str:
    """One plain-language paragraph that states only what the numbers in `results` show.

    `cp_knows` is the share of CP outputs containing the gold name (see `answer_in_output`).
    """
    cp = next(r for r in results if r["model"] == "cp")
    vec = [r for r in results if r["model"] == "cp+vector"]
    best = max(vec, key=lambda r: r["accuracy"])
    controls = [r for r in results if r["model"] in ("cp+random", "cp+nonskill")]
    upper = next((r for r in results if r["model"] == "upper"), None)
    gain = best["accuracy"] - cp["accuracy"]
    worst_control = max(c["accuracy"] - cp["accuracy"] for c in controls) if controls else 0.0
    text = (f"On {cp['n']} held-out language-B questions about names never seen in fine-tuning, the CP model "
            f"answers {cp['accuracy']:.0%} exactly (answer, then stop). Adding the skill vector taken from "
            f"language A (skilled − base, embeddings and lm_head excluded) gives {best['accuracy']:.0%} at "
            f"scale {best['scale']:g}, {gain * 100:+.0f} points; across scales "
            + ", ".join(f"{r['scale']:g}: {r['accuracy']:.0%}" for r in vec) + ". ")
    text += ("The controls " + " and ".join(f"{c['model']} ({c['accuracy']:.0%})" for c in controls)
             + f" are at most {worst_control * 100:+.0f} points from CP, so " + (
                 "the gain is specific to the skill vector, not to any weight change of that size. "
                 if gain > worst_control + 0.05 else "the vector's effect is not distinguishable from the controls. "))
    if upper is not None:
        text += f"Fine-tuning CP on the skill directly in language B reaches {upper['accuracy']:.0%}. "
    leak = best["language_leak"]
    text += f"{leak:.0%} of the best grafted model's answers contain a language-A name. "
    if cp_knows is not None and cp_knows >= 0.5:
        text += (f"Caveat: CP already knows the answers — {cp_knows:.0%} of its verbose replies contain the "
                 "gold name; the vector moves the behaviour (answer with the name, then stop) onto that "
                 "knowledge, which is the chat-vector claim.")
    elif cp_knows is not None:
        text += f"Only {cp_knows:.0%} of CP's own replies contain the gold name."
    return text


def print_report(results: list[dict], text: str, stream) -> None:
    """A rich table of the results and the conclusion, on `stream`."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Lab demo: held-out language-B questions (names unseen in fine-tuning)")
    for col in ("model", "scale", "accuracy", "format_rate", "language_leak", "n"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in results:
        table.add_row(r["model"], "-" if r["scale"] is None else f"{r['scale']:g}", f"{r['accuracy']:.3f}",
                      f"{r['format_rate']:.3f}", f"{r['language_leak']:.3f}", str(r["n"]))
    console = Console(file=stream, width=110)
    console.print(table)
    console.print(text)


def run_demo(out_dir: Path | None = None, seed: int = 0, as_json: bool = False, scales=(0.5, 1.0, 1.5),
             root: Path = SHIPPED, force: bool = False, quiet: bool = False) -> dict:
    """Run the lab demo on the shipped checkpoints (or a `lab build` folder `root`); returns
    `{"results": [...], "conclusion": str}`.

    `out_dir` keeps the vectors, grafted models (each a part with its own manifest),
    `generations.jsonl` and `results.json`, published by rename with a manifest of kind
    `demo` (`lab.study_folder`, as every lab study); without it everything goes to a temp folder. The table goes to stdout, or stderr
    when `as_json` (the caller prints the returned object as JSON); `quiet` drops the progress
    lines, and with `as_json` the table too.
    """
    from skillgraft.checkpoint import check_output
    from skillgraft.lab.study_folder import StudyFolder
    from skillgraft.errors import UserError
    from skillgraft.lab.train import set_threads

    if not shipped_available(root):
        raise UserError(f"the lab's shipped checkpoints are missing under {root}; run `skillgraft lab build`")
    if out_dir is not None:
        check_output(Path(out_dir), [root], force=force, option="--out")
    set_threads()
    stream = sys.stderr if as_json else sys.stdout
    world = W.make_world(shipped_seed(root))
    with StudyFolder(out_dir, force=force, prefix="skillgraft-lab-demo-") as folder:
        work = folder.path
        if not quiet:
            print(f"[lab demo] extracting and grafting in {work}", file=sys.stderr)
        rows = make_models(work, scales, seed, root)
        if not quiet:
            print(f"[lab demo] evaluating {len(rows)} models on {N_EVAL} held-out B items", file=sys.stderr)
        gens = evaluate_models(rows, world, seed)
        results = score_table(gens, world)
        results.sort(key=lambda r: MODEL_ORDER.index(r["model"]))
        text = conclusion(results, answer_in_output(gens, "cp"))
        payload = {"results": results, "conclusion": text}
        folder.write(payload, [g.to_dict() for g in gens], kind="demo",
                     inputs=[{"role": "lab_models", "path": str(Path(root).resolve())}],
                     options={"seed": seed, "scales": list(scales), "n_eval": N_EVAL})
    if not (quiet and as_json):
        print_report(results, text, stream)
    return payload
