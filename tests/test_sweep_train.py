"""A training sweep: the retention monitor's probes reach Optuna's pruner, which stops a run that
forgets; a kept run is evaluated by a suite and its merged model is what the objective scored."""

from __future__ import annotations

import json

import pytest
import yaml

pytest.importorskip("optuna")

from persona_world import build_world  # noqa: E402
from sweep_helpers import trials  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("sworld"), n_persona=64, pretrain_steps=60)


@pytest.mark.slow  # two training runs and a pretrained tiny world: about 2 minutes on a busy 2-core machine
def test_pruner_stops_the_run_that_forgets(tmp_path, world, run_cli):
    items = tmp_path / "probes.jsonl"
    items.write_text("".join(json.dumps({"prompt": p, "keywords": k}) + "\n"
                             for p, k in [("the capital of japan is", "tokyo"), ("two plus two is", "four")]))
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump({
        "name": "tiny", "generation": {"max_new_tokens": 4},
        "sets": [{"name": "general", "items": "probes.jsonl", "metrics": ["keyword"]}]}))
    base = {"kind": "train", "model": str(world["model"]), "method": "lora", "max_steps": 30, "batch_size": 8,
            "output_dir": "out", "data": {"train": str(world["persona"]), "max_length": 32},
            "lora": {"r": 8, "alpha": 16, "targets": "attn-qv"},
            "monitor": {"every_steps": 5, "general_text": str(world["heldout"]), "min_retention": 0.0}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "kind": "sweep", "base": base, "space": {"lr": {"type": "categorical", "choices": [1.0e-4, 2.0e-2]}},
        "objectives": [{"suite": "suite.yaml", "set": "general", "metric": "keyword"}],
        "sampler": {"name": "grid"}, "pruner": {"name": "threshold", "options": {"lower": 0.9}}}))
    status, out, err = run_cli("sweep", "run", tmp_path / "sweep.yaml", "-o", tmp_path / "run", "--n-trials", "2",
                               "--keep", "--json")
    assert status == 0, err[-3000:]
    by_lr = {t.params["lr"]: t for t in trials(tmp_path / "run")}
    gentle, harsh = by_lr[1.0e-4], by_lr[2.0e-2]
    assert harsh.state.name == "PRUNED" and gentle.state.name == "COMPLETE"
    last_step = max(harsh.intermediate_values)
    assert harsh.intermediate_values[last_step] < 0.9 <= min(gentle.intermediate_values.values())
    assert last_step < 30  # stopped before the end
    assert sorted(gentle.intermediate_values) == [5, 10, 15, 20, 25, 30]
    pruned = tmp_path / "run" / "trials" / f"{harsh.number:04d}"
    assert json.loads((pruned / "result.json").read_text())["state"] == "PRUNED"
    assert (pruned / "recipe.yaml").is_file() and not (pruned / "output").exists()
    kept = json.loads((tmp_path / "run" / "trials" / f"{gentle.number:04d}" / "result.json").read_text())
    assert kept["model"] == "output/merged" and kept["values"] == gentle.values
