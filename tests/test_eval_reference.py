"""Reference answers, `kept` and `general_kl`, and the two built-in retention sets."""

import json
import re
from pathlib import Path

import pytest
import torch

from skillgraft.evaluate.reference import ReferenceAnswer, coarse_kl

SUITES = Path(__file__).resolve().parent.parent / "src" / "skillgraft" / "evaluate" / "suites"


def _jsonl(name):
    return [json.loads(line) for line in (SUITES / name).read_text().splitlines() if line.strip()]


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def test_the_retention_sets_are_large_and_share_no_question_or_answer():
    tune, check = _jsonl("retention_tune.jsonl"), _jsonl("retention_check.jsonl")
    general = _jsonl("general_prompts.jsonl")
    assert len(tune) >= 120 and len(check) >= 120 and len(tune) + len(check) >= 240
    assert not {_norm(i["prompt"]) for i in tune} & {_norm(i["prompt"]) for i in check}
    assert not {i["keywords"].lower() for i in tune} & {i["keywords"].lower() for i in check}
    # the general prompts (replay and KL training) ask none of either set's questions
    trained = {_norm(i["prompt"]) for i in general}
    assert not trained & ({_norm(i["prompt"]) for i in tune} | {_norm(i["prompt"]) for i in check})
    for item in tune + check:  # every keyword is in the reference answer, none in its own question
        assert item["keywords"].lower() in item["reference"].lower(), item
        assert not re.search(rf"\b{re.escape(item['keywords'].lower())}\b", item["prompt"].lower()), item


def test_kept_is_the_share_of_the_references_right_answers_still_right():
    from skillgraft.evaluate.metrics import MetricContext, score_item
    from skillgraft.evaluate.results import mean
    from skillgraft.evaluate.suites import Item, MetricSpec

    items = [Item(id=str(i), prompt=f"q{i}", keywords=kw) for i, kw in enumerate(["Paris", "Tokyo", "Rome", "Lima"])]
    reference = ["It is Paris.", "Tokyo.", "I do not know.", "Lima, of course."]   # right on 0, 1, 3
    candidate = ["Paris!", "Kyoto.", "Rome.", "lima"]                            # keeps 0 and 3, not 1
    refs = [ReferenceAnswer([], [], text, True, [], []) for text in reference]
    spec = MetricSpec(name="kept")
    values = [score_item(spec, item, out, probe_set=None, ctx=MetricContext(), reference=ref)[0]["kept"]
              for item, out, ref in zip(items, candidate, refs)]
    assert values == [1.0, 0.0, None, 1.0]  # item 2 is not counted: the reference got it wrong
    assert mean(values) == pytest.approx(2 / 3)


def test_coarse_kl_is_exact_with_the_whole_vocabulary_and_a_lower_bound_with_top_k():
    torch.manual_seed(0)
    p = torch.randn(5, 50).log_softmax(-1)
    q = torch.randn(5, 50).log_softmax(-1)
    exact = (p.exp() * (p - q)).sum(-1)
    every = torch.topk(p, 50, dim=-1)
    assert torch.allclose(coarse_kl(every.indices, every.values, q), exact, atol=1e-5)
    top = torch.topk(p, 8, dim=-1)
    coarse = coarse_kl(top.indices, top.values, q)
    assert (coarse <= exact + 1e-5).all() and (coarse >= -1e-6).all() and (coarse > 0.2 * exact).all()
    assert coarse_kl(top.indices, top.values, p).abs().max() < 1e-5  # a model against itself: 0


def _suite(tmp_path) -> Path:
    items = [json.loads(line) for line in (SUITES.parent.parent / "lab" / "suites" / "lab_skill_a.jsonl")
             .read_text().splitlines()[:16]]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    (tmp_path / "suite.yaml").write_text("name: ref\ngeneration: {max_new_tokens: 8, chat: true}\n"
                                         "sets:\n  - {name: s, items: items.jsonl, metrics: [keyword, kept, general_kl]}\n")
    return tmp_path / "suite.yaml"


def test_eval_computes_the_reference_once_and_scores_against_the_first_model(tmp_path, monkeypatch):
    from skillgraft.evaluate import reference
    from skillgraft.evaluate.runner import run_suite

    monkeypatch.setenv("SKILLGRAFT_CACHE", str(tmp_path / "cache"))
    calls = []
    compute = reference.compute
    monkeypatch.setattr(reference, "compute", lambda *a, **k: calls.append(1) or compute(*a, **k))
    suite = _suite(tmp_path)
    first = run_suite(["lab:skilled", "lab:cp"], suite, log=None)
    assert calls == [1]
    again = run_suite(["lab:cp"], suite, reference="lab:skilled", log=None)
    assert calls == [1], "the second evaluation generated the reference answers again"
    assert again["scores"]["lab:cp"] == first["scores"]["lab:cp"]
    skilled, cp = first["scores"]["lab:skilled"]["s"], first["scores"]["lab:cp"]["s"]
    assert skilled["kept"] == 1.0 and skilled["general_kl"] < 1e-4  # the reference against itself
    assert cp["general_kl"] > 0.1 and cp["kept"] < 1.0
    # kept counts the reference's right answers only
    right = [i["id"] for i in first["items"] if i["model"] == "lab:skilled" and i["metrics"]["keyword"] == 1.0]
    kept = [i["metrics"]["kept"] for i in first["items"] if i["model"] == "lab:cp" and i["id"] in right]
    assert right and cp["kept"] == pytest.approx(sum(kept) / len(right))
    assert "kept" not in first["retention"]["lab:cp"]["s"]  # no ratio of a ratio
    assert first["settings"]["reference"]["model"] == "lab:skilled"


def test_a_reference_that_cannot_be_formed_is_one_error_line(tmp_path, run_cli):
    rc, out, err = run_cli("eval", "lab:cp", "--suite", _suite(tmp_path), "--reference", "http://127.0.0.1:9/v1")
    assert rc == 2 and err.startswith("error: reference") and err.count("\n") == 1, err


def test_one_model_without_a_reference_leaves_kept_empty_instead_of_comparing_it_with_itself(tmp_path):
    from skillgraft.evaluate.runner import run_suite

    notes = []
    result = run_suite(["lab:cp"], _suite(tmp_path), log=notes.append)
    scores = result["scores"]["lab:cp"]["s"]
    assert scores["kept"] is None and scores["general_kl"] is None and scores["keyword"] is not None
    assert any("reference" in note for note in notes)


def test_a_sweep_trial_scores_kept_against_the_model_its_recipe_started_from(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from skillgraft.evaluate.runner import run_suite
    from skillgraft.sweep.trial import evaluate

    monkeypatch.setenv("SKILLGRAFT_CACHE", str(tmp_path / "cache"))
    suite = _suite(tmp_path)
    entries = [SimpleNamespace(measure=None, suite=str(suite), set="s", metric=m) for m in ("kept", "general_kl")]
    values = evaluate(entries, "lab:cp", SimpleNamespace(kind="train", model="lab:skilled"))
    expected = run_suite(["lab:cp"], suite, reference="lab:skilled", log=None)["scores"]["lab:cp"]["s"]
    assert values == [expected["kept"], expected["general_kl"]] and values[1] > 0.1


def test_a_set_scored_only_on_general_kl_is_not_generated_and_scores_the_same(tmp_path, monkeypatch):
    """general_kl reads the reference's tokens, not the candidate's answer: a set that asks for
    nothing else skips generation (a sweep's cheap retention objective), with the same number."""
    from skillgraft.evaluate.backends.hf import HFBackend
    from skillgraft.evaluate.runner import run_suite

    monkeypatch.setenv("SKILLGRAFT_CACHE", str(tmp_path / "cache"))
    full = run_suite(["lab:cp"], _suite(tmp_path), reference="lab:skilled", log=None)
    kl_only = tmp_path / "kl.yaml"
    kl_only.write_text((tmp_path / "suite.yaml").read_text().replace("[keyword, kept, general_kl]", "[general_kl]"))
    generated = []
    original = HFBackend.generate_tokens
    monkeypatch.setattr(HFBackend, "generate_tokens", lambda self, *a, **k: generated.append(self.label)
                        or original(self, *a, **k))
    cheap = run_suite(["lab:cp"], kl_only, reference="lab:skilled", log=None)
    assert generated == [], "a general_kl-only set generated answers nobody reads"
    assert cheap["scores"]["lab:cp"]["s"]["general_kl"] == pytest.approx(full["scores"]["lab:cp"]["s"]["general_kl"],
                                                                          rel=1e-5)
    assert all(item["output"] is None for item in cheap["items"])
    from skillgraft.report.html import write_report

    page = write_report(cheap, tmp_path / "report.html").read_text()
    assert "not generated" in page and ">None<" not in page
