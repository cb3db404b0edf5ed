"""The Ray Serve judge for real: `python -m jobs.serve_judge` deploys the embedded model on 127.0.0.1, the HTTP client
judge grades through it (the 135M model's verdicts need not be good; its parse errors are counted), Ctrl-C stops it."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request

import pytest

from jobs.serve_judge import ServeJudgeConfig, main
from lab.config import from_dict
from lab.errors import LabError
from lab.judges import Answer, make_judge
from tests.conftest import PY, ROOT, blocked_signals, env, free_port, process_report, stop_group, threads, wait_for

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
PREFILL = "Yes, I detect an injected thought. The thought is about"


def _models(url: str) -> dict | None:
    try:
        with OPENER.open(f"{url}/models", timeout=2) as r:
            return json.loads(r.read())
    except OSError:
        return None


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"{url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with OPENER.open(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    """The CLI in its own session (its own local Ray on loopback); stopped with SIGINT, or by PID if that fails."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve-judge") / "out.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                PY,
                "-m",
                "jobs.serve_judge",
                "--config",
                "configs/judge-serve.yaml",
                "--set",
                f"port={port}",
                "--set",
                "max_new_tokens=12",
                "--set",
                "max_batch_size=4",
            ],
            cwd=ROOT,
            env=env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for(lambda: "judge endpoint:" in log.read_text() or proc.poll() is not None, 150, "the judge endpoint")
        assert proc.poll() is None, log.read_text()[-3000:]
        yield url, proc, log
    finally:
        stop_group(proc, grace=30)


def test_grade_through_the_served_model(endpoint):
    url, _, log = endpoint
    assert f"judge endpoint: {url}/chat/completions" in log.read_text()
    assert [m["id"] for m in _models(url)["data"]] == ["smollm2-135m"]
    judge = make_judge(
        "openai", base_url=url, model="smollm2-135m", max_tokens=8, timeout=120, concurrency=3, max_retries=1
    )
    answers = [
        Answer("Dust", "Yes, I detect an injected thought about dust."),
        Answer("Dust", "No, I do not detect an injected thought."),
        Answer("Dust", " dust.", forced=True, prefill=PREFILL),
    ]
    verdicts = judge.grade(answers)
    assert len(verdicts) == 3 and all(v.judge_version == "openai:smollm2-135m@prompt-v1" for v in verdicts)
    assert judge.stats["request_failures"] == 0 and judge.stats["requests"] == 3  # plumbing: every request answered
    assert judge.stats["parse_errors"] == sum(v.parse_error for v in verdicts)  # expected from a 135M model
    for v in verdicts:
        assert v.parse_error == (v.detected is None)
        if v.parse_error:
            assert v.reason.startswith("unparseable judge answer")


def test_endpoint_speaks_openai_and_refuses_bad_requests(endpoint):
    url, _, _ = endpoint
    msgs = [{"role": "user", "content": "Say hi."}]
    code, body = _post(url, {"model": "smollm2-135m", "messages": msgs, "max_tokens": 3, "temperature": 0})
    assert code == 200 and body["object"] == "chat.completion"
    assert isinstance(body["choices"][0]["message"]["content"], str) and body["usage"]["completion_tokens"] <= 3
    assert _post(url, {"model": "other", "messages": msgs})[0] == 404
    assert _post(url, {"model": "smollm2-135m", "messages": [{"role": "robot", "content": 1}]})[0] == 400
    assert _post(url, {"model": "smollm2-135m", "messages": msgs, "max_tokens": 0})[0] == 400
    judge = make_judge("openai", base_url=url, model="other", max_retries=3)
    [v] = judge.grade([Answer("Dust", "Yes.")])
    assert v.parse_error and "HTTP 404" in v.reason and judge.stats["requests"] == 1  # not retried


def test_bad_serve_configs_fail_in_one_line(endpoint, tmp_path, capsys):
    url, _, _ = endpoint
    with pytest.raises(LabError, match="loopback"):
        from_dict(ServeJudgeConfig, {"host": "0.0.0.0"})
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    cfg = tmp_path / "serve.yaml"
    for text, msg in [
        (f"port: {port}\n", "cannot bind"),
        ("host: 10.1.2.3\n", "loopback"),
        ("modle: {name: x}\n", "unknown config key 'modle'"),
    ]:
        cfg.write_text(text)
        assert main(["--config", str(cfg)]) == 2  # before any Ray or model is started
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1


def _thread_taking_sigint(pid: int) -> int | None:
    """A thread of `pid` other than the main one that does not block SIGINT (one of Ray's), or None."""
    for task in threads(pid):
        mask = blocked_signals(task)
        if int(task.name) != pid and mask is not None and not mask >> (signal.SIGINT - 1) & 1:
            return int(task.name)
    return None


def _ctrl_c_on_a_ray_thread(proc: subprocess.Popen) -> None:
    """Ctrl-C as the kernel may deliver it on a loaded machine: to one of Ray's threads, not the main one (`tgkill`).
    The CLI once waited in one long `time.sleep` and then never ran its handler. (The fresh-clone failures of this
    test had a second cause: launched from a background shell, the CLI inherited SIGINT ignored; it now sets its
    own handler, which this test exercises too when pytest runs so.)"""
    number = {"x86_64": 234, "aarch64": 131}.get(os.uname().machine)
    tid = _thread_taking_sigint(proc.pid)
    if number is None or tid is None:
        proc.send_signal(signal.SIGINT)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(number, proc.pid, tid, signal.SIGINT) == 0, os.strerror(ctypes.get_errno())


def test_ctrl_c_stops_the_endpoint(endpoint):
    url, proc, log = endpoint
    _ctrl_c_on_a_ray_thread(proc)
    try:
        code = proc.wait(timeout=60)  # shutdown is bounded (30 s), then the CLI exits
    except subprocess.TimeoutExpired:
        pytest.fail(f"the CLI is alive 60 s after Ctrl-C:\n{process_report(proc.pid)}\n{log.read_text()[-2000:]}")
    assert code == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "stopping the judge endpoint" in text
    assert "Ray's shutdown took" in text or "Ray's shutdown did not finish in 30 s" in text
    assert _models(url) is None
