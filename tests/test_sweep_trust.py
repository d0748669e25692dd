"""A search you can trust: resume without repeats, failures that say so everywhere, one snapshot
for tidying, changed files refused on resume."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

pytest.importorskip("optuna")

from sweep_helpers import trials, write_sweep  # noqa: E402

SPACE = {"vectors.0.scale": {"type": "float", "low": 0.0, "high": 2.0, "step": 0.05},
         "exclude": {"type": "categorical", "choices": [["embed_tokens", "lm_head"], ["embed_tokens", "lm_head", "norm"]]}}


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random", "grid"])
def test_a_resumed_study_never_proposes_a_point_it_already_ran(tmp_path, sampler):
    """Three invocations of three trials each on one study, proposals from the sweep's own
    sampler set-up (`load`), values told at once: no parameter set twice."""
    from skillgraft.sweep.config import load_sweep
    from skillgraft.sweep.space import suggest
    from skillgraft.sweep.study import load, prepare_study

    path = write_sweep(tmp_path / "s.yaml", space=SPACE, sampler={"name": sampler})
    sweep = load_sweep(path)
    url = prepare_study(sweep, tmp_path / "run", None, "run", new=False)
    seen = []
    for invocation in range(3):
        study = load(sweep, url, "run")
        for _ in range(3):
            trial = study.ask()
            values = suggest(trial, sweep.config.space)
            seen.append(json.dumps(values, sort_keys=True))
            study.tell(trial, float(values["vectors.0.scale"]))
    assert len(set(seen)) == len(seen), seen


def test_the_first_run_of_a_study_keeps_its_seed_and_a_resumed_one_draws_anew():
    from skillgraft.sweep.study import sampler_seed

    assert [sampler_seed(7, w, 0) for w in (0, 1)] == [7, 8]  # documented sweeps replay as before
    later = {sampler_seed(7, w, done) for w in (0, 1) for done in (3, 6)}
    assert len(later) == 4 and not later & {7, 8}
    assert sampler_seed(7, 1, 6) == sampler_seed(7, 1, 6)  # same sequence, same trials


def _nan_measure(model_dir, recipe, above: float = -1.0) -> float:
    """NaN where the trial's scale is above `above`, else the scale."""
    scale = recipe.vectors[0].scale
    return math.nan if scale > above else scale


@pytest.fixture
def nan_measure(monkeypatch):
    from skillgraft.sweep import measures

    monkeypatch.setitem(measures.registry(), "nan_above", _nan_measure)


def test_a_nan_objective_fails_the_trial_everywhere_and_an_all_failed_run_exits_2(run_cli, tmp_path, nan_measure):
    path = write_sweep(tmp_path / "s.yaml", objectives=[{"measure": "nan_above", "direction": "maximize"}])
    status, out, err = run_cli("sweep", "run", path, "-o", tmp_path / "run", "--n-trials", "2")
    assert status == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: none of the 2 trial(s) of this run completed; trial 0: no value for nan_above"), err
    assert [t.state.name for t in trials(tmp_path / "run")] == ["FAIL", "FAIL"]
    for folder in sorted((tmp_path / "run" / "trials").iterdir()):
        result = json.loads((folder / "result.json").read_text())
        assert result["state"] == "FAIL" and "no value for nan_above" in result["error"]
        assert not (folder / "output").exists()


def test_a_full_disk_stops_the_sweep_and_its_trial_runs_first_on_the_rerun(run_cli, tmp_path, monkeypatch):
    """The machine, not the recipe, failed the trial: it is queued again and the run stops with
    one line (later trials would fail the same way); the rerun runs it first."""
    import errno

    from skillgraft.sweep import measures

    full = [True]

    def measure(model_dir, recipe) -> float:
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return recipe.vectors[0].scale

    monkeypatch.setitem(measures.registry(), "disk", measure)
    path = write_sweep(tmp_path / "s.yaml", objectives=[{"measure": "disk", "direction": "maximize"}],
                       enqueue=[{"vectors.0.scale": 0.5}])
    status, out, err = run_cli("sweep", "run", path, "-o", tmp_path / "run", "--n-trials", "3")
    assert status == 2, err[-2000:]
    assert err.strip().splitlines()[-1] == (
        "error: trial 0: OSError: [Errno 28] No space left on device; the sweep stopped and queued the trial again: "
        "fix the machine (free disk space), then rerun the same command to continue")
    assert [t.state.name for t in trials(tmp_path / "run")] == ["FAIL", "WAITING"]
    full[0] = False
    status, out, err = run_cli("sweep", "run", path, "-o", tmp_path / "run", "--n-trials", "1")
    assert status == 0, err[-2000:]
    done = trials(tmp_path / "run")
    assert [t.state.name for t in done] == ["FAIL", "COMPLETE"] and done[1].params == {"vectors.0.scale": 0.5}
    assert done[1].user_attrs["retry_of"] == 0


@pytest.fixture
def code_changes_once(monkeypatch):
    """skillgraft's files as a worker sees them: one version when it starts, another from the
    first check after a trial on."""
    from skillgraft.sweep import workers

    versions = iter([{"a.py": (1, 10)}])
    monkeypatch.setattr(workers, "code_fingerprint", lambda: next(versions, {"a.py": (2, 11)}))


def test_a_code_change_under_a_running_sweep_stops_it_and_the_rerun_continues(run_cli, tmp_path, code_changes_once):
    """A trial imports some modules only when it needs them: code edited (or upgraded) under a
    running sweep would mix versions. The sweep stops after the trial in flight, queues it again
    if it failed, and the rerun continues on the new code."""
    from skillgraft.sweep import workers

    path = write_sweep(tmp_path / "s.yaml", enqueue=[{"vectors.0.scale": 0.5}])
    status, out, err = run_cli("sweep", "run", path, "-o", tmp_path / "run", "--n-trials", "3")
    assert status == 2, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("error: skillgraft's code changed while the sweep ran (a.py); "
                                                   "the sweep stopped so that no trial mixes old and new code")
    assert [t.state.name for t in trials(tmp_path / "run")] == ["COMPLETE"]
    status, out, err = run_cli("sweep", "run", path, "-o", tmp_path / "run", "--n-trials", "2")
    assert status == 0, err[-2000:]
    assert [t.state.name for t in trials(tmp_path / "run")] == ["COMPLETE"] * 3
    assert workers.changed_files({"a.py": (1, 1), "b.py": (1, 1)}, {"a.py": (1, 1), "c.py": (1, 1)}) == ["b.py", "c.py"]


def test_a_trial_that_failed_while_the_code_changed_runs_again_on_the_rerun(run_cli, tmp_path, monkeypatch,
                                                                            code_changes_once):
    from skillgraft.sweep import measures

    broken = [True]

    def measure(model_dir, recipe) -> float:
        if broken[0]:
            raise ImportError("cannot import name 'new_helper' (an old module met a new one)")
        return recipe.vectors[0].scale

    monkeypatch.setitem(measures.registry(), "mixed", measure)
    path = write_sweep(tmp_path / "s.yaml", objectives=[{"measure": "mixed", "direction": "maximize"}],
                       enqueue=[{"vectors.0.scale": 0.5}])
    status, out, err = run_cli("sweep", "run", path, "-o", tmp_path / "run", "--n-trials", "3")
    assert status == 2 and "and queued trial 0 (failed) again" in err.strip().splitlines()[-1], err[-2000:]
    assert [t.state.name for t in trials(tmp_path / "run")] == ["FAIL", "WAITING"]
    broken[0] = False
    status, out, err = run_cli("sweep", "run", path, "-o", tmp_path / "run", "--n-trials", "1")
    assert status == 0, err[-2000:]
    done = trials(tmp_path / "run")
    assert [t.state.name for t in done] == ["FAIL", "COMPLETE"] and done[1].params == {"vectors.0.scale": 0.5}


@pytest.mark.parametrize("bound", ["min", "max"])
def test_a_nan_constraint_fails_the_trial_and_leaves_the_front_alone(run_cli, tmp_path, nan_measure, bound):
    path = write_sweep(tmp_path / "s.yaml", constraints=[{"measure": "nan_above", "options": {"above": 1.0},
                                                           bound: 0.5 if bound == "min" else 5.0}],
                       enqueue=[{"vectors.0.scale": 1.0}, {"vectors.0.scale": 1.5}])
    status, out, err = run_cli("sweep", "run", path, "-o", tmp_path / "run", "--n-trials", "2", "--json")
    assert status == 0, err[-2000:]
    result = json.loads(out)
    assert [t.state.name for t in trials(tmp_path / "run")] == ["COMPLETE", "FAIL"]
    assert [entry["number"] for entry in result["best"]] == [0]
    failed = json.loads((tmp_path / "run" / "trials" / "0001" / "result.json").read_text())
    assert failed["state"] == "FAIL" and "nan_above" in failed["error"]


def test_tidying_judges_one_snapshot_of_the_trials(tmp_path):
    """A trial that completes between two reads of storage must not lose its (best) output."""
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    from skillgraft.sweep.results import tidy_outputs
    from skillgraft.sweep.folders import trial_dir

    def trial(number, value):
        return SimpleNamespace(number=number, values=[value], state=TrialState.COMPLETE, user_attrs={})

    reads = [[trial(0, 0.5)], [trial(0, 0.5), trial(1, 0.9)]]

    class Study:
        directions = [StudyDirection.MAXIMIZE]

        def get_trials(self, deepcopy=False, states=None):
            return reads.pop(0) if len(reads) > 1 else reads[0]

    for number in (0, 1):
        (trial_dir(tmp_path, number) / "output").mkdir(parents=True)
    tidy_outputs(Study(), tmp_path)
    assert (trial_dir(tmp_path, 0) / "output").exists()  # the best of the snapshot it judged
    assert (trial_dir(tmp_path, 1) / "output").exists()  # not in that snapshot: judged next time


def test_a_changed_suite_file_is_refused_on_resume(run_cli, tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"id": str(i), "prompt": f"x{i}", "keywords": "kure"}) + "\n"
                             for i in range(3)))
    (tmp_path / "suite.yaml").write_text("name: t\ngeneration: {max_new_tokens: 2}\n"
                                         "sets:\n  - {name: s, items: items.jsonl, metrics: [keyword]}\n")
    path = write_sweep(tmp_path / "s.yaml", objectives=[{"suite": "suite.yaml", "set": "s", "metric": "keyword"}])
    run = ["sweep", "run", path, "-o", tmp_path / "run", "--n-trials", "1"]
    status, _, err = run_cli(*run)
    assert status == 0, err[-2000:]
    items.write_text(items.read_text().replace("kure", "pona"))
    status, _, err = run_cli(*run)
    assert status == 2 and err.startswith("error:") and "files.suite." in err and "--allow-changed-data" in err, err
    status, _, err = run_cli(*run, "--allow-changed-data")
    assert status == 0, err[-2000:]
    assert len(trials(tmp_path / "run")) == 2


def test_a_study_folder_kept_without_models_continues_in_another_checkout(run_cli, tmp_path):
    """The repository keeps long studies as `studies/NAME` minus models and SQLite's side files
    (.gitignore); a copy of just that, in another folder, continues the same study: the next
    trial is numbered after the copied ones and repeats none of their points."""
    import shutil
    import sqlite3
    import subprocess
    from pathlib import Path

    config = write_sweep(tmp_path / "s.yaml", space=SPACE)
    first = tmp_path / "machine-a" / "study"
    assert run_cli("sweep", "run", config, "-o", first, "--n-trials", "2", "--quiet", "--keep")[0] == 0
    with sqlite3.connect(first / "study.db") as db:  # as docs/sweeps.md says to before committing
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    kept_out = shutil.ignore_patterns("output", "study.db-wal", "study.db-shm")
    second = tmp_path / "machine-b" / "study"
    shutil.copytree(first, second, ignore=kept_out)
    assert not list(second.glob("trials/*/output"))
    status, out, err = run_cli("sweep", "run", config, "-o", second, "--n-trials", "1", "--quiet", "--json")
    assert status == 0, err
    done = [t for t in trials(second) if t.state.name == "COMPLETE"]
    assert [t.number for t in done] == [0, 1, 2]
    assert done[2].params not in [t.params for t in done[:2]]
    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") and (root / ".git").exists():  # the repository's rules keep exactly that
        def ignored(path: str) -> bool:
            return subprocess.run(["git", "check-ignore", "-q", path], cwd=root).returncode == 0
        assert ignored("studies/x/trials/0001/output/merged/model.safetensors") and ignored("studies/x/study.db-wal")
        assert not ignored("studies/x/study.db") and not ignored("studies/x/trials/0001/recipe.yaml")
        assert not ignored("studies/x/trials/0001/result.json")
        # a `sweep check` folder kept beside it: its evaluations and logs, not the models it trained
        assert ignored("studies/x-check/seed1/trial2/merged/model.safetensors")
        assert ignored("studies/x-check/unseen/trial2/merged/config.json")
        assert not ignored("studies/x-check/seed1/trial2.probes.json") and not ignored("studies/x-check/rows.json")
