"""`run_suite` and `skillgraft eval`: JSON shape, batch-size invariance, resume, bad input."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from skillgraft.cli import main  # noqa: E402
from skillgraft.evaluate import run_suite  # noqa: E402
from skillgraft.evaluate.backends import Backend  # noqa: E402
from skillgraft.evaluate.backends.hf import HFBackend  # noqa: E402
from skillgraft.evaluate.results import mean  # noqa: E402
from tiny_models import build_tiny_model, build_tokenizer, perturb_model  # noqa: E402


PROMPTS = ["what is the capital of", "who likes the city", "Q : one plus two is", "the country name is",
           "where is the city", "how many", "A : three plus four", "who sees the capital ?",
           "when is the", "name a country"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    base = build_tiny_model(root / "base", "llama", seed=0, dtype="float32")
    other = perturb_model(base, root / "other", seed=1, scale=0.5)
    return str(base), str(other)


@pytest.fixture()
def suite(tmp_path):
    items = []
    for n, prompt in enumerate(PROMPTS):
        items.append({"id": f"p{n}", "prompt": prompt, "reference": "the capital city", "keywords": "the;city",
                      "choices": ["one", "two", "three"], "answer": n % 3})
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    (tmp_path / "corpus.txt").write_text("the capital city is the city\nwho likes the country\n")
    (tmp_path / "suite.yaml").write_text(
        "name: mini\ngeneration: {max_new_tokens: 6}\nsets:\n"
        "  - name: all\n    items: items.jsonl\n    language: en\n"
        "    metrics: [keyword, rouge2, exact_match, choice_loglik, choice_generated, language,\n"
        "              {name: style, markers: {q: '\\?'}}, repetition, {name: memorization, corpus: corpus.txt, n: 2}]\n")
    return tmp_path / "suite.yaml"


def test_eval_json_shape_and_set_means(models, suite, capsys):
    rc = main(["eval", *models, "--suite", str(suite), "--json", "--batch-size", "4"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    results = json.loads(captured.out)  # stdout holds exactly one JSON object
    assert set(results) >= {"settings", "scores", "items"}
    settings = results["settings"]
    assert settings["generation"]["max_new_tokens"] == 6 and settings["generation"]["do_sample"] is False
    assert settings["tool_version"] and settings["models"][models[0]]["backend"] == "transformers"
    assert settings["models"][models[0]]["chat_template_sha256"]
    assert list(results["scores"]) == list(models)
    assert len(results["items"]) == 2 * len(PROMPTS)
    for row in results["items"]:
        assert set(row) >= {"model", "set", "id", "prompt", "output", "metrics"}
        for name in ("keyword", "rouge2", "exact_match", "choice_loglik", "choice_generated", "language",
                     "repetition", "memorization", "style.polite", "style.marker.q"):
            assert name in row["metrics"], name
        assert len(row["details"]["choice_loglik.logliks"]) == 3
    for model in models:
        per_set = results["scores"][model]["all"]
        rows = [r for r in results["items"] if r["model"] == model]
        for metric, value in per_set.items():
            assert value == pytest.approx(mean(r["metrics"][metric] for r in rows))
    # the two models really differ, and retention is after / before against the first one
    assert [r["output"] for r in results["items"][:10]] != [r["output"] for r in results["items"][10:]]
    ratio = results["retention"][models[1]]["all"]
    for metric, value in ratio.items():
        if value is not None:
            before = results["scores"][models[0]]["all"][metric]
            assert value == pytest.approx(results["scores"][models[1]]["all"][metric] / before)


def test_batch_size_changes_speed_never_outputs(models, suite):
    one = run_suite(models[0], suite, batch_size=1, log=None)
    many = run_suite(models[0], suite, batch_size=7, log=None)
    assert [r["output"] for r in one["items"]] == [r["output"] for r in many["items"]]
    assert [r["metrics"] for r in one["items"]] == [r["metrics"] for r in many["items"]]


class Interrupting(Backend):
    """Wraps a backend; raises KeyboardInterrupt on the n-th generate call, counts prompts."""

    kind = "transformers"

    def __init__(self, inner, fail_at=None):
        super().__init__(inner.label)
        self.inner, self.fail_at, self.calls, self.prompts = inner, fail_at, 0, 0

    def generate(self, prompts, settings, batch_size=8):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        self.prompts += len(prompts)
        return self.inner.generate(prompts, settings, batch_size)

    def loglik(self, *args, **kwargs):
        return self.inner.loglik(*args, **kwargs)

    def describe(self):
        return self.inner.describe()

    @property
    def has_chat_template(self):
        return self.inner.has_chat_template


def test_interrupted_run_resumes_from_partial_results(models, suite, tmp_path):
    inner = HFBackend.from_path(models[0])
    out = tmp_path / "res" / "results.json"
    # batch_size 1 -> chunks of 4 items: the interruption comes after 8 items are logged
    with pytest.raises(KeyboardInterrupt):
        run_suite(Interrupting(inner, fail_at=3), suite, output=out, batch_size=1, log=None)
    partial = out.with_name("results.json.partial.jsonl")
    assert partial.is_file() and not out.exists()
    assert len(partial.read_text().splitlines()) == 1 + 1 + 8  # header, model info, 8 items
    resumed = Interrupting(inner)
    results = run_suite(resumed, suite, output=out, batch_size=1, log=None)
    assert resumed.prompts == len(PROMPTS) - 8  # only the missing items were generated
    assert not partial.exists() and json.loads(out.read_text())["scores"] == results["scores"]
    fresh = run_suite(inner, suite, batch_size=1, log=None)
    assert [r["output"] for r in results["items"]] == [r["output"] for r in fresh["items"]]


def test_in_memory_models_by_label(models, suite):
    backend = HFBackend.from_path(models[0])
    results = run_suite({"step-0": (backend.model, backend.tokenizer)}, suite, log=None)
    assert list(results["scores"]) == ["step-0"] and results["items"][0]["model"] == "step-0"


def test_eval_bad_inputs_exit_2_with_one_error_line(models, suite, tmp_path, capsys):
    cases = [
        (["eval", str(tmp_path / "missing"), "--suite", str(suite)], "does not exist"),
        (["eval", models[0], "--suite", str(tmp_path / "nope.yaml")], "no such file"),
        (["eval", models[0], "--suite", str(suite), "--batch-size", "0"], "--batch-size"),
    ]
    no_template = build_tiny_model(tmp_path / "plain", "llama", tokenizer=build_tokenizer(chat_template=None))
    (tmp_path / "chat.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    (tmp_path / "chat.yaml").write_text("name: c\nsets: [{name: s, items: chat.jsonl, metrics: [repetition]}]\n")
    cases.append((["eval", str(no_template), "--suite", str(tmp_path / "chat.yaml")], "no chat template"))
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and needle in err[-1], err
        assert not any("Traceback" in line for line in err)
