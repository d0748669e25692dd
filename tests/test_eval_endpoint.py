"""The OpenAI-compatible endpoint backend against a small fake server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from skillgraft.cli import main
from skillgraft.errors import UserError
from skillgraft.evaluate import run_suite
from skillgraft.evaluate.backends import GenerationSettings
from skillgraft.evaluate.backends.endpoint import EndpointBackend
from skillgraft.evaluate.metrics.judge import DEFAULT_RUBRIC


class FakeOpenAI(BaseHTTPRequestHandler):
    """Answers deterministically from the request, so tests can check what was sent."""

    requests: list = []
    flaky_left = 0
    delay = 0.0

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out first
            pass

    def do_GET(self):
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "fake-7b"}, {"id": "other"}]})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, payload))
        if type(self).delay:
            time.sleep(type(self).delay)
        if type(self).flaky_left > 0:
            type(self).flaky_left -= 1
            self._send(503, {"error": "busy"})
            return
        if self.path == "/v1/completions":
            text = f" {payload['model']} saw [{payload['prompt']}] t={payload['temperature']}\nQ: more"
            self._send(200, {"choices": [{"index": 0, "text": text}]})
        elif self.path == "/v1/chat/completions":
            messages = payload["messages"]
            if messages[0]["content"] == DEFAULT_RUBRIC:
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": "Grade: 8"}}]})
            else:
                self._send(200, {"choices": [{"message": {"role": "assistant",
                                                          "content": f"chat says {messages[-1]['content']}"}}]})
        else:
            self._send(404, {"error": "no such route"})


@pytest.fixture()
def server():
    FakeOpenAI.requests, FakeOpenAI.flaky_left, FakeOpenAI.delay = [], 0, 0.0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_first_listed_model_completions_and_chat_routes(server):
    backend = EndpointBackend(server)
    assert backend.model == "fake-7b"
    outputs = backend.generate(["2+2=", [{"role": "user", "content": "hi"}]],
                               GenerationSettings(max_new_tokens=5, stop=["\nQ:"]), batch_size=2)
    assert outputs == ["fake-7b saw [2+2=] t=0.0", "chat says hi"]  # greedy -> temperature 0; stop cut
    routes = sorted(path for path, _ in FakeOpenAI.requests)
    assert routes == ["/v1/chat/completions", "/v1/completions"]
    assert all(p["max_tokens"] == 5 and p["stop"] == ["\nQ:"] for _, p in FakeOpenAI.requests)
    named = EndpointBackend(server, model="other")
    assert named.generate(["x"], GenerationSettings())[0].startswith("other saw")


def test_retries_then_succeeds(server):
    backend = EndpointBackend(server, backoff=0.01)
    FakeOpenAI.flaky_left = 2
    assert backend.generate(["a"], GenerationSettings())[0].startswith("fake-7b")
    assert len(FakeOpenAI.requests) == 3


def test_timeout_and_refusal_are_user_errors(server):
    backend = EndpointBackend(server, timeout=0.2, retries=1, backoff=0.01)
    FakeOpenAI.delay = 1.0
    with pytest.raises(UserError, match=r"/v1/completions: no answer within 0.2s after 2 attempts"):
        backend.generate(["a"], GenerationSettings())
    with pytest.raises(UserError, match="connection failed"):
        EndpointBackend("http://127.0.0.1:9/v1", retries=0)
    FakeOpenAI.delay = 0.0
    with pytest.raises(UserError, match="cannot score choices by log-likelihood"):
        backend.loglik(["a"], [["b", "c"]], GenerationSettings())


def test_eval_cli_on_an_endpoint_with_a_judge(server, tmp_path, capsys):
    items = [{"id": "q1", "prompt": "capital of France?", "reference": "Paris", "keywords": "other saw"},
             {"id": "q2", "messages": [{"role": "user", "content": "hello"}], "reference": "hi", "keywords": "hello"}]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    (tmp_path / "suite.yaml").write_text(
        f"name: remote\nsets:\n  - name: s\n    items: items.jsonl\n"
        f"    metrics: [keyword, {{name: judge, endpoint: '{server}'}}]\n")
    rc = main(["eval", server, "--suite", str(tmp_path / "suite.yaml"), "--json", "--endpoint-model", "other"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    results = json.loads(captured.out)
    # a suite that does not say `chat:` asks raw prompts of an endpoint (its template cannot be seen)
    assert results["settings"]["models"][server] == {"backend": "endpoint", "label": server, "base_url": server,
                                                      "served_model": "other", "chat_applied": {"s": False}}
    assert results["settings"]["judge"]["rubric"] == DEFAULT_RUBRIC
    assert [r["output"] for r in results["items"]] == ["other saw [capital of France?] t=0.0\nQ: more", "chat says hello"]
    assert results["scores"][server]["s"] == {"keyword": 1.0, "judge": 8.0}
    assert results["items"][0]["details"]["judge.reply"] == "Grade: 8"


def test_run_suite_refuses_a_dead_endpoint(tmp_path):
    (tmp_path / "i.jsonl").write_text(json.dumps({"prompt": "x"}) + "\n")
    (tmp_path / "s.yaml").write_text("name: s\nsets: [{name: a, items: i.jsonl, metrics: [repetition]}]\n")
    with pytest.raises(UserError, match="http://127.0.0.1:9/v1/models"):
        run_suite("http://127.0.0.1:9/v1", tmp_path / "s.yaml", log=None)
