"""Ray fan-out: a pool of `ModelWorker` actors, one model replica each, fed shards of trials.

The driver never loads the model (a 235B model does not fit on it): worker 0 extracts the concept vectors, the
driver puts them in the object store once, and every worker generates its shards with them. Each finished shard is
judged and written by the driver as its own Parquet file, so a crash loses at most the shards in flight and a rerun
skips what is stored. Resources per replica (CPUs, GPUs, custom resources) and the loading strategy
(`model.device`: cpu | cuda | auto = device_map across the actor's GPUs) are config; the runner does not change.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from lab.config import ModelConfig
from lab.errors import LabError
from lab.trials import Trial

LOOPBACK_NODE_IP = "127.0.0.2"  # Ray swaps 127.0.0.1 for the machine's address; 127.0.0.2 stays on loopback


@dataclass(frozen=True)
class RunnerConfig:
    """How trials are fanned out."""

    num_actors: int = field(default=1, metadata={"help": "model replicas (Ray actors); 0 = in this process"})
    cpus_per_actor: float = field(default=2.0, metadata={"help": "Ray CPUs reserved per replica"})
    gpus_per_actor: float = field(default=0.0, metadata={"help": "GPUs per replica (a 235B MoE: several)"})
    threads: int = field(default=2, metadata={"help": "torch intra-op threads per replica (0 = leave Ray's)"})
    batch_size: int = field(default=16, metadata={"help": "rows per generate() call"})
    shard_size: int = field(default=64, metadata={"help": "trials per stored shard (the unit of crash loss)"})
    resources: dict[str, float] = field(default_factory=dict, metadata={"help": "custom Ray resources per replica"})
    address: str | None = field(default=None, metadata={
        "help": "Ray address; empty: $RAY_ADDRESS (set inside `ray job submit`) or start a local Ray on loopback"})

    def __post_init__(self) -> None:
        if self.num_actors < 0 or self.batch_size < 1 or self.shard_size < 1:
            raise LabError("runner.num_actors must be >= 0 (0 = in this process); batch_size, shard_size >= 1")
        if self.cpus_per_actor < 0 or self.gpus_per_actor < 0:
            raise LabError("runner.cpus_per_actor and gpus_per_actor must be >= 0")


def check_address(address: str) -> None:
    """Fail fast with one line if a Ray address cannot be reached (instead of a long hang)."""
    if address in ("auto", "local"):
        return
    u = urlparse(address if "://" in address else f"tcp://{address}")
    if not u.hostname or not u.port:
        raise LabError(f"bad Ray address '{address}' (expected host:port, ray://host:port or auto)")
    try:
        socket.create_connection((u.hostname, u.port), timeout=3).close()
    except OSError as e:
        raise LabError(f"Ray address {address} is unreachable ({e.strerror or e})") from None


def connect(address: str | None = None, num_cpus: float | None = None) -> None:
    """Join the given / ambient Ray cluster, or start a local one bound to loopback."""
    import ray

    if ray.is_initialized():
        return
    addr = address or os.environ.get("RAY_ADDRESS")
    if addr:
        check_address(addr)
        ray.init(address=addr, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, _node_ip_address=LOOPBACK_NODE_IP,
                 log_to_driver=True)


class ModelWorker:
    """One model replica (made a Ray actor by `pool`)."""

    def __init__(self, model_cfg: ModelConfig, threads: int, batch_size: int):
        from lab import models

        models.threads(threads)
        self.lm = models.load(model_cfg)
        self.batch_size = batch_size

    @classmethod
    def wrap(cls, lm: Any, batch_size: int) -> ModelWorker:
        """A worker around an already loaded `LoadedModel` (in-process runs)."""
        self = cls.__new__(cls)
        self.lm, self.batch_size = lm, batch_size
        return self

    def vectors(self, concepts: Sequence[str], layers: Sequence[int], template: str, baseline: str,
                cache_dir: str | None, model_key: str) -> tuple[dict, dict]:
        from lab.concepts import concept_vectors

        return concept_vectors(self.lm, concepts, layers, template, baseline, cache_dir, model_key)

    def n_layers(self) -> int:
        return self.lm.n_layers

    def run(self, trials: list[Trial], bank: Any) -> list[dict[str, Any]]:
        from lab.runner import Runner

        return Runner(self.lm, bank, self.batch_size).run(trials)


def pool(model_cfg: ModelConfig, cfg: RunnerConfig) -> list[Any]:
    import ray

    # no per-actor runtime_env: inside `ray job submit` it would clash with the job's own; importing `lab` in the
    # actor sets the offline defaults, and paths travel in the config
    actor = ray.remote(ModelWorker).options(
        num_cpus=cfg.cpus_per_actor, num_gpus=cfg.gpus_per_actor, resources=dict(cfg.resources) or None)
    return [actor.remote(model_cfg, cfg.threads, cfg.batch_size) for _ in range(cfg.num_actors)]


def run_shards(workers: list[Any], shards: list[list[Trial]], bank_ref: Any,
               on_shard: Callable[[list[Trial], list[dict[str, Any]]], None]) -> None:
    """Keep every worker busy with up to two shards; call `on_shard` as each one finishes (in completion order)."""
    import ray

    queue = list(reversed(shards))
    in_flight: dict[Any, tuple[Any, list[Trial]]] = {}

    def submit(w: Any) -> None:
        if queue:
            shard = queue.pop()
            in_flight[w.run.remote(shard, bank_ref)] = (w, shard)

    for w in workers:
        submit(w)
        submit(w)
    while in_flight:
        done, _ = ray.wait(list(in_flight), num_returns=1)
        w, shard = in_flight.pop(done[0])
        rows = get(done[0])
        on_shard(shard, rows)
        submit(w)


def get(refs: Any) -> Any:
    """`ray.get`, but a `LabError` raised inside an actor comes back as itself (one line), not a Ray traceback."""
    import re

    import ray

    try:
        return ray.get(refs)
    except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, LabError):
            raise LabError(str(cause)) from None
        m = re.search(r"LabError: (.+)", str(e))
        if m:
            raise LabError(m.group(1).strip()) from None
        raise


def shutdown_pool(workers: list[Any]) -> None:
    import ray

    for w in workers:
        ray.kill(w)
