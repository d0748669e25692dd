"""`skillgraft sweep check` (the walk-through's step that checks a sweep's front on what no
trial saw), with the child `skillgraft` processes replaced by a recorder: which models it trains
again and what it evaluates, that a check cut short continues without redoing anything, and
bad input as one error line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml


@pytest.fixture
def check(monkeypatch, run_cli):
    from skillgraft.sweep import check as module

    calls = []

    def fake_skillgraft(self, args, log):
        """`skillgraft run RECIPE --set …` makes a merged model; `skillgraft eval MODEL -o OUT`
        writes a result whose numbers depend on the model's path (so a wrong model shows)."""
        calls.append(args)
        log.parent.mkdir(parents=True, exist_ok=True)
        if args[0] == "run" and any(item.startswith("output=") for item in args):   # a graft
            out = Path(next(item.split("=", 1)[1] for item in args if item.startswith("output=")))
            out.mkdir(parents=True)
            (out / "skillgraft.json").write_text("{}")
        elif args[0] == "run":
            out = Path(next(item.split("=", 1)[1] for item in args if item.startswith("output_dir=")))
            recipe = yaml.safe_load(Path(args[1]).read_text())
            published_model(out, "model" if recipe.get("method") == "full" else "merged")
        else:
            model, out = args[1], Path(args[args.index("-o") + 1])
            score = 0.25 if "seed1" in model else 0.75
            out.write_text(json.dumps({
                "scores": {model: {"tune": {"keyword": score}, "heldout": {"keyword": score / 2}, "unseen": {"keyword": 0.5},
                                   "retention_check": {"general_kl": 0.1}}},
                "items": [{"id": "q1", "metrics": {"keyword": 1.0}}, {"id": "q2", "metrics": {"keyword": 0.0}}]}))

    monkeypatch.setattr(module.Steps, "skillgraft", fake_skillgraft)

    def run(*argv):
        calls.clear()
        status, out, err = run_cli("sweep", "check", *argv)
        return status, out, err, list(calls)

    return run


def published_model(run: Path, name: str) -> Path:
    """A finished training run's folder as `skillgraft train` leaves it: the model it published
    (`merged/`, or `model/` for full fine-tuning merged at scale 1) named in its manifest."""
    (run / name).mkdir(parents=True)
    (run / name / "config.json").write_text("{}")
    (run / "skillgraft.json").write_text(json.dumps({"outputs": {"merged_dir": f"/elsewhere/{name}"}}))
    return run / name


def sweep_with_two_trials(root: Path) -> Path:
    sweep = root / "sweep"
    for number in (0, 1):
        folder = sweep / "trials" / f"{number:04d}"
        folder.mkdir(parents=True)
        (folder / "recipe.yaml").write_text(yaml.safe_dump({
            "kind": "train", "model": "lab:base", "data": {"train": "kit/data/k5.jsonl"},
            "output_dir": str(folder / "output")}))
    return sweep


def test_a_tidied_trial_is_trained_again_only_where_an_evaluation_needs_it(check, tmp_path, monkeypatch):
    """And a trial recipe written with paths relative to the folder the sweep ran in (sweeps
    before 2026-12-05) is trained from a copy whose paths are absolute."""
    monkeypatch.chdir(tmp_path)
    sweep = sweep_with_two_trials(tmp_path)
    own = published_model(sweep / "trials" / "0000" / "output", "merged")   # trial 0 kept its model; trial 1's was tidied away
    out = tmp_path / "check"
    argv = [sweep, "--trials", "0,1", "--suite", "s.yaml", "--score", "keyword=keyword", "--untrained", "lab:base",
            "--seed", "0", "--seed", "1", "-o", out]
    status, printed, _, calls = check(*argv)
    assert status == 0
    trained = [call for call in calls if call[0] == "run"]
    assert [(Path(c[1]).name, [x for x in c if x.startswith("seed=")]) for c in trained] == [
        ("trial1.recipe.yaml", ["seed=0"]), ("trial0.recipe.yaml", ["seed=1"]), ("trial1.recipe.yaml", ["seed=1"])]
    copy = yaml.safe_load(Path(trained[0][1]).read_text())
    assert copy["data"]["train"] == str(tmp_path / "kit" / "data" / "k5.jsonl") and copy["model"] == "lab:base"
    evaluated = [call[1] for call in calls if call[0] == "eval"]
    assert evaluated.count("lab:base") == 1  # the untrained model is every training trial's start: once
    assert evaluated.count(str(own)) == 2 and evaluated.count(str(out / "seed1" / "trial1" / "merged")) == 2
    rows = json.loads((out / "rows.json").read_text())
    assert [r["tune"] for r in rows["0"]] == [0.75, 0.25] and rows["1"][1]["heldout"] == 0.125
    assert rows["0"][0]["kept_vs_untrained"] == 1.0
    assert "| 0 | 2 | 0.500 ± 0.354 (0.75, 0.25)" in (out / "table.md").read_text()
    assert printed.strip() == (out / "table.md").read_text().strip()
    # cut short and run again: every step's file is there, nothing is trained or evaluated again,
    # even for the trial whose model the sweep tidied away after its evaluations
    (out / "seed1" / "trial0" / "merged" / "config.json").unlink()
    status, printed, _, calls = check(*argv, "--json")
    assert status == 0 and calls == [] and json.loads(printed)["rows"] == rows
    assert json.loads((out / "rows.json").read_text()) == rows


def test_full_fine_tuning_at_scale_1_is_evaluated_where_it_was_published(check, tmp_path, monkeypatch):
    """A full fine-tuning trial merged at scale 1 publishes its trained `model/` and no
    `merged/` (2026-12-06: the check looked for `merged/` and stopped after the training);
    the check evaluates the folder the run's manifest names."""
    monkeypatch.chdir(tmp_path)
    sweep = sweep_with_two_trials(tmp_path)
    recipe = sweep / "trials" / "0001" / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({**yaml.safe_load(recipe.read_text()), "method": "full"}))
    out = tmp_path / "check"
    status, _, err, calls = check(sweep, "--trials", "1", "--suite", "s.yaml", "--score", "keyword=keyword",
                                  "--untrained", "lab:base", "--seed", "0", "-o", out)
    assert status == 0, err
    evaluated = [call[1] for call in calls if call[0] == "eval" and call[1] != "lab:base"]
    assert evaluated == [str(out / "seed0" / "trial1" / "model")] * 2


def test_unseen_facts_on_the_first_n_seeds(check, tmp_path, monkeypatch):
    """`--unseen-seeds 2` trains the trial on the unseen facts with the first two seeds (the
    first where checks before the option put it), scores each, and the table says how many."""
    monkeypatch.chdir(tmp_path)
    sweep = sweep_with_two_trials(tmp_path)
    (tmp_path / "kit" / "data").mkdir(parents=True)
    (tmp_path / "kit" / "data" / "unseen-k5.jsonl").write_text("{}\n")
    out = tmp_path / "check"
    argv = [sweep, "--trials", "1", "--suite", "s.yaml", "--score", "keyword=keyword", "--untrained", "lab:base",
            "--seed", "0", "--seed", "1", "--seed", "2", "--unseen", "u.yaml", "-o", out]
    status, printed, err, calls = check(*argv, "--unseen-seeds", "2")
    assert status == 0, err
    unseen_runs = [dict(item.split("=", 1) for item in call if "=" in item) for call in calls
                   if call[0] == "run" and any(item.endswith("unseen-k5.jsonl") for item in call)]
    assert [(r["seed"], Path(r["output_dir"]).relative_to(out)) for r in unseen_runs] == [
        ("0", Path("unseen/trial1")), ("1", Path("unseen-seed1/trial1"))]
    rows = json.loads((out / "rows.json").read_text())["1"]
    assert ["unseen" in row for row in rows] == [True, True, False]
    assert "unseen facts keyword (2 seeds)" in printed
    status, _, err, _ = check(*argv, "--unseen-seeds", "4")
    assert status == 2 and err.count("\n") == 1 and "--unseen-seeds 4: between 1 and the 3 --seed given" in err, err


def test_a_training_that_publishes_no_model_is_one_error_line(check, tmp_path, monkeypatch):
    from skillgraft.sweep import check as module

    monkeypatch.chdir(tmp_path)
    recorded = module.Steps.skillgraft   # the check fixture's recorder; its trainings now write nothing
    monkeypatch.setattr(module.Steps, "skillgraft", lambda self, args, log: None if args[0] == "run" else
                        recorded(self, args, log))
    sweep = sweep_with_two_trials(tmp_path)
    status, _, err, _ = check(sweep, "--trials", "1", "--suite", "s.yaml", "--score", "keyword=keyword",
                              "--untrained", "lab:base", "--seed", "0", "-o", tmp_path / "check")
    assert status == 2 and err.startswith("error:") and err.count("\n") == 1 and "without a model" in err, err


@pytest.mark.parametrize("change,message", [
    ({"--trials": "0,7"}, "no such trial in"),
    ({"--trials": "0,x"}, "expected trial numbers"),
    ({"--score": "keyword"}, "expected NAME=METRIC"),
    ({"--score": "keyword=rouge"}, "no 'rouge' on set 'tune'"),
    ({"--seed": "one"}, "expected N or N:MODELS_DIR"),
])
def test_bad_input_is_one_error_line(check, tmp_path, monkeypatch, change, message):
    monkeypatch.chdir(tmp_path)
    sweep = sweep_with_two_trials(tmp_path)
    options = {"--trials": "0,1", "--suite": "s.yaml", "--score": "keyword=keyword", "--untrained": "lab:base",
               "--seed": "0", **change}
    status, _, err, _ = check(sweep, *[a for item in options.items() for a in item], "-o", tmp_path / "check")
    assert status == 2 and err.startswith("error:") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "check" / "table.md").exists()


def graft_sweep(root: Path, target: str, skilled: str) -> Path:
    folder = root / "sweep" / "trials" / "0000"
    folder.mkdir(parents=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump({"kind": "graft", "target": target,
                                                         "vectors": [{"base": "lab:base", "skilled": skilled}]}))
    return root / "sweep"


def test_a_graft_trial_needs_the_seeds_models(check, tmp_path):
    sweep = graft_sweep(tmp_path, "/kit/models/cp/model", "/kit/models/persona/merged")
    status, _, err, _ = check(sweep, "--trials", "0", "--suite", "s.yaml", "--score", "p=style",
                              "--untrained", "lab:base", "--seed", "1", "-o", tmp_path / "check")
    assert status == 2 and "--seed 1:MODELS_DIR" in err, err
    status, _, err, _ = check(sweep, "--trials", "0", "--suite", "s.yaml", "--score", "k=keyword", "--untrained",
                              "lab:base", "--seed", f"1:{tmp_path}", "--unseen", "u.yaml", "-o", tmp_path / "check")
    assert status == 2 and "--unseen SUITE:MODELS_DIR" in err, err


def test_a_graft_trial_is_checked_on_the_unseen_facts_on_one_seed(check, tmp_path):
    sweep = graft_sweep(tmp_path, "/kit/models/cp/model", "/kit/models/persona/merged")
    status, _, err, calls = check(sweep, "--trials", "0", "--suite", "s.yaml", "--score", "k=keyword", "--untrained",
                                  "lab:base", "--seed", f"0:{tmp_path}", "--seed", f"1:{tmp_path}", "--unseen",
                                  f"u.yaml:{tmp_path}", "--unseen-seeds", "2", "-o", tmp_path / "check")
    assert status == 2 and "give --unseen-seeds 1" in err and calls == [], err


@pytest.mark.parametrize("target", ["/kit/models/cp/model", "lab:base"])
def test_a_graft_trial_is_rebuilt_on_each_seeds_models(check, tmp_path, target):
    """Each model of the trial inside its kit's models/ is taken from the seed's folder (the
    persona graft's CP and persona); a model named otherwise stays every seed's (the knowledge
    graft's instruct model, which is then also the start `kept` is counted against). With
    --unseen SUITE:DIR the trial is rebuilt once more on the models trained on the unseen facts."""
    sweep = graft_sweep(tmp_path, target, "/kit/models/knowledge-full/model")
    seeds = {n: tmp_path / f"seed{n}-models" for n in (0, 1)}
    status, _, err, calls = check(sweep, "--trials", "0", "--suite", "s.yaml", "--score", "k=keyword",
                                  "--untrained", "lab:base", "--seed", f"0:{seeds[0]}", "--seed", f"1:{seeds[1]}",
                                  "--unseen", f"u.yaml:{tmp_path / 'unseen-models'}", "-o", tmp_path / "check")
    assert status == 0, err
    grafts = [dict(item.split("=", 1) for item in call if "=" in item) for call in calls if call[0] == "run"]
    folders = [seeds[0], tmp_path / "unseen-models", seeds[1]]
    assert [g["vectors.0.skilled"] for g in grafts] == [str(f / "knowledge-full" / "model") for f in folders]
    assert [g["target"] for g in grafts] == [target if target == "lab:base" else str(f / "cp" / "model")
                                             for f in folders]
    starts = [call[1] for call in calls
              if call[0] == "eval" and call[call.index("-o") + 1].endswith("start.retention_check.json")]
    assert starts == ([] if target == "lab:base" else [str(seeds[0] / "cp" / "model"), str(seeds[1] / "cp" / "model")])
    rows = json.loads((tmp_path / "check" / "rows.json").read_text())["0"]
    assert "unseen" in rows[0] and "unseen" not in rows[1]


def test_a_failed_step_names_its_log(monkeypatch, run_cli, tmp_path):
    """A child process that fails: one error line with its last line and the log to read."""
    sweep = sweep_with_two_trials(tmp_path)
    status, _, err = run_cli("sweep", "check", sweep, "--trials", "0", "--suite", "s.yaml", "--score", "k=keyword",
                             "--untrained", str(tmp_path / "no-such-model"), "--seed", "0", "-o", tmp_path / "check", "--quiet")
    assert status == 2 and err.count("\n") == 1 and "skillgraft eval" in err and "untrained.retention_check.log" in err
    assert "failed (2): model" in err and "does not exist" in err, err


@pytest.mark.parametrize("threads", [None, "1"])
def test_threads_reach_every_step(monkeypatch, run_cli, tmp_path, threads):
    """`--threads N` is every child step's OMP_NUM_THREADS (which `cpu.choose_threads` obeys);
    without it a step inherits the environment and picks its own."""
    import os
    import subprocess
    from types import SimpleNamespace

    envs = []

    def fake_run(argv, stdout, stderr, env):
        envs.append(env)
        return SimpleNamespace(returncode=1)

    monkeypatch.setattr(subprocess, "run", fake_run)
    sweep = sweep_with_two_trials(tmp_path)
    status, _, err = run_cli("sweep", "check", sweep, "--trials", "0", "--suite", "s.yaml", "--score", "k=keyword",
                             "--untrained", "lab:base", "--seed", "0", "-o", tmp_path / "check", "--quiet",
                             *(["--threads", threads] if threads else []))
    assert status == 2 and "failed (1): no output" in err, err
    assert [env.get("OMP_NUM_THREADS") for env in envs] == [threads or os.environ.get("OMP_NUM_THREADS")]
    assert envs[0]["PYTHONUNBUFFERED"] == "1"
