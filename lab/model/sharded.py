"""A model replica sharded with DeepSpeed ZeRO-3 over N Ray actors (one per GPU; gloo on CPU).

Each rank holds 1/N of every weight; a block's weights are all-gathered just before it runs and freed after, so every
rank must run the same forward passes in the same order. Here every rank runs the same shard of trials through the
same `lab.generate.runner.Runner` (the same batches, hooks and readouts), and `generate` runs with `synced_gpus=True` (set by
transformers itself while the `HfDeepSpeedConfig` this module keeps alive says ZeRO-3), so a rank that finishes
early keeps stepping with the others. This shards memory, not work: throughput scales with replicas, not ranks.

Rank 0 is the replica's face: it answers `call` like `lab.run.parallel.ModelWorker` (and `vectors`, `n_layers`) and
forwards each call to its peers before running it itself, so `lab.run.parallel.run_shards` drives a sharded replica
exactly like a one-process one. Mixture-of-experts blocks (`*SparseMoeBlock`) are registered as ZeRO-3 leaf modules
(`deepspeed.utils.set_z3_leaf_modules`): gathered whole, or ranks that route to different experts deadlock.
The DeepSpeed side (the inference config, the process group, partitioning) is lab/model/zero3.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from lab.config import ModelConfig, ShardConfig
from lab.errors import LabError
from lab.model.zero3 import inference_config, init_distributed, shard_model


class ShardedWorker:
    """One rank of a ZeRO-3 replica (a Ray actor made by `replica`)."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world, self.peers, self.pg = rank, world, [], None

    def endpoint(self) -> tuple[str, int]:
        """This node's address and a free port, for rank 0's rendezvous."""
        import socket

        import ray

        host = ray.util.get_node_ip_address()
        with socket.socket() as s:
            s.bind((host, 0))
            return host, s.getsockname()[1]

    def setup(
        self, model_cfg: ModelConfig, shard: ShardConfig, threads: int, batch_size: int, master: str, port: int
    ) -> int:
        from transformers.integrations import HfDeepSpeedConfig

        from lab.model import loading

        loading.threads(threads)
        init_distributed(self.rank, self.world, master, port)
        # partitioned while loading: with a ZeRO-3 HfDeepSpeedConfig alive, from_pretrained builds the model under
        # deepspeed.zero.Init, so no rank ever holds the whole model (bucket sizes are refined once d_model is known);
        # model.device is ignored: deepspeed places each rank's partitions on its GPU
        spec = loading.spec_for(model_cfg.name)
        self._hf_ds = HfDeepSpeedConfig(
            inference_config(spec.d_model if spec else 4096, model_cfg.dtype, shard.offload)
        )
        self.lm = loading.load(dataclasses.replace(model_cfg, device="cpu"))
        self.partitioned_on_load = all(hasattr(p, "ds_id") for p in self.lm.model.parameters())
        self.ds_config = inference_config(self.lm.spec.d_model, model_cfg.dtype, shard.offload)
        self._hf_ds = HfDeepSpeedConfig(self.ds_config)  # kept alive: generate() then sets synced_gpus itself
        self.engine = shard_model(self.lm.model, self.ds_config)
        self.lm.model = self.engine.module
        self.batch_size = batch_size
        return self.local_numel()

    def setup_built(
        self, build: Callable[[], Any], ds_config: dict[str, Any], threads: int, master: str, port: int
    ) -> int:
        """Shard a model that `build()` makes (same seed on every rank) with `ds_config`; `call(fn)` then gets the
        engine (training: give `ds_config` an optimizer and use `engine.backward` / `engine.step`)."""
        from transformers.integrations import HfDeepSpeedConfig

        from lab.model import loading

        loading.threads(threads)
        init_distributed(self.rank, self.world, master, port)
        self.ds_config = ds_config
        self._hf_ds = HfDeepSpeedConfig(ds_config)
        self.engine = shard_model(build(), ds_config)
        self.lm = self.engine
        return self.local_numel()

    def attach(self, peers: list[Any], pg: Any = None) -> None:
        self.peers, self.pg = peers, pg

    def info(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "world": self.world,
            "local_numel": self.local_numel(),
            "partitioned_on_load": getattr(self, "partitioned_on_load", False),
        }

    def local_numel(self) -> int:
        """Parameter elements this rank stores (its partitions)."""
        return sum(p.ds_tensor.numel() for p in self.engine.module.parameters() if hasattr(p, "ds_tensor"))

    def _all(self, method: str, *args: Any) -> Any:
        import ray

        refs = [getattr(p, method).remote(*args) for p in self.peers]
        try:
            out = getattr(self, method)(*args)
        finally:
            ray.get(refs)  # raises a peer's error too
        return out

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(lm, *args)` on every rank together (rank 0's result); `lm` is the engine after `setup_built`."""
        return self._all("call_local", fn, *args)

    def call_local(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self.lm, *args)

    def vectors(
        self,
        concepts: Sequence[str],
        layers: Sequence[int],
        template: str,
        baseline: str,
        cache_dir: str | None,
        model_key: str,
    ) -> tuple[dict, dict]:
        """Concept vectors, computed by all ranks without the on-disk activation cache: a rank that found a cached
        layer another rank had not would skip forward passes the others run, and the gathers would deadlock."""
        return self._all("vectors_local", concepts, layers, template, baseline, None, model_key)

    def vectors_local(self, *args: Any) -> tuple[dict, dict]:
        from lab.steer.concepts import concept_vectors

        return concept_vectors(self.lm, *args)

    def n_layers(self) -> int:
        return self.lm.n_layers

    def close(self) -> Any:
        """Stop the peers; returns the placement group for the driver to remove (rank 0 lives in it)."""
        import ray

        for p in self.peers:
            ray.kill(p)
        return self.pg


def replica(
    model: ModelConfig | Callable[[], Any],
    shard: ShardConfig,
    *,
    cpus: float = 1.0,
    gpus: float = 0.0,
    resources: dict[str, float] | None = None,
    threads: int = 1,
    batch_size: int = 16,
    ds_config: dict[str, Any] | None = None,
    strategy: str = "PACK",
    timeout: float = 600,
) -> Any:
    """Start one ZeRO-3 replica: `workers_per_replica` actors in a placement group (one bundle of `cpus`, `gpus` and
    `resources` each), joined in one process group; returns rank 0's handle (a `ModelWorker` look-alike).
    `model` is a `ModelConfig` (loaded with `lab.model.loading.load`) or a function that builds the model on each rank
    (then `ds_config` is required and `call` gets the engine)."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    if shard.shard != "zero3":
        raise LabError("lab.model.sharded.replica needs model.shard: zero3")
    if not isinstance(model, ModelConfig) and ds_config is None:
        raise LabError("a model built by a function needs an explicit ds_config")
    n = shard.workers_per_replica
    bundle = {"CPU": cpus, **({"GPU": gpus} if gpus else {}), **(resources or {})}
    pg = ray.util.placement_group([bundle] * n, strategy=strategy)
    try:
        ray.get(pg.ready(), timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        ray.util.remove_placement_group(pg)
        raise LabError(f"no room for a ZeRO-3 replica of {n} × {bundle} within {timeout:.0f}s") from None
    actor = ray.remote(ShardedWorker)
    ranks = [
        actor.options(
            num_cpus=cpus,
            num_gpus=gpus,
            resources=resources or None,
            scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i),
        ).remote(i, n)
        for i in range(n)
    ]
    master, port = ray.get(ranks[0].endpoint.remote())
    if isinstance(model, ModelConfig):
        ray.get([r.setup.remote(model, shard, threads, batch_size, master, port) for r in ranks])
    else:
        ray.get([r.setup_built.remote(model, ds_config, threads, master, port) for r in ranks])
    ray.get(ranks[0].attach.remote(ranks[1:], pg))
    return ranks[0]


def pool(model_cfg: ModelConfig, runner_cfg: Any, shard: ShardConfig) -> list[Any]:
    """`runner_cfg.num_actors` sharded replicas; `cpus_per_actor`, `gpus_per_actor` and `resources` are per rank."""
    return [
        replica(
            model_cfg,
            shard,
            cpus=runner_cfg.cpus_per_actor,
            gpus=runner_cfg.gpus_per_actor,
            resources=dict(runner_cfg.resources) or None,
            threads=runner_cfg.threads,
            batch_size=runner_cfg.batch_size,
        )
        for _ in range(runner_cfg.num_actors)
    ]


def shutdown(workers: list[Any]) -> None:
    import ray

    for w in workers:
        pg = ray.get(w.close.remote())
        ray.kill(w)
        if pg is not None:
            ray.util.remove_placement_group(pg)
