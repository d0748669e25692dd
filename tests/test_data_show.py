"""`data show`: tokens with their loss mask, rendered with the tokenizer's own chat template."""

import json

import pytest
import yaml

from skillgraft.cli import main
from skillgraft.tiny import build_tiny_model

WORDS = ["user", "assistant", "what", "is", "the", "capital", "of", "france", "japan", "?", "paris", "tokyo", "nyan", "and", "one", "plus", "two", "three"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("show") / "m", "llama", words=WORDS)


def _config(tmp_path, model, rows, **data):
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": str(model), "output_dir": str(tmp_path / "o"),
                                    "data": {"train": str(train), **data}}))
    return path


def _show(capsys, config, *extra):
    capsys.readouterr()
    assert main(["data", "show", str(config), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_chat_answer_only_marks_assistant_turns_and_eos(tmp_path, model, capsys):
    chat = {"messages": [{"role": "user", "content": "what is the capital of france ?"},
                         {"role": "assistant", "content": "paris nyan"},
                         {"role": "user", "content": "and japan ?"},
                         {"role": "assistant", "content": "tokyo nyan"}]}
    shown = _show(capsys, _config(tmp_path, model, [chat], format="chat", answer_only=True))
    ex = shown["examples"][0]
    learned = [t for t, keep in zip(ex["tokens"], ex["learned"]) if keep]
    assert learned == ["paris", "nyan", "<|im_end|>", "tokyo", "nyan", "<|im_end|>", "</s>"]
    assert ex["tokens"][:3] == ["<s>", "<|im_start|>", "user"] and ex["tokens"].count("<s>") == 1
    assert ex["tokens"][-1] == "</s>"
    everything = _show(capsys, _config(tmp_path, model, [chat], format="chat", answer_only=False))
    assert all(everything["examples"][0]["learned"])


def test_qa_without_chat_template_uses_qa_template(tmp_path, capsys):
    from skillgraft.tiny import build_tokenizer

    tok = build_tokenizer(WORDS + ["Q:", "A:"], chat_template=None)
    plain = build_tiny_model(tmp_path / "plain", "llama", tokenizer=tok)
    rows = [{"question": "one plus two ?", "answer": "three"}]
    shown = _show(capsys, _config(tmp_path, plain, rows, format="qa", answer_only=True))
    ex = shown["examples"][0]
    assert ex["tokens"] == ["<s>", "Q:", "one", "plus", "two", "?", "A:", "three", "</s>"]
    assert [t for t, keep in zip(ex["tokens"], ex["learned"]) if keep] == ["three", "</s>"]


def test_text_format_and_overlong_count(tmp_path, model, capsys):
    rows = [{"text": "the capital of france is paris"}, {"text": "one plus two"}]
    shown = _show(capsys, _config(tmp_path, model, rows, max_length=5), "-n", "1")
    assert len(shown["examples"]) == 1 and shown["report"]["overlong"] == 1 and shown["report"]["longest"] == 8
    assert shown["report"]["unknown_tokens"] == 0
    unknown = _show(capsys, _config(tmp_path, model, [{"text": "the capital of mars"}]))
    assert unknown["report"]["unknown_tokens"] == 1
    assert capsys.readouterr().err == ""
    # human output marks learned tokens
    assert main(["data", "show", str(_config(tmp_path, model, rows))]) == 0
    out = capsys.readouterr().out
    assert "[<s>]" in out and "[</s>]" in out
