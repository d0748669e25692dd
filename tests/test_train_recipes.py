"""Every shipped recipe loads and runs on a tiny model; the persona recipe teaches the style."""

import json
import math
from pathlib import Path

import pytest
import yaml

from skillgraft.cli import main
from skillgraft.train.config import load_train_config
from persona_world import build_world, marker_rate

RECIPES = sorted(p for p in (Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml")
                 if (yaml.safe_load(p.read_text()) or {}).get("kind") == "train")
PROMPTS = ["i like the sea", "my cat eat rice", "we see the moon", "the dog find a book", "they love music",
           "you make tea", "my friend need snow", "the teacher want a cake"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("rworld"), n_persona=64)


# tiny runs of 30 steps need more than 2e-4
LR = {"persona.yaml": "1.0e-2", "knowledge.yaml": "2.0e-3", "persona-keep.yaml": "1.0e-2", "knowledge-keep.yaml": "2.0e-3"}


def _tiny_overrides(world, out_dir, lr="1.0e-3"):
    """Tiny sizes and steps. The base is random, so "retention" of its general text means
    little here: the threshold is lowered so the recipe runs to its end."""
    validation = world["persona"].with_name("persona_val.txt")
    validation.write_text("\n".join(world["persona"].read_text().splitlines()[:8]) + "\n")
    return [f"model={world['model']}", f"data.train={world['persona']}", f"data.validation={validation}",
            "data.format=text", "data.answer_only=false",   # the world's file is plain text records
            "data.max_length=32", f"monitor.general_text={world['heldout']}", "monitor.every_steps=10",
            "monitor.prompts=[i like, we see]", f"output_dir={out_dir}", "epochs=null", "max_steps=30",
            "save_steps=100", "progress=false", f"lr={lr}", "monitor.min_retention=0.05", "batch_size=8",
            "grad_accum=1", "warmup_steps=0", "seed=0"]


def test_recipes_are_shipped():
    assert {p.name for p in RECIPES} >= {"persona.yaml", "knowledge.yaml"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_loads_and_runs_tiny(recipe, tmp_path, world, capsys):
    seeds = yaml.safe_load(recipe.read_text())
    config = load_train_config(recipe, [])  # the shipped file validates as it is
    assert config.model == seeds["model"]
    assert config.method == "full" or config.lora.targets == seeds["lora"]["targets"]
    capsys.readouterr()
    overrides = _tiny_overrides(world, tmp_path / "out", LR.get(recipe.name, "1.0e-3"))
    rc = main(["train", str(recipe), "--json", *[arg for item in overrides for arg in ("--set", item)]])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    out = json.loads(captured.out)
    assert out["steps"] == 30 and out["stopped"] is None, out["stopped"]
    assert out["losses"][-1][1] < out["losses"][0][1]
    assert out["merged_dir"] and Path(out["merged_dir"], "config.json").is_file()
    kind = "model" if config.method == "full" else "adapter"
    options = json.loads((tmp_path / "out" / kind / "skillgraft.json").read_text())["options"]
    assert options["lr"] == float(LR.get(recipe.name, "1.0e-3"))
    assert kind == "model" or (options["lora"]["r"], options["lora"]["alpha"]) == (seeds["lora"]["r"], seeds["lora"]["alpha"])
    if recipe.name == "persona.yaml":
        before = marker_rate(world["model"], PROMPTS)
        after = marker_rate(out["merged_dir"], PROMPTS)
        assert after >= before + 0.4, (before, after)


@pytest.mark.parametrize("name", ["knowledge-keep", "persona-keep"])
def test_keep_recipes_run_as_shipped_through_the_user_flow(name, run_cli, tmp_path):
    """The issue's flow, with only model, data and output set: `data augment` of a shipped fact
    file (knowledge), `train` with the recipe (replay answers and KL prompts from the tool and
    the model itself), `eval` of the merged model; steps follow the file's size (epochs)."""
    from skillgraft.lab.real import corpus

    root = Path(__file__).resolve().parents[1] / "recipes"
    sets = ["--set", "model=lab:base", "--set", f"output_dir={tmp_path / 'out'}"]
    rows = len(corpus.persona_records())
    if name == "knowledge-keep":
        augmented = tmp_path / "aug.jsonl"
        status, _, err = run_cli("data", "augment", corpus.DATA / "facts.jsonl", "-o", augmented, "--styles",
                                 "qa,article,interview,textbook,qa-pairs", "--quiet")
        assert status == 0, err
        sets += ["--set", f"data.train={augmented}"]
        rows = len(augmented.read_text().splitlines())
    status, out, err = run_cli("train", root / f"{name}.yaml", *sets, "--json", "--quiet")
    assert status == 0, err[-2000:]
    result = json.loads(out)
    recipe = yaml.safe_load((root / f"{name}.yaml").read_text())
    replay = recipe["data"]["replay"]["n"]
    assert result["data"]["replay"] == replay and result["data"]["rows"] == rows + replay
    batches = -(-(rows + replay) // 8)
    assert result["steps"] == math.ceil(recipe["epochs"] * batches)    # every row seen `epochs` times, batch 8
    assert result["kl_last"] is not None and result["losses"][-1][1] < result["losses"][0][1]
    suites = corpus.write_suites(tmp_path / "suites")
    status, out, err = run_cli("eval", result["merged_dir"], "--suite",
                               suites["knowledge" if name == "knowledge-keep" else "persona"], "--json", "--quiet")
    assert status == 0, err[-2000:]
    assert json.loads(out)["scores"]
    if recipe.get("merge_schedule"):   # merged/ holds the delta at the schedule's scales: left-out layers are the model's
        check_left_out_layers(recipe["merge_schedule"], Path(result["model_dir"]), Path(result["merged_dir"]))


def check_left_out_layers(schedule: dict, trained: Path, merged: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from skillgraft.checkpoint.resolve import resolve_model
    from skillgraft.vectors.recipe import ScheduleSpec
    from skillgraft.vectors.schedule import layer_index

    def tensors(folder: Path) -> dict:
        return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}

    base, tuned, out = tensors(Path(resolve_model("lab:base").path)), tensors(trained), tensors(merged)
    rules = ScheduleSpec.model_validate(schedule).build()
    rules.num_layers = 1 + max(i for name in base if (i := layer_index(name)) is not None)
    zero = [name for name in base if rules.factor(name) == 0.0 and not torch.equal(tuned[name], base[name])]
    assert zero   # training changed tensors the schedule leaves out...
    assert all(torch.equal(out[name], base[name]) for name in zero)   # ...which merged/ gives back


def test_knowledge_keep_trains_what_the_knowledge_sweep_found():
    """recipes/knowledge-keep.yaml and the kit's KNOWLEDGE_FULL (the sweep's held-out winner the
    knowledge graft search started from) state the same training twice: they must not drift.
    Only the model, the data file, the length (epochs in the recipe: the same 111
    steps on the kit's 160 texts + 40 replayed answers) and what the merge writes may differ."""
    from skillgraft.sweep.real_kit import KNOWLEDGE_FULL

    recipe = load_train_config(RECIPES[0].parent / "knowledge-keep.yaml").model_dump()
    kit = load_train_config(None, base={**KNOWLEDGE_FULL, "model": "lab:base", "output_dir": "out",
                                        "data": {**KNOWLEDGE_FULL["data"], "train": "facts.jsonl"}}).model_dump()
    differ = {"model", "data", "epochs", "max_steps", "merge", "merge_schedule", "output_dir", "monitor"}
    assert {k: v for k, v in recipe.items() if k not in differ} == {k: v for k, v in kit.items() if k not in differ}
    assert {k: v for k, v in recipe["data"].items() if k != "train"} == \
        {k: v for k, v in kit["data"].items() if k != "train"}
    rows = 160 + KNOWLEDGE_FULL["data"]["replay"]["n"]
    assert math.ceil(recipe["epochs"] * math.ceil(rows / recipe["batch_size"])) == KNOWLEDGE_FULL["max_steps"]
