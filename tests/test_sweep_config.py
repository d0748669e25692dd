"""Bad sweep input: one `error:` line naming the key, exit status 2, and nothing lost."""

from __future__ import annotations

import sqlite3

import pytest
import yaml

pytest.importorskip("optuna")

GRAFT = {"kind": "graft", "target": "lab:cp", "vectors": [{"base": "lab:base", "skilled": "lab:skilled"}],
         "exclude": ["embed_tokens", "lm_head"], "output": "out"}


def sweep_file(tmp_path, **changes):
    config = {"kind": "sweep", "base": GRAFT,
              "space": {"vectors.0.scale": {"type": "float", "low": 0.0, "high": 2.0}},
              "objectives": [{"measure": "lab_skill_b", "options": {"n": 20}}], "n_trials": 1}
    config.update(changes)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def refused(run_cli, tmp_path, path, *extra) -> str:
    status, out, err = run_cli("sweep", "run", path, "-o", tmp_path / "run", *extra)
    lines = err.strip().splitlines()
    assert status == 2 and out == "", err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_unknown_space_key_lists_valid_keys_and_the_closest(run_cli, tmp_path):
    path = sweep_file(tmp_path, space={"vectors.0.scal": {"type": "float", "low": 0, "high": 1}})
    line = refused(run_cli, tmp_path, path)
    assert "space.vectors.0.scal: not a key of the base graft recipe (did you mean 'vectors.0.scale'?)" in line
    assert "valid keys: kind, target, vectors, vectors.0.path" in line and "schedule.layers" in line
    assert not (tmp_path / "run").exists()  # nothing created


@pytest.mark.parametrize("low, high, word", [(1.0, 0.5, "inverted"), (0.5, 0.5, "empty")])
def test_empty_or_inverted_range(run_cli, tmp_path, low, high, word):
    path = sweep_file(tmp_path, space={"vectors.0.scale": {"type": "float", "low": low, "high": high}})
    assert f"space.vectors.0.scale: the range [{low}, {high}] is {word}" in refused(run_cli, tmp_path, path)


def test_a_value_the_recipe_refuses_fails_before_any_trial(run_cli, tmp_path):
    path = sweep_file(tmp_path, space={"density": {"type": "float", "low": 0.0, "high": 1.0}})
    line = refused(run_cli, tmp_path, path)
    assert "space.density: the value 0.0 is refused by the base recipe: density: 0 is outside (0, 1]" in line


@pytest.mark.parametrize("objective, expected", [
    ({"suite": "no-such-suite", "set": "x", "metric": "y"}, "objectives.0.suite: "),
    ({"suite": "lab", "set": "lab_skill_c", "metric": "exact_match"},
     "objectives.0.set: suite 'lab' has no set 'lab_skill_c' (did you mean 'lab_skill_b'?)"),
    ({"suite": "lab", "set": "lab_skill_b", "metric": "exact_mach"},
     "objectives.0.metric: set 'lab_skill_b' of suite 'lab' gives no score 'exact_mach' (did you mean "
     "'exact_match'?)"),
    # the whole key, not only its first part: `kept` exists, `kept.share` never will
    ({"suite": "retention_check", "set": "retention_check", "metric": "kept.share"},
     "objectives.0.metric: set 'retention_check' of suite 'retention_check' gives no score 'kept.share' "
     "(scores: keyword, kept, general_kl)"),
    ({"measure": "lab_skil_b"}, "objectives.0.measure: 'lab_skil_b' is not a named measure (did you mean "
                                "'lab_skill_b'?)"),
])
def test_objective_naming_a_missing_suite_set_metric_or_measure(run_cli, tmp_path, objective, expected):
    assert expected in refused(run_cli, tmp_path, sweep_file(tmp_path, objectives=[objective]))


def test_pruner_on_a_multi_objective_study_is_refused(run_cli, tmp_path):
    path = sweep_file(tmp_path, objectives=[{"measure": "lab_skill_b"}, {"measure": "lab_retention_a"}],
                      pruner={"name": "median"})
    assert "pruner: Optuna does not prune multi-objective studies (2 objectives)" in refused(run_cli, tmp_path, path)


def test_unreachable_storage(run_cli, tmp_path):
    line = refused(run_cli, tmp_path, sweep_file(tmp_path), "--storage",
                   "postgresql://someone:secret@127.0.0.1:9/nothing")
    assert "--storage postgresql://someone:***@127.0.0.1:9/nothing: cannot be reached" in line
    assert "secret" not in line


def test_changed_config_on_resume_names_the_key_and_keeps_the_study(run_cli, tmp_path):
    from skillgraft.sweep.config import load_sweep
    from skillgraft.sweep.study import prepare_study

    path = sweep_file(tmp_path)
    out = tmp_path / "run"
    prepare_study(load_sweep(path), out, None, "run", new=False)
    before = (out / "study.db").read_bytes()
    line = refused(run_cli, tmp_path, path, "--set", "sampler.name=random", "--set", "seed=4")
    assert "the config changed since study 'run'" in line and "(changed: sampler.name, seed)" in line
    assert "pass --new to start afresh" in line
    assert (out / "study.db").read_bytes() == before
    with sqlite3.connect(out / "study.db") as db:
        assert db.execute("select count(*) from studies").fetchone()[0] == 1


def test_measure_options_and_enqueued_parameters_are_checked(run_cli, tmp_path):
    path = sweep_file(tmp_path, objectives=[{"measure": "lab_skill_b", "options": {"items": 5}}])
    assert "objectives.0.options.items: not an option of lab_skill_b (did you mean 'items_seed'?)" \
        in refused(run_cli, tmp_path, path)
    path = sweep_file(tmp_path, enqueue=[{"vectors.0.scales": 1.0}])
    assert "enqueue.0: 'vectors.0.scales' is not a parameter of the space (did you mean 'vectors.0.scale'?)" \
        in refused(run_cli, tmp_path, path)


def test_shipped_sweeps_load(tmp_path):
    """Every config in recipes/sweeps/ validates (the knowledge one against a kit's recipe)."""
    from pathlib import Path

    from skillgraft.sweep.config import load_sweep
    from skillgraft.sweep.knowledge_kit import hand_set_recipe

    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "recipe.yaml").write_text(yaml.safe_dump(hand_set_recipe()))
    # the real-model sweeps need a `sweep real-kit` folder: tests/test_sweep_real.py runs each
    # of them on a lab model's kit
    shipped = sorted(p for p in Path(__file__).parents[1].glob("recipes/sweeps/*.yaml") if not p.name.startswith("real-"))
    assert len(shipped) >= 2
    for path in shipped:
        overrides = [f"base={kit / 'recipe.yaml'}"] if "knowledge" in path.name else []
        sweep = load_sweep(path, overrides)
        assert sweep.config.objectives and sweep.recipe({}, tmp_path / "o")


def test_set_fixes_base_keys_and_refuses_unknown_or_searched_ones(run_cli, tmp_path):
    from skillgraft.sweep.config import load_sweep

    sweep = load_sweep(sweep_file(tmp_path, set={"vectors.0.base": "lab:cp", "exclude": ["lm_head"]}))
    recipe = sweep.recipe({"vectors.0.scale": 1.5}, tmp_path / "o")
    assert recipe.exclude == ["lm_head"] and recipe.vectors[0].base == "lab:cp" and recipe.vectors[0].scale == 1.5
    line = refused(run_cli, tmp_path, sweep_file(tmp_path, set={"denisty": 0.5}))
    assert "set.denisty: not a key of the base graft recipe (did you mean 'density'?)" in line
    space = {"density": {"type": "float", "low": 0.1, "high": 1.0}}
    line = refused(run_cli, tmp_path, sweep_file(tmp_path, set={"density": 0.5}, space=space))
    assert "set.density: also in space" in line


@pytest.mark.parametrize("space, message", [
    ({"schedule.layers": {"type": "module_scales", "kinds": ["attention"], "low": 0, "high": 1}},
     "space.schedule.layers: module_scales sets a schedule's `modules` (e.g. schedule.modules)"),
    ({"schedule.modules": {"type": "layer_scales", "ranges": ["0-1"], "low": 0, "high": 1}},
     "space.schedule.modules: layer_scales sets a schedule's `layers` (e.g. schedule.layers)"),
    ({"schedule.modules": {"type": "module_scales", "kinds": ["attn"], "low": 0, "high": 1}},
     "kinds.0: Input should be 'attention', 'mlp', 'norm', 'embedding' or 'other'"),
])
def test_scales_set_the_schedule_part_they_name(run_cli, tmp_path, space, message):
    assert message in refused(run_cli, tmp_path, sweep_file(tmp_path, space=space))


def test_module_scales_become_one_parameter_per_kind_and_reach_the_recipe(run_cli, tmp_path):
    """A grid over the attention and MLP scales: every pair runs, and each trial's recipe holds
    its pair as `schedule.modules` (the scales the graft multiplies those tensors by)."""
    from sweep_helpers import trials

    path = sweep_file(tmp_path, space={"schedule.modules": {"type": "module_scales", "kinds": ["attention", "mlp"],
                                                            "low": 0.0, "high": 1.0, "step": 1.0}},
                      sampler={"name": "grid"}, n_trials=4)
    status, _, err = run_cli("sweep", "run", path, "-o", tmp_path / "run", "--quiet")
    assert status == 0, err
    found = trials(tmp_path / "run")
    pairs = {(t.params["schedule.modules[attention]"], t.params["schedule.modules[mlp]"]) for t in found}
    assert pairs == {(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)}
    for trial in found:
        recipe = yaml.safe_load((tmp_path / "run" / "trials" / f"{trial.number:04d}" / "recipe.yaml").read_text())
        assert recipe["schedule"]["modules"] == {"attention": trial.params["schedule.modules[attention]"],
                                                 "mlp": trial.params["schedule.modules[mlp]"]}
