"""The lab suite: shipped items equal the world's, and `eval` on the shipped lab models shows
the skill where it was taught (A, skilled model) and not where it was not (B, CP model)."""

from __future__ import annotations

import json

import pytest

from skillgraft.lab.demo import SHIPPED, shipped_available
from skillgraft.lab.suites import make_lab_suite
from skillgraft.evaluate.suites import load_suite


def test_shipped_items_equal_the_world():
    for lang in ("A", "B"):
        path = make_lab_suite.HERE / f"lab_skill_{lang.lower()}.jsonl"
        assert path.read_text(encoding="utf-8") == make_lab_suite.render(lang)
    suite = load_suite("lab")
    assert [s.name for s in suite.sets] == ["lab_skill_a", "lab_skill_b"]


@pytest.mark.skipif(not shipped_available(), reason="shipped lab checkpoints missing")
def test_eval_on_shipped_models(run_cli):
    status, out, err = run_cli("eval", SHIPPED / "cp", SHIPPED / "skilled", "--suite", "lab", "--json",
                               "--batch-size", "64")
    assert status == 0, err
    scores = json.loads(out)["scores"]
    cp, skilled = scores[str(SHIPPED / "cp")], scores[str(SHIPPED / "skilled")]
    assert skilled["lab_skill_a"]["exact_match"] >= 0.9  # the skill, where it was taught
    assert skilled["lab_skill_b"]["exact_match"] == 0.0  # B names untrained in the skilled model
    assert cp["lab_skill_b"]["exact_match"] == 0.0  # CP restates the statement instead
    assert cp["lab_skill_b"]["keyword"] >= 0.9  # ... which contains the answer: it knows it
