"""What `make ray-up` checks, so that it says "ready" only when the head can accept a job.

`ports`: every port the head binds at a fixed number (GCS, dashboard, dashboard agent, Ray client) must be free on
its address before `ray start`, or one line names the port and the Makefile variable that moves it. `wait`: after
`ray start`, poll until the dashboard answers *and* the head node's job agent has registered in the GCS (the job
API hands every submission to that agent; a dashboard up with its agent failed — a port taken by another Ray — turns
every `ray job submit` into "No available agent to submit job") and answers HTTP; or fail in one line with the cause
read from the head's logs, as soon as `ray start` exits or the timeout passes. Exit 0 ready, 1 not ready, 2 bad
input.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
import urllib.request
from pathlib import Path

from lab.errors import ArgumentParser, one_line_errors

# the lines worth showing, most specific first: the first pattern any log matches gives the cause
CAUSES = (
    r"Failed to start HTTP server",  # the agent's last word after its bind retries
    r"address already in use",
    r"\[Errno \d+\]",
    r"(?:Error|Exception):",
    r"\bERROR\b",
    r"exited unexpectedly",
)
LOGS = ("dashboard_agent.log", "dashboard.log", "gcs_server.err", "gcs_server.out", "raylet.err", "raylet.out")


def busy(host: str, port: int) -> bool:
    """Whether `port` cannot be bound on `host` (something listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(node_ip: str, dashboard_host: str, ports: dict[str, int]) -> str | None:
    """The first taken port as one line (None: all free). `ports` maps a Makefile variable to its port; the GCS
    listens on every interface, the agent and the Ray client on loopback and the node address, the dashboard on
    its host."""
    where = {
        "RAY_GCS_PORT": ["0.0.0.0"],
        "RAY_DASHBOARD_PORT": [dashboard_host],
        "RAY_AGENT_PORT": sorted({"127.0.0.1", node_ip}),
        "RAY_CLIENT_PORT": sorted({"127.0.0.1", node_ip}),
    }
    for var, port in ports.items():
        for host in where.get(var, [node_ip]):
            if busy(host, port):
                return f"port {port} on {host} is in use (another Ray?): choose another with make ray-up {var}=<port>"
    return None


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status < 500
    except urllib.error.HTTPError as e:  # any HTTP answer means the server is up
        return e.code < 500
    except OSError:
        return False


def agent_ready(gcs: str) -> str | None:
    """The head node's job agent address ('http://ip:port') once it has registered in the GCS and answers HTTP."""
    from ray._private import ray_constants
    from ray._raylet import GcsClient
    from ray.dashboard import consts

    try:
        client = GcsClient(address=gcs)
        head = client.internal_kv_get(
            ray_constants.KV_HEAD_NODE_ID_KEY, namespace=ray_constants.KV_NAMESPACE_JOB, timeout=2
        )
        if not head:
            return None
        info = client.internal_kv_get(
            f"{consts.DASHBOARD_AGENT_ADDR_NODE_ID_PREFIX}{head.decode()}".encode(),
            namespace=ray_constants.KV_NAMESPACE_DASHBOARD,
            timeout=2,
        )
    except Exception:  # the GCS is not up yet
        return None
    if not info:
        return None
    ip, port, _ = json.loads(info)
    url = f"http://{ip}:{port}"
    return url if int(port) > 0 and _answers(url + "/") else None


def cause(head_log: Path, temp_dir: Path) -> str:
    """The most telling line of the head's logs, without its timestamp."""
    files = [head_log] + [temp_dir / "session_latest" / "logs" / n for n in LOGS]
    texts = [f.read_text(errors="replace").splitlines() for f in files if f.is_file()]
    for pat in CAUSES:
        for lines in texts:
            for line in lines:
                if re.search(pat, line):
                    line = re.sub(r"^\[?\d{4}-\d\d-\d\d[ T][\d:,.]+\]?\s*", "", line)
                    line = re.sub(r"^(INFO|WARNING|ERROR)\s+\S+:\d+ -- ", "", line).split(". The agent will")[0]
                    return line.strip()[:240]
    return "no error in the logs"


def fatal(temp_dir: Path, since: float) -> str | None:
    """A failure the head does not recover from (its agent could not bind its port), in this session's logs."""
    for name in ("dashboard_agent.log", "dashboard.log"):
        f = temp_dir / "session_latest" / "logs" / name
        if f.is_file() and f.stat().st_mtime >= since:
            text = f.read_text(errors="replace")
            if re.search(CAUSES[0], text):
                return cause(Path("/nonexistent"), temp_dir)
    return None


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait(pid: int, gcs: str, dashboard: str, head_log: Path, temp_dir: Path, timeout: float) -> tuple[bool, str]:
    """(ready, one line) for the head `ray start --block` runs as `pid`."""
    t0, since = time.monotonic(), time.time() - 5
    while time.monotonic() - t0 < timeout:
        if not _alive(pid):
            return False, f"ray start exited: {cause(head_log, temp_dir)}"
        bad = fatal(temp_dir, since)
        if bad:
            return False, f"failed to start: {bad}"
        if _answers(dashboard + "/api/version"):
            agent = agent_ready(gcs)
            if agent:
                return True, f"jobs: ray job submit --address {dashboard} (agent {agent}, GCS {gcs})"
        time.sleep(1)
    return False, f"not ready after {timeout:.0f} s: {cause(head_log, temp_dir)}"


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m cluster.ray_head", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ports", help="fail in one line if a fixed port of the head is taken")
    p.add_argument("--node-ip", required=True)
    p.add_argument("--dashboard-host", required=True)
    p.add_argument("--port", action="append", default=[], metavar="VAR=PORT")
    w = sub.add_parser("wait", help="wait until the head can accept a job")
    w.add_argument("--pid", type=int, required=True)
    w.add_argument("--gcs", required=True)
    w.add_argument("--dashboard", required=True)
    w.add_argument("--head-log", type=Path, required=True)
    w.add_argument("--temp-dir", type=Path, required=True)
    w.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args(argv)
    if args.cmd == "ports":
        try:
            ports = {k: int(v) for k, v in (s.split("=", 1) for s in args.port)}
        except ValueError:
            print(f"error: ports are VAR=PORT with an integer PORT, got {args.port}", file=sys.stderr)
            return 2
        msg = check_ports(args.node_ip, args.dashboard_host, ports)
        if msg:
            print(f"error: {msg}", file=sys.stderr)
            return 2
        return 0
    ok, line = wait(args.pid, args.gcs, args.dashboard, args.head_log, args.temp_dir, args.timeout)
    print(f"Ray head ready; {line}" if ok else f"error: Ray head {line}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    with one_line_errors():
        raise SystemExit(main())
