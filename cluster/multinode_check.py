"""Multi-node smoke job: items fanned out as Ray tasks pinned to named nodes, stored once each in Parquet.

Run inside `ray job submit` on a cluster whose nodes carry distinct custom resources (`--resources='{"node_a":1}'`
on one, `node_b` on another): item i goes to `nodes[i % len(nodes)]` (a task asking for 0.01 of that resource),
records the IP, node id and pid it ran on, and each finished batch of items is written as one atomic Parquet shard
(`lab.run.store.write_shard`). A rerun skips stored items (resume), so an item never lands twice.

    python -m cluster.multinode_check --out /shared/multinode --items 8 --nodes node_a node_b
"""

from __future__ import annotations

import os
import socket
import time

from lab.errors import ArgumentParser, LabError, fail, one_line_errors
from lab.run import parallel, store


def work(item: int, node: str) -> dict[str, object]:
    import ray

    ctx = ray.get_runtime_context()
    return {
        "trial_id": f"item-{item:04d}",
        "item": item,
        "node": node,
        "node_ip": ray.util.get_node_ip_address(),
        "node_id": ctx.get_node_id(),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "square": item * item,
    }


def fan_out(out: str, items: int, nodes: list[str], batch: int = 2) -> int:
    import ray

    # inside `ray job submit`: joins the cluster through $RAY_ADDRESS, with the job's runtime env
    with parallel.ray_session():
        have = ray.cluster_resources()
        missing = [n for n in nodes if n not in have]
        if missing:
            raise LabError(f"no node carries the resource(s) {', '.join(missing)} (cluster: {sorted(have)})")
        todo = store.pending([f"item-{i:04d}" for i in range(items)], out)
        task = ray.remote(num_cpus=0.1)(work)
        refs = [
            task.options(resources={nodes[int(t[5:]) % len(nodes)]: 0.01}).remote(
                int(t[5:]), nodes[int(t[5:]) % len(nodes)]
            )
            for t in todo
        ]
        done = 0
        while refs:
            ready, refs = ray.wait(refs, num_returns=min(batch, len(refs)))
            store.write_shard(out, ray.get(ready))
            done += len(ready)
    print(f"stored {done} new item(s) of {items} in {out}")
    return done


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(
        prog="python -m cluster.multinode_check",
        description="tasks pinned to named Ray nodes, each item stored once in Parquet",
    )
    ap.add_argument("--out", required=True, help="Parquet directory every node and the driver can reach")
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--nodes", nargs="+", default=["node_a", "node_b"], help="custom resources naming the nodes")
    a = ap.parse_args(argv)
    t = time.time()
    try:
        from lab.run.preflight import writable

        if a.items < 1:
            raise LabError(f"--items must be >= 1, got {a.items}")
        writable(a.out, "--out")  # before Ray starts
        fan_out(a.out, a.items, a.nodes)
    except LabError as e:
        return fail(e)
    print(f"took {time.time() - t:.1f}s")
    return 0


if __name__ == "__main__":
    with one_line_errors():
        raise SystemExit(main())
