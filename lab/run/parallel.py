"""Ray fan-out: a pool of `ModelWorker` actors, one model replica each, fed shards of trials.

The driver never loads the model (a 235B model does not fit on it): worker 0 extracts the concept vectors, the
driver puts them in the object store once, and every worker generates its shards with them. Each finished shard is
judged and written by the driver as its own Parquet file, so a crash loses at most the shards in flight and a rerun
skips what is stored. Resources per replica (CPUs, GPUs, custom resources) and the loading strategy
(`model.device`: cpu | cuda | auto = device_map across the actor's GPUs) are config; the runner does not change.

`ray_session` (over `connect`) is the one way the lab joins or starts Ray, and `tune_grid` the one place a Ray Tune
grid is built (the training ablation, the steering-vector arms, `tune_map`'s cells).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from lab.config import ModelConfig
from lab.errors import LabError

if TYPE_CHECKING:
    from lab.model.loading import LoadedModel

LOOPBACK_NODE_IP = "127.0.0.2"  # Ray swaps 127.0.0.1 for the machine's address; 127.0.0.2 stays on loopback


@dataclass(frozen=True)
class FanOutConfig:
    """How trials are fanned out (the `runner:` section of a job's YAML): model replicas and their resources, rows
    per forward batch, trials per stored shard, torch threads, the Ray address."""

    num_actors: int = field(default=1, metadata={"help": "model replicas (Ray actors); 0 = in this process"})
    cpus_per_actor: float = field(default=2.0, metadata={"help": "Ray CPUs reserved per replica"})
    gpus_per_actor: float = field(default=0.0, metadata={"help": "GPUs per replica (a 235B MoE: several)"})
    threads: int = field(default=2, metadata={"help": "torch intra-op threads per replica (0 = leave Ray's)"})
    batch_size: int = field(default=16, metadata={"help": "rows per generate() call"})
    shard_size: int = field(default=64, metadata={"help": "trials per stored shard (the unit of crash loss)"})
    resources: dict[str, float] = field(default_factory=dict, metadata={"help": "custom Ray resources per replica"})
    actor_restarts: int = field(
        default=3,
        metadata={"help": "a replica that dies (node lost, OOM kill) restarts and its shard is retried, up to N times"},
    )
    address: str | None = field(
        default=None,
        metadata={
            "help": "Ray address; empty: $RAY_ADDRESS (set inside `ray job submit`) or start a local Ray on loopback"
        },
    )

    def __post_init__(self) -> None:
        if self.num_actors < 0 or self.batch_size < 1 or self.shard_size < 1:
            raise LabError("runner.num_actors must be >= 0 (0 = in this process); batch_size, shard_size >= 1")
        if self.cpus_per_actor < 0 or self.gpus_per_actor < 0:
            raise LabError("runner.cpus_per_actor and gpus_per_actor must be >= 0")
        if self.actor_restarts < 0:
            raise LabError("runner.actor_restarts must be >= 0")


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


def connect(address: str | None = None, num_cpus: float | None = None) -> bool:
    """Join the given / ambient Ray cluster, or start a local one bound to loopback. True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    addr = address or os.environ.get("RAY_ADDRESS")
    if addr:
        check_address(addr)
        ray.init(address=addr, log_to_driver=True)
    else:
        ray.init(
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=False,
            _node_ip_address=LOOPBACK_NODE_IP,
            log_to_driver=True,
        )
    return True


@contextmanager
def ray_session(address: str | None = None, num_cpus: float | None = None) -> Iterator[bool]:
    """The one way jobs hold Ray: join or start it, and shut down on exit only what this context started (yields
    whether it did). Nested sessions join the outer one and leave it running."""
    import ray

    started = connect(address, num_cpus)
    try:
        yield started
    finally:
        if started:
            ray.shutdown()


def load_replica(model_cfg: ModelConfig, threads: int) -> LoadedModel:
    """One model replica's `LoadedModel`: torch threads set first, then the load (a Ray actor's and the in-process
    runner's)."""
    from lab.model import loading

    loading.threads(threads)
    return loading.load(model_cfg)


class ModelWorker:
    """One model replica (made a Ray actor by `start_pool`); runs any experiment's functions on its model."""

    def __init__(self, model_cfg: ModelConfig, threads: int):
        self.lm = load_replica(model_cfg, threads)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(lm, *args)` on this replica's model (a shard's work, or the context a sweep prepares once)."""
        return fn(self.lm, *args)


def start_pool(model_cfg: ModelConfig, cfg: FanOutConfig) -> list[Any]:
    """`cfg.num_actors` model replicas: one actor each, or (model.shard: zero3) a ZeRO-3 group of actors each whose
    rank 0 answers `call` like a `ModelWorker` (lab/model/sharded.py)."""
    import ray

    if model_cfg.shard == "zero3":
        from lab.model import sharded

        return sharded.pool(
            model_cfg, cfg, sharded.ShardConfig(model_cfg.shard, model_cfg.workers_per_replica, model_cfg.offload)
        )

    # no per-actor runtime_env: inside `ray job submit` it would clash with the job's own; importing `lab` in the
    # actor sets the offline defaults, and paths travel in the config
    # a dead replica restarts (reloading its model) and its in-flight shards run again: a shard's rows reach the
    # store only once, from the driver, so every trial is still stored exactly once
    actor = ray.remote(ModelWorker).options(
        num_cpus=cfg.cpus_per_actor,
        num_gpus=cfg.gpus_per_actor,
        resources=dict(cfg.resources) or None,
        max_restarts=cfg.actor_restarts,
        max_task_retries=cfg.actor_restarts,
    )
    return [actor.remote(model_cfg, cfg.threads) for _ in range(cfg.num_actors)]


def run_shards(
    workers: list[Any],
    shards: list[list[Any]],
    work: Callable[..., Any],
    ctx_ref: Any,
    on_shard: Callable[[list[dict[str, Any]]], None],
    progress: Callable[[int], None] | None = None,
    poll_s: float = 0.5,
) -> None:
    """Keep every worker busy with up to two shards (the first round one each, so that a few shards still spread over
    every worker); call `on_shard(rows)` as each finishes (completion order). With `progress`, the trials done so far
    (finished shards plus what running shards report through `lab.run.progress.advance`, collected by a counter actor)
    go to `progress(done)` every `poll_s` seconds while waiting."""
    import ray

    from lab.run.progress import Counter, Reporting

    counter = ray.remote(Counter).options(num_cpus=0).remote() if progress else None
    queue = list(reversed(list(enumerate(shards))))
    in_flight: dict[Any, tuple[Any, int]] = {}
    finished: set[int] = set()

    def submit(w: Any) -> None:
        if queue:
            i, shard = queue.pop()
            fn = Reporting(work, counter, i) if counter is not None else work
            in_flight[w.call.remote(fn, shard, ctx_ref)] = (w, i)

    def report() -> None:
        if progress is None:
            return
        counts = get(counter.snapshot.remote()) if counter is not None else {}
        partial = sum(min(n, len(shards[i])) for i, n in counts.items() if i not in finished)
        progress(sum(len(shards[i]) for i in finished) + partial)

    try:
        for _ in range(2):
            for w in workers:
                submit(w)
        while in_flight:
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=poll_s if progress else None)
            if done:
                w, i = in_flight.pop(done[0])
                on_shard(get(done[0]))
                finished.add(i)
                submit(w)
            report()
    finally:
        if counter is not None:
            ray.kill(counter)


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


def shutdown_pool(workers: list[Any], model_cfg: ModelConfig | None = None) -> None:
    import ray

    if model_cfg is not None and model_cfg.shard == "zero3":
        from lab.model import sharded

        return sharded.shutdown(workers)

    for w in workers:
        ray.kill(w)


def exit_quietly_on_sigterm() -> None:
    """In a Ray worker (a Tune trial): when the raylet stops the process at a normal shutdown it sends SIGTERM, and
    Ray's handler raises `SystemExit(1)` wherever the main thread is. Landing in a weakref or `__del__` callback (the
    trial's torch/MLflow objects being collected), it cannot propagate: Python prints "Exception ignored in: …
    SystemExit: 1" with a traceback and the process lingers until the raylet's SIGKILL. This routes such an
    unraisable `SystemExit` to the exit it was meant to be (quiet, same code); every other unraisable error is
    reported as before."""
    import sys

    default = sys.__unraisablehook__

    def hook(u: Any) -> None:
        if isinstance(u.exc_value, SystemExit):
            code = u.exc_value.code
            os._exit(code if isinstance(code, int) else 1)
        default(u)

    sys.unraisablehook = hook


def tune_grid(
    fn: Callable[[dict[str, Any]], Any],
    param_space: dict[str, Any],
    storage: str | os.PathLike,
    name: str,
    resources: Any = None,
    params: dict[str, Any] | None = None,
    address: str | None = None,
    num_cpus: float | None = None,
    max_concurrent: int | None = None,
    max_failures: int = 0,
    trial_name: Callable[[dict[str, Any]], str] | None = None,
    verbose: int = 0,
) -> Any:
    """The one place a Ray Tune grid is built and run: `fn(config, **params)` (a function trainable that
    `tune.report`s or returns its metrics; `params` travel through the object store) once per point of `param_space`
    (`tune.grid_search` entries), with `resources` reserved per trial (a dict such as {"cpu": 1, "gpu": 0}, or a
    `tune.PlacementGroupFactory` for a trial that places its own Ray Train workers), at most `max_concurrent` at
    once, a failed trial retried `max_failures` times, trial names and folders from `trial_name(config)`, state under
    `storage`/`name`. Runs in the caller's Ray session, or in one joined / started (`address`, `num_cpus`) for the
    grid only. Returns the `tune.ResultGrid`."""
    import functools

    from ray import tune

    @functools.wraps(fn)
    def quiet(config: dict[str, Any], **kw: Any) -> Any:
        exit_quietly_on_sigterm()
        return fn(config, **kw)

    named = (lambda t: trial_name(t.config)) if trial_name else None
    with ray_session(address, num_cpus):
        trainable = tune.with_parameters(quiet, **params) if params else quiet
        tuner = tune.Tuner(
            tune.with_resources(trainable, resources) if resources else trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                max_concurrent_trials=max_concurrent,
                num_samples=1,
                trial_name_creator=named,
                trial_dirname_creator=named,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(storage),
                failure_config=tune.FailureConfig(max_failures=max_failures),
                verbose=verbose,
            ),
        )
        return tuner.fit()


def tune_map(
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    configs: list[dict[str, Any]],
    address: str | None,
    storage: str | os.PathLike,
    name: str,
    cpus: float = 0.5,
) -> list[dict[str, Any]]:
    """`fn` over `configs` as one Ray Tune grid (one trial per config, `cpus` each); the trials' result dicts."""
    from ray import tune

    space = {"cell": tune.grid_search(configs)}
    grid = tune_grid(lambda c: fn(c["cell"]), space, storage, name, {"cpu": cpus}, address=address)
    return [r.metrics for r in grid]
