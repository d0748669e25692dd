"""`data show`: tokens with their loss mask, rendered with the tokenizer's own chat template."""

import json

import pytest
import yaml

from skillgraft.cli import main
from tiny_models import build_tiny_model

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
    # the template's end-of-turn is the learned end, once: no </s> after the last <|im_end|>
    assert learned == ["paris", "nyan", "<|im_end|>", "tokyo", "nyan", "<|im_end|>"]
    assert ex["tokens"][:3] == ["<s>", "<|im_start|>", "user"] and ex["tokens"].count("<s>") == 1
    assert ex["tokens"][-1] == "<|im_end|>" and "</s>" not in ex["tokens"]
    everything = _show(capsys, _config(tmp_path, model, [chat], format="chat", answer_only=False))
    assert all(everything["examples"][0]["learned"])


def test_qa_without_chat_template_uses_qa_template(tmp_path, capsys):
    from tiny_models import build_tokenizer

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


def test_chatml_newline_after_end_of_turn_is_not_learned_twice(tmp_path):
    """ChatML writes `<|im_end|>` then a newline after every turn, and SmolLM2-style tokenizers
    use `<|im_end|>` as EOS: the example must end `... answer <|im_end|>`, not
    `<|im_end|> \\n <|im_end|>`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from skillgraft.data.encode import IGNORE, encode

    words = ["<pad>", "<|im_start|>", "<|im_end|>", "\n", "user", "assistant", "hi", "hello", "there"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", "isolated"),
                                                  pre_tokenizers.WhitespaceSplit()])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<pad>",
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
                         "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
                         "{{ '<|im_start|>assistant\\n' }}{% endif %}")
    record = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}
    example = encode(record, "chat", tok, answer_only=True)
    tokens = tok.convert_ids_to_tokens(example.input_ids)
    assert tokens[-3:] == ["hello", "there", "<|im_end|>"] and tokens.count("<|im_end|>") == 2
    learned = [t for t, label in zip(tokens, example.labels) if label != IGNORE]
    assert learned == ["hello", "there", "<|im_end|>"]
