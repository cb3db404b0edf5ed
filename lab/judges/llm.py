"""LLM judges: the shared chat flow (`ChatJudge`) and an OpenAI-compatible chat-completions client ("openai").

The prompt and the strict parser of the judge's JSON reply are in lab/judges/prompt.py. Unparseable answers and
requests that still fail after bounded retries become `Verdict(None, None, None, parse_error=True, reason=…)`: never
dropped, never guessed, and counted in `judge.stats`. lab/judges/hf.py runs the same prompt and flow on an
in-process HF model. With `prompt: paper` both run the paper's two-stage instrument instead
(lab/judges/paper.py: "Answer: YES/NO" replies, up to 500 tokens), and `paper_experiment` ("02", "03", "03b", "03c",
"03d", "03f", "14", `robustness`) shows the judge exactly what that script of the paper's code shows it.
"""

from __future__ import annotations

import http.client
import inspect
import json
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lab.errors import LabError
from lab.judges.base import Answer, Conversation, Failed, Verdict
from lab.judges.prompt import ParseError, load_prompt, parse_verdict
from lab.judges.registry import register_judge

SNIPPET = 300


class ChatJudge:
    """Renders the prompt, asks the model (`complete`, in subclasses) and parses each reply into a `Verdict`.

    `stats` counts answers, parse errors, request failures (and, for HTTP judges, requests and retries).
    """

    name: str
    version: str

    def __init__(self, prompt: str | Path | None = None, paper_experiment: str | None = None):
        from lab.judges.paper import load_paper_prompt

        if paper_experiment is not None and str(prompt) != "paper":
            raise LabError("judge option paper_experiment needs prompt: paper")
        self.paper = load_paper_prompt(paper_experiment) if str(prompt) == "paper" else None
        self.prompt: Any = self.paper or load_prompt(prompt)
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def complete(self, conversations: Sequence[Conversation], forced: Sequence[bool]) -> list[str | Failed]:
        raise NotImplementedError

    def grade(self, answers: Sequence[Answer]) -> list[Verdict]:
        if not answers:
            return []
        if self.paper is not None:
            from lab.judges import paper

            return paper.grade_two_stage(self, self.paper, answers, self.complete)
        replies = self.complete([self.prompt.messages(a) for a in answers], [a.forced for a in answers])
        if len(replies) != len(answers):
            raise RuntimeError(f"{self.name}: {len(replies)} replies for {len(answers)} answers")
        return [self.verdict(a, r) for a, r in zip(answers, replies)]

    def verdict(self, answer: Answer, reply: str | Failed) -> Verdict:
        self.count("answers")
        if isinstance(reply, Failed):
            self.count("request_failures")
            return self._unknown(f"request failed: {reply.message}")
        try:
            detected, identified, coherent, reason = parse_verdict(reply, answer.forced)
        except ParseError as e:
            self.count("parse_errors")
            return self._unknown(f"unparseable judge answer ({e}): {reply.strip()[:SNIPPET]!r}")
        return Verdict(detected, identified, coherent, reason, self.name, self.version)

    def _unknown(self, reason: str) -> Verdict:
        return Verdict(None, None, None, reason, self.name, self.version, parse_error=True)


_RETRY_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
_LOOPBACK = ("127.", "localhost", "::1", "[::1]")


def check_reachable(base_url: str, timeout: float = 3.0) -> None:
    """One-line `LabError` unless base_url is http(s) and its host:port accepts a TCP connection."""
    u = urlparse(base_url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise LabError(f"judge base_url must be an http(s) URL, got '{base_url}'")
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        socket.create_connection((u.hostname, port), timeout=timeout).close()
    except OSError as e:
        raise LabError(f"judge base_url {base_url} is unreachable ({e.strerror or e})") from None


class OpenAIJudge(ChatJudge):
    """POST {base_url}/chat/completions at temperature 0 with bounded retries and a thread-pool concurrency limit.

    Retried (exponential backoff, `backoff`·2^k s capped at `backoff_max`, a numeric Retry-After honoured): HTTP 408,
    409, 429 and 5xx, timeouts and connection errors. Other HTTP errors and malformed response bodies fail at once.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 1.0,
        backoff_max: float = 30.0,
        concurrency: int = 4,
        max_tokens: int | None = None,
        prompt: str | Path | None = None,
        paper_experiment: str | None = None,
        check: bool = True,
    ):
        super().__init__(prompt, paper_experiment)
        max_tokens = max_tokens or (500 if self.paper else 256)  # the paper's judge: up to 500 tokens
        if timeout <= 0 or max_retries < 0 or concurrency < 1 or max_tokens < 1 or backoff < 0:
            raise LabError(
                "openai judge: timeout, concurrency and max_tokens must be > 0, max_retries and backoff >= 0"
            )
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout, self.max_retries = model, float(timeout), int(max_retries)
        self.backoff, self.backoff_max = backoff, backoff_max
        self.concurrency, self.max_tokens = concurrency, max_tokens
        self.version = f"openai:{model}@{self.prompt.version}"
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key_env:
            import os

            key = os.environ.get(api_key_env)
            if not key:
                raise LabError(f"openai judge: environment variable {api_key_env} (api_key_env) is not set")
            self._headers["Authorization"] = f"Bearer {key}"
        if check:
            check_reachable(base_url)
        loopback = (urlparse(base_url).hostname or "").startswith(_LOOPBACK)
        self._opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if loopback else []))

    def complete(self, conversations: Sequence[Conversation], forced: Sequence[bool]) -> list[str | Failed]:
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(conversations))) as pool:
            return list(pool.map(self.ask, conversations))

    def ask(self, messages: Conversation) -> str | Failed:
        """One chat completion with retries: the reply text, or `Failed`."""
        payload = json.dumps(
            {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": self.max_tokens}
        ).encode()
        error = "no attempt"
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.count("retries")
            self.count("requests")
            wait: float | None = None
            try:
                req = urllib.request.Request(self.url, data=payload, headers=self._headers, method="POST")
                with self._opener.open(req, timeout=self.timeout) as resp:
                    body = resp.read()
                return _content(body)
            except urllib.error.HTTPError as e:
                detail = e.read(SNIPPET).decode("utf-8", "replace") if e.fp else ""
                error = f"HTTP {e.code} {detail.strip()[:SNIPPET]}".strip()
                if e.code not in _RETRY_STATUS:
                    return Failed(f"{error} (not retried)")
                wait = _retry_after(e.headers.get("Retry-After") if e.headers else None)
            except _Malformed as e:
                return Failed(f"malformed API response ({e})")
            # timeouts, refused/reset connections
            except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
                reason = getattr(e, "reason", e)
                error = "timed out" if isinstance(reason, TimeoutError) or "timed out" in str(reason) else str(reason)
            if attempt < self.max_retries:
                delay = min(self.backoff_max, self.backoff * 2**attempt) * (1 + 0.1 * random.random())
                time.sleep(max(delay, min(wait or 0.0, self.backoff_max)))
        return Failed(f"{error} after {self.max_retries + 1} attempts")


class _Malformed(Exception):
    pass


def _content(body: bytes) -> str:
    try:
        content = json.loads(body)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise _Malformed(f"no choices[0].message.content in {body[:SNIPPET]!r}") from None
    if not isinstance(content, str):
        raise _Malformed("choices[0].message.content is not a string")
    return content


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


@register_judge("openai", options=tuple(inspect.signature(OpenAIJudge.__init__).parameters)[1:])
def make_openai_judge(base_url: str | None = None, model: str | None = None, **options: Any) -> OpenAIJudge:
    if not base_url or not model:
        raise LabError("openai judge needs options base_url and model")
    return OpenAIJudge(base_url, model, **options)  # options checked by make_judge against OpenAIJudge's parameters
