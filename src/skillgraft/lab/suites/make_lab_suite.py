"""Writes the lab suite's JSONL files from the lab world (seed 0, the shipped build's world).

Run `python -m skillgraft.lab.suites.make_lab_suite` after changing the world; a test checks
that the shipped files equal what this writes.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
N_ITEMS = 64
ITEM_SEED = 5000  # apart from the demo's sample (1000 + seed), so the suite is a second look


def lab_items(lang: str, world_seed: int = 0, n: int = N_ITEMS) -> list[dict]:
    """Held-out skill items in `lang` as suite items (names never seen in fine-tuning)."""
    from skillgraft.lab import world as W

    world = W.make_world(world_seed)
    return [{"id": f"lab-{lang}-{i}", "prompt": item.prompt, "reference": item.answer,
             "keywords": item.answer, "tags": ["lab", "skill", lang], "language": None}
            for i, item in enumerate(W.skill_items(world, lang, "heldout", n, seed=ITEM_SEED))]


def render(lang: str) -> str:
    return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in lab_items(lang))


def main() -> None:
    for lang in ("A", "B"):
        (HERE / f"lab_skill_{lang.lower()}.jsonl").write_text(render(lang), encoding="utf-8")


if __name__ == "__main__":
    main()
