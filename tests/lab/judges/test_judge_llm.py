"""LLM judges: the strict parser, the versioned prompt, the HTTP client's retries/timeouts/concurrency against a real
`http.server` on 127.0.0.1 that misbehaves on purpose, one-line errors, and the in-process HF judge."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from lab.errors import LabError
from lab.judges import Answer, make_judge
from lab.judges.llm import OpenAIJudge
from lab.judges.prompt import ParseError, load_prompt, parse_verdict
from tests.conftest import free_port

GOOD = '{"detected": true, "identified": true, "coherent": true, "reason": "claims and names it"}'
PREFILL = "Yes, I detect an injected thought. The thought is about"


# ------------------------------------------------------------------------------------------------ parser and prompt
@pytest.mark.parametrize(
    "raw, expected",
    [
        (GOOD, (True, True, True, "claims and names it")),
        ("  ```json\n" + GOOD + "\n```  ", (True, True, True, "claims and names it")),
        (
            '{"detected": false, "identified": false, "coherent": false, "reason": "gibberish", "extra": 1}',
            (False, False, False, "gibberish"),
        ),
    ],
)
def test_parse_accepts_json_and_a_json_fence(raw, expected):
    assert parse_verdict(raw, forced=False) == expected


@pytest.mark.parametrize(
    "raw, why",
    [
        ("Sure! " + GOOD, "not a JSON object"),
        ("```json\n" + GOOD + "\n``` and that is my answer", "not a JSON object"),
        (GOOD.replace('"', "'"), "not a JSON object"),
        (
            '{"detected": "yes", "identified": false, "coherent": true, "reason": "r"}',
            "'detected' must be true or false",
        ),
        ('{"detected": true, "coherent": true, "reason": "r"}', "missing key 'identified'"),
        ('{"detected": false, "identified": true, "coherent": true, "reason": "r"}', "identified is true while"),
        ("[true, true, true]", "not a JSON object"),
        ('{"detected": true, "identified": true, "coherent": true, "reason": 3}', "'reason' must be a string"),
        ("", "not a JSON object"),
    ],
)
def test_parse_rejects_anything_looser(raw, why):
    with pytest.raises(ParseError, match=why):
        parse_verdict(raw, forced=False)


def test_forced_answers_are_only_asked_about_identification():
    verdict = parse_verdict('{"identified": true, "reason": "names dust"}', forced=True)
    assert verdict == (True, True, None, "names dust")
    with pytest.raises(ParseError, match="missing key 'identified'"):
        parse_verdict('{"detected": true, "reason": "r"}', forced=True)
    prompt = load_prompt()
    assert prompt.version == "prompt-v1"
    forced = prompt.messages(Answer("Dust", " dust, I think.", forced=True, prefill=PREFILL))[1]["content"]
    assert PREFILL in forced and "Dust" in forced and '"detected"' not in forced
    plain = prompt.messages(Answer("Dust", "Yes, I notice dust.\nUser: and now?"))[1]["content"]
    assert '"detected"' in plain and "Yes, I notice dust." in plain and "and now?" not in plain  # invented turn cut


def test_bad_prompt_file_is_one_line_error(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("version: v9\nsystem: hi\n")
    with pytest.raises(LabError, match="needs non-empty string keys"):
        load_prompt(bad)


# ------------------------------------------------------------------------------------------------ a real HTTP server
class FlakyServer:
    """OpenAI-shaped server on 127.0.0.1; `script` is consumed one action per request, then `default` repeats.

    Actions: ("status", code) → that HTTP error; ("sleep", s) → sleep then reply GOOD; ("reply", text) → a chat
    completion whose content is text; ("body", bytes) → that raw 200 body; ("echo", s) → sleep, then a valid verdict
    whose reason is the "answer <n>" found in the prompt.
    """

    def __init__(self) -> None:
        self.script: list[tuple[str, Any]] = []
        self.default: tuple[str, Any] = ("reply", GOOD)
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.requests.append(body)
                    owner.headers.append(dict(self.headers))
                    action = owner.script.pop(0) if owner.script else owner.default
                    owner.in_flight += 1
                    owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
                if action[0] == "echo":  # sleep, then a valid verdict whose reason is "answer <n>" from the prompt
                    time.sleep(action[1])
                    found = re.search(r"answer \d+", body["messages"][1]["content"])
                    action = ("reply", json.dumps({**json.loads(GOOD), "reason": found.group() if found else "?"}))
                try:
                    self._act(*action)
                finally:
                    with owner.lock:
                        owner.in_flight -= 1

            def _act(self, kind: str, arg: Any) -> None:
                if kind == "sleep":
                    time.sleep(arg)
                    kind, arg = "reply", GOOD
                if kind == "status":
                    return self._send(arg, b'{"error": {"message": "on purpose"}}', {"Retry-After": "0"})
                data = (
                    arg
                    if kind == "body"
                    else json.dumps(
                        {"choices": [{"index": 0, "message": {"role": "assistant", "content": arg}}]}
                    ).encode()
                )
                self._send(200, data, {})

            def _send(self, code: int, data: bytes, extra: dict[str, str]) -> None:
                try:
                    self.send_response(code)
                    for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **extra}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FlakyServer()
    yield s
    s.close()


def judge_for(server: FlakyServer, **kw: Any) -> OpenAIJudge:
    opts = {"base_url": server.url, "model": "judge-x", "backoff": 0.01, "timeout": 5.0} | kw
    return make_judge("openai", **opts)  # type: ignore[return-value]


ANSWER = Answer("Dust", "Yes, I detect an injected thought about dust.")


def test_two_500s_then_valid_json_succeeds_with_exactly_three_requests(server, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-test-123")
    server.script = [("status", 500), ("status", 503)]
    judge = judge_for(server, max_retries=3, api_key_env="JUDGE_TEST_KEY")
    [v] = judge.grade([ANSWER])
    assert (v.detected, v.identified, v.coherent, v.parse_error) == (True, True, True, False)
    assert v.judge == "openai" and v.judge_version == "openai:judge-x@prompt-v1"
    assert len(server.requests) == 3 and judge.stats["requests"] == 3 and judge.stats["retries"] == 2
    sent = server.requests[-1]
    assert sent["temperature"] == 0 and sent["model"] == "judge-x" and sent["messages"][0]["role"] == "system"
    assert server.headers[-1]["Authorization"] == "Bearer sk-test-123"


def test_429_is_retried_but_a_400_is_not(server):
    server.script = [("status", 429), ("status", 400)]
    judge = judge_for(server, max_retries=4)
    [v] = judge.grade([ANSWER])
    assert v.parse_error and v.detected is None and "HTTP 400" in v.reason and "not retried" in v.reason
    assert len(server.requests) == 2 and judge.stats["request_failures"] == 1


def test_a_server_slower_than_the_timeout_gives_a_parse_error_after_bounded_retries(server):
    server.default = ("sleep", 2.0)
    judge = judge_for(server, timeout=0.4, max_retries=1)
    t0 = time.time()
    [v] = judge.grade([ANSWER])
    assert time.time() - t0 < 1.9  # 2 × 0.4 s + backoff, never the server's 2 s
    assert v.parse_error and (v.detected, v.identified, v.coherent) == (None, None, None)
    assert "request failed: timed out after 2 attempts" in v.reason
    assert len(server.requests) == 2 and judge.stats["request_failures"] == 1


def test_garbage_answers_are_counted_parse_errors_never_guesses(server):
    server.default = ("reply", "Sure! The model clearly detected the thought (yes).")
    judge = judge_for(server)
    verdicts = judge.grade([ANSWER, Answer("Dust", "No."), Answer("Dust", " dust.", True, PREFILL)])
    assert len(verdicts) == 3 and all(v.parse_error and v.detected is None for v in verdicts)
    assert all("Sure! The model clearly detected" in v.reason for v in verdicts)
    assert judge.stats["parse_errors"] == 3 and judge.stats["request_failures"] == 0


def test_malformed_body_fails_without_retry(server):
    server.default = ("body", b'{"not": "openai"}')
    judge = judge_for(server, max_retries=3)
    [v] = judge.grade([ANSWER])
    assert v.parse_error and "malformed API response" in v.reason and len(server.requests) == 1


def test_concurrency_is_bounded_and_order_kept(server):
    server.default = ("echo", 0.2)
    judge = judge_for(server, concurrency=2, timeout=120.0)  # no client timeout (and retry) even on a loaded machine
    verdicts = judge.grade([Answer("Dust", f"answer {i}") for i in range(6)])
    assert len(verdicts) == 6 and not any(v.parse_error for v in verdicts)
    assert len(server.requests) == 6 and server.max_in_flight == 2
    assert [v.reason for v in verdicts] == [f"answer {i}" for i in range(6)]


def test_connection_refused_is_retried_then_reported():
    port = free_port()  # nothing listens there
    judge = make_judge(
        "openai", base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=2, backoff=0.01, check=False
    )
    [v] = judge.grade([ANSWER])
    assert v.parse_error and "after 3 attempts" in v.reason and judge.stats["requests"] == 3


def test_one_line_errors_for_bad_judge_options(monkeypatch):
    monkeypatch.delenv("NO_SUCH_JUDGE_KEY", raising=False)
    port = free_port()
    cases = [
        (lambda: make_judge("gpt-judge"), "unknown judge 'gpt-judge'"),
        (lambda: make_judge("openai", model="m"), "needs options base_url and model"),
        (lambda: make_judge("openai", base_url=f"http://127.0.0.1:{port}/v1", model="m"), "is unreachable"),
        (lambda: make_judge("openai", base_url="ftp://x/v1", model="m"), "must be an http"),
        (
            lambda: make_judge("openai", base_url="http://127.0.0.1:1/v1", model="m", api_key_env="NO_SUCH_JUDGE_KEY"),
            "NO_SUCH_JUDGE_KEY",
        ),
        (
            lambda: make_judge("openai", base_url="http://127.0.0.1:1/v1", model="m", api_key="sk-x"),
            "never put the API key",
        ),
        (lambda: make_judge("openai", base_url="http://127.0.0.1:1/v1", model="m", temprature=0), "unknown option"),
        (lambda: make_judge("hf", model="no-such-model"), "unknown model 'no-such-model'"),
        (lambda: make_judge("hf", batchsize=2), "unknown option 'judge.options.batchsize' for judge 'hf'"),
    ]
    for build, msg in cases:
        with pytest.raises(LabError, match=msg) as e:
            build()
        assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------ in-process HF judge
def test_hf_judge_runs_the_embedded_model_with_the_same_prompt_and_parser():
    import torch

    torch.set_num_threads(2)
    judge = make_judge("hf", model="smollm2-135m", max_new_tokens=6, batch_size=4)
    verdicts = judge.grade([ANSWER, Answer("Dust", " dust.", True, PREFILL)])
    assert len(verdicts) == 2 and {v.judge_version for v in verdicts} == {"hf:smollm2-135m@prompt-v1"}
    assert judge.stats["parse_errors"] == sum(v.parse_error for v in verdicts)  # a 135M model: expected, counted
    convo = [{"role": "user", "content": "Name a colour."}]
    long, short = judge.chat_model.generate([convo, convo], [6, 2])  # one batch, per-row budgets
    assert short.completion_tokens <= 2 and long.text.startswith(short.text)
