"""Two Ray nodes on one machine (head on 127.0.0.2 with resource node_a, worker on 127.0.0.3 with node_b), a job
submitted with `ray job submit` whose tasks are pinned to each node; every item lands exactly once in Parquet, also
after a rerun. Everything started here is stopped by PID."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time

from lab.run import store
from tests.conftest import RAY, ROOT, env, free_port, stop_group, submit, wait_for


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [RAY, "start", "--block", "--disable-usage-stats", *args],
        env=env(),
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _ports() -> list[str]:
    names = (
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "metrics-export-port",
        "runtime-env-agent-port",
        "node-manager-port",
        "object-manager-port",
    )
    return [f"--{n}={free_port()}" for n in names]


def _alive_nodes(address: str) -> int:
    from ray.util.state import list_nodes

    try:
        return sum(1 for n in list_nodes(address=address, raise_on_missing_output=False) if n.state == "ALIVE")
    except Exception:  # the state API answers only once the dashboard is up
        return 0


def test_two_nodes_run_pinned_tasks_and_store_each_item_once(tmp_path):
    port, dash = free_port(), free_port()
    t0 = time.time()
    head = _start(
        [
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.2",
            "--dashboard-host=127.0.0.2",
            f"--dashboard-port={dash}",
            "--num-cpus=1",
            "--resources=" + json.dumps({"node_a": 1}),
            f"--temp-dir={tempfile.mkdtemp(prefix='ray-a-', dir='/tmp')}",
            *_ports(),
        ]
    )
    procs = [head]
    address = f"http://127.0.0.2:{dash}"
    try:
        wait_for(lambda: _alive_nodes(address) >= 1, 120, "the Ray head")
        procs.append(
            _start(
                [
                    f"--address=127.0.0.2:{port}",
                    "--node-ip-address=127.0.0.3",
                    "--num-cpus=1",
                    "--resources=" + json.dumps({"node_b": 1}),
                    f"--temp-dir={tempfile.mkdtemp(prefix='ray-b-', dir='/tmp')}",
                    *_ports(),
                ]
            )
        )
        wait_for(lambda: _alive_nodes(address) == 2, 120, "the second Ray node")
        up = time.time() - t0
        out = tmp_path / "items"
        cmd = ["python", "-m", "cluster.multinode_check", "--out", str(out), "--items", "8"]
        first = submit(address, f"multinode-{port}", cmd, timeout=300)
        assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
        assert "stored 8 new item(s) of 8" in first.stdout
        again = submit(address, f"multinode-{port}-rerun", cmd, timeout=300)
        assert again.returncode == 0 and "stored 0 new item(s) of 8" in again.stdout  # resume: nothing twice
        print(f"cluster up in {up:.1f}s, two jobs in {time.time() - t0 - up:.1f}s")
    finally:
        for p in reversed(procs):
            stop_group(p, grace=30)
    df = store.read(out)
    assert sorted(df["item"]) == list(range(8)) and df["trial_id"].is_unique
    assert set(df.groupby("node")["node_ip"].unique().map(tuple)) == {("127.0.0.2",), ("127.0.0.3",)}
    assert df.groupby("node")["node_id"].nunique().to_dict() == {"node_a": 1, "node_b": 1}
    assert df["node_id"].nunique() == 2 and set(df.loc[df["item"] % 2 == 1, "node"]) == {"node_b"}
