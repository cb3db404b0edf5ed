"""Why Tune trials printed `SystemExit: 1` tracebacks at every normal shutdown, and that they no longer do: the
raylet stops a worker with SIGTERM, Ray's handler raises SystemExit(1) wherever the main thread is, and inside a
weakref callback Python can only print it ("Exception ignored in: …"). Reproduced in a plain process with Ray's own
exit function and a weakref callback that is running when the signal arrives; `exit_quietly_on_sigterm` (installed
in every trial by `tune_grid`) turns it into the quiet exit it was meant to be."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc, os, signal, sys, time, weakref
from ray._raylet import raise_sys_exit_with_custom_error_message
from lab.run.parallel import exit_quietly_on_sigterm

def ray_handler(signum, frame):  # what ray._private.worker.main_loop installs in every worker
    raise_sys_exit_with_custom_error_message("The process receives a SIGTERM.", exit_code=1)

signal.signal(signal.SIGTERM, ray_handler)
if sys.argv[1] == "quiet":
    exit_quietly_on_sigterm()

class Obj:
    pass

def collected(_):  # a weakref callback that is running when the raylet's SIGTERM arrives
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(1000):
        sum(range(100))

o = Obj()
r = weakref.ref(o, collected)
del o
gc.collect()
print("still running after SIGTERM", flush=True)
"""


def _run(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120)


def test_sigterm_in_a_weakref_callback_prints_a_traceback_with_rays_handler_alone():
    p = _run("ray")
    assert "Exception ignored in: <function collected" in p.stderr and p.stderr.rstrip().endswith("SystemExit: 1")
    assert p.stdout == "still running after SIGTERM\n" and p.returncode == 0  # and the process did not even exit


def test_exit_quietly_on_sigterm_exits_with_rays_code_and_prints_nothing():
    p = _run("quiet")
    assert (p.returncode, p.stdout, p.stderr) == (1, "", "")
