"""The transformers backend on a tiny random Llama: batching never changes greedy outputs."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from skillgraft.errors import UserError  # noqa: E402
from skillgraft.evaluate.backends import GenerationSettings, make_backend  # noqa: E402
from skillgraft.evaluate.backends.hf import HFBackend  # noqa: E402
from tiny_models import DEFAULT_WORDS, build_tiny_model, build_tokenizer  # noqa: E402

WORDS = [w for w in DEFAULT_WORDS if w.isalpha()]


def make_prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14))) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", "llama", seed=0, dtype="float32")


@pytest.fixture(scope="module")
def backend(tiny_dir):
    return HFBackend.from_path(str(tiny_dir))


def reference_loop(backend: HFBackend, prompts: list[str], max_new_tokens: int) -> list[str]:
    """The seeds' way: one `generate` call per prompt, no padding at all."""
    model, tok = backend.model, backend.tokenizer
    outputs = []
    for prompt in prompts:
        enc = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        outputs.append(tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return outputs


def test_batched_greedy_equals_one_prompt_at_a_time(backend):
    prompts = make_prompts(24)
    settings = GenerationSettings(max_new_tokens=10)
    expected = reference_loop(backend, prompts, 10)
    assert len(set(expected)) > 5  # the prompts really lead to different outputs
    for batch_size in (1, 5, 24):
        assert backend.generate(prompts, settings, batch_size=batch_size) == expected


def test_stop_strings_and_stop_tokens(backend):
    prompt = ["what is the capital of"]
    full = backend.generate(prompt, GenerationSettings(max_new_tokens=10))[0]
    words = full.split()
    assert len(words) >= 4
    stop_word = words[2]
    expected = full[: full.find(stop_word)].strip()
    got = backend.generate(prompt, GenerationSettings(max_new_tokens=10, stop=[stop_word]))[0]
    assert got == expected
    token_id = backend.tokenizer.convert_tokens_to_ids(stop_word)
    by_token = backend.generate(prompt, GenerationSettings(max_new_tokens=10, stop_token_ids=[token_id]))[0]
    assert by_token == " ".join(words[: words.index(stop_word)])


def test_sampling_is_reproducible_from_its_seed(backend):
    prompts = make_prompts(6, seed=3)
    sampled = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=1.5, seed=11)
    first = backend.generate(prompts, sampled, batch_size=3)
    assert backend.generate(prompts, sampled, batch_size=3) == first
    other = backend.generate(prompts, sampled.model_copy(update={"seed": 12}), batch_size=3)
    assert other != first


def test_chat_messages_use_the_models_template(backend, tiny_dir):
    messages = [{"role": "user", "content": "what is the capital"}]
    assert backend.render(messages) == "<|im_start|>user what is the capital <|im_end|> <|im_start|>assistant "
    ids = backend.encode(messages)
    assert ids[0] == backend.tokenizer.convert_tokens_to_ids("<|im_start|>")  # no BOS added twice
    no_template = HFBackend(backend.model, build_tokenizer(chat_template=None), label="plain")
    with pytest.raises(UserError, match="no chat template"):
        no_template.generate([messages], GenerationSettings(max_new_tokens=2))


def test_loglik_batches_all_choices_in_one_forward_pass(backend):
    contexts = ["what is the capital", "who likes the city", "Q : one plus two is"]
    choices = [["city", "country name"], ["a", "the country", "two"], ["three", "four"]]
    calls = []
    hook = backend.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        batched = backend.loglik(contexts, choices, GenerationSettings(), batch_size=3)
    finally:
        hook.remove()
    assert len(calls) == 1  # seven (context, choice) rows, one forward pass
    model, tok = backend.model, backend.tokenizer
    for ctx, cs, scores in zip(contexts, choices, batched):
        for choice, score in zip(cs, scores):
            ctx_ids = tok(ctx)["input_ids"]
            full = tok(ctx + " " + choice)["input_ids"]
            with torch.no_grad():
                logprobs = torch.log_softmax(model(torch.tensor([full])).logits[0], -1)
            expected = sum(float(logprobs[t - 1, full[t]]) for t in range(len(ctx_ids), len(full)))
            assert score == pytest.approx(expected, abs=1e-4)


def test_in_memory_model_keeps_its_training_mode(backend):
    from skillgraft.evaluate.backends import make_backend

    backend.model.train()
    live = make_backend((backend.model, backend.tokenizer), label="live")
    live.generate(["what is"], GenerationSettings(max_new_tokens=2))
    assert backend.model.training
    backend.model.eval()


def test_missing_model_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        make_backend(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        make_backend(str(tmp_path / "empty"))


def test_sampling_leaves_the_callers_rng_alone(backend):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    backend.generate(["what is"], GenerationSettings(max_new_tokens=3, do_sample=True, seed=5))
    assert torch.equal(torch.rand(3), expected)
