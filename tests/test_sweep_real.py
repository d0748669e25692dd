"""The shipped real-model sweeps (`recipes/sweeps/real-*.yaml`) and their kit, run as shipped on
the lab models (the SmolLM2 runs are slow and documented in docs/sweeps.md), conditional
parameters, and `lab:smollm2` when the cache does not hold it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "recipes" / "sweeps"


@pytest.fixture(scope="module")
def lab_kit(tmp_path_factory):
    """`sweep real-kit` on a lab model (short context: texts truncated to 64 tokens), with the
    CP and persona models the graft sweep needs."""
    from skillgraft.cli import main

    kit = tmp_path_factory.mktemp("kits") / "real"
    assert main(["sweep", "real-kit", "--model", "lab:skilled", "--max-length", "64", "--models", "--quiet",
                 "-o", str(kit)]) == 0
    return kit


def test_the_kit_holds_the_hand_set_recipes_data_and_suites(lab_kit):
    from skillgraft.evaluate.metrics.answers import keyword_score
    from skillgraft.lab.real import corpus
    from skillgraft.sweep.real_kit import KNOWLEDGE

    knowledge = yaml.safe_load((lab_kit / "knowledge.yaml").read_text())
    assert knowledge["model"] == "lab:skilled" and knowledge["lr"] == KNOWLEDGE["lr"]
    assert knowledge["data"]["train"] == "data/k5.jsonl" and knowledge["data"]["overlong"] == "truncate"
    lines = (lab_kit / "data" / "k5.jsonl").read_text().splitlines()
    assert len(lines) == 5 * len(corpus.facts())
    tune, heldout = ((lab_kit / "suites" / f"persona_{h}.jsonl").read_text().splitlines() for h in ("tune", "heldout"))
    assert len(tune) == len(heldout) == 15 and not set(tune) & set(heldout)
    unseen = [json.loads(line) for line in (lab_kit / "data" / "unseen-k5.jsonl").read_text().splitlines()]
    probes = [json.loads(line) for line in (lab_kit / "suites" / "unseen_probes.jsonl").read_text().splitlines()]
    unseen_ids = {fact["id"] for fact in corpus.unseen_facts()}
    assert len(unseen_ids) >= 10 and len(unseen) == 5 * len(unseen_ids) and len(probes) == 3 * len(unseen_ids)
    assert {record["fact"] for record in unseen} == unseen_ids and not unseen_ids & {f["id"] for f in corpus.facts()}
    trained = (lab_kit / "data" / "k5-qa.jsonl").read_text()   # the search's data never give an answer
    assert not [p["keywords"] for p in probes if keyword_score(trained, p["keywords"], segment="all")]
    assert not [f["title"] for f in corpus.unseen_facts()
                if keyword_score(trained, f["title"].removeprefix("The "), segment="all")]
    assert not any(probe["keywords"].lower() in probe["messages"][0]["content"].lower() for probe in probes)
    graft = yaml.safe_load((lab_kit / "graft.yaml").read_text())
    assert graft["target"] == "models/cp/model"
    assert all((lab_kit / "models" / name / "merged" / "config.json").is_file() for name in ("persona", "persona-replay"))
    assert not (lab_kit / "models" / "cp" / "checkpoints").exists()
    from skillgraft.sweep.real_kit import KNOWLEDGE_FULL

    full = yaml.safe_load((lab_kit / "knowledge-full.yaml").read_text())   # the knowledge sweep's winner, whole
    assert full["method"] == "full" and full["lr"] == KNOWLEDGE_FULL["lr"] and "merge_scale" not in full
    assert full["data"]["train"] == "data/k5-qa.jsonl" and full["data"]["replay"] == {"n": 40}
    knowledge_graft = yaml.safe_load((lab_kit / "knowledge-graft.yaml").read_text())
    assert knowledge_graft["target"] == knowledge_graft["vectors"][0]["base"] == "lab:skilled"
    assert (lab_kit / knowledge_graft["vectors"][0]["skilled"] / "config.json").is_file()


@pytest.mark.parametrize("study", ["graft", "graft-kept", "persona", "knowledge", "knowledge-graft", "knowledge-keep"])
def test_each_shipped_real_sweep_runs_two_trials_on_the_lab_kit(run_cli, tmp_path, lab_kit, study):
    # `kept` needs questions the start model answers right: the lab models answer none of
    # retention_tune's, so a `kept` objective is its keyword score here
    recipe = "graft" if study.startswith("graft") else "knowledge-full" if study == "knowledge-keep" else study
    suite = "persona" if recipe == "graft" else "knowledge" if study.startswith("knowledge") else study
    overrides = ["--set", f"base={lab_kit / (recipe + '.yaml')}",
                 "--set", f"objectives.0.suite={lab_kit / 'suites' / suite}.yaml"]
    if study != "graft":
        overrides += ["--set", "objectives.1.metric=keyword"]
    status, out, err = run_cli("sweep", "run", SWEEPS / f"real-{study}.yaml", "-o", tmp_path / "run",
                               "--n-trials", "2", "--json", "--quiet", *overrides)
    assert status == 0, err[-2000:]
    result = json.loads(out)
    enqueued = len(yaml.safe_load((SWEEPS / f"real-{study}.yaml").read_text()).get("enqueue", []))
    assert result["trials"] == {"COMPLETE": 2, **({"WAITING": enqueued - 2} if enqueued > 2 else {})}
    recipes = [yaml.safe_load(p.read_text()) for p in sorted((tmp_path / "run" / "trials").glob("*/recipe.yaml"))]
    if recipe in ("graft", "knowledge-graft"):   # trial 0 is the hand-set graft: every layer range at 1, the plain sum
        assert recipes[0]["method"] == "sum" and recipes[0]["density"] is None
        assert set(recipes[0]["schedule"]["layers"].values()) == {1.0}
        if study == "knowledge-graft":   # the knowledge winner's delta as trained, onto the model it was trained from
            assert recipes[0]["schedule"]["modules"] == {"attention": 1.0} and recipes[0]["with_embeddings"]
            assert recipes[0]["vectors"][0]["skilled"].endswith("models/knowledge-full/model")
        if study == "graft-kept":   # trial 1: the same with the persona-replay vector
            assert recipes[1]["vectors"][0]["skilled"].endswith("models/persona-replay/merged")
    elif study == "knowledge-keep":   # trial 0: the winner, every factor 1; trial 1: its MLPs alone
        assert {*recipes[0]["lr_scales"]["layers"].values(), *recipes[0]["lr_scales"]["modules"].values()} == {1.0}
        assert recipes[1]["lr_scales"]["modules"] == {"attention": 0.0, "embedding": 0.0, "norm": 0.0}
        assert recipes[0]["method"] == recipes[1]["method"] == "full" and recipes[0]["merge_scale"] == 1.0
    else:                  # trials 0 and 1: the hand-set recipe and the keep study's
        base = yaml.safe_load((lab_kit / f"{study}.yaml").read_text())
        assert recipes[0]["lr"] == base["lr"] and recipes[0]["max_steps"] == base["max_steps"]
        assert recipes[0]["regularize"]["kl"]["weight"] == 0 and recipes[1]["regularize"]["kl"]["weight"] == 1.0


def test_a_conditional_parameter_is_drawn_only_when_its_condition_holds(run_cli, tmp_path):
    from sweep_helpers import trials

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "kind": "sweep", "n_trials": 8, "sampler": {"name": "random"}, "seed": 3,
        "base": {"kind": "graft", "target": "lab:cp", "vectors": [{"base": "lab:base", "skilled": "lab:skilled"}],
                 "exclude": ["embed_tokens", "lm_head"], "output": "out"},
        "space": {"method": {"type": "categorical", "choices": ["sum", "ties"]},
                  "density": {"type": "float", "low": 0.2, "high": 0.9, "when": {"method": ["ties"]}}},
        "objectives": [{"measure": "lab_retention_a"}]}, sort_keys=False))
    status, _, err = run_cli("sweep", "run", path, "-o", tmp_path / "run", "--quiet")
    assert status == 0, err
    found = trials(tmp_path / "run")
    assert {t.params["method"] for t in found} == {"sum", "ties"}
    assert all(("density" in t.params) == (t.params["method"] == "ties") for t in found)


@pytest.mark.parametrize("when, message", [
    ({"methd": ["ties"]}, "names an earlier key of the space (did you mean 'method'?"),
    ({"method": ["tie"]}, "tie is not a choice of method"),
])
def test_a_bad_condition_is_one_error_line(run_cli, tmp_path, when, message):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "kind": "sweep", "base": {"kind": "graft", "target": "lab:cp", "vectors": [{"path": "v"}], "output": "o"},
        "space": {"method": {"type": "categorical", "choices": ["sum", "ties"]},
                  "density": {"type": "float", "low": 0.2, "high": 0.9, "when": when}},
        "objectives": [{"measure": "lab_retention_a"}]}, sort_keys=False))
    status, out, err = run_cli("sweep", "run", path, "-o", tmp_path / "run")
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()


def test_lab_smollm2_missing_from_the_cache_says_how_to_fetch_it(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("SKILLGRAFT_CACHE", str(tmp_path / "empty"))
    status, out, err = run_cli("sweep", "real-kit", "-o", tmp_path / "kit")
    assert status == 2 and err.count("\n") == 1 and "skillgraft lab fetch" in err and "lab:smollm2" in err, err
    assert not (tmp_path / "kit").exists()
    status, _, err = run_cli("sweep", "run", SWEEPS / "real-graft.yaml", "-o", tmp_path / "run",
                             "--set", f"base={tmp_path / 'missing.yaml'}")
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.parametrize("case", ["model", "data", "choice"])
def test_a_base_whose_model_or_data_cannot_be_read_fails_before_any_trial(run_cli, tmp_path, monkeypatch, case):
    """Checked once at `sweep run`, not found again in every trial: the model the base names
    (lab:smollm2 with an empty cache), its data file, and each data file a choice offers."""
    monkeypatch.setenv("SKILLGRAFT_CACHE", str(tmp_path / "empty"))
    (tmp_path / "good.jsonl").write_text('{"text": "a fact"}\n')
    (tmp_path / "bad.jsonl").write_text('{"text": "a fact"}\n{"title": "no text"}\n')
    base = {"kind": "train", "model": "lab:smollm2" if case == "model" else "lab:base",
            "data": {"train": "bad.jsonl" if case == "data" else "good.jsonl"}, "output_dir": "o"}
    space = {"lr": {"type": "float", "low": 1e-4, "high": 1e-3}}
    if case == "choice":
        space["data.train"] = {"type": "categorical", "choices": ["good.jsonl", "bad.jsonl"]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"kind": "sweep", "base": base, "space": space,
                                    "objectives": [{"suite": "retention_tune", "set": "retention_tune",
                                                    "metric": "keyword"}]}))
    status, out, err = run_cli("sweep", "run", path, "-o", tmp_path / "run")
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    expected = {"model": "skillgraft lab fetch", "data": "bad.jsonl record 2: format 'text' needs field(s) text",
                "choice": "(data.train: bad.jsonl): "}[case]
    assert expected in err, err
    assert not (tmp_path / "run").exists()


def test_a_relative_base_is_relative_to_the_sweep_file(tmp_path, monkeypatch):
    from skillgraft.sweep.config import load_sweep

    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "graft.yaml").write_text(yaml.safe_dump({
        "kind": "graft", "target": "lab:cp", "vectors": [{"base": "lab:base", "skilled": "lab:skilled"}],
        "output": "out"}))
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "s.yaml").write_text(yaml.safe_dump({
        "kind": "sweep", "base": "../kit/graft.yaml", "objectives": [{"measure": "lab_retention_a"}],
        "space": {"vectors.0.scale": {"type": "float", "low": 0.5, "high": 1.5}}}))
    monkeypatch.chdir(tmp_path / "kit")   # another folder: the base is found from the sweep file
    sweep = load_sweep(tmp_path / "sweeps" / "s.yaml")
    assert Path(sweep.config.base).resolve() == (tmp_path / "kit" / "graft.yaml").resolve()


def test_a_trial_recipe_rebuilds_from_any_folder(run_cli, tmp_path, monkeypatch):
    """A sweep started with relative paths (as the docs' commands are) writes each trial's
    recipe with absolute paths: `skillgraft run TRIAL/recipe.yaml` reads a recipe's relative
    paths from the recipe's folder, where the sweep's relative paths would not be found."""
    import shutil

    from skillgraft.lab.demo import SHIPPED

    (tmp_path / "kit" / "models").mkdir(parents=True)
    shutil.copytree(SHIPPED / "cp", tmp_path / "kit" / "models" / "cp")
    (tmp_path / "kit" / "graft.yaml").write_text(yaml.safe_dump({
        "kind": "graft", "target": "models/cp", "vectors": [{"base": "lab:base", "skilled": "lab:skilled"}],
        "exclude": ["embed_tokens", "lm_head"], "output": "out"}))
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "s.yaml").write_text(yaml.safe_dump({
        "kind": "sweep", "base": "../kit/graft.yaml", "objectives": [{"measure": "lab_skill_b", "options": {"n": 20}}],
        "space": {"vectors.0.scale": {"type": "float", "low": 0.5, "high": 1.5}}}))
    monkeypatch.chdir(tmp_path)
    status, _, err = run_cli("sweep", "run", "sweeps/s.yaml", "-o", "run", "--n-trials", "1", "--quiet")
    assert status == 0, err[-2000:]
    recipe = tmp_path / "run" / "trials" / "0000" / "recipe.yaml"
    target = yaml.safe_load(recipe.read_text())["target"]
    assert Path(target).is_absolute() and Path(target).resolve() == (tmp_path / "kit" / "models" / "cp").resolve()
    monkeypatch.chdir(tmp_path / "kit")
    assert run_cli("run", recipe, "-o", tmp_path / "again", "--quiet")[0] == 0


def test_a_trial_scores_only_the_sets_its_objectives_name(tmp_path, monkeypatch):
    """The held-out half of a suite is never computed during a search, not only never optimised on."""
    from types import SimpleNamespace

    from skillgraft.evaluate import runner
    from skillgraft.sweep.trial import evaluate

    items = '{"id": "a", "prompt": "x", "keywords": "y"}\n'
    (tmp_path / "items.jsonl").write_text(items)
    (tmp_path / "suite.yaml").write_text("name: halves\ngeneration: {max_new_tokens: 2}\nsets:\n"
                                         "  - {name: tune, items: items.jsonl, metrics: [keyword]}\n"
                                         "  - {name: heldout, items: items.jsonl, metrics: [keyword]}\n")
    seen = []
    original = runner.run_suite
    monkeypatch.setattr(runner, "run_suite", lambda models, suite, **k: seen.append([s.name for s in suite.sets])
                        or original(models, suite, **k))
    entry = SimpleNamespace(measure=None, suite=str(tmp_path / "suite.yaml"), set="tune", metric="keyword")
    values = evaluate([entry], "lab:cp", SimpleNamespace(kind="graft", target="lab:cp"))
    assert seen == [["tune"]] and len(values) == 1
