"""Tests for ragrec.generation._openai against a real HTTP server on loopback, scripted per
test (status codes, delays, bodies), with prompts rendered by the real tokenizer."""

from __future__ import annotations

import functools
import importlib.util
import json
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from ragrec.errors import ConfigError
from ragrec.generation import (
    BackendError,
    Explainer,
    ExplainItem,
    GeneratorConfig,
    RerankConfig,
    VerbalizerRanker,
    make_generator,
)
from ragrec.generation._openai import OpenAIGenerator, load_tokenizer
from ragrec.generation._transformers import HFTokenizer
from ragrec.prompting import PromptBuilder, PromptConfig, RenderedPrompt
from ragrec.retrieval import ChannelShare, Evidence, HistoryEvidence

TITLES = [
    "Toy Story (1995)",
    "Jumanji (1995)",
    "The Matrix (1999)",
    "Fargo (1996)",
    "Groundhog Day (1993)",
    "Blade Runner (1982)",
    "Up (2009)",
    "Psycho (1960)",
]
HISTORY = [(11, "Heat (1995)"), (12, "Casablanca (1942)")]


# --------------------------------------------------------------------------------------
# the scripted server


@dataclass(frozen=True)
class Reply:
    """One scripted answer: status, body (a dict is sent as JSON) and a delay before it."""

    status: int = 200
    body: dict[str, Any] | str = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timeout) breaks the pipe; that is expected here."""


class FakeServer:
    """A completions server on 127.0.0.1: answers from ``script`` first, then from
    ``respond`` (default: 500), and records every request and how many were in flight."""

    def __init__(self) -> None:
        self.script: deque[Reply] = deque()
        self.respond: Callable[[dict[str, Any]], Reply] = lambda body: Reply(500, "no script")
        self.seen: list[Seen] = []
        self.finished: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.httpd = _QuietServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw)
                with server.lock:
                    server.seen.append(Seen(self.path, dict(self.headers.items()), body))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    reply = server.script.popleft() if server.script else None
                try:
                    reply = reply or server.respond(body)
                    server.stop.wait(reply.delay)
                finally:
                    # leave the count before answering: the client may send its next
                    # request as soon as it reads this answer
                    with server.lock:
                        server.in_flight -= 1
                        server.finished.append(body)
                payload = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                data = payload.encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [s.body for s in self.seen]

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer()
    srv.thread.start()
    yield srv
    srv.close()


@pytest.fixture
def dead_url() -> str:
    """A loopback URL where nothing listens (a port just bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def completion(top: dict[str, float] | None, text: str = "A") -> dict[str, Any]:
    """A completions response with one token and its top log-probabilities."""
    logprobs = None if top is None else {"tokens": [text], "top_logprobs": [top]}
    return {"object": "text_completion", "choices": [{"text": text, "logprobs": logprobs}]}


# --------------------------------------------------------------------------------------
# generators and prompts


@functools.cache
def bundled_tokenizer() -> HFTokenizer:
    """The tokenizer the openai backend loads for the bundled model name, once per module."""
    return load_tokenizer(GeneratorConfig(backend="openai", base_url="http://127.0.0.1:9/v1"))


class Sleeps(list[float]):
    """A ``sleep`` that records its delays instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_client(url: str, sleep: Sleeps | None = None, **options: Any) -> OpenAIGenerator:
    config = GeneratorConfig(backend="openai", base_url=url, **options)
    gen = OpenAIGenerator(config, sleep=sleep if sleep is not None else Sleeps())
    gen._tokenizer = bundled_tokenizer()  # share the loaded tokenizer (same source)
    return gen


def render(n: int, offset: int = 0) -> RenderedPrompt:
    """A real ranking prompt with ``n`` candidates (labels A.. in the given order)."""
    builder = PromptBuilder(bundled_tokenizer(), PromptConfig(shuffle=False))
    titles = [TITLES[(offset + i) % len(TITLES)] for i in range(n)]
    return builder.render(history=HISTORY, candidates=list(enumerate(titles)))


def label_ids(labels: tuple[str, ...]) -> list[int]:
    out = []
    for label in labels:
        ids = bundled_tokenizer().hf.encode(label, add_special_tokens=False)
        assert len(ids) == 1
        out.append(ids[0])
    return out


def log_softmax(values: list[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    return arr - np.log(np.exp(arr).sum())


# --------------------------------------------------------------------------------------
# ranking


class TestLabelLogprobs:
    def test_request_body_with_logit_bias(self, server: FakeServer) -> None:
        server.respond = lambda body: Reply(body=completion({"A": -0.5, "B": -1.5, "C": -2.0}))
        prompts = [render(3), render(5, offset=2)]
        gen = make_client(server.url, model="served-name", top_logprobs=7, concurrency=1)
        gen.label_logprobs(prompts)
        assert len(server.seen) == 2
        for prompt, seen in zip(prompts, server.seen, strict=True):
            assert seen.path == "/v1/completions"
            body = seen.body
            assert body["model"] == "served-name"
            assert body["prompt"] == prompt.text
            assert body["max_tokens"] == 1
            assert body["temperature"] == 0
            assert body["logprobs"] == 7
            # the bias covers exactly this prompt's labels, not the widest prompt's
            ids = label_ids(prompt.labels)
            assert sorted(body["logit_bias"]) == sorted(str(i) for i in ids)
            assert all(v > 0 for v in body["logit_bias"].values())
            assert "logprob_token_ids" not in body
        assert prompts[0].text.count(TITLES[0]) == 1  # real rendered prompts, verbatim
        assert prompts[0].labels == ("A", "B", "C")

    def test_request_body_for_vllm_server(self, server: FakeServer) -> None:
        server.respond = lambda body: Reply(body=completion({"A": -0.5, "B": -1.5, "C": -2.0}))
        prompts = [render(3), render(5)]
        gen = make_client(server.url, vllm_server=True, concurrency=1)
        gen.label_logprobs(prompts)
        for prompt, body in zip(prompts, server.bodies, strict=True):
            n = len(prompt.labels)
            assert body["prompt"] == prompt.text
            assert body["logprobs"] == n
            assert body["logprob_token_ids"] == label_ids(prompt.labels)
            assert "logit_bias" not in body
            assert body["max_tokens"] == 1

    def test_parses_and_renormalises(self, server: FakeServer) -> None:
        top = {"C": -0.5, "A": -1.0, "B": -2.0, " the": -4.0}
        server.respond = lambda body: Reply(body=completion(top))
        out = make_client(server.url).label_logprobs([render(3)])
        assert out.shape == (1, 3)
        np.testing.assert_allclose(out[0], log_softmax([-1.0, -2.0, -0.5]))
        assert np.exp(out[0]).sum() == pytest.approx(1.0)

    def test_missing_labels_get_the_floor(self, server: FakeServer) -> None:
        # D and E are not among the returned tokens: each gets the lowest value - 1
        top = {"B": -0.2, "A": -2.5, "Hello": -7.0, "C": -3.0}
        server.respond = lambda body: Reply(body=completion(top))
        out = make_client(server.url).label_logprobs([render(5)])
        np.testing.assert_allclose(out[0], log_softmax([-2.5, -0.2, -3.0, -8.0, -8.0]))
        assert np.exp(out[0]).sum() == pytest.approx(1.0)
        assert int(np.argmax(out[0])) == 1

    def test_rows_of_different_widths_are_padded(self, server: FakeServer) -> None:
        top = {"A": -1.0, "B": -1.1, "C": -1.2, "D": -1.3, "E": -1.4, "F": -1.5}
        server.respond = lambda body: Reply(body=completion(top))
        out = make_client(server.url).label_logprobs([render(2), render(5), render(3)])
        assert out.shape == (3, 5)
        np.testing.assert_allclose(out[0, :2], log_softmax([-1.0, -1.1]))
        np.testing.assert_allclose(out[1], log_softmax([-1.0, -1.1, -1.2, -1.3, -1.4]))
        np.testing.assert_allclose(out[2, :3], log_softmax([-1.0, -1.1, -1.2]))
        assert np.isneginf(out[0, 2:]).all()
        assert np.isneginf(out[2, 3:]).all()
        for row, n in enumerate((2, 5, 3)):
            assert np.exp(out[row, :n]).sum() == pytest.approx(1.0)

    def test_no_prompts_sends_nothing(self, server: FakeServer) -> None:
        out = make_client(server.url).label_logprobs([])
        assert out.shape == (0, 0)
        assert server.seen == []

    def test_order_is_kept_when_answers_arrive_out_of_order(self, server: FakeServer) -> None:
        prompts = [render(4, offset=k) for k in range(4)]
        # each prompt's answer favours a different label; the first prompt is answered last
        winners = ["A", "B", "C", "D"]

        def respond(body: dict[str, Any]) -> Reply:
            k = next(i for i, p in enumerate(prompts) if p.text == body["prompt"])
            top = {label: (-0.1 if label == winners[k] else -3.0) for label in "ABCD"}
            return Reply(body=completion(top), delay=0.05 * (len(prompts) - k))

        server.respond = respond
        out = make_client(server.url, concurrency=4).label_logprobs(prompts)
        answered = [
            next(i for i, p in enumerate(prompts) if p.text == b["prompt"]) for b in server.finished
        ]
        assert answered != [0, 1, 2, 3]  # the server really answered out of order
        assert server.max_in_flight > 1
        assert [int(np.argmax(row)) for row in out] == [0, 1, 2, 3]

    def test_concurrency_limit(self, server: FakeServer) -> None:
        server.respond = lambda body: Reply(body=completion({"A": -0.1, "B": -2.0}), delay=0.2)
        out = make_client(server.url, concurrency=2).label_logprobs(
            [render(2, k) for k in range(6)]
        )
        assert out.shape == (6, 2)
        assert len(server.seen) == 6
        assert server.max_in_flight == 2

    def test_one_request_at_a_time(self, server: FakeServer) -> None:
        server.respond = lambda body: Reply(body=completion({"A": -0.1, "B": -2.0}), delay=0.02)
        make_client(server.url, concurrency=1).label_logprobs([render(2, k) for k in range(3)])
        assert len(server.seen) == 3
        assert server.max_in_flight == 1


# --------------------------------------------------------------------------------------
# failures and retries


class TestRetries:
    def test_503_twice_then_success(
        self, server: FakeServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # pin the jitter (uniform in [0.5, 1.5)) at its lowest: delays 0.25 s, then 0.5 s
        monkeypatch.setattr("ragrec.generation._openai.random.random", lambda: 0.0)
        server.script.extend([Reply(503, "busy"), Reply(503, "busy")])
        server.respond = lambda body: Reply(body=completion({"A": -0.1, "B": -3.0}))
        sleeps = Sleeps()
        gen = make_client(server.url, sleep=sleeps, max_retries=2)
        out = gen.label_logprobs([render(2)])
        assert int(np.argmax(out[0])) == 0
        assert len(server.seen) == 3
        assert gen.retries == 2
        assert gen.requests == 3
        assert sleeps == pytest.approx([0.25, 0.5])

    def test_backoff_grows_with_jitter(self, server: FakeServer) -> None:
        server.respond = lambda body: Reply(502, "bad gateway")
        sleeps = Sleeps()
        gen = make_client(server.url, sleep=sleeps, max_retries=4)
        with pytest.raises(BackendError):
            gen.generate(["hi"])
        assert len(sleeps) == 4
        for attempt, delay in enumerate(sleeps):
            base = 0.5 * 2**attempt
            assert 0.5 * base <= delay < 1.5 * base
        assert sleeps[2] > sleeps[0]
        assert sleeps[3] > sleeps[1]

    @pytest.mark.parametrize("status", [408, 409, 429, 500, 504])
    def test_retryable_statuses(self, server: FakeServer, status: int) -> None:
        server.script.append(Reply(status, "try again"))
        server.respond = lambda body: Reply(body=completion(None, text="ok"))
        gen = make_client(server.url, max_retries=1)
        assert gen.generate(["hi"]) == ["ok"]
        assert gen.retries == 1
        assert len(server.seen) == 2

    @pytest.mark.parametrize("status", [400, 401, 404, 422])
    def test_client_error_is_not_retried(self, server: FakeServer, status: int) -> None:
        server.respond = lambda body: Reply(status, '{"error": "model not found: x"}')
        sleeps = Sleeps()
        gen = make_client(server.url, sleep=sleeps, max_retries=3)
        with pytest.raises(BackendError, match=f"HTTP {status}") as info:
            gen.label_logprobs([render(2)])
        assert "model not found: x" in str(info.value)
        assert f"{server.url}/completions" in str(info.value)
        assert len(server.seen) == 1
        assert sleeps == []
        assert gen.retries == 0

    def test_always_500_gives_up_with_a_fix(self, server: FakeServer) -> None:
        server.respond = lambda body: Reply(500, "engine dead")
        sleeps = Sleeps()
        gen = make_client(server.url, sleep=sleeps, max_retries=3)
        with pytest.raises(BackendError) as info:
            gen.label_logprobs([render(2)])
        message = str(info.value)
        assert len(server.seen) == 4
        assert len(sleeps) == 3
        assert f"{server.url}/completions" in message
        assert "failed 4 time(s)" in message
        assert "HTTP 500: engine dead" in message
        assert "vllm serve" in message
        assert "base_url" in message

    def test_no_retries(self, server: FakeServer) -> None:
        server.respond = lambda body: Reply(503, "busy")
        sleeps = Sleeps()
        with pytest.raises(BackendError, match="failed 1 time"):
            make_client(server.url, sleep=sleeps, max_retries=0).generate(["hi"])
        assert len(server.seen) == 1
        assert sleeps == []

    def test_timeout(self, server: FakeServer) -> None:
        server.respond = lambda body: Reply(body=completion({"A": -0.1}), delay=5.0)
        sleeps = Sleeps()
        gen = make_client(server.url, sleep=sleeps, timeout=0.2, max_retries=1)
        with pytest.raises(BackendError, match=r"timed out after 0\.2 s") as info:
            gen.label_logprobs([render(2)])
        assert f"{server.url}/completions" in str(info.value)
        assert len(server.seen) == 2  # timeouts are retried
        assert len(sleeps) == 1

    def test_connection_refused(self, dead_url: str) -> None:
        sleeps = Sleeps()
        gen = make_client(dead_url, sleep=sleeps, max_retries=2)
        with pytest.raises(BackendError, match="unreachable") as info:
            gen.label_logprobs([render(2)])
        assert f"{dead_url}/completions" in str(info.value)
        assert "failed 3 time(s)" in str(info.value)
        assert gen.requests == 3
        assert len(sleeps) == 2

    def test_invalid_json(self, server: FakeServer) -> None:
        server.respond = lambda body: Reply(200, "<html>proxy error</html>")
        sleeps = Sleeps()
        gen = make_client(server.url, sleep=sleeps)
        with pytest.raises(BackendError, match="invalid JSON"):
            gen.label_logprobs([render(2)])
        assert len(server.seen) == 1
        assert sleeps == []

    @pytest.mark.parametrize(
        "body",
        [
            completion(None),
            {"choices": []},
            {"choices": [{"text": "A", "logprobs": {"top_logprobs": []}}]},
            {"choices": [{"text": "A", "logprobs": {"top_logprobs": [None]}}]},
            {"error": "no choices"},
            [1, 2],
        ],
        ids=["null-logprobs", "no-choices", "no-steps", "null-step", "no-key", "list"],
    )
    def test_missing_top_logprobs(self, server: FakeServer, body: Any) -> None:
        server.respond = lambda b: Reply(body=json.dumps(body))
        with pytest.raises(BackendError, match="top_logprobs"):
            make_client(server.url).label_logprobs([render(2)])

    def test_empty_top_logprobs(self, server: FakeServer) -> None:
        server.respond = lambda body: Reply(body=completion({}))
        with pytest.raises(BackendError, match="empty top_logprobs"):
            make_client(server.url).label_logprobs([render(2)])

    def test_one_failing_prompt_fails_the_batch(self, server: FakeServer) -> None:
        prompts = [render(2, k) for k in range(4)]

        def respond(body: dict[str, Any]) -> Reply:
            if body["prompt"] == prompts[2].text:
                return Reply(400, "prompt too long")
            return Reply(body=completion({"A": -0.1, "B": -1.0}))

        server.respond = respond
        with pytest.raises(BackendError, match="prompt too long"):
            make_client(server.url, concurrency=2).label_logprobs(prompts)

    def test_a_failure_stops_sending_the_rest(self, server: FakeServer) -> None:
        # a server that fails every request must not be sent the whole batch (each with
        # its retries) before the error surfaces: that made degrading take minutes
        server.respond = lambda body: Reply(400, "bad request", delay=0.05)
        prompts = [render(2, k) for k in range(20)]
        with pytest.raises(BackendError, match="HTTP 400"):
            make_client(server.url, concurrency=2).label_logprobs(prompts)
        assert 1 <= len(server.seen) < 10


# --------------------------------------------------------------------------------------
# API key


class TestApiKey:
    def test_bearer_token_from_the_named_variable(
        self, server: FakeServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("RAGREC_TEST_KEY", "sk-test-123")
        server.respond = lambda body: Reply(body=completion(None, text="x"))
        make_client(server.url, api_key_env="RAGREC_TEST_KEY").generate(["hi"])
        headers = {k.lower(): v for k, v in server.seen[0].headers.items()}
        assert headers["authorization"] == "Bearer sk-test-123"

    @pytest.mark.parametrize("value", [None, ""])
    def test_no_header_without_a_key(
        self, server: FakeServer, monkeypatch: pytest.MonkeyPatch, value: str | None
    ) -> None:
        if value is None:
            monkeypatch.delenv("RAGREC_TEST_KEY", raising=False)
        else:
            monkeypatch.setenv("RAGREC_TEST_KEY", value)
        # a key in the default variable must not leak when another one is named
        monkeypatch.setenv("OPENAI_API_KEY", "sk-other")
        server.respond = lambda body: Reply(body=completion(None, text="x"))
        make_client(server.url, api_key_env="RAGREC_TEST_KEY").generate(["hi"])
        headers = {k.lower() for k in server.seen[0].headers}
        assert "authorization" not in headers


# --------------------------------------------------------------------------------------
# generation


class TestGenerate:
    def test_json_schema_request(self, server: FakeServer) -> None:
        server.respond = lambda body: Reply(body=completion(None, text='{"reason": "x"}'))
        schema = {"type": "object", "properties": {"reason": {"type": "string"}}}
        gen = make_client(server.url, model="served-name")
        out = gen.generate(["Explain."], max_tokens=33, json_schema=schema)
        assert out == ['{"reason": "x"}']
        body = server.bodies[0]
        assert server.seen[0].path == "/v1/completions"
        assert body["model"] == "served-name"
        assert body["prompt"] == "Explain."
        assert body["max_tokens"] == 33
        assert body["temperature"] == 0
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema, "strict": True},
        }

    def test_plain_request_and_order(self, server: FakeServer) -> None:
        def respond(body: dict[str, Any]) -> Reply:
            k = int(body["prompt"].removeprefix("prompt "))
            return Reply(body=completion(None, text=f"answer {k}"), delay=0.02 * (5 - k))

        server.respond = respond
        out = make_client(server.url, concurrency=3).generate([f"prompt {k}" for k in range(5)])
        assert out == [f"answer {k}" for k in range(5)]
        assert all("response_format" not in b for b in server.bodies)
        assert all(b["max_tokens"] == 64 for b in server.bodies)

    @pytest.mark.parametrize("max_tokens", [0, -1])
    def test_max_tokens_below_one(self, server: FakeServer, max_tokens: int) -> None:
        with pytest.raises(ConfigError, match=f"max_tokens={max_tokens}"):
            make_client(server.url).generate(["hi"], max_tokens=max_tokens)
        assert server.seen == []

    def test_missing_text(self, server: FakeServer) -> None:
        server.respond = lambda body: Reply(body={"choices": []})
        with pytest.raises(BackendError, match=r"choices\[0\]\.text"):
            make_client(server.url).generate(["hi"])


# --------------------------------------------------------------------------------------
# the ranker and the explainer on top


REQUESTS: list[dict[str, Any]] = [
    {"user_key": 7, "history": HISTORY, "candidates": list(enumerate(TITLES[:5]))},
    {"user_key": "b", "history": HISTORY[:1], "candidates": list(enumerate(TITLES[3:6]))},
]


class TestOnTop:
    def test_ranker_scores_through_the_server(self, server: FakeServer) -> None:
        top = {"A": -3.0, "B": -0.1, "C": -2.0, "D": -4.0, "E": -5.0}
        server.respond = lambda body: Reply(body=completion(top))
        gen = make_client(server.url)
        builder = PromptBuilder(gen.tokenizer, PromptConfig(shuffle=False))
        scores = VerbalizerRanker(gen, builder, RerankConfig()).score_batch(REQUESTS)
        assert [s.degraded for s in scores] == [False, False]
        np.testing.assert_allclose(scores[0].logprobs, log_softmax([-3.0, -0.1, -2.0, -4.0, -5.0]))
        np.testing.assert_allclose(scores[1].logprobs, log_softmax([-3.0, -0.1, -2.0]))
        sent = sorted(b["prompt"] for b in server.bodies)
        assert sent == sorted(s.prompts[0].text for s in scores)

    def test_ranker_degrades_when_the_server_is_down(self, dead_url: str) -> None:
        gen = make_client(dead_url, max_retries=1)
        builder = PromptBuilder(gen.tokenizer, PromptConfig(seed=1))
        scores = VerbalizerRanker(gen, builder, RerankConfig(permutations=2)).score_batch(REQUESTS)
        assert len(scores) == 2
        for request, result in zip(REQUESTS, scores, strict=True):
            n = len(request["candidates"])
            assert result.degraded
            assert result.reason is not None
            assert result.reason.startswith("BackendError:")
            assert "unreachable" in result.reason
            assert dead_url in result.reason
            np.testing.assert_array_equal(result.logprobs, np.zeros(n))
            assert len(result.prompts) == 2

    def test_explainer_keeps_the_evidence_sentence_for_a_bad_rewrite(
        self, server: FakeServer
    ) -> None:
        server.respond = lambda body: Reply(body=completion(None, text=' and "Jaws".'))
        results = Explainer(make_client(server.url)).explain(
            [ExplainItem(1, "Toy Story (1995)", _EVIDENCE)], rewrite=1
        )
        (result,) = results
        assert result.source == "template"
        assert result.text == result.template
        assert result.rejected is not None
        assert "Jaws" in result.rejected
        assert len(server.seen) == 1  # no retry
        (body,) = server.bodies
        assert body["stop"] == ["\n"]
        assert "response_format" not in body
        assert body["prompt"].startswith("<|im_start|>")
        assert body["prompt"].endswith("You may enjoy Toy Story (1995)")

    def test_explainer_accepts_a_grounded_rewrite(self, server: FakeServer) -> None:
        answer = " because you watched Heat (1995)."
        server.respond = lambda body: Reply(body=completion(None, text=answer))
        (result,) = Explainer(make_client(server.url)).explain(
            [ExplainItem(1, "Toy Story (1995)", _EVIDENCE)], rewrite=1
        )
        assert result.source == "llm"
        assert result.text == "You may enjoy Toy Story (1995) because you watched Heat (1995)."
        assert result.cited == (7,)

    def test_explainer_flags_a_backend_error(self, server: FakeServer) -> None:
        server.respond = lambda body: Reply(200, "not json at all")
        (result,) = Explainer(make_client(server.url)).explain(
            [ExplainItem(1, "Toy Story (1995)", _EVIDENCE)], rewrite=1
        )
        assert result.source == "template"
        assert result.text == result.template
        assert result.rejected is not None
        assert result.rejected.startswith("backend error:")
        assert "invalid JSON" in result.rejected


_EVIDENCE = Evidence(
    channels=(ChannelShare("transition", "transition", 1.0, 1),),
    history=(HistoryEvidence(7, "Heat (1995)", 1.0, ("transition",)),),
)


# --------------------------------------------------------------------------------------
# config, factory, tokenizer


class TestConfig:
    def test_openai_needs_base_url(self) -> None:
        with pytest.raises(ValidationError, match="base_url"):
            GeneratorConfig(backend="openai")

    def test_unknown_key_is_an_error(self) -> None:
        with pytest.raises(ValidationError, match="base_ur"):
            GeneratorConfig.model_validate(
                {"backend": "openai", "base_url": "http://x/v1", "base_ur": "y"}
            )

    def test_factory_makes_an_openai_generator(self, server: FakeServer) -> None:
        gen = make_generator(GeneratorConfig(backend="openai", base_url=server.url, model="m"))
        assert isinstance(gen, OpenAIGenerator)
        assert gen.info.backend == "openai"
        assert gen.info.model == "m"
        assert gen.info.device == server.url
        assert server.seen == []  # constructing sends nothing

    def test_vllm_backend_missing_has_an_install_hint(self) -> None:
        if importlib.util.find_spec("vllm") is not None:
            pytest.skip("vllm is installed in this venv")
        with pytest.raises(ConfigError, match="vllm") as info:
            make_generator(GeneratorConfig(backend="vllm"))
        assert "setup" in str(info.value)

    def test_bundled_tokenizer_is_the_generators(self) -> None:
        tok = bundled_tokenizer()
        assert tok.hf.chat_template is not None
        assert tok.label_ids(["A", "B"]) == label_ids(("A", "B"))

    def test_unknown_remote_model_needs_a_tokenizer(self, server: FakeServer) -> None:
        gen = OpenAIGenerator(
            GeneratorConfig(backend="openai", base_url=server.url, model="org/remote-model")
        )
        with pytest.raises(ConfigError, match="tokenizer"):
            _ = gen.tokenizer
        with pytest.raises(ConfigError, match="tokenizer"):
            gen.label_logprobs([render(2)])
        assert server.seen == []
