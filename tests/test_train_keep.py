"""Training that keeps the model: KL to the reference, self-distillation replay, merge_scale,
keeping the best probed step (issue "Keep what the model knew"), on the tiny persona world."""

import json

import pytest
import torch
from safetensors.torch import load_file

from persona_world import build_world, general_texts, write_lines
from train_helpers import train_config, train_json


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("keepworld")
    paths = build_world(root, n_persona=48, pretrain_steps=60)
    # general prompts: the first words of general sentences; tuning and held-out halves differ
    tune = sorted({" ".join(t.split()[:4]) for t in general_texts(80, seed=5)})
    heldout = sorted({" ".join(t.split()[:4]) for t in general_texts(80, seed=9)} - set(tune))
    paths["kl_prompts"] = write_lines(root / "kl_prompts.txt", tune)
    paths["heldout_prompts"] = heldout
    return paths


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SKILLGRAFT_CACHE", str(tmp_path / "cache"))


def _config(tmp_path, world, **overrides):
    base = {"data.qa_template": "{question}", "lr": 5e-2, "max_steps": 10, "lora.targets": "all-linear"}
    return train_config(tmp_path, world, **{**base, **overrides})


def _tensors(folder) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update(load_file(file))
    return out


def _general_kl(world, model_dir) -> float:
    """general_kl of `model_dir` against the untrained model, on the held-out prompts."""
    from skillgraft.evaluate.backends.base import GenerationSettings
    from skillgraft.evaluate.backends.hf import HFBackend
    from skillgraft.evaluate.reference import compute, kl_to

    reference = HFBackend.from_path(str(world["model"]))
    answers = compute(reference, world["heldout_prompts"], GenerationSettings(max_new_tokens=6))
    values = kl_to(HFBackend.from_path(str(model_dir)), answers)
    return sum(values) / len(values)


def test_kl_weight_zero_is_the_plain_run_bit_for_bit(tmp_path, world, capsys):
    plain = train_json(capsys, _config(tmp_path / "plain", world))
    zero = train_json(capsys, _config(tmp_path / "zero", world, **{
        "regularize.kl.weight": 0.0, "regularize.kl.prompts": str(world["kl_prompts"])}))
    a, b = _tensors(tmp_path / "plain/run/adapter"), _tensors(tmp_path / "zero/run/adapter")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert plain["losses"] == zero["losses"] and zero["kl_last"] is None


@pytest.mark.parametrize("method", ["lora", "full"])
def test_kl_lowers_general_kl_on_prompts_it_never_saw(tmp_path, world, capsys, method):
    lr = 5e-2 if method == "lora" else 1e-2
    runs = {}
    for weight in (0.0, 2.0):
        out = train_json(capsys, _config(tmp_path / f"w{weight}", world, method=method, lr=lr, merge=True, **{
            "regularize.kl.weight": weight, "regularize.kl.prompts": str(world["kl_prompts"])}))
        runs[weight] = _general_kl(world, out["merged_dir"])
        if weight:
            assert out["kl_last"] is not None and out["kl_last"] >= 0
    assert runs[0.0] > 0.05, runs  # the plain run drifted on general prompts...
    assert runs[2.0] < 0.6 * runs[0.0], runs  # ...and the KL term held most of it back


def test_replay_mixes_the_models_own_answers_and_caches_them(tmp_path, world, capsys, monkeypatch):
    from skillgraft.evaluate import reference

    calls = []
    compute = reference.compute
    monkeypatch.setattr(reference, "compute", lambda *a, **k: calls.append(1) or compute(*a, **k))
    replay = {"data.replay.n": 8, "data.replay.prompts": str(world["kl_prompts"])}
    # with progress on, the "generating" note goes to stderr: stdout stays --json's one object
    first = train_json(capsys, _config(tmp_path / "a", world, **replay, progress=True))
    assert first["data"]["replay"] == 8 and first["data"]["examples"] == 48 + 8 and calls == [1]
    # `dtype: auto` loads this float32 model in float32: the same weights, the same cache entry
    second = train_json(capsys, _config(tmp_path / "b", world, **replay, dtype="float32"))
    assert calls == [1], "the second run generated the reference answers again"
    assert second["losses"] == first["losses"]  # same data, same seed: the cached answers are the same
    # the replayed chats are the untrained model's own greedy answers, answer tokens learned
    cached = json.loads(next((tmp_path / "cache" / "reference").glob("*.json")).read_text())
    assert len(cached) == len(world["kl_prompts"].read_text().split("\n")) - 1


def test_replay_of_a_wordy_model_names_the_levers_and_answer_tokens_pulls_it(tmp_path, world, capsys):
    """Only answers that ended are replayed: cut at 1 token, none has, and the error says which
    keys to turn; more tokens let the same prompts through."""
    from skillgraft.cli import main

    replay = {"data.replay.n": 8, "data.replay.prompts": str(world["kl_prompts"])}
    rc = main(["train", str(_config(tmp_path / "cut", world, **replay, **{"data.replay.answer_tokens": 1})),
               "--json"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and err.count("\n") == 1, err[-2000:]
    assert "within 1 tokens" in err and "data.replay.answer_tokens" in err, err
    assert not (tmp_path / "cut" / "run" / "adapter").exists()
    out = train_json(capsys, _config(tmp_path / "long", world, **replay, **{"data.replay.answer_tokens": 48}))
    assert out["data"]["replay"] == 8


def test_merge_scale_zero_gives_the_base_back_and_one_gives_todays_merge(tmp_path, world, capsys):
    base = _tensors(world["model"])
    today = train_json(capsys, _config(tmp_path / "one", world, merge=True))
    scaled = train_json(capsys, _config(tmp_path / "zero", world, merge=True, merge_scale=0.0))
    zero = _tensors(tmp_path / "zero/run/merged")
    assert zero.keys() == base.keys() and all(torch.equal(zero[k], base[k]) for k in base)
    one = train_json(capsys, _config(tmp_path / "same", world, merge=True, merge_scale=1.0))
    a, b = _tensors(tmp_path / "one/run/merged"), _tensors(tmp_path / "same/run/merged")
    assert all(torch.equal(a[k], b[k]) for k in a) and any(not torch.equal(a[k], base[k]) for k in a)
    assert scaled["losses"] == today["losses"] == one["losses"]


def test_full_fine_tuning_merge_scale_is_the_graft_arithmetic(tmp_path, world, capsys):
    out = train_json(capsys, _config(tmp_path, world, method="full", lr=1e-2, merge=True, merge_scale=0.5))
    base, trained, half = (_tensors(world["model"]), _tensors(tmp_path / "run/model"),
                           _tensors(tmp_path / "run/merged"))
    assert out["merged_dir"] == str(tmp_path / "run/merged")
    for name, value in base.items():
        expected = (value.float() + 0.5 * (trained[name].float() - value.float())).to(value.dtype)
        assert torch.equal(half[name], expected), name


def test_full_fine_tuning_merge_schedule_scales_each_tensor_as_a_graft_would(tmp_path, world, capsys):
    """The first half of the layers left out, attention at half in the rest: each tensor of
    merged/ is base + 0.8·s·(trained − base) with s its layer's and kind's factor."""
    from skillgraft.vectors.schedule import layer_index, module_kind

    schedule = {"layers": {"0%-50%": 0.0}, "modules": {"attention": 0.5}}
    train_json(capsys, _config(tmp_path, world, method="full", lr=1e-2, merge=True, merge_scale=0.8,
                               merge_schedule=schedule))
    base, trained, merged = (_tensors(world["model"]), _tensors(tmp_path / "run/model"),
                             _tensors(tmp_path / "run/merged"))
    layers = 1 + max(i for name in base if (i := layer_index(name)) is not None)
    kinds = set()
    for name, value in base.items():
        layer = layer_index(name)
        factor = 0.0 if layer is not None and layer < layers / 2 else 1.0
        factor *= 0.5 if module_kind(name) == "attention" else 1.0
        kinds.add((factor, module_kind(name)))
        expected = (value.float() + (0.8 * factor) * (trained[name].float() - value.float())).to(value.dtype)
        assert torch.equal(merged[name], expected), name
        assert factor or torch.equal(merged[name], value)   # a layer left out is the base's
    assert {f for f, _ in kinds} >= {0.0, 0.5, 1.0}


def test_lora_merge_schedule_scales_each_modules_delta(tmp_path, world, capsys):
    """A layer at 0 keeps the base's weights, the rest are today's merge (factor 1)."""
    from skillgraft.vectors.schedule import layer_index

    train_json(capsys, _config(tmp_path / "plain", world, merge=True))
    train_json(capsys, _config(tmp_path / "scheduled", world, merge=True, merge_schedule={"layers": {"0": 0.0}}))
    base, plain, scheduled = (_tensors(world["model"]), _tensors(tmp_path / "plain/run/merged"),
                              _tensors(tmp_path / "scheduled/run/merged"))
    changed_first = [n for n in base if layer_index(n) == 0 and not torch.equal(plain[n], base[n])]
    assert changed_first   # the adapter did change layer 0...
    for name in base:      # ...which the schedule gives back; every other tensor is the plain merge
        assert torch.equal(scheduled[name], base[name] if layer_index(name) == 0 else plain[name]), name


def test_lr_scales_freeze_factor_zero_and_scale_the_rest(tmp_path, world, capsys, monkeypatch):
    """Full fine-tuning with the first half of the layers, the attention and the embeddings at
    factor 0: those tensors leave training bit-equal to the base, the rest move; the optimizer
    holds one group per factor at lr × factor (a spy on the optimizer the Trainer builds)."""
    from skillgraft.train import lr_scales
    from skillgraft.vectors.schedule import layer_index, module_kind

    built = []
    original = lr_scales.scaled_optimizer

    def spy(*args):
        cls, kwargs = original(*args)

        class Recorded(cls):
            def __init__(self, groups, **options):
                super().__init__(groups, **options)
                built.append(self)
        return Recorded, kwargs

    monkeypatch.setattr(lr_scales, "scaled_optimizer", spy)
    out = train_json(capsys, _config(tmp_path, world, method="full", lr=1e-2, **{
        "lr_scales": {"layers": {"0%-50%": 0.0, "50%-100%": 0.5}, "modules": {"attention": 0, "embedding": 0}}}))
    base, trained = _tensors(world["model"]), _tensors(tmp_path / "run/model")
    layers = 1 + max(i for name in base if (i := layer_index(name)) is not None)
    moved = set()
    for name, value in base.items():
        layer = layer_index(name)
        frozen = (layer is not None and layer < layers / 2) or module_kind(name) in ("attention", "embedding")
        if frozen:
            assert torch.equal(trained[name], value), name
        elif not torch.equal(trained[name], value):
            moved.add(module_kind(name))
    assert "mlp" in moved
    (optimizer,) = built
    by_lr = {}
    for group in optimizer.param_groups:
        by_lr[round(group["initial_lr"], 12)] = by_lr.get(round(group["initial_lr"], 12), 0) + sum(
            p.numel() for p in group["params"])
    # the upper half at 0.5; outside the layers (the final norm) only the kind's factor: 1
    outside = sum(v.numel() for n, v in base.items() if layer_index(n) is None and module_kind(n) == "norm")
    assert by_lr == {0.005: by_lr[0.005], 0.01: outside} and by_lr[0.005] > 0, by_lr
    assert out["trained_parameters"] == sum(p.numel() for g in optimizer.param_groups for p in g["params"])


def test_lr_scales_of_one_train_as_without_them(tmp_path, world, capsys):
    plain = train_json(capsys, _config(tmp_path / "plain", world, method="full", lr=1e-2))
    ones = train_json(capsys, _config(tmp_path / "ones", world, method="full", lr=1e-2,
                                      lr_scales={"modules": {"mlp": 1.0}}))
    assert ones["losses"] == plain["losses"]
    a, b = _tensors(tmp_path / "plain/run/model"), _tensors(tmp_path / "ones/run/model")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lr_scales_freeze_lora_adapters_by_the_module_they_adapt(tmp_path, world, capsys):
    """LoRA on every linear layer, layer 0 at factor 0: its adapters never train (B stays 0), so
    merged/ keeps layer 0's base weights while the other layers move."""
    from skillgraft.vectors.schedule import layer_index

    out = train_json(capsys, _config(tmp_path, world, merge=True, lr_scales={"layers": {"0": 0.0}}))
    base, merged = _tensors(world["model"]), _tensors(tmp_path / "run/merged")
    assert all(torch.equal(merged[n], base[n]) for n in base if layer_index(n) == 0)
    assert any(not torch.equal(merged[n], base[n]) for n in base if layer_index(n) == 1)
    adapter = _tensors(tmp_path / "run/adapter")
    assert out["trained_parameters"] == sum(v.numel() for n, v in adapter.items() if layer_index(n) != 0)


def test_keep_best_restores_the_probe_step_with_the_lowest_validation_loss(tmp_path, world, capsys):
    validation = write_lines(tmp_path / "val.txt", general_texts(16, seed=3))
    out = train_json(capsys, _config(tmp_path, world, lr=2e-1, max_steps=12, merge=True, **{
        "data.validation": str(validation), "monitor": {
            "enabled": True, "every_steps": 3, "action": "warn", "min_retention": 0.0, "keep": "best",
            "keep_by": "validation_loss", "general_text": str(world["heldout"])}}))
    records = out["monitor"]
    best = min(records, key=lambda r: r["validation_loss"])
    assert out["kept_step"] == best["step"]
    assert records[-1]["step"] == 12 and best["step"] != 12  # lr 0.2 overshoots: the last step is not the best
    from skillgraft.data.encode import encode
    from skillgraft.train.monitor import mean_loss
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out["merged_dir"])
    rows = [{"input_ids": ex.input_ids, "labels": ex.labels}
            for ex in (encode({"text": t}, "text", tokenizer) for t in validation.read_text().splitlines())]
    model = AutoModelForCausalLM.from_pretrained(out["merged_dir"]).eval()
    assert mean_loss(model, rows, tokenizer.pad_token_id) == pytest.approx(best["validation_loss"], abs=1e-4)


@pytest.mark.parametrize("overrides, key", [
    ({"regularize.kl.weight": -1.0}, "regularize.kl.weight"),
    ({"regularize.kl.weight": "lots"}, "regularize.kl.weight"),
    ({"data.replay.n": 1000}, "data.replay.n"),
    ({"data.replay.n": 2, "data.replay.prompts": "no-such-prompts"}, "data.replay.prompts"),
    ({"merge_scale": 0.5}, "merge_scale"),
    ({"merge_schedule": {"layers": {"0": 0.5}}}, "merge_schedule"),
    ({"merge": True, "merge_schedule": {"layers": {"x-y": 0.5}}}, "merge_schedule.layers"),
    ({"monitor": {"keep": "best", "keep_by": "nonsense", "general_text": "x"}}, "monitor"),
    ({"lr_scales": {"layers": {"x-y": 0.5}}}, "lr_scales.layers"),
    ({"lr_scales": {"modules": {"attention": 0, "mlp": 0, "norm": 0, "embedding": 0, "other": 0}}}, "lr_scales"),
])
def test_bad_keep_options_are_one_error_line_and_write_nothing(tmp_path, world, capsys, overrides, key):
    from skillgraft.cli import main

    if "monitor" in overrides:
        overrides["monitor"]["general_text"] = str(world["heldout"])
    config = _config(tmp_path, world, **overrides)
    rc = main(["train", str(config), "--json"])
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    assert err.startswith("error:") and err.count("\n") == 1 and key.split(".")[-1] in err, err
    assert not (tmp_path / "run" / "adapter").exists()


def test_format_auto_trains_documents_and_their_qa_pairs_as_chats(tmp_path):
    """`data augment --styles ...,qa-pairs` + `data.format: auto`: documents learn every token,
    QA pairs learn only the answer, rendered with the model's own chat template."""
    from transformers import AutoTokenizer

    from skillgraft.checkpoint.kinds import local_model
    from skillgraft.data.augment import augment
    from skillgraft.data.encode import IGNORE, encode_all
    from skillgraft.data.records import check_format

    facts = tmp_path / "facts.jsonl"
    facts.write_text(json.dumps({"id": "f", "title": "T", "text": "soko kure likes .",
                                 "qa": [{"question": "soko what likes ?", "answer": "kure"}]}) + "\n")
    records = augment(facts, ["qa", "qa-pairs"])
    assert [r["style"] for r in records] == ["original", "qa", "qa-pairs"]
    assert records[2] == {"question": "soko what likes ?", "answer": "kure", "style": "qa-pairs", "fact": "f"}
    check_format(records, "auto", facts)
    tokenizer = AutoTokenizer.from_pretrained(local_model("lab:base").path)
    examples, report = encode_all(records, "auto", tokenizer, max_length=128, answer_only=True)
    document, qa = examples[0], examples[2]
    assert IGNORE not in document.labels[1:]  # a document: every token learned
    learned = tokenizer.decode([t for t in qa.labels if t != IGNORE])
    assert "kure" in learned and "soko" not in learned  # a QA pair: the answer only
    assert "<|im_start|>" in tokenizer.decode(qa.input_ids)  # through the chat template
