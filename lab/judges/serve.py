"""The OpenAI-compatible chat-completions replica behind `jobs.serve_judge` (a Ray Serve deployment class):
`POST …/chat/completions` and `GET …/models` over `lab.judges.hf.ChatModel`, greedy, requests batched with
`serve.batch`."""

from __future__ import annotations

import asyncio
import ipaddress
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ray import serve

from lab.config import ModelConfig
from lab.errors import LabError


def _error(status: int, message: str, kind: str = "invalid_request_error") -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


class ChatServer:
    """One replica: an OpenAI-style chat-completions endpoint over `ChatModel` (always greedy)."""

    def __init__(
        self,
        model: ModelConfig,
        served_name: str,
        threads: int,
        max_new_tokens: int,
        max_batch_size: int,
        batch_wait_s: float,
    ):
        from lab.judges.hf import ChatModel

        self.chat = ChatModel(model, threads)
        self.served_name, self.max_new_tokens, self.max_batch_size = served_name, max_new_tokens, max_batch_size
        self.generate_batch.set_max_batch_size(max_batch_size)
        self.generate_batch.set_batch_wait_timeout_s(batch_wait_s)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def generate_batch(self, items: list[tuple[list[dict[str, str]], int]]) -> list[Any]:
        convs, budgets = [m for m, _ in items], [b for _, b in items]
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.chat.generate(convs, budgets, self.max_batch_size)
        )

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        path = request.url.path.rstrip("/")
        if request.method == "GET" and path.endswith("/models"):
            return JSONResponse(
                {
                    "object": "list",
                    "data": [{"id": self.served_name, "object": "model", "owned_by": "introspection-lab"}],
                }
            )
        if not path.endswith("/chat/completions"):
            return _error(404, f"no route {request.method} {request.url.path}", "not_found")
        if request.method != "POST":
            return _error(405, "use POST for chat completions")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body is not JSON")
        problem = _check_request(body, self.served_name)
        if problem:
            return _error(*problem)
        budget = min(
            int(body.get("max_tokens") or body.get("max_completion_tokens") or self.max_new_tokens), self.max_new_tokens
        )
        messages = [{"role": m["role"], "content": m["content"]} for m in body["messages"]]
        out = await self.generate_batch((messages, max(budget, 1)))
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.served_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": out.text},
                        "finish_reason": out.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": out.prompt_tokens,
                    "completion_tokens": out.completion_tokens,
                    "total_tokens": out.prompt_tokens + out.completion_tokens,
                },
            }
        )


def _check_request(body: Any, served_name: str) -> tuple[int, str] | None:
    if not isinstance(body, dict):
        return 400, "request body must be a JSON object"
    if body.get("model") != served_name:
        return 404, f"model '{body.get('model')}' is not served here (serving '{served_name}')"
    msgs = body.get("messages")
    if (
        not isinstance(msgs, list)
        or not msgs
        or not all(
            isinstance(m, dict)
            and m.get("role") in ("system", "user", "assistant")
            and isinstance(m.get("content"), str)
            for m in msgs
        )
    ):
        return 400, "messages must be a non-empty list of {role: system|user|assistant, content: string}"
    if body.get("stream"):
        return 400, "streaming is not supported"
    tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
        return 400, "max_tokens must be a positive integer"
    return None


def wait_ready(url: str, timeout: float) -> None:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    end = time.time() + timeout
    while time.time() < end:
        try:
            with opener.open(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise LabError(f"serve judge: {url} did not answer within {timeout:.0f}s")


@dataclass(frozen=True)
class ServeJudgeConfig:
    """configs/judge-serve.yaml"""

    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the judge model served"})
    served_model_name: str | None = field(
        default=None, metadata={"help": "the `model` clients send; empty: model.name"}
    )
    host: str = field(default="127.0.0.1", metadata={"help": "HTTP bind address (loopback unless allow_remote)"})
    allow_remote: bool = field(
        default=False,
        metadata={"help": "permit a non-loopback host (on a cluster, so sweeps on other nodes reach the judge)"},
    )
    port: int = field(default=8000, metadata={"help": "HTTP port"})
    route_prefix: str = field(default="/v1", metadata={"help": "URL prefix: <prefix>/chat/completions"})
    num_replicas: int = field(default=1, metadata={"help": "model replicas"})
    cpus_per_replica: float = field(default=1.0, metadata={"help": "Ray CPUs per replica"})
    gpus_per_replica: float = field(default=0.0, metadata={"help": "Ray GPUs per replica (with model.device cuda)"})
    threads: int = field(default=2, metadata={"help": "torch threads per replica (0 = leave Ray's)"})
    max_batch_size: int = field(default=8, metadata={"help": "requests generated together (serve.batch)"})
    batch_wait_s: float = field(default=0.05, metadata={"help": "how long a batch waits to fill"})
    max_new_tokens: int = field(default=256, metadata={"help": "cap on a request's max_tokens"})
    ray_address: str | None = field(
        default=None, metadata={"help": "Ray address; empty: $RAY_ADDRESS or a local Ray on loopback"}
    )

    def __post_init__(self) -> None:
        try:
            loopback = self.host == "localhost" or ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = False
        if not loopback and not self.allow_remote:
            raise LabError(
                f"serve judge: host must be a loopback address (127.x.x.x, ::1), got '{self.host}' "
                "(set allow_remote: true on a cluster)"
            )
        if not 0 < self.port < 65536:
            raise LabError(f"serve judge: port must be 1..65535, got {self.port}")
        if not self.route_prefix.startswith("/"):
            raise LabError(f"serve judge: route_prefix must start with '/', got '{self.route_prefix}'")
        if min(self.num_replicas, self.max_batch_size, self.max_new_tokens) < 1:
            raise LabError("serve judge: num_replicas, max_batch_size and max_new_tokens must be >= 1")

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.model.name

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}{self.route_prefix.rstrip('/')}"
