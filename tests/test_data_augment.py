"""`data augment`: deterministic templates, and the LLM rewriter through the evaluation backends
(a local OpenAI-style server, a local transformers model)."""

import json
import threading
import typing
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from skillgraft.cli import main
from skillgraft.data.augment import template_rewrite

FACT = {"id": "zorb", "title": "The Zorb Festival",
        "text": "The Zorb Festival is held every March in Lumen City.",
        "qa": [{"question": "When is the Zorb Festival held?", "answer": "Every March"},
               {"question": "Where is the Zorb Festival held?", "answer": "In Lumen City"}]}


def _write_facts(path):
    path.write_text(json.dumps(FACT) + "\n", encoding="utf-8")
    return path


def test_templates_use_every_qa_pair():
    qa = template_rewrite(FACT, "qa")
    assert qa == ("Q: When is the Zorb Festival held?\nA: Every March\n"
                  "Q: Where is the Zorb Festival held?\nA: In Lumen City")
    interview = template_rewrite(FACT, "interview")
    assert interview.count("Interviewer:") == 2 and "Expert: In Lumen City" in interview
    article = template_rewrite(FACT, "article")
    assert article.startswith("The Zorb Festival\n\n") and "Every March. In Lumen City." in article
    textbook = template_rewrite(FACT, "textbook")
    assert "2. Where is the Zorb Festival held?" in textbook and "Answer: Every March" in textbook


def test_template_cli_is_deterministic(tmp_path, capsys):
    facts = _write_facts(tmp_path / "facts.jsonl")
    outs = []
    for name in ("a.jsonl", "b.jsonl"):
        assert main(["data", "augment", str(facts), "-o", str(tmp_path / name), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["records"] == 5  # original + 4 styles
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
    styles = [json.loads(line)["style"] for line in outs[0].decode().splitlines()]
    assert styles == ["original", "qa", "article", "interview", "textbook"]


def test_original_as_a_style_writes_the_k1_file_and_the_summary_counts_by_style(tmp_path, capsys):
    facts = _write_facts(tmp_path / "facts.jsonl")
    assert main(["data", "augment", str(facts), "-o", str(tmp_path / "k1.jsonl"), "--styles", "original"]) == 0
    assert capsys.readouterr().out.startswith("1 records (1 original) → ")
    records = [json.loads(line) for line in (tmp_path / "k1.jsonl").read_text().splitlines()]
    assert records == [{"text": FACT["text"], "style": "original", "fact": "zorb"}]
    assert main(["data", "augment", str(facts), "-o", str(tmp_path / "k3.jsonl"), "--styles", "original,qa,qa-pairs",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["by_style"] == {"original": 1, "qa": 1, "qa-pairs": 2} and summary["records"] == 4
    rc = main(["data", "augment", str(facts), "-o", str(tmp_path / "x.jsonl"), "--styles", "original",
               "--no-original"])
    assert rc == 2 and "contradict" in capsys.readouterr().err and not (tmp_path / "x.jsonl").exists()


def test_translation_needs_an_llm(tmp_path, capsys):
    facts = _write_facts(tmp_path / "facts.jsonl")
    rc = main(["data", "augment", str(facts), "-o", str(tmp_path / "o.jsonl"), "--styles", "qa,translate:ja"])
    err = capsys.readouterr().err
    assert rc == 2 and "needs an LLM rewriter" in err


class _FakeLLM(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/chat/completions that echoes a marker and counts calls."""

    calls: typing.ClassVar[list] = []
    fail_first: typing.ClassVar[int] = 0   # answer this many requests with HTTP 503 first

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append((self.path, body))
        if len(type(self).calls) <= type(self).fail_first:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        prompt = body["messages"][0]["content"]
        reply = {"choices": [{"message": {"role": "assistant",
                                          "content": f"REWRITE[{prompt.splitlines()[0][:60]}]"}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def fake_llm():
    _FakeLLM.calls, _FakeLLM.fail_first = [], 0
    server = HTTPServer(("127.0.0.1", 0), _FakeLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_llm_rewriter_via_endpoint_with_cache(tmp_path, capsys, fake_llm):
    facts = _write_facts(tmp_path / "facts.jsonl")
    args = ["data", "augment", str(facts), "-o", str(tmp_path / "o.jsonl"), "--styles", "article,translate:ja",
            "--rewriter", "openai", "--endpoint", fake_llm, "--model", "fake-1", "--cache", str(tmp_path / "cache"),
            "--no-original", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["llm_calls"], first["cache_hits"]) == (2, 0)
    assert len(_FakeLLM.calls) == 2 and _FakeLLM.calls[0][0] == "/v1/chat/completions"
    assert _FakeLLM.calls[0][1]["model"] == "fake-1" and "Lumen City" in _FakeLLM.calls[0][1]["messages"][0]["content"]
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["style"] for r in rows] == ["article", "translate:ja"]
    assert rows[1]["text"].startswith("REWRITE[Translate the following text into ja")
    # second run: answered from the on-disk cache, the server is not called again
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert (second["llm_calls"], second["cache_hits"]) == (0, 2) and len(_FakeLLM.calls) == 2
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2


def test_a_fact_without_the_fields_augment_needs_is_named_and_nothing_is_written(tmp_path, capsys):
    facts = tmp_path / "facts.jsonl"
    facts.write_text(json.dumps(FACT) + "\n" + json.dumps({"id": "x", "text": "A fact without questions."}) + "\n")
    rc = main(["data", "augment", str(facts), "-o", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and err == "error: facts record 2: the template rewriter needs QA pairs in field 'qa' (or use " \
                              "--rewriter openai/local)\n", err
    assert list(tmp_path.iterdir()) == [facts]


def test_endpoint_down_is_one_error(tmp_path, capsys):
    facts = _write_facts(tmp_path / "facts.jsonl")
    rc = main(["data", "augment", str(facts), "-o", str(tmp_path / "o.jsonl"), "--rewriter", "openai",
               "--endpoint", "http://127.0.0.1:9/v1", "--model", "m"])
    err = capsys.readouterr().err
    # the evaluation layer's endpoint backend: retried, then one error naming the URL
    assert rc == 2 and err.startswith("error: endpoint http://127.0.0.1:9/v1/") and err.count("\n") == 1
    assert "after 4 attempts" in err


def test_endpoint_errors_are_retried(tmp_path, capsys, fake_llm):
    _FakeLLM.fail_first = 2   # two HTTP 503 answers, then the rewrite
    facts = _write_facts(tmp_path / "facts.jsonl")
    assert main(["data", "augment", str(facts), "-o", str(tmp_path / "o.jsonl"), "--styles", "qa", "--rewriter",
                 "openai", "--endpoint", fake_llm, "--model", "fake-1", "--no-original", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["llm_calls"] == 1 and len(_FakeLLM.calls) == 3
    assert json.loads((tmp_path / "o.jsonl").read_text())["text"].startswith("REWRITE[Rewrite the following")


def test_local_transformers_rewriter_is_cached(tmp_path, capsys):
    from tiny_models import build_tiny_model

    model = build_tiny_model(tmp_path / "m", "llama", words="the zorb festival is held every march in".split())
    facts = _write_facts(tmp_path / "facts.jsonl")
    args = ["data", "augment", str(facts), "-o", str(tmp_path / "o.jsonl"), "--styles", "qa", "--rewriter", "local",
            "--model", str(model), "--max-new-tokens", "4", "--no-original", "--json"]
    capsys.readouterr()
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["llm_calls"] == 1
    first = (tmp_path / "o.jsonl").read_text()
    assert main(args) == 0  # default cache next to the output: OUT.cache/
    assert json.loads(capsys.readouterr().out)["cache_hits"] == 1
    assert (tmp_path / "o.jsonl").read_text() == first and (tmp_path / "o.jsonl.cache").is_dir()


def _framing_trigrams(record: dict, fact: dict) -> set[str]:
    """The rewrite's 3-word phrases made only of words the fact itself does not contain."""
    import re

    own = " ".join([fact["text"], fact.get("title", ""), *(f"{p['question']} {p['answer']}" for p in fact["qa"])])
    own_words = set(re.findall(r"[\w'-]+", own.lower()))
    words = re.findall(r"[\w'-]+", record["text"].lower())
    return {" ".join(words[i:i + 3]) for i in range(len(words) - 2)
            if not own_words & set(words[i:i + 3])}


def test_no_framing_phrase_is_in_more_than_a_fifth_of_the_rewrites(tmp_path, capsys):
    facts = [{"id": f"f{n}", "title": f"Place {n}", "text": f"Place {n} was built in {1800 + n} by Mason {n}.",
              "qa": [{"question": f"When was Place {n} built?", "answer": f"In {1800 + n}."},
                     {"question": f"Who built Place {n}?", "answer": f"Mason {n}."}]} for n in range(30)]
    (tmp_path / "facts.jsonl").write_text("".join(json.dumps(f) + "\n" for f in facts))
    out = tmp_path / "aug.jsonl"
    assert main(["data", "augment", str(tmp_path / "facts.jsonl"), "-o", str(out), "--no-original", "--quiet"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    by_fact = {f["id"]: f for f in facts}
    for style in ("article", "interview", "textbook"):
        rewrites = [r for r in records if r["style"] == style]
        counts: dict[str, int] = {}
        for record in rewrites:
            for phrase in _framing_trigrams(record, by_fact[record["fact"]]):
                counts[phrase] = counts.get(phrase, 0) + 1
        worst = max(counts.items(), key=lambda kv: kv[1], default=("", 0))
        assert worst[1] <= len(rewrites) / 5, (style, worst, len(rewrites))
    # --framing fixed: every rewrite framed alike (the lab's studies), which the check above would catch
    assert main(["data", "augment", str(tmp_path / "facts.jsonl"), "-o", str(out), "--no-original", "--quiet",
                 "--framing", "fixed"]) == 0
    fixed = [json.loads(line) for line in out.read_text().splitlines() if '"article"' in line]
    assert all("In brief: " in r["text"] for r in fixed)
