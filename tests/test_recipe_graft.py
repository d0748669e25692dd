"""`skillgraft run RECIPE.yaml`: shipped recipes validate and run on tiny models, giving the
same bits as the equivalent `graft` command; bad recipes fail with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skillgraft.errors import UserError
from skillgraft.vectors.recipe import GraftRecipe, load_recipe
from test_graft import state

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SHIPPED = ["chat-vector.yaml", "math-skill.yaml", "persona-graft.yaml"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipes_validate(name):
    recipe = load_recipe(RECIPES / name)
    assert isinstance(recipe, GraftRecipe) and recipe.vectors and recipe.chat_template_from


def test_every_graft_recipe_field_is_a_graft_option_and_a_sweep_key():
    """Config = signature: the fields of GraftRecipe are `graft`'s options (their help, default
    and type come from the field), the recipe's keys and the sweep's keys; a field added to the
    model appears in all three with no other edit (shown with a model that has one more)."""
    import click
    from pydantic import Field

    from skillgraft.signature import from_cli, options
    from skillgraft.sweep.config import recipe_keys
    from skillgraft.vectors.cli import graft_command

    params = {p.name: p for p in graft_command.params}
    written_otherwise = {"kind": None, "target": "target", "vectors": "vectors", "output": "out",
                         "schedule": "scale_layers"}
    for name, field in GraftRecipe.model_fields.items():
        if name in written_otherwise:
            assert written_otherwise[name] is None or written_otherwise[name] in params, name
            continue
        param = params[name]
        assert param.opts == ["--" + name.replace("_", "-")] and param.help == field.description, name
        default = field.get_default(call_default_factory=True)
        assert param.default == (tuple(default) if isinstance(default, list) else
                                 default if default is None or isinstance(default, (bool, int, float)) else str(default))
    assert set(GraftRecipe.model_fields) <= set(recipe_keys(GraftRecipe, {}))
    extra = {p.name for p in graft_command.params} - set(GraftRecipe.model_fields)
    assert extra == {"out", "deltas", "scale_layers", "scale_modules", "scale_depth", "dry_run", "quiet", "as_json"}

    class Extended(GraftRecipe):
        knob: float = Field(0.5, description="A knob added later.")

    @click.command("graft")
    @options(Extended, skip=("kind", "target", "vectors", "output", "schedule"))
    def command(**fields):
        pass

    with click.Context(command) as ctx:
        assert "--knob FLOAT" in command.get_help(ctx) and "A knob added later." in command.get_help(ctx)
    assert "knob" in recipe_keys(Extended, {})
    recipe = from_cli(Extended, {"target": "t", "output": "o", "vectors": [{"path": "v"}], "knob": 0.7})
    assert recipe.knob == 0.7


def test_every_recipe_kind_has_one_model_and_one_loader():
    """`run FILE` dispatches through one table in the low layer (`config.RECIPE_KINDS`)."""
    from skillgraft.config import KINDS, recipe_loader, recipe_model

    assert KINDS == ("graft", "train", "sweep")
    for kind in KINDS:
        assert recipe_model(kind).model_fields["kind"].default == kind and callable(recipe_loader(kind))


def test_a_refused_graft_option_is_named_as_written(run_cli, tmp_path):
    status, out, err = run_cli("graft", "lab:cp", "lab:skilled", "-o", tmp_path / "o", "--method", "ties",
                               "--density", "1.5")
    assert status == 2 and err == "error: --density: 1.5 is outside (0, 1]: it is the fraction of entries kept\n", err
    assert not (tmp_path / "o").exists()


def same(a: Path, b: Path) -> bool:
    first, second = state(a), state(b)
    return set(first) == set(second) and all(torch.equal(first[n], second[n]) for n in first)


def test_chat_vector_recipe_equals_graft_command(model_trio, run_cli, tmp_path):
    trio = model_trio("llama", "bfloat16")
    status, _, err = run_cli("run", RECIPES / "chat-vector.yaml", "--set", f"target={trio['cp']}",
                             "--set", f"vectors.0.base={trio['base']}", "--set", f"vectors.0.skilled={trio['skilled']}",
                             "--set", f"chat_template_from={trio['skilled']}", "-o", tmp_path / "run", "--quiet")
    assert status == 0, err
    assert run_cli("graft", trio["cp"], "--delta", trio["base"], trio["skilled"], "-o", tmp_path / "cli",
                   "--chat-template-from", trio["skilled"], "--quiet")[0] == 0
    assert same(tmp_path / "run", tmp_path / "cli")
    assert not same(tmp_path / "run", trio["cp"])
    assert (tmp_path / "run" / "chat_template.jinja").is_file()


def test_math_skill_recipe_equals_graft_command(model_trio, run_cli, tmp_path):
    trio = model_trio("llama", "bfloat16")
    sets = [f"target={trio['cp']}", f"vectors.0.base={trio['base']}", f"vectors.0.skilled={trio['skilled']}",
            f"vectors.1.base={trio['base']}", f"vectors.1.skilled={trio['skilled2']}", "chat_template_from=",
            "vectors.1.scale=0.5"]
    status, _, err = run_cli("run", RECIPES / "math-skill.yaml", *[x for s in sets for x in ("--set", s)],
                             "-o", tmp_path / "run", "--quiet")
    assert status == 0, err
    assert run_cli("graft", trio["cp"], "--delta", trio["base"], trio["skilled"], "--delta", trio["base"],
                   f"{trio['skilled2']}:0.5", "--method", "ties", "--density", "0.5", "-o", tmp_path / "cli",
                   "--quiet")[0] == 0
    assert same(tmp_path / "run", tmp_path / "cli")


def test_persona_graft_recipe_means_the_same_blocks_at_any_depth(run_cli, tmp_path):
    """The shipped persona graft's layer scales are shares of the depth: on a 10-layer model
    they are the search's five ranges of two layers each, the same bits as `graft` given those
    layers by number (and on SmolLM2's 30 layers, ranges of six: tests/test_vectors_schedule.py)."""
    from tiny_models import build_tiny_model, perturb_model

    base = build_tiny_model(tmp_path / "base", seed=0, dtype="float32", layers=10)
    skilled, cp = perturb_model(base, tmp_path / "skilled", seed=1), perturb_model(base, tmp_path / "cp", seed=2)
    status, _, err = run_cli("run", RECIPES / "persona-graft.yaml", "--set", f"target={cp}",
                             "--set", f"vectors.0.base={base}", "--set", f"vectors.0.skilled={skilled}",
                             "--set", f"chat_template_from={skilled}", "-o", tmp_path / "run", "--quiet")
    assert status == 0, err
    layers = [f"--scale-layers={a}-{a + 1}={f}" for a, f in zip(range(0, 10, 2), (0.75, 1.3, 1.25, 0.45, 1.5))]
    assert run_cli("graft", cp, "--delta", base, skilled, *layers, "--chat-template-from", skilled,
                   "-o", tmp_path / "cli", "--quiet")[0] == 0
    assert same(tmp_path / "run", tmp_path / "cli")
    plain = tmp_path / "plain"
    assert run_cli("graft", cp, "--delta", base, skilled, "-o", plain, "--quiet")[0] == 0
    got, flat = state(tmp_path / "run"), state(plain)
    assert not torch.equal(got["model.layers.9.mlp.up_proj.weight"], flat["model.layers.9.mlp.up_proj.weight"])


def test_per_vector_schedule(model_trio, run_cli, tmp_path):
    trio = model_trio("llama", "float32")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
target: {trio['cp']}
vectors:
  - {{base: {trio['base']}, skilled: {trio['skilled']}, schedule: {{layers: {{"1": 0.0}}}}}}
  - {{base: {trio['base']}, skilled: {trio['skilled2']}, scale: 2.0, schedule: {{modules: {{mlp: 0.0}}}}}}
output: {tmp_path / 'out'}
""")
    status, _, err = run_cli("run", recipe, "--quiet")
    assert status == 0, err
    base, a, b, cp, got = (state(p) for p in (trio["base"], trio["skilled"], trio["skilled2"], trio["cp"],
                                                tmp_path / "out"))
    for name in ("model.layers.0.mlp.up_proj.weight", "model.layers.1.mlp.up_proj.weight",
                 "model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.weight"):
        first = 0.0 if ".layers.1." in name else 1.0
        second = 0.0 if ".mlp." in name else 2.0
        expected = cp[name] + first * (a[name] - base[name]) + second * (b[name] - base[name])
        assert torch.allclose(got[name], expected, atol=1e-6), name
    assert torch.equal(got["model.layers.1.mlp.up_proj.weight"], cp["model.layers.1.mlp.up_proj.weight"])


@pytest.mark.parametrize("text,sets,message", [
    ("target: t\nvectors: [{path: v}]\noutput: o\nmethd: ties\n", [], "methd: unknown key (did you mean 'method'?) (allowed: kind, target"),
    ("target: t\nvectors: [{path: v, scael: 2}]\noutput: o\n", [], "vectors.0.scael: unknown key (did you mean 'scale'?) (allowed: path"),
    ("target: t\nvectors: [{path: v, scale: big}]\noutput: o\n", [], "vectors.0.scale: Input should be a valid number"),
    ("vectors: [{path: v}]\noutput: o\n", [], "target: Field required"),
    ("target: t\nvectors: [{base: b}]\noutput: o\n", [], "vectors.0: give path (a saved vector) or both base"),
    ("target: t\nvectors: []\noutput: o\n", [], "vectors: List should have at least 1 item"),
    ("target: t\nvectors: [{path: v}]\noutput: o\ndensity: 2\n", [], "density: 2 is outside (0, 1]"),
    ("target: t\nvectors: [{path: v}]\noutput: o\nschedule: {modules: {brain: 1}}\n", [], "schedule.modules 'brain"),
    ("target: [t\n", [], "not valid YAML (line"),
    ("- a\n- b\n", [], "a recipe is a YAML mapping"),
    ("target: t\nvectors: [{path: v}]\noutput: o\n", ["vectors.5.path=x"], "--set vectors.5.path"),
    ("target: t\nvectors: [{path: v}]\noutput: o\n", ["novalue"], "expected KEY=VALUE"),
])
def test_bad_recipes_name_the_key(tmp_path, text, sets, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as caught:
        load_recipe(path, sets)
    assert message in str(caught.value)


def test_bad_recipe_from_the_cli_is_one_line(tmp_path, run_cli):
    path = tmp_path / "bad.yaml"
    path.write_text("target: t\nvectors: [{path: v}]\noutput: o\nmethod: median\n")
    status, out, err = run_cli("run", path)
    assert status == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: {path}: method: Input should be 'sum'")
    status, _, err = run_cli("run", tmp_path / "missing.yaml")
    assert status == 2 and "does not exist" in err


def lab_score(folder, n: int = 64) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from skillgraft.lab import world as W
    from skillgraft.lab.demo import shipped_seed
    from skillgraft.lab.evaluate import run_items, score

    world = W.make_world(shipped_seed())
    items = W.skill_items(world, "B", "heldout", n, seed=1000)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    return score(run_items(model, tokenizer, items, name="x", scale=None, lang="B"), world)


def test_shipped_recipes_on_the_lab_models(run_cli, tmp_path):
    """The lab's CP model cannot do the skill in language B; the chat-vector recipe gives it
    the skill, and math-skill's ties keeps much of it when a second, unrelated vector
    (the lab's non-skill fine-tune) is merged in."""
    from skillgraft.lab.demo import SHIPPED, shipped_available

    if not shipped_available():
        pytest.skip("the lab's shipped checkpoints are not built")
    lab = {name: SHIPPED / name for name in ("base", "skilled", "nonskill", "cp")}
    status, _, err = run_cli("run", RECIPES / "chat-vector.yaml", "--set", f"target={lab['cp']}",
                             "--set", f"vectors.0.base={lab['base']}", "--set", f"vectors.0.skilled={lab['skilled']}",
                             "--set", f"chat_template_from={lab['skilled']}", "-o", tmp_path / "chat", "--quiet")
    assert status == 0, err
    sets = [f"target={lab['cp']}", f"vectors.0.base={lab['base']}", f"vectors.0.skilled={lab['skilled']}",
            f"vectors.1.base={lab['base']}", f"vectors.1.skilled={lab['nonskill']}", f"chat_template_from={lab['skilled']}"]
    status, _, err = run_cli("run", RECIPES / "math-skill.yaml", *[x for s in sets for x in ("--set", s)],
                             "-o", tmp_path / "two", "--quiet")
    assert status == 0, err
    cp, chat, two = lab_score(lab["cp"]), lab_score(tmp_path / "chat"), lab_score(tmp_path / "two")
    assert cp["accuracy"] < 0.1 and chat["accuracy"] > 0.6
    assert two["format_rate"] > cp["format_rate"] + 0.3
