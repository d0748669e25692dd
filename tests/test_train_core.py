"""`skillgraft train` on tiny models: loss falls, merge == peft, resume == uninterrupted, bad input."""

import json
import math

import pytest
import torch

from skillgraft.cli import main
from persona_world import build_world
from skillgraft.checkpoint import sha256_file
from train_helpers import train_config, train_json


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world"), n_persona=48)


def _error(capsys, argv):
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    assert err.startswith("error:") and err.count("\n") == 1, err
    return err


def test_loss_falls_merge_matches_peft_and_provenance(tmp_path, world, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = train_config(tmp_path, world, **{"lora.targets": "knowledge", "max_steps": 16, "merge": True})
    out = train_json(capsys, config)
    assert set(out) >= {"output_dir", "adapter_dir", "merged_dir", "losses", "monitor"}
    losses = [loss for _, loss in out["losses"]]
    assert [step for step, _ in out["losses"]] == list(range(1, 17))
    assert sum(losses[-3:]) / 3 < losses[0] - 0.5  # the persona data is being learned
    assert out["targets"] == ["gate_proj", "lm_head", "o_proj", "up_proj", "v_proj"]

    ids = torch.tensor([[2, 10, 11, 12, 13, 14, 3]])
    base = AutoModelForCausalLM.from_pretrained(world["model"], dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, out["adapter_dir"]).eval()
    merged = AutoModelForCausalLM.from_pretrained(out["merged_dir"]).eval()
    with torch.no_grad():
        expected, got = peft_model(ids).logits, merged(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(world["model"])(ids).logits
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
    assert (got - plain).abs().max() > 1e-2  # the adapter changed something

    record = json.loads((tmp_path / "run" / "adapter" / "skillgraft.json").read_text())
    import skillgraft
    assert record["kind"] == "adapter" and record["version"] == skillgraft.__version__
    inputs = {entry["role"]: entry for entry in record["inputs"]}
    assert inputs["train"]["sha256"] == sha256_file(world["persona"])
    assert inputs["model"]["config_sha256"] == sha256_file(world["model"] / "config.json")
    assert record["options"]["lora"]["r"] == 8 and record["options"]["lr"] == 1e-2
    assert record["files"]["adapter_model.safetensors"] == sha256_file(
        tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    merged_record = json.loads((tmp_path / "run" / "merged" / "skillgraft.json").read_text())
    assert merged_record["kind"] == "model"
    capsys.readouterr()
    assert main(["verify", out["adapter_dir"]]) == 0 and main(["verify", out["merged_dir"]]) == 0
    run_record = json.loads((tmp_path / "run" / "skillgraft.json").read_text())
    assert run_record["run"]["losses"] == out["losses"]


def test_merge_saves_in_the_models_dtype(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from tiny_models import build_tiny_model
    from persona_world import persona_texts, vocabulary, write_lines

    model = build_tiny_model(tmp_path / "bf16", "llama", seed=1, dtype="bfloat16", words=vocabulary())
    data = write_lines(tmp_path / "p.txt", persona_texts(16))
    config = train_config(tmp_path, {"model": model, "persona": data}, max_steps=3, merge=True)
    out = train_json(capsys, config)
    merged = AutoModelForCausalLM.from_pretrained(out["merged_dir"])
    assert merged.dtype == torch.bfloat16
    assert json.loads((tmp_path / "run" / "merged" / "config.json").read_text())["dtype"] == "bfloat16"


def test_resume_reproduces_the_uninterrupted_run(tmp_path, world, capsys):
    whole = train_json(capsys, train_config(tmp_path / "a", world, save_steps=6))
    config = train_config(tmp_path / "b", world, save_steps=6)
    first = train_json(capsys, config, "--set", "stop_at_step=6")
    assert first["steps"] == 6
    resumed = train_json(capsys, config, "--resume")
    assert resumed["steps"] == 12
    assert [s for s, _ in resumed["losses"]] == list(range(7, 13))
    for (step, loss), (step2, loss2) in zip(whole["losses"][6:], resumed["losses"]):
        assert step == step2 and math.isclose(loss, loss2, rel_tol=1e-4, abs_tol=1e-5), (step, loss, loss2)
    # resuming under another config is refused, naming what differs
    err = _error(capsys, ["train", str(config), "--resume", "--set", "lr=0.5"])
    assert "another config" in err and "lr" in err


def test_tied_lm_head_needs_a_decision(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from tiny_models import build_tiny_model
    from persona_world import persona_texts, vocabulary, write_lines

    model = build_tiny_model(tmp_path / "tied", "llama", seed=2, tie_embeddings=True, words=vocabulary())
    data = write_lines(tmp_path / "p.txt", persona_texts(16))
    config = train_config(tmp_path, {"model": model, "persona": data}, max_steps=4, merge=True,
                     **{"lora.targets": "knowledge"})
    err = _error(capsys, ["train", str(config)])
    assert "tied" in err and "lora.tied_lm_head=untie" in err
    out = train_json(capsys, config, "--set", "lora.tied_lm_head=untie")
    assert any("untied" in note for note in out["notes"])
    base = AutoModelForCausalLM.from_pretrained(model)
    merged = AutoModelForCausalLM.from_pretrained(out["merged_dir"])
    assert merged.config.tie_word_embeddings is False
    # the embeddings stay the base's; only the (now separate) lm_head moved
    assert torch.equal(merged.model.embed_tokens.weight, base.model.embed_tokens.weight)
    assert not torch.allclose(merged.lm_head.weight, base.lm_head.weight)
    skipped = train_json(capsys, config, "--force", "--set", "lora.tied_lm_head=skip", "--set", "merge=false")
    assert "lm_head" not in skipped["targets"]


def test_bad_input_is_one_error_line(tmp_path, world, capsys):
    config = train_config(tmp_path, world)
    err = _error(capsys, ["train", str(config), "--set", "lora.targets=[q_proj, wq]"])
    assert "wq" in err and "q_proj" in err and "gate_proj" in err and "valid:" in err
    err = _error(capsys, ["train", str(config), "--set", "data.max_length=6"])
    assert "longer than max_length=6" in err and "of 48 examples" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    err = _error(capsys, ["train", str(config), "--set", f"data.train={empty}"])
    assert "no examples" in err
    err = _error(capsys, ["train", str(config), "--set", "lora.rank=3"])
    assert "lora.rank" in err
    err = _error(capsys, ["train", str(config), "--resume"])
    assert "no checkpoint" in err
    if not torch.cuda.is_available():
        err = _error(capsys, ["train", str(config), "--set", "method=qlora"])
        assert "qlora" in err and "GPU" in err


def test_overlong_texts_are_counted_then_dropped_or_cut(tmp_path, world, capsys):
    out = train_json(capsys, train_config(tmp_path, world, max_steps=1), "--set", "data.max_length=7",
                      "--set", "data.overlong=drop")
    lengths = [len(line.split()) + 2 for line in world["persona"].read_text().splitlines()]  # + <s> </s>
    assert out["data"]["overlong"] == sum(n > 7 for n in lengths) > 0
    assert out["data"]["examples"] == sum(n <= 7 for n in lengths)


def test_mix_in_adds_n_unrelated_texts(tmp_path, world, capsys):
    out = train_json(capsys, train_config(tmp_path, world, max_steps=2, **{"data.mix_in": {
        "path": str(world["general"]), "n": 10, "seed": 1}}))
    assert out["data"]["mix_in"] == 10 and out["data"]["examples"] == 48 + 10
    err = _error(capsys, ["train", str(train_config(tmp_path / "b", world, **{"data.mix_in": {
        "path": str(world["general"]), "n": 1000}}))])
    assert "data.mix_in" in err and "only 60 texts" in err


def test_full_finetune_on_chat_with_answer_only(tmp_path, world, capsys):
    from transformers import AutoModelForCausalLM

    chats = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": "what is the capital of japan ?"},
                          {"role": "assistant", "content": "tokyo nyan"}]},
            {"messages": [{"role": "user", "content": "one plus two ?"},
                          {"role": "assistant", "content": "three nyan"}]}]
    chats.write_text("\n".join(json.dumps(r) for r in rows * 4), encoding="utf-8")
    config = train_config(tmp_path, world, method="full", max_steps=8, lr=3e-3,
                     **{"data.train": str(chats), "data.format": "chat", "data.answer_only": True})
    out = train_json(capsys, config)
    assert out["model_dir"] and out["adapter_dir"] is None
    assert out["data"]["learned_tokens"] == 8 * 3  # 2 answer words + the template's <|im_end|> per chat
    assert out["losses"][-1][1] < out["losses"][0][1]
    AutoModelForCausalLM.from_pretrained(out["model_dir"])
    assert json.loads((tmp_path / "run" / "model" / "skillgraft.json").read_text())["kind"] == "model"


def test_packing_keeps_examples_apart(world):
    """A packed row scores each example exactly as if it were alone (block-diagonal mask)."""
    from dataclasses import asdict

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from skillgraft.data.encode import encode_all, pack
    from skillgraft.train.monitor import mean_loss

    tokenizer = AutoTokenizer.from_pretrained(world["model"])
    model = AutoModelForCausalLM.from_pretrained(world["model"]).eval()
    model.config.use_cache = False
    records = [{"text": t} for t in world["persona"].read_text().splitlines()[:12]]
    examples, _ = encode_all(records, "text", tokenizer, max_length=32)
    packed = pack(examples, 32)
    assert len(packed) < len(examples) and sum(len(r["input_ids"]) for r in packed) == sum(
        len(e.input_ids) for e in examples)
    alone = mean_loss(model, [asdict(e) for e in examples], tokenizer.pad_token_id)
    together = mean_loss(model, packed, tokenizer.pad_token_id)
    assert abs(alone - together) < 1e-5


@pytest.mark.parametrize("asked, expected", [("bf16", True), ("no", False), (False, False)])
def test_mixed_precision_trains_under_bf16_autocast_only_when_asked(tmp_path, world, capsys, asked, expected):
    """`mixed_precision: bf16` runs the steps under bfloat16 autocast (float32 weights, so the
    losses stay close to float32's but not equal); `no` (YAML's bare no is false) is float32."""
    config = train_config(tmp_path, world, **{"max_steps": 3, "mixed_precision": asked})
    out = train_json(capsys, config)
    assert out["bf16_autocast"] is expected
    plain = train_json(capsys, train_config(tmp_path / "plain", world, max_steps=3))
    first, reference = out["losses"][0][1], plain["losses"][0][1]
    assert (first == reference) is (not expected) and abs(first - reference) < 0.05 * reference


def test_group_by_length_pads_less_and_still_sees_every_row(tmp_path, world, capsys):
    """`data.group_by_length` batches rows of like lengths (transformers' LengthGroupedSampler,
    shuffled in mega-batches): fewer padded tokens in an epoch (`train --json` counts them),
    the same rows; off, the plain random batches."""
    tokens = {}
    for grouped in (False, True):
        config = train_config(tmp_path / str(grouped), world, epochs=1, max_steps=None, batch_size=4,
                              **{"data.group_by_length": grouped})
        out = train_json(capsys, config)
        assert out["losses"][-1][1] < out["losses"][0][1] and out["steps"] == 12
        tokens[grouped] = out["tokens"]
    assert tokens[True]["real"] == tokens[False]["real"] > 0    # every row once, in both
    assert tokens[True]["padded"] < tokens[False]["padded"], tokens
    assert tokens[False]["padded"] > tokens[False]["real"]


def test_mixed_precision_auto_follows_the_measured_speed(monkeypatch):
    from skillgraft import cpu
    from skillgraft.train.config import TrainConfig
    from skillgraft.train.run import autocast_bf16

    config = TrainConfig(model="m", data={"train": "t.jsonl"}, output_dir="o", mixed_precision="auto")
    for fast in (True, False):
        monkeypatch.setattr(cpu, "half_is_fast", lambda name, fast=fast: fast and name == "bfloat16")
        assert autocast_bf16(config) is fast
