"""A prompt file for `compare`: a suite YAML, a JSONL of items, or plain text (one prompt a line).

JSONL and text files get the metrics their fields allow, plus degeneration, so a quick
side-by-side needs no suite file.
"""

from __future__ import annotations

from pathlib import Path

from skillgraft.errors import UserError
from skillgraft.evaluate.backends.base import GenerationSettings
from skillgraft.evaluate.suites import Item, MetricSpec, ProbeSet, Suite, check_set, load_items, load_suite


def default_metrics(items: list[Item]) -> list[MetricSpec]:
    """Metrics every item can feed: keyword/rouge2/choices/language when all items have the fields."""
    names = []
    if all(i.keywords is not None for i in items):
        names.append("keyword")
    if all(i.reference is not None for i in items):
        names.append("rouge2")
    if all(i.choices is not None and i.answer is not None for i in items):
        names.append("choice_generated")
    if all(i.language is not None for i in items):
        names.append("language")
    names.append("repetition")
    return [MetricSpec(name=n) for n in names]


def suite_from_prompts(path: str | Path, generation: GenerationSettings | None = None) -> Suite:
    """Load `path` as a suite (.yaml/.yml), items (.jsonl) or one prompt per line (other)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--prompts {path}: not found")
    if path.suffix in (".yaml", ".yml"):
        return load_suite(path)
    if path.suffix == ".jsonl":
        items = load_items(path)
    else:
        items = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                item = Item(id=f"{path.stem}-{lineno}", prompt=line.strip())
                item._line = lineno
                items.append(item)
        if not items:
            raise UserError(f"--prompts {path}: no prompts")
    generation = generation or GenerationSettings(chat="auto")
    probe_set = ProbeSet(path.stem, items, default_metrics(items), generation, source=str(path))
    check_set(probe_set)
    return Suite(path.stem, [probe_set], generation, str(path))
