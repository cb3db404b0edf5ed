"""The experiment skeleton every job that runs a model goes through:

    trials (deterministic ids) → pending (not yet stored) → shards on Ray actors or in process → grade → store

An experiment supplies three things: its trials (anything with a `trial_id`), a `prepare(lm, ...)` that builds the
context every shard needs once (concept vectors, a transcoder …; computed on the first replica and shared through the
object store), and a `work(lm, shard, context)` that runs a shard on a model replica and returns one row per trial
(generation, label logits, captured activations …). `grade(rows)` (a judge) runs in the driver. Each finished shard
is written as its own Parquet file, so a crash loses at most the shards in flight and a rerun does only what is
missing. A job's model-side step outside a sweep (refusal directions, the vectors an analysis reads) runs through
`on_replica`: once, on one replica, with only its result coming back. These two are the only places model replicas
are started as Ray actors (`lab.run.parallel.start_pool`), so no job loads a model in the driver when it has actors.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from lab.config import ModelConfig
from lab.errors import LabError
from lab.model.loading import LoadedModel
from lab.run import store
from lab.run.parallel import FanOutConfig
from lab.run.progress import Progress, reporting

Rows = list[dict[str, Any]]
T = TypeVar("T")


class Outcome(NamedTuple):
    """What `execute` did: trials in the plan, generated now, found already stored."""

    total: int
    new: int
    skipped: int
    output_dir: str
    work_s: float  # time in shards only (no start-up, no prepare)


def execute(
    trials: Sequence[Any],
    out_dir: str | Path,
    model: ModelConfig,
    runner: FanOutConfig,
    work: Callable[[LoadedModel, list[Any], Any], Rows],
    prepare: Callable[..., Any] | None = None,
    prepare_args: tuple[Any, ...] = (),
    grade: Callable[[Rows], Rows] | None = None,
    lm: LoadedModel | None = None,
    progress: bool = True,
    desc: str = "trials",
    shard_key: Callable[[Any], Hashable] | None = None,
) -> Outcome:
    """Run every trial not yet stored in `out_dir`; returns counts. In process when `runner.num_actors` is 0 or a
    loaded model `lm` is given, else on a pool of Ray actors (one model replica each). Shards are runs of
    `runner.shard_size` pending trials, or, with `shard_key`, the pending trials that share a key (in plan order):
    trials that share work (the reference passes of one patching batch) then run together. With `progress`, trials
    are counted as a work function reports them (`lab.run.progress.advance`, e.g. per generation batch), not only
    per finished shard (lab/run/progress.py)."""
    out = Path(out_dir)
    store.clean_partial(out)
    todo = set(store.pending([t.trial_id for t in trials], out))
    pending = [t for t in trials if t.trial_id in todo]
    res = {"new": 0, "t0": 0.0, "t1": 0.0}
    if pending:
        shards = _shards(pending, runner.shard_size, shard_key)
        bar = Progress(len(pending), desc, enabled=progress)

        def on_shard(rows: Rows) -> None:
            store.write_shard(out, grade(rows) if grade else rows)
            res["new"] += len(rows)

        job = _Shards(model, runner, shards, work, prepare, prepare_args, on_shard, res, bar)
        try:
            if lm is not None or runner.num_actors == 0:
                _in_process(job, lm)
            else:
                _on_ray(job)
        finally:
            bar.close()
    return Outcome(len(trials), int(res["new"]), len(trials) - len(pending), str(out), res["t1"] - res["t0"])


def _shards(pending: list[Any], size: int, key: Callable[[Any], Hashable] | None) -> list[list[Any]]:
    if key is None:
        return [pending[i : i + size] for i in range(0, len(pending), size)]
    groups: dict[Hashable, list[Any]] = {}
    for t in pending:
        groups.setdefault(key(t), []).append(t)
    return list(groups.values())


@dataclass
class _Shards:
    """One `execute` call's pending work: where it runs, what each shard does, and where finished rows go."""

    model: ModelConfig
    runner: FanOutConfig
    shards: list[list[Any]]
    work: Any
    prepare: Any
    prepare_args: tuple[Any, ...]
    on_shard: Any
    res: dict[str, Any]
    progress: Any  # lab.run.progress.Progress: trials done, counted inside shards as they go


def _local_model(model: ModelConfig, runner: FanOutConfig, lm: LoadedModel | None) -> LoadedModel:
    """The in-process replica: `lm` when given, else a fresh load of `model` (no actor, no wrapper)."""
    from lab.run.parallel import load_replica

    if lm is not None:
        return lm
    if model.shard == "zero3":
        raise LabError("model.shard: zero3 runs on Ray actors: set runner.num_actors >= 1")
    return load_replica(model, runner.threads)


def _in_process(job: _Shards, lm: LoadedModel | None) -> None:
    replica = _local_model(job.model, job.runner, lm)
    ctx = job.prepare(replica, *job.prepare_args) if job.prepare else None
    job.res["t0"] = time.perf_counter()
    job.progress.start()
    done = 0
    for shard in job.shards:
        with reporting(lambda n, before=done: job.progress.set(before + n)):
            rows = job.work(replica, shard, ctx)
        job.on_shard(rows)
        done += len(shard)
        job.progress.set(done)
    job.res["t1"] = time.perf_counter()


def _on_ray(job: _Shards) -> None:
    import ray

    from lab.run import parallel

    runner = job.runner
    with parallel.ray_session(runner.address, max(runner.cpus_per_actor * runner.num_actors, 1)):
        workers = parallel.start_pool(job.model, runner)
        try:
            ctx = parallel.get(workers[0].call.remote(job.prepare, *job.prepare_args)) if job.prepare else None
            ctx_ref = ray.put(ctx)
            job.res["t0"] = time.perf_counter()
            job.progress.start()
            parallel.run_shards(
                workers, job.shards, job.work, ctx_ref, job.on_shard, job.progress.set if job.progress.enabled else None
            )
            job.res["t1"] = time.perf_counter()
        finally:
            parallel.shutdown_pool(workers, job.model)


def on_replica(
    model: ModelConfig,
    runner: FanOutConfig,
    fn: Callable[..., T],
    *args: Any,
    lm: LoadedModel | None = None,
) -> T:
    """`fn(lm, *args)` run once on one model replica, for a job's model-side step outside a sweep: in this process
    when `runner.num_actors` is 0 or a loaded model `lm` is given (used as is: no load), else on one Ray actor started
    as `execute` starts its pool (`runner`'s resources; `model.shard: zero3`: one sharded replica) and stopped after.
    On an actor `fn` and `args` are pickled to it and only `fn`'s result (tensors, strings, paths) comes back to the
    driver; a `LabError` raised there comes back as itself."""
    from lab.run import parallel

    if lm is not None or runner.num_actors == 0:
        return fn(_local_model(model, runner, lm), *args)
    one = dataclasses.replace(runner, num_actors=1)
    with parallel.ray_session(one.address, max(one.cpus_per_actor, 1)):
        workers = parallel.start_pool(model, one)
        try:
            return parallel.get(workers[0].call.remote(fn, *args))
        finally:
            parallel.shutdown_pool(workers, model)
