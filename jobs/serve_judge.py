"""Serve an HF chat model as an OpenAI-compatible judge on Ray Serve: `python -m jobs.serve_judge --config
configs/judge-serve.yaml`.

Deploys `POST <prefix>/chat/completions` (and `GET <prefix>/models`) bound to loopback, backed by `ChatModel`
(greedy, requests batched with `serve.batch`, left padding). Point a sweep's judge at it with
`judge: {name: openai, options: {base_url: http://127.0.0.1:<port>/v1, model: <served_model_name>}}`. The CLI blocks
until Ctrl-C (or SIGTERM); tests use `start(cfg)` / `stop()`.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from contextlib import ExitStack
from typing import Any

from ray import serve

from jobs.cli import Job, apply_overrides, bare_parser
from lab.config import describe, from_dict, load_yaml
from lab.errors import LabError
from lab.judges.serve import ChatServer, ServeJudgeConfig, wait_ready
from lab.run.preflight import checked

APP_NAME = "judge"


_ray = ExitStack()  # the Ray session `start` joined or started; closed by `stop`
_started_ray = False


def start(cfg: ServeJudgeConfig) -> str:
    """Deploy the endpoint (joining or starting Ray on loopback) and return its base URL once it answers."""
    import ray

    from lab.run import parallel

    global _started_ray
    try:
        with socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET) as s:
            s.bind((cfg.host, cfg.port))
    except OSError as e:
        raise LabError(f"serve judge: cannot bind {cfg.host}:{cfg.port} ({e.strerror or e})") from None
    if not ray.is_initialized():
        session = parallel.ray_session(cfg.ray_address, max(cfg.cpus_per_replica * cfg.num_replicas, 2))
        _started_ray = _ray.enter_context(session)
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


def stop(grace: float = 30.0) -> bool:
    """Tear the endpoint down; False when a shutdown step overran `grace` seconds and was left running (it was seen
    to hang on a loaded machine; a CLI then ends with `os._exit`, as Ray's exit hooks would wait on it again). A Ray
    this module started is shut down whole (its Serve actors with it); on a joined cluster only Serve is shut down."""
    import ray

    global _started_ray
    if not ray.is_initialized():
        return True
    if not _started_ray:
        return _bounded(serve.shutdown, grace, "Serve's shutdown")
    _started_ray = False
    return _bounded(_ray.close, grace, "Ray's shutdown")  # leaving the session shuts down the Ray it started


def _bounded(step: Any, grace: float, what: str) -> bool:
    import threading

    t0 = time.monotonic()
    worker = threading.Thread(target=step, daemon=True)
    worker.start()
    worker.join(grace)
    if worker.is_alive():
        print(f"{what} did not finish in {grace:.0f} s: exiting without it", flush=True)
        return False
    print(f"{what} took {time.monotonic() - t0:.1f} s", flush=True)
    return True


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Deploy the judge endpoint and block until Ctrl-C; exit 0, or 2 on bad input."""
    with Job(__name__, argv) as job:
        ap = bare_parser(__doc__.splitlines()[0], ServeJudgeConfig)
        ap.add_argument("--config", required=True, help="YAML config (configs/judge-serve.yaml)")
        ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
        ap.add_argument(
            "--show-config", action="store_true", help="print the resolved config, each key's help, and exit"
        )
        args = ap.parse_args(argv)
        cfg = checked(from_dict(ServeJudgeConfig, apply_overrides(load_yaml(args.config), args.set)))
        if args.show_config:
            print(describe(cfg), end="")
            return 0
        if args.dry_run:
            print(
                f"dry run: would serve {cfg.model.name} as '{cfg.served_name}' at {cfg.base_url} "
                f"({cfg.num_replicas} replicas)"
            )
            return 0
        url = start(cfg)
        print(f"judge endpoint: {url}/chat/completions (model '{cfg.served_name}')", flush=True)
        print(
            f"use it with: judge: {{name: openai, options: {{base_url: {url}, model: {cfg.served_name}}}}}", flush=True
        )
        for sig in (signal.SIGINT, signal.SIGTERM):  # set after Ray's start, whatever it or the parent left in place
            signal.signal(sig, _interrupt)
        # Short naps, not one long sleep: the kernel may hand Ctrl-C to one of Ray's threads, and Python then runs the
        # handler only when the main thread next runs bytecode (time.sleep(3600) left Ctrl-C unanswered under load).
        try:
            while True:
                time.sleep(0.2)
        except KeyboardInterrupt:
            print("stopping the judge endpoint", flush=True)
            if not stop():
                os._exit(0)
        finally:
            stop()  # any other way out: the error still propagates with its traceback and exit code
    return job.code


if __name__ == "__main__":
    raise SystemExit(main())
