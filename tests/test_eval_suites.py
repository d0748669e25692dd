"""Suites: YAML + JSONL round trip, built-in suites, and one clear error per kind of bad input."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest

from skillgraft.errors import UserError
from skillgraft.evaluate.suites import load_items, load_suite


def write_suite(folder, items: list[dict], metrics="[keyword, rouge2]", extra_set: str = "", generation="{max_new_tokens: 12}"):
    (folder / "probes").mkdir(parents=True, exist_ok=True)
    (folder / "probes" / "items.jsonl").write_text(
        "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    (folder / "suite.yaml").write_text(
        f"name: demo\ngeneration: {generation}\nsets:\n"
        f"  - name: facts\n    items: probes/items.jsonl\n    metrics: {metrics}\n{extra_set}",
        encoding="utf-8")
    return folder / "suite.yaml"


ITEMS = [
    {"id": "a", "prompt": "Q: capital of France?\nA:", "reference": "Paris", "keywords": "Paris;France", "tags": ["geo"]},
    {"prompt": "Q: 2+2?\nA:", "reference": "4", "keywords": ["4"], "choices": ["3", "4"], "answer": 1},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
     "reference": "hello", "keywords": "hello", "language": "en"},
]


def test_suite_round_trip(tmp_path):
    path = write_suite(tmp_path, ITEMS,
                       metrics="[keyword, {name: rouge2, tokenizer: cjk}]",
                       extra_set='    generation: {chat: true, stop: ["\\n"]}\n    language: en\n')
    suite = load_suite(path)
    assert suite.name == "demo" and len(suite.sets) == 1
    probe_set = suite.sets[0]
    assert [i.id for i in probe_set.items] == ["a", "items-2", "items-3"]  # default id: file stem + line
    assert probe_set.items[1].answer == 1 and probe_set.items[2].input[0]["role"] == "system"
    assert [m.name for m in probe_set.metrics] == ["keyword", "rouge2"]
    assert probe_set.metrics[1].options == {"tokenizer": "cjk"}
    # set-level generation overrides the suite's, other suite settings are inherited
    assert probe_set.generation.max_new_tokens == 12 and probe_set.generation.chat is True
    assert probe_set.generation.stop == ["\n"] and suite.generation.chat == "auto"  # unsaid: the template when there is one
    assert probe_set.language == "en"
    # dump the loaded items and load them again: nothing lost
    again = tmp_path / "again.jsonl"
    again.write_text("".join(i.model_dump_json(exclude_none=True) + "\n" for i in probe_set.items))
    assert [i.model_dump() for i in load_items(again)] == [i.model_dump() for i in probe_set.items]


@pytest.mark.parametrize("name,n_sets", [("retention", 3), ("arithmetic", 2)])
def test_builtin_suites_load(name, n_sets):
    suite = load_suite(name)
    assert len(suite.sets) == n_sets
    for probe_set in suite.sets:
        assert len(probe_set.items) >= 30
        lang = probe_set.name.rsplit("_", 1)[1]
        assert all(item.language == lang for item in probe_set.items)
        assert len({item.id for item in probe_set.items}) == len(probe_set.items)


def test_builtin_arithmetic_answers_are_whole_numbers_and_parallel():
    suite = load_suite("arithmetic")
    en, ja = suite.sets
    assert [i.reference for i in en.items] == [i.reference for i in ja.items]
    # recompute every answer from the three numbers in the English question (they appear as a, b, c)
    formulas = {"apples": lambda a, b, c: a + b - c, "pencils": lambda a, b, c: a * b - c,
                "bus": lambda a, b, c: a - b + c, "cookies": lambda a, b, c: a * b - c,
                "savings": lambda a, b, c: a * b - c, "train": lambda a, b, c: a * b + c,
                "marbles": lambda a, b, c: a + c, "library": lambda a, b, c: a - b - c,
                "eggs": lambda a, b, c: a * b - c}
    for item, ja_item in zip(en.items, ja.items):
        a, b, c = (int(n) for n in re.findall(r"\d+", item.prompt))
        assert int(item.reference) == formulas[item.tags[1]](a, b, c) >= 0, item.id
        ja_numbers = re.findall(r"\d+", re.sub(r"1(?=[箱皿])", "", ja_item.prompt))  # drop "1箱"/"1皿" (per box)
        assert sorted(int(n) for n in ja_numbers) == sorted([a, b, c]), ja_item.id
        assert Decimal(item.reference) == int(item.reference)


def test_builtin_retention_sets_ask_the_same_facts():
    en, ja, ko = load_suite("retention").sets
    strip = lambda s: s.split("-", 1)[1]  # noqa: E731
    assert [strip(i.id) for i in en.items] == [strip(i.id) for i in ja.items] == [strip(i.id) for i in ko.items]


@pytest.mark.parametrize("items,metrics,message", [
    ([{"prompt": "x", "reference": "y", "keywords": "y"}, {"prompt": "x", "referense": "y"}], "[keyword]",
     r"items.jsonl:2: referense: unknown key \(did you mean 'reference'\?\)"),
    ([{"prompt": "x", "reference": "y"}, {"prompt": "z"}], "[rouge2]",
     r"items.jsonl:2: item items-2 lacks `reference`, which metric rouge2 needs"),
    ([{"prompt": "x", "messages": [{"role": "user", "content": "x"}]}], "[repetition]",
     r"items.jsonl:1: .*exactly one of `prompt` or `messages`"),
    ([{"prompt": "x", "choices": ["a", "b"], "answer": 2}], "[choice_loglik]", r"items.jsonl:1: .*answer index 2"),
    ([{"prompt": "x"}], "[language]", r"items.jsonl:1: item items-1 has no `language`"),
    ([{"prompt": "x"}], "[fluency]", r"suite.yaml: sets.0.metrics.0"),
    ([{"prompt": "x", "reference": "y"}], "[rouge]", r"sets.0.metrics.0.name: .*\(did you mean 'rouge2'\?\)"),
    ([{"prompt": "x", "keywords": "a"}], "[{name: keyword, segmnt: all}]", r"metric keyword has no option 'segmnt'"),
    ([{"prompt": "x"}], "[{name: memorization, corpus: missing.txt}]", r"memorization needs option `corpus`"),
    ([{"prompt": "x", "id": "d"}, {"prompt": "y", "id": "d"}], "[repetition]", r"items.jsonl:2: duplicate id 'd'"),
    ([{"prompt": "x", "language": "xx"}], "[language]", r"metric language: unknown ISO 639-1 language code 'xx'"),
    ([{"prompt": "x"}], "[{name: style, markers: {bad: '('}}]", r"style marker 'bad' is not a valid regex"),
    ([{"prompt": "x"}], "[{name: repetition, n: 0}]", r"option n must be a positive number"),
    ([], "[keyword]", r"probe file .*items.jsonl: no items"),
])
def test_bad_suites_name_file_line_and_key(tmp_path, items, metrics, message):
    path = write_suite(tmp_path, items, metrics=metrics)
    with pytest.raises(UserError, match=message):
        load_suite(path)


def test_malformed_jsonl_and_yaml(tmp_path):
    path = write_suite(tmp_path, [{"prompt": "x"}], metrics="[repetition]")
    (tmp_path / "probes" / "items.jsonl").write_text('{"prompt": "x"}\n\n{"prompt": "y",}\n')
    with pytest.raises(UserError, match=r"items.jsonl:3: malformed JSON"):
        load_suite(path)
    path.write_text("name: demo\nsets: [\n  - bad")
    with pytest.raises(UserError, match=r"suite.yaml: not valid YAML \(line \d+\)"):
        load_suite(path)
    with pytest.raises(UserError, match="no such file and no built-in suite"):
        load_suite(tmp_path / "nope.yaml")
    path.write_text("name: demo\ngeneration: {max_new_tokens: 0}\nsets: [{name: s, items: probes/items.jsonl, metrics: [repetition]}]\n")
    with pytest.raises(UserError, match="generation.max_new_tokens"):
        load_suite(path)


def test_a_misspelt_key_is_named_before_the_field_it_hides_and_a_missing_file_says_where(tmp_path, monkeypatch):
    """`setname:` for `name:` is two problems to pydantic (unknown key, missing field); the unknown
    key comes first, with its did-you-mean. A missing probe file is named by its full path
    (relative to the suite's folder, wherever the command runs)."""
    path = tmp_path / "suite.yaml"
    path.write_text("name: demo\nsets: [{nme: s, items: probes/items.jsonl, metrics: [repetition]}]\n")
    with pytest.raises(UserError, match=r"sets.0.nme: unknown key \(did you mean 'name'\?\)"):
        load_suite(path)
    path.write_text("name: demo\nsets: [{name: s, items: probes/gone.jsonl, metrics: [repetition]}]\n")
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(UserError, match=rf"probe file {tmp_path}/probes/gone.jsonl: not found"):
        load_suite(path)
