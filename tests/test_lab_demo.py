"""The lab demo on the shipped checkpoints: they load in plain transformers, the reported
numbers follow from the saved generations, and the graft beats CP while the controls do not."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from skillgraft.lab import world as W
from skillgraft.lab.demo import SHIPPED, run_demo, shipped_available, shipped_seed

DOC = Path(__file__).resolve().parents[1] / "docs" / "lab.md"
CONTROL_SLACK = 0.05      # the bound: no control more than 0.05 above CP

pytestmark = pytest.mark.skipif(not shipped_available(), reason="shipped lab checkpoints missing")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    import contextlib
    import io

    out = tmp_path_factory.mktemp("lab-demo")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        result = run_demo(out, seed=0, as_json=True, quiet=True)
    QUIET_STDERR.append(stderr.getvalue())
    return out, result


QUIET_STDERR: list[str] = []   # what the module's quiet --json demo wrote to stderr


def test_quiet_json_demo_prints_no_progress_and_no_table(demo):
    printed = QUIET_STDERR[0]
    assert "[lab demo]" not in printed and "Lab demo:" not in printed, printed[-500:]


def test_shipped_checkpoints_load_in_plain_transformers():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name in ("base", "cp", "skilled", "nonskill", "upper"):
        record = json.loads((SHIPPED / name / "skillgraft.json").read_text())
        assert record["kind"] == "model" and record["lab_model"] == name
        assert record["options"]["seed"] == shipped_seed()
        tok = AutoTokenizer.from_pretrained(SHIPPED / name)
        model = AutoModelForCausalLM.from_pretrained(SHIPPED / name)
        assert model.config.vocab_size == len(tok)
        assert tok.chat_template and tok.eos_token == "</s>"
        assert all(f.suffix != ".bin" for f in (SHIPPED / name).iterdir())


def test_demo_json_numbers_follow_from_saved_generations(demo):
    out, payload = demo
    world = W.make_world(shipped_seed())
    a_names, b_names = set(world.names_a), set(world.names_b)
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert json.loads((out / "results.json").read_text()) == payload
    models = {r["model"] for r in payload["results"]}
    assert models == {"base", "cp", "skilled", "cp+vector", "cp+random", "cp+nonskill", "upper"}
    for result in payload["results"]:
        gens = [g for g in rows if g["model"] == result["model"] and g["scale"] == result["scale"]]
        assert len(gens) == result["n"] > 0
        acc = sum(g["output"] == f"{g['answer']} </s>" for g in gens) / len(gens)
        fmt = sum(bool(re.fullmatch(r"(\S+) </s>", g["output"])) and g["output"].split()[0] in b_names
                  for g in gens) / len(gens)
        leak = sum(any(w in a_names for w in g["output"].split()) for g in gens) / len(gens)
        assert result["accuracy"] == pytest.approx(acc, abs=1e-4)
        assert result["format_rate"] == pytest.approx(fmt, abs=1e-4)
        assert result["language_leak"] == pytest.approx(leak, abs=1e-4)
    assert {r["scale"] for r in payload["results"] if r["model"] == "cp+vector"} == {0.5, 1.0, 1.5}


def test_demo_out_folder_verifies_with_every_vector_and_model_as_a_part(demo, run_cli):
    out, _ = demo
    status, stdout, err = run_cli("verify", out, "--json")
    assert status == 0, err
    report = json.loads(stdout)
    assert report["ok"] and report["kind"] == "demo" and report["unlisted"] == []
    manifest = json.loads((out / "skillgraft.json").read_text())
    assert sorted(manifest["files"]) == ["generations.jsonl", "results.json"]
    assert manifest["parts"] == sorted(["vector", "nonskill-vector", "random-vector", "cp+vector@0.5",
                                        "cp+vector@1", "cp+vector@1.5", "cp+random", "cp+nonskill"])
    status, _, err = run_cli("lab", "demo", "--out", out, "--json")
    assert status == 2 and "--force" in err


def test_graft_raises_b_accuracy_by_the_documented_margin_and_controls_do_not(demo):
    _, payload = demo
    match = re.search(r"shipped-margin:\s*([0-9.]+)", DOC.read_text())
    assert match, "docs/lab.md must state the shipped margin as `shipped-margin: X`"
    margin = float(match.group(1))
    res = payload["results"]
    cp = next(r["accuracy"] for r in res if r["model"] == "cp")
    best = max(r["accuracy"] for r in res if r["model"] == "cp+vector")
    # docs/lab.md: the same digits under two CPU kernel paths, so no tolerance
    assert best - cp == pytest.approx(margin, abs=1e-9)
    for control in ("cp+random", "cp+nonskill"):
        assert next(r["accuracy"] for r in res if r["model"] == control) <= cp + CONTROL_SLACK
    assert "skill vector" in payload["conclusion"]


def test_conclusion_states_what_the_numbers_show():
    from skillgraft.lab.demo import conclusion

    def rows(vec, control):
        return [{"model": "cp", "scale": None, "accuracy": 0.1, "format_rate": 0.0, "language_leak": 0.0, "n": 50},
                {"model": "cp+vector", "scale": 1.0, "accuracy": vec, "format_rate": 0.0, "language_leak": 0.2,
                 "n": 50},
                {"model": "cp+random", "scale": 1.0, "accuracy": control, "format_rate": 0.0, "language_leak": 0.0,
                 "n": 50}]

    good = conclusion(rows(0.8, 0.1), cp_knows=0.9)
    assert "+70 points" in good and "specific to the skill vector" in good and "already knows" in good
    flat = conclusion(rows(0.18, 0.15), cp_knows=0.2)
    assert "not distinguishable" in flat and "already knows" not in flat and "Only 20%" in flat
