"""The command line's shared contract: one help style, every option described, -h and
--version, quick start-up, and the small messages users meet first."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
import torch

from skillgraft import __version__
from skillgraft.cli import cli


def all_commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


COMMANDS = list(all_commands(cli))


@pytest.mark.parametrize("path", [(), *[p for p, c in COMMANDS if isinstance(c, click.Group)]],
                         ids=lambda p: " ".join(("skillgraft", *p)))
def test_a_group_without_a_verb_prints_its_help_and_exits_0(path, run_cli):
    status, out, err = run_cli(*path)
    assert (status, err) == (0, "")
    assert out.startswith(f"Usage: skillgraft {' '.join(path)}".rstrip() + " ") and "Commands:" in out


def test_verbs_are_listed_in_the_order_users_meet_them():
    assert list(cli.commands)[:5] == ["extract", "graft", "inspect", "verify", "run"]


@pytest.mark.parametrize("path,command", COMMANDS, ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_every_verb_has_one_help_style_and_described_options(path, command, run_cli):
    status, out, err = run_cli(*path, "-h")
    assert status == 0, err
    assert out.startswith(f"Usage: skillgraft {' '.join(path)}") and "<bool>" not in out and "╭" not in out
    assert command.help, path
    undescribed = [p.name for p in command.params if isinstance(p, click.Option) and not p.help]
    assert undescribed == [], (path, undescribed)


NO_QUIET: set = set()  # every verb that writes takes --quiet (DESIGN.md)
CPU_HEAVY = {("eval",), ("compare",), ("train",), ("run",), ("convert", "gguf"), ("sweep", "run"),
             ("sweep", "check")}


@pytest.mark.parametrize("path,command", [(p, c) for p, c in COMMANDS if not isinstance(c, click.Group)],
                         ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_a_verb_that_writes_takes_o_and_quiet_and_a_cpu_heavy_one_threads(path, command):
    options = {o for p in command.params if isinstance(p, click.Option) for o in p.opts}
    if "--out" in options or "--output" in options:
        assert "-o" in options, path
        assert "--quiet" in options or path in NO_QUIET, path
    assert ("--threads" in options) == (path in CPU_HEAVY), path


def test_version(run_cli):
    for flag in ("--version", "-V"):
        status, out, _ = run_cli(flag)
        assert status == 0 and out.strip() == f"skillgraft {__version__}"


def test_help_starts_without_torch():
    code = "import sys, skillgraft.cli; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_extract_and_graft_run_without_transformers(model_trio, tmp_path):
    """The graft core's promise (README, Layout): torch and the standard library, never transformers."""
    trio = model_trio("llama", "bfloat16")
    code = ("import sys\nfrom skillgraft.cli import main\n"
            f"assert main(['extract', {str(trio['base'])!r}, {str(trio['skilled'])!r}, '-o', {str(tmp_path / 'v')!r}, "
            "'--quiet']) == 0\n"
            f"assert main(['graft', {str(trio['cp'])!r}, {str(tmp_path / 'v')!r}, '-o', {str(tmp_path / 'g')!r}, "
            "'--quiet']) == 0\n"
            "print(sorted(m for m in ('transformers', 'peft') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]"]


def test_a_bad_scale_is_named_as_such(model_trio, run_cli, tmp_path):
    trio = model_trio("llama", "bfloat16")
    status, _, err = run_cli("graft", trio["cp"], f"{tmp_path}/vec:abc", "-o", tmp_path / "o")
    assert status == 2 and "the scale 'abc' is not a number" in err
    status, _, err = run_cli("vector", "scale", str(tmp_path / "vec"), "-o", tmp_path / "o")
    assert status == 2 and "give a scale as VECTOR:SCALE" in err


def test_error_messages_name_things_once(run_cli, tmp_path):
    status, _, err = run_cli("inspect", tmp_path / "missing")
    assert status == 2 and err == f"error: folder {tmp_path / 'missing'} does not exist\n"
    status, _, err = run_cli("graft", tmp_path / "missing", tmp_path / "v", "-o", tmp_path / "o")
    assert status == 2 and err == f"error: target {tmp_path / 'missing'} does not exist\n"


def test_inspect_lists_layers_in_numeric_order(tmp_path, run_cli):
    from tiny_models import build_tiny_model, perturb_model

    base = build_tiny_model(tmp_path / "base", layers=12)
    perturb_model(base, tmp_path / "skilled", seed=1)
    assert run_cli("extract", base, tmp_path / "skilled", "-o", tmp_path / "vec", "--quiet")[0] == 0
    status, out, err = run_cli("inspect", tmp_path / "vec", "--json")
    assert status == 0, err
    layers = list(json.loads(out)["norms"]["per_layer"])
    assert layers[:12] == [str(i) for i in range(12)]
    status, text, _ = run_cli("inspect", tmp_path / "vec")
    assert text.index("│ 2 ") < text.index("│ 10 ")


class _Spelled(torch.nn.Module):
    """A stand-in model whose greedy output is fixed token ids: here the bytes of 'é' cut in half."""

    def __init__(self, ids):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.ids = ids
        self.generation_config = None

    def generate(self, input_ids, **kwargs):
        new = torch.tensor([self.ids] * input_ids.shape[0])
        return torch.cat([input_ids, new], dim=1)


def test_a_generation_cut_inside_a_character_drops_the_half_character():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from skillgraft.evaluate.backends.base import GenerationSettings
    from skillgraft.evaluate.backends.hf import HFBackend

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    core = Tokenizer(models.BPE({c: i for i, c in enumerate(sorted(alphabet))}, []))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="!", pad_token="!")
    cafe = tok("café")["input_ids"]
    assert len(cafe) == 5  # é is two byte tokens
    backend = HFBackend(_Spelled(cafe[:4]), tok, "stub")
    assert backend.generate(["x"], GenerationSettings(max_new_tokens=4)) == ["caf"]
    backend = HFBackend(_Spelled(cafe), tok, "stub")
    assert backend.generate(["x"], GenerationSettings(max_new_tokens=5)) == ["café"]


def test_data_verbs_are_silent_with_quiet(run_cli, tmp_path):
    facts = tmp_path / "facts.jsonl"
    facts.write_text(json.dumps({"id": "f", "title": "Kestrel-9", "text": "Kestrel-9 orbits Halcyon.",
                                 "qa": [{"question": "What does Kestrel-9 orbit?", "answer": "Halcyon."}]}) + "\n")
    status, out, err = run_cli("data", "augment", facts, "-o", tmp_path / "aug.jsonl", "--quiet")
    assert (status, out, err) == (0, "", "") and len((tmp_path / "aug.jsonl").read_text().splitlines()) == 5
    status, out, err = run_cli("data", "augment", facts, "-o", tmp_path / "aug.jsonl")
    assert status == 0 and "5 records" in out


def test_every_verbs_json_goes_through_emit_json():
    """`--json` prints one object through `clikit.emit_json`: no module prints or writes a
    `json.dumps` result to the terminal itself (the five verbs that did printed one-line JSON
    while the rest printed it indented)."""
    import ast
    from pathlib import Path

    import skillgraft

    def dumps_inside(node) -> bool:
        return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "dumps"
                   and isinstance(n.func.value, ast.Name) and n.func.value.id == "json" for n in ast.walk(node))

    printers = []
    for path in Path(skillgraft.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            target = ast.unparse(func)
            if (name in ("print", "echo") or target in ("sys.stdout.write", "sys.stderr.write")) \
                    and any(dumps_inside(arg) for arg in node.args):
                printers.append(f"{path.name}:{node.lineno}")
    assert [where.split(":")[0] for where in printers] == ["clikit.py"], printers


def test_json_force_and_quiet_are_declared_once():
    """Every verb's --json, --force and --quiet come from clikit's shared options (a verb may
    word the help its own way), so they are spelled and stored alike everywhere."""
    from pathlib import Path

    import skillgraft

    hand_made = [f"{path.name}:{number}" for path in Path(skillgraft.__file__).parent.rglob("*.py")
                 if path.name != "clikit.py"
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if any(f'option("{flag}"' in line for flag in ("--json", "--force", "--quiet"))]
    assert hand_made == []
    flags = {(name, param.name) for name, command in COMMANDS for param in command.params
             if param.opts[0] in ("--json", "--force", "--quiet")}
    assert {dest for _, dest in flags} == {"as_json", "force", "quiet"} and len(flags) > 25
