"""GPU paths (skipped without CUDA): bf16 LoRA training, 4-bit QLoRA, evaluation on a GPU.

CI has no GPU, so these skip there; they run on a lent GPU machine with
`python -m pytest -q tests/test_gpu.py`. Each asserts numbers, not just "it ran".
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from train_helpers import train_config, train_json

CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from persona_world import build_world

    return build_world(tmp_path_factory.mktemp("gpu-world"), n_persona=64, hidden=64, layers=2)


def _train(tmp_path, world, capsys, **overrides) -> dict:
    return train_json(capsys, train_config(tmp_path, world, **{"max_steps": 16, "lora.targets": "all-linear",
                                                               **overrides}))


def _falls(out: dict) -> bool:
    losses = [loss for _, loss in out["losses"]]
    return sum(losses[-3:]) / 3 < losses[0] - 0.5


def test_bf16_lora_on_cuda_learns_and_merges(tmp_path, world, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = _train(tmp_path, world, capsys, dtype="bfloat16", merge=True)
    assert _falls(out), out["losses"]
    ids = torch.tensor([[2, 10, 11, 12, 13, 14, 3]], device="cuda")
    base = AutoModelForCausalLM.from_pretrained(world["model"], dtype=torch.float32).cuda()
    peft_model = PeftModel.from_pretrained(base, out["adapter_dir"]).eval()
    merged = AutoModelForCausalLM.from_pretrained(out["merged_dir"], dtype=torch.float32).cuda().eval()
    with torch.no_grad():
        diff = (merged(ids).logits - peft_model(ids).logits).abs().max().item()
    assert diff < 1e-3, diff


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")
def test_qlora_on_cuda_learns(tmp_path, world, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    out = _train(tmp_path, world, capsys, method="qlora")
    assert _falls(out), out["losses"]
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    base = AutoModelForCausalLM.from_pretrained(world["model"], quantization_config=quant)
    assert any("4bit" in type(m).__name__ for m in base.modules())  # really 4-bit
    model = PeftModel.from_pretrained(base, out["adapter_dir"]).eval()
    ids = torch.tensor([[2, 10, 11, 12, 13, 14, 3]], device="cuda")
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


def test_eval_on_cuda_equals_cpu(run_cli):
    from skillgraft.lab.demo import SHIPPED

    scores = {}
    for device in ("cpu", "cuda"):
        status, out, err = run_cli("eval", SHIPPED / "skilled", "--suite", "lab", "--json", "--device", device)
        assert status == 0, err
        result = json.loads(out)
        scores[device] = result["scores"][str(SHIPPED / "skilled")]
    assert scores["cuda"]["lab_skill_a"]["exact_match"] >= 0.9
    assert abs(scores["cuda"]["lab_skill_a"]["exact_match"] - scores["cpu"]["lab_skill_a"]["exact_match"]) <= 0.02
