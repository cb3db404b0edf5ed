"""The experiment skeleton every job that runs a model goes through:

    trials (deterministic ids) → pending (not yet stored) → shards on Ray actors or in process → grade → store

An experiment supplies three things: its trials (anything with a `trial_id`), a `prepare(lm, ...)` that builds the
context every shard needs once (concept vectors, a transcoder …; computed on the first replica and shared through the
object store), and a `work(lm, shard, context)` that runs a shard on a model replica and returns one row per trial
(generation, label logits, captured activations …). `grade(rows)` (a judge) runs in the driver. Each finished shard
is written as its own Parquet file, so a crash loses at most the shards in flight and a rerun does only what is
missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from lab.config import ModelConfig
from lab.errors import LabError
from lab.model.loading import LoadedModel
from lab.run import store
from lab.run.parallel import RunnerConfig

Rows = list[dict[str, Any]]


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
    runner: RunnerConfig,
    work: Callable[[LoadedModel, list[Any], Any], Rows],
    prepare: Callable[..., Any] | None = None,
    prepare_args: tuple[Any, ...] = (),
    grade: Callable[[Rows], Rows] | None = None,
    lm: LoadedModel | None = None,
    progress: bool = True,
    desc: str = "trials",
) -> Outcome:
    """Run every trial not yet stored in `out_dir`; returns counts. In process when `runner.num_actors` is 0 or a
    loaded model `lm` is given, else on a pool of Ray actors (one model replica each)."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    store.clean_partial(out)
    todo = set(store.pending([t.trial_id for t in trials], out))
    pending = [t for t in trials if t.trial_id in todo]
    res = {"new": 0, "t0": 0.0, "t1": 0.0}
    if pending:
        shards = [pending[i : i + runner.shard_size] for i in range(0, len(pending), runner.shard_size)]
        bar = tqdm(total=len(pending), desc=desc, unit="trial", disable=not progress)

        def on_shard(rows: Rows) -> None:
            store.write_shard(out, grade(rows) if grade else rows)
            res["new"] += len(rows)
            bar.update(len(rows))

        job = _Shards(model, runner, shards, work, prepare, prepare_args, on_shard, res)
        try:
            if lm is not None or runner.num_actors == 0:
                _in_process(job, lm)
            else:
                _on_ray(job)
        finally:
            bar.close()
    return Outcome(len(trials), int(res["new"]), len(trials) - len(pending), str(out), res["t1"] - res["t0"])


@dataclass
class _Shards:
    """One `execute` call's pending work: where it runs, what each shard does, and where finished rows go."""

    model: ModelConfig
    runner: RunnerConfig
    shards: list[list[Any]]
    work: Any
    prepare: Any
    prepare_args: tuple[Any, ...]
    on_shard: Any
    res: dict[str, Any]


def _in_process(job: _Shards, lm: LoadedModel | None) -> None:
    from lab.run.parallel import ModelWorker

    if job.model.shard == "zero3" and lm is None:
        raise LabError("model.shard: zero3 runs on Ray actors: set runner.num_actors >= 1")
    worker = ModelWorker.wrap(lm) if lm is not None else ModelWorker(job.model, job.runner.threads)
    ctx = worker.call(job.prepare, *job.prepare_args) if job.prepare else None
    job.res["t0"] = time.perf_counter()
    for shard in job.shards:
        job.on_shard(worker.call(job.work, shard, ctx))
    job.res["t1"] = time.perf_counter()


def _on_ray(job: _Shards) -> None:
    import ray

    from lab.run import parallel

    runner = job.runner
    with parallel.ray_session(runner.address, max(runner.cpus_per_actor * runner.num_actors, 1)):
        workers = parallel.pool(job.model, runner)
        try:
            ctx = parallel.get(workers[0].call.remote(job.prepare, *job.prepare_args)) if job.prepare else None
            ctx_ref = ray.put(ctx)
            job.res["t0"] = time.perf_counter()
            parallel.run_shards(workers, job.shards, job.work, ctx_ref, job.on_shard)
            job.res["t1"] = time.perf_counter()
        finally:
            parallel.shutdown_pool(workers, job.model)


def preflight(tracking_cfg: Any, ray_address: str | None = None, output_dir: str | Path | None = None) -> None:
    """Fail in one line before any work: the tracking URI and Ray address must be reachable and the output folder
    writable."""
    import os

    from lab.run.parallel import check_address
    from lab.run.tracking import check_uri, resolve_uri

    if tracking_cfg.enabled:
        check_uri(resolve_uri(tracking_cfg))
    addr = ray_address or os.environ.get("RAY_ADDRESS")
    if addr:
        check_address(addr)
    if output_dir:  # checked on the nearest existing folder: bad input must leave nothing behind
        out = Path(output_dir).absolute()
        near = next(p for p in (out, *out.parents) if p.exists())
        if not near.is_dir():
            raise LabError(f"output folder {output_dir} is not writable ({near} is not a directory)")
        if not os.access(near, os.W_OK | os.X_OK):
            raise LabError(f"output folder {output_dir} is not writable (no write permission on {near})")
