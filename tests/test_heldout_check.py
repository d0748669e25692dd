"""`benchmarks/heldout_check.py` (the docs' walk-through step that checks a sweep's front on what
no trial saw), with `skillgraft` itself replaced by a recorder: which models it trains again and
what it evaluates, and that a check cut short continues without redoing anything."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def check(monkeypatch):
    spec = importlib.util.spec_from_file_location("heldout_check", ROOT / "benchmarks" / "heldout_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []

    def fake_sh(args, log):
        """`skillgraft run RECIPE --set …` makes a merged model; `skillgraft eval MODEL -o OUT`
        writes a result whose numbers depend on the model's path (so a wrong model shows)."""
        calls.append(args[1:])
        log.parent.mkdir(parents=True, exist_ok=True)
        if args[1] == "run":
            out = Path(next(item.split("=", 1)[1] for item in args if item.startswith("output_dir=")))
            (out / "merged").mkdir(parents=True)
            (out / "merged" / "config.json").write_text("{}")
        else:
            model, out = args[2], Path(args[args.index("-o") + 1])
            score = 0.25 if "seed1" in model else 0.75
            out.write_text(json.dumps({
                "scores": {model: {"tune": {"keyword": score}, "heldout": {"keyword": score / 2},
                                   "retention_check": {"general_kl": 0.1}}},
                "items": [{"id": "q1", "metrics": {"keyword": 1.0}}, {"id": "q2", "metrics": {"keyword": 0.0}}]}))

    monkeypatch.setattr(module, "sh", fake_sh)

    def run(*argv):
        calls.clear()
        monkeypatch.setattr(sys, "argv", ["heldout_check.py", *map(str, argv)])
        module.main()
        return list(calls)

    return run


def test_a_tidied_trial_is_trained_again_only_where_an_evaluation_needs_it(check, tmp_path, monkeypatch):
    """And a trial recipe written with paths relative to the folder the sweep ran in (sweeps
    before 2026-12-05) is trained from a copy whose paths are absolute."""
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweep"
    for number in (0, 1):
        folder = sweep / "trials" / f"{number:04d}"
        folder.mkdir(parents=True)
        (folder / "recipe.yaml").write_text(yaml.safe_dump({
            "kind": "train", "model": "lab:base", "data": {"train": "kit/data/k5.jsonl"},
            "output_dir": str(folder / "output")}))
    own = sweep / "trials" / "0000" / "output" / "merged"   # trial 0 kept its model; trial 1's was tidied away
    own.mkdir(parents=True)
    (own / "config.json").write_text("{}")
    out = tmp_path / "check"
    argv = [sweep, "--trials", "0,1", "--suite", "s.yaml", "--score", "keyword=keyword", "--untrained", "lab:base",
            "--seed", "0", "--seed", "1", "-o", out]
    calls = check(*argv)
    trained = [call for call in calls if call[0] == "run"]
    assert [(Path(c[1]).name, [x for x in c if x.startswith("seed=")]) for c in trained] == [
        ("trial1.recipe.yaml", ["seed=0"]), ("trial0.recipe.yaml", ["seed=1"]), ("trial1.recipe.yaml", ["seed=1"])]
    copy = yaml.safe_load(Path(trained[0][1]).read_text())
    assert copy["data"]["train"] == str(tmp_path / "kit" / "data" / "k5.jsonl") and copy["model"] == "lab:base"
    evaluated = [call[1] for call in calls if call[0] == "eval"]
    assert evaluated.count(str(own)) == 2 and evaluated.count(str(out / "seed1" / "trial1" / "merged")) == 2
    rows = json.loads((out / "rows.json").read_text())
    assert [r["tune"] for r in rows["0"]] == [0.75, 0.25] and rows["1"][1]["heldout"] == 0.125
    assert rows["0"][0]["kept_vs_untrained"] == 1.0
    assert "| 0 | 2 | 0.500 ± 0.354 (0.75, 0.25)" in (out / "table.md").read_text()
    # cut short and run again: every step's file is there, nothing is trained or evaluated again,
    # even for the trial whose model the sweep tidied away after its evaluations
    (out / "seed1" / "trial0" / "merged" / "config.json").unlink()
    assert check(*argv) == []
    assert json.loads((out / "rows.json").read_text()) == rows
