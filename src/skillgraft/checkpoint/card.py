"""`README.md` model cards: what a folder is, where it came from and what was done, in the
form the Hugging Face Hub reads (a YAML metadata header, then Markdown).

Every folder the tool writes gets one beside its `skillgraft.json` (and listed there), so a
grafted model, a vector or an adapter pushed to the Hub says what it is without the
command history. `base_model` lists only Hub ids (the Hub rejects local paths there); local
inputs are named in the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CARD = "README.md"
LIBRARY = {"model": "transformers", "adapter": "peft", "vector": "skillgraft"}
RELATION = {"model": "merge", "adapter": "adapter"}  # the Hub's base_model_relation values


@dataclass
class Card:
    """What a writer knows about its output beyond the manifest: a title, the story, scores."""

    title: str
    summary: str = ""                    # Markdown: what was done, in a few lines
    tags: list[str] = field(default_factory=list)
    relation: str | None = None          # overrides the kind's default base_model_relation
    scores: dict | None = None           # {set or measure: {metric: value}} when a run measured any
    details: list[str] = field(default_factory=list)  # extra Markdown bullet lines


def render_card(card: Card, *, kind: str, inputs: list[dict], options: dict, skipped: list[dict] | None,
                command: list[str] | None, version: str) -> str:
    import yaml

    hub_ids = [entry["hub"]["repo_id"] for entry in inputs if isinstance(entry.get("hub"), dict)]
    meta: dict = {}
    if hub_ids:
        meta["base_model"] = list(dict.fromkeys(hub_ids))
        relation = card.relation or RELATION.get(kind)
        if relation:
            meta["base_model_relation"] = relation
    meta["library_name"] = LIBRARY.get(kind, "skillgraft")
    meta["tags"] = list(dict.fromkeys(["skillgraft", kind, *card.tags]))
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip(), "---", "",
             f"# {card.title}", "", f"A {kind} folder written by skillgraft {version}."]
    if card.summary:
        lines += ["", card.summary.strip()]
    if command:
        lines += ["", "Made with:", "", "```bash", " ".join(command), "```"]
    lines += ["", "## Inputs", ""]
    for entry in inputs:
        hub = entry.get("hub")
        where = f"`{hub['repo_id']}` at commit `{hub['commit']}`" if isinstance(hub, dict) else f"`{entry.get('path')}`"
        scale = f", scale {entry['scale']:g}" if isinstance(entry.get("scale"), (int, float)) else ""
        lines.append(f"- {entry.get('role', 'input')}: {where}{scale}")
    if card.details:
        lines += ["", *card.details]
    shown = {k: v for k, v in options.items() if v not in (None, [], {}, False)}
    if shown:
        lines += ["", "## Options", "", *[f"- `{k}`: `{v}`" for k, v in shown.items()]]
    if skipped:
        reasons: dict[str, int] = {}
        for entry in skipped:
            reason = str(entry.get("reason", "") if isinstance(entry, dict) else entry).split(" (")[0]
            reasons[reason] = reasons.get(reason, 0) + 1
        lines += ["", "## Skipped", "", *[f"- {count} tensor(s): {reason}" for reason, count in reasons.items()]]
    if card.scores:
        lines += ["", "## Evaluation", "", "| set | metric | value |", "|---|---|---:|"]
        for name, metrics in card.scores.items():
            for metric, value in (metrics.items() if isinstance(metrics, dict) else [("", metrics)]):
                shown_value = f"{value:.4g}" if isinstance(value, float) else str(value)
                lines.append(f"| {name} | {metric} | {shown_value} |")
    lines += ["", "`skillgraft.json` beside this card lists every input, option and file (with its sha256); "
              "`skillgraft verify FOLDER` checks them.", ""]
    return "\n".join(lines)


def card_path(folder: Path) -> Path:
    return Path(folder) / CARD
