"""Every recipe in recipes/ runs end to end as shipped (only the output folder is moved into
the test's temporary folder), on the models and data the project ships."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SHIPPED = sorted(RECIPES.glob("*.yaml"))


def test_every_recipe_is_covered():
    assert {p.name for p in SHIPPED} == {"chat-vector.yaml", "math-skill.yaml", "persona.yaml", "knowledge.yaml",
                                         "knowledge-keep.yaml", "persona-keep.yaml", "persona-graft.yaml"}


@pytest.mark.parametrize("recipe", SHIPPED, ids=lambda p: p.name)
def test_recipe_runs_as_shipped(recipe, run_cli, tmp_path):
    out = tmp_path / "out"
    status, stdout, err = run_cli("run", recipe, "-o", out, "--json")
    assert status == 0, err[-3000:]
    result = json.loads(stdout)
    kind = yaml.safe_load(recipe.read_text())["kind"]
    if kind == "graft":
        assert result["tensors"]["grafted"] > 0 and result["chat_template"]["tokens_needed"]
        folders = [out]
    else:
        losses = [loss for _, loss in result["losses"]]
        quarter = max(1, len(losses) // 4)   # batches differ (facts, replayed answers): compare quarters
        assert result["stopped"] is None and sum(losses[-quarter:]) < sum(losses[:quarter]), losses
        folders = [out]  # the run folder verifies its adapter and merged model as parts
        assert (out / "merged" / "config.json").is_file()
    for folder in folders:
        status, _, err = run_cli("verify", folder)
        assert status == 0, err
