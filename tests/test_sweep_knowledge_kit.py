"""`sweep knowledge-kit` and the knowledge measures read what the kit writes: the base model's
cell and seed (under `options` in its skillgraft.json), so a knowledge trial can be scored."""

from __future__ import annotations

import pytest

pytest.importorskip("optuna")


def test_kit_base_is_scored_by_the_knowledge_measures(tmp_path, monkeypatch, run_cli):
    from skillgraft.lab.knowledge import conditions as C
    from skillgraft.lab.train import Budget
    from skillgraft.lab.measures import MEASURES, lab_option
    from skillgraft.train.config import load_train_config

    tiny = Budget(steps=4, batch=4, lr=1e-3, warmup=1)
    study_budget = C.StudyBudget
    monkeypatch.setattr(C, "StudyBudget", lambda: study_budget(stage1=tiny, stage2=tiny, inject=tiny))
    kit = tmp_path / "kit"
    status, _, err = run_cli("sweep", "knowledge-kit", "--seed", "1", "-o", kit, "--quiet")
    assert status == 0, err[-2000:]
    assert run_cli("verify", kit)[0] == 0
    assert lab_option(str(kit / "base"), "cell") == "pronoun-k5" and lab_option(str(kit / "base"), "seed") == 1
    recipe = load_train_config(kit / "recipe.yaml", [])
    for name in ("knowledge_extraction", "knowledge_retention"):
        value = MEASURES[name](str(kit / "base"), recipe)
        assert 0.0 <= value <= 1.0, (name, value)

