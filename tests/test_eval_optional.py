"""Optional extras (vLLM, lm-evaluation-harness): clean errors without them, real runs with them."""

from __future__ import annotations

import importlib.util
import json

import pytest

from skillgraft.cli import main
from skillgraft.errors import UserError
from skillgraft.evaluate.backends import GenerationSettings, make_backend
from skillgraft.evaluate.backends.vllm_backend import vllm_available

HAS_LM_EVAL = importlib.util.find_spec("lm_eval") is not None


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tiny_models import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("opt") / "llama", "llama", seed=0))


@pytest.mark.skipif(vllm_available(), reason="vLLM and a GPU are present")
def test_vllm_backend_without_vllm_is_one_clear_error(tiny_dir):
    with pytest.raises(UserError, match="--backend vllm needs the `vllm` package and a CUDA GPU"):
        make_backend(tiny_dir, backend="vllm")


@pytest.mark.skipif(not vllm_available(), reason="needs vLLM and a CUDA GPU")
def test_vllm_greedy_matches_transformers(tiny_dir):
    prompts = ["what is the capital of", "who likes the city"]
    settings = GenerationSettings(max_new_tokens=8)
    hf = make_backend(tiny_dir).generate(prompts, settings)
    assert make_backend(tiny_dir, backend="vllm").generate(prompts, settings) == hf


@pytest.mark.skipif(HAS_LM_EVAL, reason="lm-evaluation-harness is installed")
def test_lm_eval_without_the_harness_is_one_clear_error(tiny_dir, tmp_path, capsys):
    (tmp_path / "i.jsonl").write_text(json.dumps({"prompt": "what is"}) + "\n")
    (tmp_path / "s.yaml").write_text("name: s\ngeneration: {max_new_tokens: 2}\n"
                                     "sets: [{name: a, items: i.jsonl, metrics: [repetition]}]\n")
    assert main(["eval", tiny_dir, "--suite", str(tmp_path / "s.yaml"), "--lm-eval", "mmlu"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: --lm-eval needs lm-evaluation-harness: pip install lm-eval"
