"""`make ray-up` tells the truth: ready means a job can be submitted; a taken port fails in one line before `ray start`
(or, with the check off, with the cause from the head's own logs) and leaves nothing running. Ports are chosen free
here, so the test runs beside any other Ray on the machine."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def _ports() -> dict[str, int]:
    ports: set[int] = set()
    while len(ports) < 4:
        ports.add(_free_port())
    return dict(zip(("RAY_GCS_PORT", "RAY_DASHBOARD_PORT", "RAY_AGENT_PORT", "RAY_CLIENT_PORT"), sorted(ports)))


def _ours(stderr: str) -> list[str]:
    """stderr without make's own failure line ("make: *** …", "make[1]: *** …" when make runs under `make test`)."""
    return [line for line in stderr.splitlines() if not re.match(r"make(\[\d+\])?: ", line)]


def _make(target: str, state: Path, ports: dict[str, int], *extra: str, timeout: float = 180):
    args = [
        "make",
        "--no-print-directory",
        "-o",
        ".venv/.installed",
        target,
        f"RAY_STATE={state}",
        f"RAY_TMP={state}-tmp",
    ]
    args += [f"{k}={v}" for k, v in ports.items()] + list(extra)
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def state():
    """Where `make ray-up` keeps its pid and log, with Ray's temp dir beside it (short: Ray's socket paths must be)."""
    d = Path(tempfile.mkdtemp(prefix="rayup-", dir="/tmp"))
    yield d / "s"
    shutil.rmtree(d, ignore_errors=True)


def _held(port: int) -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.2", port))
    s.listen()
    return s


def _alive(state: Path) -> bool:
    pid = state / "head.pid"
    if not pid.exists():
        return False
    try:
        os.kill(int(pid.read_text()), 0)
    except ProcessLookupError:
        return False
    return True


def test_a_taken_port_fails_in_one_line_before_ray_starts(state):
    ports = _ports()
    with _held(ports["RAY_AGENT_PORT"]):
        r = _make("ray-up", state, ports, timeout=60)
    ours = _ours(r.stderr)
    assert r.returncode != 0 and r.stdout == ""
    assert ours == [
        f"error: port {ports['RAY_AGENT_PORT']} on 127.0.0.2 is in use (another Ray?): choose another with "
        f"make ray-up RAY_AGENT_PORT=<port>"
    ]
    assert not (state / "head.pid").exists()  # nothing was started


@pytest.mark.slow
def test_an_agent_that_cannot_bind_fails_with_the_logs_cause_and_stops_the_head(state):
    """With the pre-check off, Ray's dashboard comes up but its job agent cannot bind: the old `ray-up` said "Ray
    dashboard on …" here; now one line quotes the agent log's cause and the head is stopped."""
    ports = _ports()
    with _held(ports["RAY_AGENT_PORT"]):
        r = _make("ray-up", state, ports, "RAY_PORT_CHECK=0", "RAY_UP_TIMEOUT=60")
    ours = _ours(r.stderr)
    assert r.returncode != 0 and "ready" not in r.stdout, (r.stdout, r.stderr)
    assert len(ours) == 1 and ours[0].startswith("error: Ray head failed to start: Failed to start HTTP server")
    assert "address already in use" in ours[0] and str(ports["RAY_AGENT_PORT"]) in ours[0]
    assert not _alive(state)


@pytest.mark.slow
def test_ready_means_a_job_can_be_submitted(state):
    ports = _ports()
    try:
        r = _make("ray-up", state, ports)
        assert r.returncode == 0, (r.stdout, r.stderr)
        address = f"http://127.0.0.1:{ports['RAY_DASHBOARD_PORT']}"
        assert r.stdout.startswith(f"Ray head ready; jobs: ray job submit --address {address} (agent http://")
        job = subprocess.run(
            [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address, "--", "echo", "hello"],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ, RAY_AUTH_MODE="disabled"),
        )
        assert job.returncode == 0 and "hello" in job.stdout, job.stdout + job.stderr
        again = _make("ray-up", state, ports)
        assert again.returncode == 0 and again.stdout.startswith("Ray head already running")
    finally:
        down = _make("ray-down", state, ports)
    assert down.stdout.strip() == "Ray head stopped" and not _alive(state)
