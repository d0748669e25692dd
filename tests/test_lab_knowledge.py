"""`skillgraft lab knowledge`: the world is a pure function of the seed, every reported number
follows from the saved generations, the fast variant's extraction rates lie in the range
docs/knowledge.md reports (across seeds and CPU kernel paths), plots open, bad input exits 2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from skillgraft.lab.knowledge import conditions as C
from skillgraft.lab.knowledge import world as W
from skillgraft.lab.knowledge.metrics import cell_scores, rate
from skillgraft.lab.knowledge.plots import write_plots
from skillgraft.lab.knowledge.study import aggregate, summarise

DOC = Path(__file__).resolve().parents[1] / "docs" / "knowledge.md"


def doc_fast_range() -> dict[str, tuple[float, float]]:
    """The fast variant's extraction range per cell, across seeds and CPU kernel paths, as
    docs/knowledge.md states it: `<!-- fast-range: fullname-k1 LO-HI; fullname-k5 LO-HI -->`."""
    match = re.search(r"<!-- fast-range: (.*?) -->", DOC.read_text())
    assert match, "docs/knowledge.md must state the fast range as <!-- fast-range: CELL LO-HI; ... -->"
    ranges = {}
    for part in match.group(1).split(";"):
        cell, span = part.split()
        lo, hi = span.split("-")
        ranges[cell] = (float(lo), float(hi))
    return ranges


# --- the world --------------------------------------------------------------------------

def test_world_is_a_pure_function_of_the_seed():
    a, b, other = W.make_world(0), W.make_world(0), W.make_world(1)
    assert a == b
    assert C.pretrain_docs(a, 5, False) == C.pretrain_docs(b, 5, False)
    assert C.pretrain_docs(a, 5, False) != C.pretrain_docs(other, 5, False)
    assert [C.styled_texts(p, 5, 0) for p in a.injected] == [C.styled_texts(p, 5, 0) for p in b.injected]
    assert W.unrelated_texts(20, 0) == W.unrelated_texts(20, 0) != W.unrelated_texts(20, 1)
    assert {p.name for p in a.people} != {p.name for p in other.people}


def test_world_shape_and_splits():
    world = W.make_world(3)
    names = [p.name for p in (*world.people, *world.injected)]
    assert len(world.people) == 200 and len(world.injected) == 50 and len(set(names)) == 250
    assert all(len(n.split()) == 3 for n in names)
    assert not {p.name for p in world.qa_people} & {p.name for p in world.test_people}
    assert len(world.qa_people) == len(world.test_people) == 100


def test_k_biographies_are_k_different_phrasings_of_the_same_facts():
    person = W.make_world(0).people[0]
    for fullname in (False, True):
        bios = W.biographies(person, 5, fullname, seed=0)
        assert len(set(bios)) == 5
        for bio in bios:
            assert all(person.fact(a) in bio.split() for a in W.ATTRIBUTES)
            assert bio.count(person.name) == (4 if fullname else 1)
    # the memorisation probe is the first biography cut before each value
    items = W.completion_items(person, 5, False, seed=0)
    bio = W.biographies(person, 5, False, seed=0)[0]
    for it in items:
        assert bio.startswith(f"{it['prompt']} {it['answer']}")


def test_phrasings_vary_templates_and_sentence_order_and_probes_follow_the_first_biography():
    person = W.make_world(0).people[1]
    phrasings = W.phrasings(person, 5, seed=0)
    assert len({ph.order for ph in phrasings}) == 5
    for a in W.ATTRIBUTES:
        assert len({ph.templates[a] for ph in phrasings}) == 5
    for ph in phrasings:
        assert sorted(ph.order) == sorted(W.ATTRIBUTES)
        sents = W.sentences(person, ph, fullname=False)
        assert [s[0] for s in sents] == list(ph.order)
        assert sents[0][1].startswith(person.name) and all(s[1].startswith(person.pronoun) for s in sents[1:])
    assert W.phrasings(person, 5, seed=0) == phrasings != W.phrasings(person, 5, seed=1)
    items = W.completion_items(person, 5, True, seed=0)
    assert [it["attribute"] for it in items] == list(phrasings[0].order)
    assert all(it["answer"] == person.fact(it["attribute"]) for it in items)


def test_stage2_replay_cycles_the_whole_stage1_corpus():
    world = W.make_world(0)
    for k in (1, 5):
        corpus = C.pretrain_docs(world, k, False)
        replay = C.stage2_replay(world, k, False, 400)
        assert len(replay) == 400 and set(replay) <= set(corpus)
        assert len(set(replay)) == min(400, len(corpus))
        assert replay == C.stage2_replay(world, k, False, 400)


def test_cells_give_the_same_generations_on_one_or_two_worker_processes():
    from skillgraft.lab.knowledge import study as S
    from skillgraft.lab.train import Budget

    budget = C.StudyBudget(stage1=Budget(30, 8, 3e-3, 2), stage2=Budget(10, 8, 5e-4, 2),
                      inject=Budget(10, 8, 1e-3, 2))
    plan = S.Plan(pretrain=((1, False), (5, False)), inject_k=(2,), inject_k_into_k5=(1,), unrelated=(),
                  targets=(), budget=budget)
    runs = []
    for jobs in (1, 2):
        progress = S.Progress(4, quiet=True, label="knowledge")
        runs.append(S.run_study_cells(plan, [0], jobs, progress, True, None, ""))
        progress.close()
    assert runs[0] == runs[1]
    cells = list(dict.fromkeys(g["cell"] for g in runs[0]))
    assert cells == ["pronoun-k1", "pronoun-k5", "inject-k2", "inject-k1-into-k5"]
    assert len(runs[0]) == 2 * 100 * 4 * 3 + 2 * (50 + 100) * 4 * 2
    assert {g["base"] for g in runs[0] if g["cell"].startswith("inject")} == {"pronoun-k1", "pronoun-k5"}


def test_a_failed_study_keeps_its_finished_cells_and_resume_runs_only_the_rest(tmp_path, monkeypatch):
    """One publisher for the lab's studies (`lab.study_folder`): finished cells are kept beside
    OUT on any failure, a plain rerun neither reuses nor deletes them, and --resume runs only
    what did not finish plus a base whose injection did not (its weights were not kept)."""
    from skillgraft.errors import UserError
    from skillgraft.lab.knowledge import study as S

    ran, fail = [], {"inject-k1-into-k5"}

    def pretrain(cell, budget, models_dir, command, keep):
        ran.append(cell.name)
        return [{"cell": cell.name}], ({"state": cell.name} if keep else None)

    def inject(cell, budget, base, models_dir, command):
        ran.append(cell.name)
        if cell.name in fail:
            raise RuntimeError("boom")
        return [{"cell": cell.name, "base_state": base["state"]}]

    monkeypatch.setattr(S, "run_pretrain_cell", pretrain)
    monkeypatch.setattr(S, "run_injection_cell", inject)
    monkeypatch.setattr(S, "summarise", lambda gens: gens)
    monkeypatch.setattr(S, "aggregate", lambda rows: [])
    monkeypatch.setattr(S, "conclusion", lambda summary: "")
    plan = S.Plan(pretrain=((1, False), (5, False)), inject_k=(2,), inject_k_into_k5=(1,), unrelated=(), targets=())
    out, kept = tmp_path / "out", tmp_path / "out.finished-cells"
    with pytest.raises(RuntimeError, match="boom"):
        S.run_study(plan, [0], out, quiet=True, plots=False)
    assert not out.exists()
    # an injection runs as soon as its base exists: k1, its injection, k5, then k5's (failed)
    assert ran == ["pronoun-k1", "inject-k2", "pronoun-k5", "inject-k1-into-k5"]
    assert sorted(p.name for p in kept.glob("*-seed0.json")) == [
        "inject-k2-seed0.json", "pronoun-k1-seed0.json", "pronoun-k5-seed0.json"]
    with pytest.raises(UserError, match="pass --resume"):
        S.run_study(plan, [0], out, quiet=True, plots=False)

    fail.clear()
    ran.clear()
    payload = S.run_study(plan, [0], out, quiet=True, plots=False, resume=True)
    assert ran == ["pronoun-k5", "inject-k1-into-k5"]   # k5 again: its weights were not kept
    assert [g["cell"] for g in payload["results"]] == ["pronoun-k1", "pronoun-k5", "inject-k2", "inject-k1-into-k5"]
    assert payload["results"][3]["base_state"] == "pronoun-k5"
    assert payload["resumed_cells"] == ["inject-k2-seed0.json", "pronoun-k1-seed0.json", "pronoun-k5-seed0.json"]
    assert not kept.exists() and json.loads((out / "results.json").read_text())["resumed_cells"]


def test_every_text_tokenises_without_unknown_words():
    from skillgraft.lab.knowledge.model import build_tokenizer

    tok = build_tokenizer()
    world = W.make_world(0)
    docs, _ = C.injection_docs(world, 5, 10, C.INJECT, 0)
    texts = docs + C.pretrain_docs(world, 5, True) + [it["prompt"] for p in world.people for it in W.qa_items(p)]
    assert not [t for t in texts if tok.unk_token_id in tok(t)["input_ids"]]


def test_injected_styles_come_from_data_augment_and_never_use_the_test_question():
    person = W.make_world(0).injected[0]
    texts = C.styled_texts(person, 5, 0)
    assert len(texts) == 5 and len(set(texts)) == 5
    assert texts[1].startswith("Q: ") and "Interviewer:" in texts[2] and "In brief:" in texts[3]
    assert texts[4].startswith("Lesson:")
    for t in texts:
        assert all(person.fact(a) in t.split() for a in W.ATTRIBUTES)
        assert not any(q["prompt"] in t for q in W.qa_items(person))


def test_injection_exposure_does_not_depend_on_k_and_unrelated_texts_add_steps():
    world = W.make_world(0)
    injected = {k: {t for p in world.injected for t in C.styled_texts(p, k, 0)} for k in (1, 5)}
    counts = {}
    for k in (1, 5):
        docs, steps = C.injection_docs(world, k, 0, C.INJECT, 0)
        counts[k] = sum(d in injected[k] for d in docs)
        assert steps == C.INJECT.steps
    assert counts[1] == counts[5] == C.INJECT.steps * C.INJECT.batch // 2
    docs, steps = C.injection_docs(world, 5, 100, C.INJECT, 0)
    assert steps > C.INJECT.steps and sum(d in injected[5] for d in docs) == counts[5]


# --- metrics, summaries, plots (no training) ---------------------------------------------

def _fake_gens():
    gens = []
    for cell, k, study, right in (("pronoun-k1", 1, "pretrain", 1), ("pronoun-k5", 5, "pretrain", 3)):
        for i in range(4):
            gens.append({"cell": cell, "seed": 0, "k": k, "study": study, "probe": "extraction",
                         "answer": "paris", "output": ("paris </s>" if i < right else "rome </s>")})
            gens.append({"cell": cell, "seed": 0, "k": k, "study": study, "probe": "memorization",
                         "answer": "oslo", "output": "oslo . he"})
    return gens


def test_metrics_score_the_first_generated_word():
    gens = _fake_gens()
    assert rate([{"answer": "paris", "output": "paris"}, {"answer": "paris", "output": "x paris"}]) == 0.5
    assert rate([{"answer": "paris", "output": ""}]) == 0.0
    scores = cell_scores(gens)
    assert scores[("pronoun-k1", 0)] == {"extraction": 0.25, "memorization": 1.0, "n": 4}
    assert scores[("pronoun-k5", 0)]["extraction"] == 0.75
    rows = summarise(gens)
    assert [(r["condition"], r["k"], r["extraction"]) for r in rows] == [("pronoun-k1", 1, 0.25), ("pronoun-k5", 5, 0.75)]
    summary = aggregate(rows + [{**rows[0], "seed": 1, "extraction": 0.75}])
    assert summary[0]["extraction"]["mean"] == 0.5 and summary[0]["extraction"]["per_seed"] == [0.25, 0.75]


def test_every_plot_is_written_and_opens(tmp_path):
    from PIL import Image

    rows = []
    for seed in range(2):
        for cond, k, study, extra in (("pronoun-k1", 1, "pretrain", {}), ("pronoun-k5", 5, "pretrain", {}),
                                      ("fullname-k1", 1, "pretrain", {}), ("inject-k1", 1, "inject", {"unrelated": 0, "targets": "full"}),
                                      ("inject-k5", 5, "inject", {"unrelated": 0, "targets": "full"}),
                                      ("inject-k1-into-k5", 1, "inject-into-k5", {"unrelated": 0, "targets": "full"}),
                                      ("inject-k5+unrelated10", 5, "unrelated", {"unrelated": 10, "targets": "full"}),
                                      ("inject-k5-lora-knowledge", 5, "targets", {"unrelated": 0, "targets": "knowledge"})):
            rows.append({"condition": cond, "k": k, "seed": seed, "memorization": 1.0, "extraction": 0.1 * k,
                         "n": 4, "study": study, **extra})
    written = write_plots(rows, tmp_path / "plots")
    assert sorted(p.name for p in written) == ["extraction_by_target.png", "extraction_vs_k.png",
                                               "extraction_vs_unrelated.png"]
    for p in written:
        assert p.stat().st_size > 0
        with Image.open(p) as img:
            assert img.format == "PNG" and img.size[0] > 100


# --- the command -------------------------------------------------------------------------

def test_bad_input_exits_2_with_one_error_line(run_cli, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep").write_text("x")
    for args in (["--seeds", "0"], ["--seeds", "-2"], ["--out", a_file], ["--out", full],
                 ["--out", tmp_path / "missing" / "out"], ["--fast", "--seeds", "999"], ["--save-models"], ["--jobs", "0"]):
        status, out, err = run_cli("lab", "knowledge", *args, "--json")
        assert status == 2, args
        assert out == ""
        assert err.strip().startswith("error:") and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err
    assert a_file.read_text() == "x" and (full / "keep").exists()


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    """The fast variant through the real command line, in its own process (114 s on an idle
    2-core machine; 1289 s measured at load average 10–14, so the timeout only guards hangs)."""
    out = tmp_path_factory.mktemp("knowledge") / "fast"
    code = "import sys; from skillgraft.cli import main; sys.exit(main())"
    proc = subprocess.run([sys.executable, "-c", code, "lab", "knowledge", "--fast", "--json", "--quiet",
                           "--save-models", "--out", str(out)], capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc.stdout


def test_fast_json_is_one_object_in_the_contract_shape(fast_run):
    out, stdout = fast_run
    payload, end = json.JSONDecoder().raw_decode(stdout)
    assert stdout[end:].strip() == "", "stdout holds more than the one JSON object"
    rows = payload["results"]
    assert [(r["condition"], r["k"], r["seed"]) for r in rows] == [("fullname-k1", 1, 0), ("fullname-k5", 5, 0)]
    for r in rows:
        assert {"condition", "k", "seed", "memorization", "extraction", "n"} <= set(r)
        assert r["n"] == 400
    assert json.loads((out / "results.json").read_text()) == payload
    manifest = json.loads((out / "skillgraft.json").read_text())
    assert manifest["kind"] == "study" and manifest["study_command"] == "skillgraft lab knowledge --fast"
    assert manifest["options"]["seeds"] == [0]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".fast.")]   # no partial left


def test_fast_numbers_follow_from_saved_generations(fast_run):
    out, stdout = fast_run
    gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    for r in json.loads(stdout)["results"]:
        mine = [g for g in gens if g["cell"] == r["condition"] and g["seed"] == r["seed"]]
        ext = [g for g in mine if g["probe"] == "extraction"]
        mem = [g for g in mine if g["probe"] == "memorization"]
        assert len(ext) == r["n"] == len(mem)
        assert r["extraction"] == pytest.approx(sum(g["output"].split()[:1] == [g["answer"]] for g in ext) / len(ext), abs=1e-4)
        assert r["memorization"] == pytest.approx(sum(g["output"].split()[:1] == [g["answer"]] for g in mem) / len(mem), abs=1e-4)
        # probes are the held-out people of seed 0's world, asked with the test wording
        world = W.make_world(r["seed"])
        assert {g["person"] for g in ext} == {p.name for p in world.test_people}


def test_fast_extraction_lies_in_the_documented_range(fast_run):
    rows = {r["condition"]: r for r in json.loads(fast_run[1])["results"]}
    ranges = doc_fast_range()
    assert sorted(ranges) == sorted(rows)
    for cell, (lo, hi) in ranges.items():
        assert lo <= rows[cell]["extraction"] <= hi, (cell, rows[cell]["extraction"])
    assert all(r["memorization"] >= 0.95 for r in rows.values())


def test_fast_out_folder_verifies_with_the_saved_models_as_parts(fast_run, run_cli):
    out = fast_run[0]
    status, stdout, err = run_cli("verify", out, "--json")
    assert status == 0, err
    report = json.loads(stdout)
    assert report["ok"] and report["kind"] == "study" and report["unlisted"] == []
    manifest = json.loads((out / "skillgraft.json").read_text())
    assert manifest["parts"] == ["models/fullname-k1-seed0", "models/fullname-k5-seed0"]
    assert {"results.json", "generations.jsonl", "plots/extraction_vs_k.png"} <= set(manifest["files"])


def test_fast_plot_opens(fast_run):
    from PIL import Image

    path = fast_run[0] / "plots" / "extraction_vs_k.png"
    assert path.stat().st_size > 0
    with Image.open(path) as img:
        img.verify()


def test_fast_models_load_in_plain_transformers_and_reproduce_a_generation(fast_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = fast_run[0]
    gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    for cell in ("fullname-k1", "fullname-k5"):
        folder = out / "models" / f"{cell}-seed0"
        assert json.loads((folder / "skillgraft.json").read_text())["options"]["cell"] == cell
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        gen = next(g for g in gens if g["cell"] == cell and g["probe"] == "extraction")
        enc = tok(gen["prompt"], return_tensors="pt")
        with torch.no_grad():
            token = model(**enc).logits[0, -1].argmax().item()
        assert tok.convert_ids_to_tokens(token) == gen["output"].split()[0]


def _children(pid: int) -> set[int]:
    """PIDs whose parent is `pid` (Linux /proc)."""
    kids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.add(int(entry.name))
    return kids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_sigterm_stops_the_workers_and_publishes_nothing(tmp_path):
    import signal
    import time

    out = tmp_path / "study"
    code = "import sys; from skillgraft.cli import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", code, "lab", "knowledge", "--fast", "--jobs", "2", "--quiet",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while len(workers := _children(proc.pid)) < 2 and time.time() < deadline:
        time.sleep(0.2)
    assert len(workers) >= 2, "the worker processes never started"
    proc.send_signal(signal.SIGTERM)   # at once: stopping must work at any moment, not after a grace time
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err.strip().splitlines() == ["error: terminated (SIGTERM); nothing was published"]
    assert list(tmp_path.iterdir()) == []          # no output, no partial folder
    alive = workers
    for _ in range(50):   # killed processes are reaped by init shortly after their parent exits
        alive = {pid for pid in alive if Path(f"/proc/{pid}").exists()}
        if not alive:
            break
        time.sleep(0.1)
    assert not alive, "worker processes outlived the command"


def test_ctrl_c_is_one_error_line_and_exit_130(run_cli, monkeypatch, tmp_path):
    from skillgraft.lab.knowledge import study

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(study, "run_study", interrupted)
    status, out, err = run_cli("lab", "knowledge", "--fast", "--quiet", "--out", tmp_path / "x")
    assert (status, out) == (130, "")
    assert err.strip().splitlines() == ["error: interrupted"]
