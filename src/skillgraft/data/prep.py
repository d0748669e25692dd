"""`skillgraft data prep`: the seed-002 clean-up as one reproducible, reported step.

Order matters: normalise widths first (so `～` and `〜`, `１` and `1` compare equal), cap
repeated characters, scrub personal data, drop texts left empty, then remove exact and near
duplicates (on the cleaned text, so two tweets differing only in a URL collapse), then
split off a seeded validation share. Every rule's effect is counted, and statistics before
and after are returned so the user sees what the clean-up did.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from skillgraft.data.clean import SCRUB_KINDS, cap_repeats, normalise_width, scrub
from skillgraft.data.dedup import dedup
from skillgraft.data.records import map_text_fields, read_records, record_text, write_jsonl
from skillgraft.errors import UserError


@dataclass
class PrepOptions:
    """Every knob of `data prep`; defaults follow seed 002."""

    normalise: str = "seed002"
    max_repeat: int = 2
    scrub: tuple[str, ...] = SCRUB_KINDS
    placeholders: bool = True
    near_dup: float = 0.8
    validation: float = 0.1
    seed: int = 0
    min_chars: int = 1


@dataclass
class PrepResult:
    train: list[dict]
    validation: list[dict]
    before: dict
    after: dict
    changes: dict = field(default_factory=dict)


def text_stats(records: list[dict]) -> dict:
    """Count, total/mean/max characters of the records' text."""
    lengths = [len(record_text(r)) for r in records]
    return {
        "records": len(lengths),
        "chars": sum(lengths),
        "mean_chars": round(sum(lengths) / len(lengths), 1) if lengths else 0.0,
        "max_chars": max(lengths, default=0),
    }


def prepare(records: list[dict], options: PrepOptions, source: str = "input") -> PrepResult:
    """Clean, deduplicate and split `records`; raises UserError if nothing is left."""
    unknown = set(options.scrub) - set(SCRUB_KINDS)
    if unknown:
        raise UserError(f"--scrub: unknown kind(s) {', '.join(sorted(unknown))}; choose from {', '.join(SCRUB_KINDS)}")
    if not 0 <= options.validation < 1:
        raise UserError(f"--validation must be in [0, 1), got {options.validation}")
    changes: Counter = Counter()

    def clean(text: str) -> str:
        normalised = normalise_width(text, options.normalise)
        if normalised != text:
            changes["normalised_fields"] += 1
        capped, runs = cap_repeats(normalised, options.max_repeat)
        changes["runs_capped"] += runs
        scrubbed, counts = scrub(capped, options.scrub, options.placeholders)
        for kind, n in counts.items():
            changes[f"scrubbed_{kind}"] += n
        return scrubbed.strip()

    try:
        cleaned = [map_text_fields(r, clean) for r in records]
    except ValueError as exc:
        raise UserError(f"--normalise: {exc}") from None
    non_empty = [r for r in cleaned if len(record_text(r).strip()) >= options.min_chars]
    changes["dropped_empty"] = len(cleaned) - len(non_empty)
    keep, exact, near = dedup([record_text(r) for r in non_empty], options.near_dup)
    changes["dropped_exact_duplicates"] = exact
    changes["dropped_near_duplicates"] = near
    kept = [non_empty[i] for i in keep]
    if not kept:
        raise UserError(f"{source}: no examples left after cleaning ({len(records)} read, "
                        f"{changes['dropped_empty']} empty, {exact + near} duplicates)")
    order = list(range(len(kept)))
    random.Random(options.seed).shuffle(order)
    n_val = round(len(kept) * options.validation)
    if options.validation > 0 and len(kept) >= 2:
        n_val = min(max(n_val, 1), len(kept) - 1)
    else:
        n_val = 0
    val_ids = set(order[:n_val])
    train = [r for i, r in enumerate(kept) if i not in val_ids]
    validation = [r for i, r in enumerate(kept) if i in val_ids]
    for kind in SCRUB_KINDS:
        changes.setdefault(f"scrubbed_{kind}", 0)
    return PrepResult(train, validation, text_stats(records), text_stats(kept), dict(changes))


def validation_path(out: Path) -> Path:
    """Where the validation split goes next to `out`: `train.jsonl` → `train.validation.jsonl`."""
    return out.with_name(f"{out.stem}.validation.jsonl")


def run_prep(src: str | Path, out: str | Path, options: PrepOptions) -> dict:
    """Read, prepare and write; return a JSON-able summary (paths, stats, counts)."""
    out = Path(out)
    result = prepare(read_records(src, "data prep input"), options, str(src))
    write_jsonl(out, result.train)
    val_out = None
    if result.validation:
        val_out = write_jsonl(validation_path(out), result.validation)
    return {
        "input": str(src),
        "train": str(out),
        "validation": str(val_out) if val_out else None,
        "train_records": len(result.train),
        "validation_records": len(result.validation),
        "before": result.before,
        "after": result.after,
        "changes": result.changes,
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(options).items()},
    }
