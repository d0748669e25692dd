"""The retention monitor and degeneration guard, on a tiny model that first learned general text."""

import json
import math
import re
from types import SimpleNamespace

import pytest
import yaml

from skillgraft.cli import main
from skillgraft.train.config import MonitorConfig
from persona_world import build_world
from skillgraft.train.monitor import TrainingMonitor, distinct_ratio


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("mworld"), n_persona=64, pretrain_steps=60)


def _run(tmp_path, capsys, world, name, *sets):
    config = {
        "model": str(world["model"]), "method": "lora", "max_steps": 30, "batch_size": 8, "seed": 0,
        "output_dir": str(tmp_path / name), "progress": False, "lr": 1e-3,
        "data": {"train": str(world["persona"]), "max_length": 32},
        "lora": {"r": 8, "alpha": 16, "targets": "attn-qv"},
        "monitor": {"every_steps": 10, "general_text": str(world["heldout"]), "min_retention": 0.5},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    argv = ["train", str(path), "--json"]
    for item in sets:
        argv += [item] if item.startswith("--") else ["--set", item]
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    return json.loads(captured.out), captured.err


def test_monitor_keeps_a_good_run_going(tmp_path, capsys, world):
    out, err = _run(tmp_path, capsys, world, "good")
    assert out["stopped"] is None and out["steps"] == 30
    steps = [m["step"] for m in out["monitor"]]
    assert steps == [0, 10, 20, 30]
    assert all(m["retention"] >= 0.5 for m in out["monitor"])
    assert out["monitor"][0]["retention"] == 1.0 and out["monitor"][-1]["general_ppl"] > 0
    assert "monitor: step 10 | loss" in err  # logged beside the loss


def test_monitor_stops_a_destructive_run(tmp_path, capsys, world):
    out, err = _run(tmp_path, capsys, world, "bad", "lr=1.0")
    assert out["stopped"] and out["steps"] == 10
    assert "learning rate" in out["stopped"] and "lr=1" in out["stopped"]
    # the reason names the check that fired, with the numbers the records hold
    first, last, stopped = out["monitor"][0], out["monitor"][-1], out["stopped"]
    if stopped.startswith("sample generations collapsed"):
        assert last["distinct"] < 0.5 * first["distinct"] and f"ratio {last['distinct']:.2f}" in stopped
    elif stopped.startswith("retention fell"):
        assert last["retention"] < 0.5 and f"retention fell to {last['retention']:.2f}" in stopped
    else:
        assert stopped.startswith(("loss became", "loss exploded")), stopped
        assert int(re.search(r"at step (\d+)", stopped).group(1)) == out["steps"]
    assert "monitor: stopping:" in err
    assert json.loads((tmp_path / "bad" / "skillgraft.json").read_text())["stopped"] == out["stopped"]


def test_rollback_restores_the_last_state_that_retained(tmp_path, capsys, world):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from skillgraft.train.dataset import general_rows
    from skillgraft.train.monitor import mean_loss

    out, _ = _run(tmp_path, capsys, world, "rb", "lr=2.0e-2", "monitor.action=rollback", "monitor.every_steps=5",
                  "monitor.min_retention=0.7")
    assert out["stopped"] and "rolled back to step" in out["stopped"]
    back_to = out["rolled_back_to"]
    kept = next(m for m in out["monitor"] if m["step"] == back_to)
    assert kept["retention"] >= 0.7 and out["monitor"][-1]["retention"] < 0.7
    # the saved adapter is the rolled-back state: its perplexity is the one probed at that step
    tokenizer = AutoTokenizer.from_pretrained(world["model"])
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(world["model"]), out["adapter_dir"]).eval()
    rows = general_rows(str(world["heldout"]), tokenizer, 64, 32)
    assert math.isclose(math.exp(mean_loss(model, rows, tokenizer.pad_token_id)), kept["general_ppl"], rel_tol=1e-4)


def _monitor(**cfg):
    return TrainingMonitor(MonitorConfig(**cfg), tokenizer=None, lr=0.3)


def test_guard_stops_on_nan_and_exploding_loss():
    state, args = SimpleNamespace(global_step=7, log_history=[]), None
    monitor, control = _monitor(), SimpleNamespace(should_training_stop=False)
    monitor.on_log(args, state, control, logs={"loss": float("nan")})
    assert control.should_training_stop and "loss became nan at step 7" in monitor.stop_reason
    assert "learning rate is probably too high (lr=0.3)" in monitor.stop_reason
    monitor, control = _monitor(loss_explode=3.0), SimpleNamespace(should_training_stop=False)
    monitor.on_log(args, state, control, logs={"loss": 2.0})
    monitor.on_log(args, state, control, logs={"loss": 5.9})
    assert not control.should_training_stop
    monitor.on_log(args, state, control, logs={"loss": 6.1})
    assert control.should_training_stop and "exploded" in monitor.stop_reason


def test_guard_stops_on_collapsed_samples():
    assert distinct_ratio([5, 5, 5, 5]) == 0.25 and distinct_ratio([1, 2, 3, 4]) == 1.0
    monitor = _monitor(min_distinct=0.3)
    monitor.baseline = {"step": 0, "distinct": 0.9}
    control = SimpleNamespace(should_training_stop=False)
    monitor._check(None, {"step": 10, "distinct": 0.5, "sample": "a b c"}, control)
    assert not control.should_training_stop
    monitor._check(None, {"step": 20, "distinct": 0.1, "sample": "o o o o o o"}, control)
    assert control.should_training_stop and "collapsed into repetition at step 20" in monitor.stop_reason
    assert "learning rate" in monitor.stop_reason


def test_rollback_also_undoes_a_collapse_and_an_exploding_loss():
    import torch

    model = torch.nn.Linear(2, 2)
    good = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = None
    for trigger in ("collapse", "explode"):
        monitor = _monitor(action="rollback", min_distinct=0.3, loss_explode=3.0)
        monitor.baseline = {"step": 0, "distinct": 0.9}
        monitor._best = (-10, 10, monitor._snapshot(model))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(5.0)
        control = SimpleNamespace(should_training_stop=False)
        if trigger == "collapse":
            monitor._check(model, {"step": 20, "distinct": 0.1, "sample": "o o o o"}, control)
        else:
            state = SimpleNamespace(global_step=12, log_history=[])
            monitor.on_log(args, state, control, logs={"loss": 2.0}, model=model)
            monitor.on_log(args, state, control, logs={"loss": 7.0}, model=model)
        assert control.should_training_stop and monitor.rolled_back_to == 10, trigger
        assert monitor.stop_reason.endswith("; rolled back to step 10")
        assert all(torch.equal(p, good[n]) for n, p in model.named_parameters()), trigger


def test_monitor_can_probe_with_an_evaluation_suite(tmp_path, capsys, world):
    pytest.importorskip("skillgraft.evaluate.runner")
    items = tmp_path / "facts.jsonl"
    items.write_text("\n".join(json.dumps({"id": f"c{i}", "prompt": f"the capital of {c} is", "keywords": city})
                               for i, (c, city) in enumerate([("france", "paris"), ("japan", "tokyo"),
                                                              ("italy", "rome")])))
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "tiny", "generation": {"max_new_tokens": 3},
                                     "sets": [{"name": "caps", "items": "facts.jsonl",
                                               "metrics": ["keyword", "repetition"]}]}))
    out, err = _run(tmp_path, capsys, world, "with_suite", f"monitor.suite={suite}", "monitor.general_text=null",
                    "max_steps=10")
    first, last = out["monitor"][0], out["monitor"][-1]
    assert set(first["suite"]) == {"caps.keyword", "caps.repetition", "score"}
    assert first["suite"]["score"] == first["suite"]["caps.keyword"]  # repetition (lower-better) left out
    assert ("retention" in first) == (first["suite"]["score"] > 0)  # no ratio against a zero baseline
    assert last["step"] == 10 and "suite" in last and "monitor: step 10" in err


def test_resumed_run_keeps_the_original_baseline(tmp_path, capsys, world):
    first, _ = _run(tmp_path, capsys, world, "resume", "max_steps=20", "save_steps=10", "stop_at_step=10")
    assert first["steps"] == 10
    second, _ = _run(tmp_path, capsys, world, "resume", "max_steps=20", "save_steps=10", "--resume")
    assert second["steps"] == 20
    base = second["monitor"][0]
    assert base["resumed_from"].endswith("checkpoint-10")
    assert base["general_ppl"] == first["monitor"][0]["general_ppl"]  # the pre-training model, not step 10
    last = second["monitor"][-1]
    assert last["step"] == 20 and math.isclose(last["retention"], base["general_ppl"] / last["general_ppl"])
