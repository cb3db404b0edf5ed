"""Serve an HF chat model as an OpenAI-compatible judge on Ray Serve: `python -m jobs.serve_judge --config
configs/judge-serve.yaml`.

Deploys `POST <prefix>/chat/completions` (and `GET <prefix>/models`) bound to loopback, backed by `ChatModel`
(greedy, requests batched with `serve.batch`, left padding). Point a sweep's judge at it with
`judge: {name: openai, options: {base_url: http://127.0.0.1:<port>/v1, model: <served_model_name>}}`. The CLI blocks
until Ctrl-C (or SIGTERM); tests use `start(cfg)` / `stop()`.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from ray import serve

from jobs.cli import apply_overrides, entry
from lab.config import ModelConfig, from_dict, load_yaml
from lab.errors import LabError
from lab.judges.serve import ChatServer, wait_ready

APP_NAME = "judge"


@dataclass(frozen=True)
class ServeJudgeConfig:
    """configs/judge-serve.yaml"""

    model: ModelConfig = field(default_factory=ModelConfig)
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
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
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


_started_ray = False


def start(cfg: ServeJudgeConfig) -> str:
    """Deploy the endpoint (joining or starting Ray on loopback) and return its base URL once it answers."""
    import ray

    from lab import parallel

    global _started_ray
    try:
        with socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET) as s:
            s.bind((cfg.host, cfg.port))
    except OSError as e:
        raise LabError(f"serve judge: cannot bind {cfg.host}:{cfg.port} ({e.strerror or e})") from None
    if not ray.is_initialized():
        parallel.connect(cfg.ray_address, num_cpus=max(cfg.cpus_per_replica * cfg.num_replicas, 2))
        _started_ray = True
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    app = serve.deployment(
        ChatServer,
        name="ChatServer",
        num_replicas=cfg.num_replicas,
        ray_actor_options={"num_cpus": cfg.cpus_per_replica, "num_gpus": cfg.gpus_per_replica},
        max_ongoing_requests=max(2 * cfg.max_batch_size, 4),
    ).bind(cfg.model, cfg.served_name, cfg.threads, cfg.max_new_tokens, cfg.max_batch_size, cfg.batch_wait_s)
    serve.run(app, name=APP_NAME, route_prefix=cfg.route_prefix, blocking=False)
    wait_ready(cfg.base_url + "/models", timeout=120)
    return cfg.base_url


def stop() -> None:
    """Tear the endpoint down (and the local Ray this module started)."""
    import ray

    global _started_ray
    if ray.is_initialized():
        serve.shutdown()
        if _started_ray:
            ray.shutdown()
            _started_ray = False


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@entry
def main(argv: list[str] | None = None) -> int:
    """Deploy the judge endpoint and block until Ctrl-C; exit 0, or 2 on bad input."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="YAML config (configs/judge-serve.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    args = ap.parse_args(argv)
    cfg = from_dict(ServeJudgeConfig, apply_overrides(load_yaml(args.config), args.set))
    url = start(cfg)
    print(f"judge endpoint: {url}/chat/completions (model '{cfg.served_name}')", flush=True)
    print(f"use it with: judge: {{name: openai, options: {{base_url: {url}, model: {cfg.served_name}}}}}", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping the judge endpoint", flush=True)
    finally:
        stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
