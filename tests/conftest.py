"""Shared fixtures: the embedded models (each loaded once), a tiny random Llama, loopback-only service helpers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import lab  # noqa: F401  (offline / loopback environment defaults)

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


# the fields every test trial shares unless it says otherwise (lab.protocol.trials.make_trial takes them all)
TRIAL_DEFAULTS = {
    "model": "tiny",
    "strength_mode": "relative",
    "kind": "injection",
    "trial_number": 1,
    "sample": 0,
    "forced": False,
    "prompt_variant": "original",
    "dialogue_format": "standard",
    "seed": 0,
    "max_new_tokens": 8,
    "temperature": 0.0,
}


def trial(**fields):
    """A `Trial` of the original prompt in the standard format, `fields` over TRIAL_DEFAULTS."""
    from lab.protocol.trials import make_trial

    return make_trial(**(TRIAL_DEFAULTS | fields))


@pytest.fixture(scope="session")
def embedded():
    import torch

    from lab.model.loading import load

    torch.set_num_threads(2)
    return load("smollm2-135m")


def gemma_missing() -> str:
    """Why Gemma 3 270M cannot be used here ('' when it can): its package or one of its four chunk packages is absent."""
    import importlib.util

    from lab.model.embedded import EMBEDDED

    em = EMBEDDED["gemma3-270m"]
    modules = [em.package, *(f"{em.package}_part{i}" for i in range(1, 5))]
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"{', '.join(absent)} not installed (make setup installs it: {em.install_hint})" if absent else ""


@pytest.fixture(scope="session")
def gemma():
    """Gemma 3 270M base, the second embedded model: converted once into the lab's cache (about 50 s the first time
    on a machine, then reused) and loaded once per session (about 5 s); skipped, saying why, without its package."""
    if why := gemma_missing():
        pytest.skip(why)
    import torch

    from lab.model.loading import load

    torch.set_num_threads(2)
    return load("gemma3-270m")


@pytest.fixture(scope="session")
def tiny_model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(cfg).eval()


RAY = str(Path(PY).parent / "ray")


@pytest.fixture(scope="session")
def ray_head():
    """A real `ray start --head --block` on loopback (node 127.0.0.2, dashboard on 127.0.0.1, free ports, its own
    dashboard-agent port so another local Ray cannot steal it); stopped by PID at the end of the session."""
    import tempfile

    port, dash, agent = free_port(), free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    proc = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.2",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--dashboard-agent-listen-port={agent}",
            "--num-cpus=2",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
            "--include-dashboard=true",
        ],
        env=env(),
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"http://127.0.0.1:{dash}"
    try:
        from ray.job_submission import JobSubmissionClient

        wait_for(lambda: http_ok(address, "/api/version"), 90, "the Ray dashboard")
        yield address, JobSubmissionClient(address)
    finally:
        stop_group(proc, grace=30)


def submit(address: str, sid: str, entrypoint: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    """`ray job submit` with the project's runtime env; retried while the head's job agent is still starting."""
    cmd = [
        RAY,
        "job",
        "submit",
        "--address",
        address,
        "--submission-id",
        sid,
        "--working-dir",
        ".",
        "--runtime-env",
        "cluster/runtime-env.yaml",
        "--",
        *entrypoint,
    ]
    for _ in range(20):  # on a loaded machine the job agent may come up well after the dashboard
        proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)
        if "No available agent" not in proc.stdout + proc.stderr:
            return proc
        time.sleep(3)
    raise AssertionError("the Ray job agent never came up")


@pytest.fixture(scope="session")
def tiny_ablation(ray_head, tmp_path_factory):
    """configs/test-ablations-tiny.yaml trained and evaluated once per session through `ray job submit` to the
    session's head (two conditions; the first attempt of sft_chosen fails on purpose and is retried), shared by the
    ablation read-back test and the browser test. Returns (entrypoint, submission id, submit process, job logs,
    results folder, MLflow URI)."""
    import uuid

    address, client = ray_head
    tmp = tmp_path_factory.mktemp("tiny-ablation")
    out, uri = tmp / "results", f"sqlite:///{tmp / 'mlflow.db'}"
    sid = f"test-ablation-{uuid.uuid4().hex[:8]}"
    entry = ["python", "-m", "jobs.train_ablations", "--config", "configs/test-ablations-tiny.yaml"]
    entry += ["--output", str(out), "--tracking-uri", uri, "--quiet"]
    proc = submit(address, sid, entry)
    logs = client.get_job_logs(sid)
    assert str(client.get_job_status(sid)).endswith("SUCCEEDED"), proc.stdout + proc.stderr + logs
    return entry, sid, proc, logs, out, uri


# one concept, one trial per condition, 8 new tokens: the smallest sweep a job's --set can ask for
TINY_SWEEP = [
    "--set",
    "sweep.concepts=[Dust]",
    "--set",
    "sweep.trials_per_concept=1",
    "--set",
    "sweep.max_new_tokens=8",
]


def dust_sweep(tmp_path: Path, trials: int, max_new: int, runner: Any) -> Any:
    """An `InjectionConfig` of concept Dust at layer 12, relative strength 0.2, `trials` trial numbers, writing to
    tmp_path/out with its vectors cached in tmp_path/vec, on the given `FanOutConfig`."""
    from lab.config import ModelConfig
    from lab.experiments.concept_injection import InjectionConfig
    from lab.protocol.trials import SweepConfig

    sweep = SweepConfig(
        concepts=("Dust",),
        layers=(12,),
        strengths=(0.2,),
        strength_mode="relative",
        trials_per_concept=trials,
        max_new_tokens=max_new,
    )
    out, vec = str(tmp_path / "out"), str(tmp_path / "vec")
    return InjectionConfig(model=ModelConfig("smollm2-135m"), sweep=sweep, runner=runner, output_dir=out, cache_dir=vec)


def http_ok(url: str, path: str = "/health") -> bool:
    """Whether `url` + `path` answers 200 (an MLflow server's /health, the Ray dashboard's /api/version)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}{path}", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def job_command(job: str, config: str, tmp_path: Path, *extra: str) -> list[str]:
    """`python -m jobs.<job> --config <config>` writing its results to tmp_path/out and MLflow to tmp_path/mlflow.db,
    then `extra` (--set … --quiet)."""
    out, db = str(tmp_path / "out"), f"sqlite:///{tmp_path}/mlflow.db"
    return [PY, "-m", f"jobs.{job}", "--config", config, "--output", out, "--tracking-uri", db, *extra]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{Path(PY).parent}{os.pathsep}{e.get('PATH', '')}"
    e["PYTHONPATH"] = str(ROOT)
    return e


def stop_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """Stop a process we started (and its children, same process group) by PID: SIGTERM to the leader, then SIGKILL
    to the group (a server's workers can outlive the `make` or CLI that started them). The leader alone is asked
    first so that it can stop its own children in order: `ray start --block` drains its node through its GCS, and a
    group-wide SIGTERM killed the GCS first, so every stop waited out Ray's 30 s drain timeout."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    end = time.time() + timeout
    while time.time() < end:
        v = predicate()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as e:
        return f"<{e.strerror}>"


def threads(pid: int) -> list[Path]:
    """`/proc/<pid>/task/<tid>` of every thread of `pid`, by thread id (the main thread's id is `pid`)."""
    return sorted(Path(f"/proc/{pid}/task").iterdir(), key=lambda p: int(p.name))


def blocked_signals(task: Path) -> int | None:
    """A thread's blocked-signal mask (bit n-1 for signal n), from its `SigBlk` status line; None if unreadable."""
    line = next((x for x in _read(task / "status").splitlines() if x.startswith("SigBlk:")), None)
    return int(line.split()[1], 16) if line else None


def process_report(pid: int) -> str:
    """What a process that will not end is doing, from /proc: its state, and each thread's state, kernel wait channel
    and kernel stack (a thread-group leader whose other threads cannot die stays unreapable after exit)."""
    base = Path(f"/proc/{pid}")
    if not base.exists():
        return f"pid {pid}: gone"
    status = [x for x in _read(base / "status").splitlines() if x.startswith(("State", "Threads", "SigIgn", "SigCgt"))]
    lines = [f"pid {pid}: " + "  ".join(status)]
    tasks = threads(pid)
    for task in tasks:
        stat = _read(task / "stat")
        state = stat[stat.rfind(")") + 2 :][:1]
        mask = blocked_signals(task)
        blocked = "?" if mask is None else f"{mask:016x}"
        lines.append(
            f"  thread {task.name} {state} {_read(task / 'comm')} wchan={_read(task / 'wchan')} blocked={blocked}"
        )
        lines += [f"    {x}" for x in _read(task / "stack").splitlines()[:6]]
    kids = " ".join(_read(t / "children") for t in tasks).split()
    return "\n".join([*lines, f"  children: {' '.join(kids) or 'none'}"])
