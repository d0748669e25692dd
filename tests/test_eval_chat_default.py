"""Retention measured the way a chat model is used: the chat template by default, the sets in
the models' languages, and a language metric that abstains when an answer is too short."""

from __future__ import annotations

import json

import pytest

from skillgraft.cli import main
from skillgraft.evaluate import run_suite
from skillgraft.evaluate.languages import model_languages, tokenizer_languages
from tiny_models import build_tiny_model, build_tokenizer

ENGLISH = ("The capital of France is Paris. Water boils at one hundred degrees Celsius at sea level. "
           "The largest planet is Jupiter. The author of Hamlet is William Shakespeare. ") * 20
JAPANESE = "フランスの首都はパリです。水は海面で摂氏百度で沸騰します。日本で一番高い山は富士山です。" * 20
KOREAN = "프랑스의 수도는 파리입니다. 물은 해수면에서 섭씨 백 도에서 끓습니다. 한국의 수도는 서울입니다." * 20


@pytest.fixture(scope="module")
def chat_and_plain(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat")
    chat = build_tiny_model(root / "chat", "llama", seed=0)
    plain = build_tiny_model(root / "plain", "llama", seed=0, tokenizer=build_tokenizer(chat_template=None))
    return str(chat), str(plain)


def _suite(tmp_path, generation: str = "{max_new_tokens: 4}") -> str:
    items = [{"id": f"q{n}", "prompt": p, "keywords": "city"} for n, p in
             enumerate(["what is the capital of", "who likes the city", "name a country"])]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    (tmp_path / "suite.yaml").write_text(f"name: s\ngeneration: {generation}\n"
                                         "sets:\n  - name: q\n    items: items.jsonl\n    metrics: [keyword]\n")
    return str(tmp_path / "suite.yaml")


def _eval(capsys, *args) -> dict:
    assert main(["eval", *args, "--json", "--quiet"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_suite_that_does_not_say_chat_asks_each_model_through_its_template(chat_and_plain, tmp_path, capsys):
    chat, plain = chat_and_plain
    default = _eval(capsys, chat, plain, "--suite", _suite(tmp_path))
    models = default["settings"]["models"]
    assert models[chat]["chat_applied"] == {"q": True} and models[plain]["chat_applied"] == {"q": False}
    assert default["settings"]["generation"]["chat"] == "auto"
    # the same outputs as saying chat: true (and false for the model without a template) outright
    said = _eval(capsys, chat, "--suite", _suite(tmp_path / "..", "{max_new_tokens: 4, chat: true}"))
    outputs = [r["output"] for r in default["items"] if r["model"] == chat]
    assert outputs == [r["output"] for r in said["items"]]
    raw = _eval(capsys, chat, "--suite", _suite(tmp_path), "--raw")
    assert raw["settings"]["models"][chat].get("chat_applied") is None  # --raw: nothing left to resolve
    assert [r["output"] for r in raw["items"]] != outputs  # the template really changed what was asked
    # a suite that says `chat: false` is obeyed
    told = _eval(capsys, chat, "--suite", _suite(tmp_path / "..", "{max_new_tokens: 4, chat: false}"))
    assert [r["output"] for r in told["items"]] == [r["output"] for r in raw["items"]]


def _byte_level_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer)


def test_languages_are_read_from_the_card_or_detected_from_the_tokenizer(tmp_path):
    english_only = _byte_level_tokenizer([ENGLISH])
    multilingual = _byte_level_tokenizer([ENGLISH, JAPANESE, KOREAN])
    assert tokenizer_languages(english_only, ["en", "ja", "ko"]) == ["en"]
    assert tokenizer_languages(multilingual, ["en", "ja", "ko"]) == ["en", "ja", "ko"]
    english_only.save_pretrained(tmp_path)
    assert model_languages(tmp_path, ["en", "ja", "ko"]) == (["en"], "detected from its tokenizer")
    (tmp_path / "README.md").write_text("---\nlanguage:\n- ja\n- en\n---\n# a model\n")
    assert model_languages(tmp_path, ["en", "ja", "ko"]) == (["en", "ja"], "declared in its model card")


def test_the_retention_suite_scores_only_the_languages_asked_for(chat_and_plain, tmp_path, capsys):
    chat, _ = chat_and_plain
    results = _eval(capsys, chat, "--suite", "retention", "--languages", "en", "--max-new-tokens", "2")
    assert list(results["scores"][chat]) == ["retention_en"]
    assert results["settings"]["models"][chat]["chat_applied"] == {"retention_en": True}  # the template, unasked
    assert results["items"][0]["prompt"].startswith("Q: ")  # raw in the file, asked as a user message
    assert set(results["settings"]["skipped_sets"]) == {"retention_ja", "retention_ko"}
    assert "--languages" in results["settings"]["skipped_sets"]["retention_ja"]
    # the lab's word-level tokenizer knows none of the three: every set is scored, with a note
    every = run_suite(chat, "retention", generation={"max_new_tokens": 1}, log=None)
    assert list(every["scores"][chat]) == ["retention_en", "retention_ja", "retention_ko"]
    capsys.readouterr()
    assert main(["eval", chat, "--suite", "retention", "--languages", "en,xx"]) == 2
    assert capsys.readouterr().err.strip() == "error: --languages: unknown ISO 639-1 language code 'xx'"


@pytest.mark.parametrize("answer, expected", [
    ("Paris", None), ("42", None), ("Tokyo, Japan", None),
    ("The capital of France is Paris.", 1.0), ("パリです", 0.0), ("서울", 0.0),
])
def test_the_language_metric_abstains_on_answers_too_short_to_judge(answer, expected):
    from skillgraft.evaluate.metrics import MetricContext, score_item
    from skillgraft.evaluate.suites import Item, MetricSpec

    numbers, details = score_item(MetricSpec(name="language"), Item(id="a", prompt="q", language="en"), answer,
                                  probe_set=None, ctx=MetricContext())
    assert numbers == {"language": expected}
    assert ("language.abstained" in details) == (expected is None)
