"""Run a module's `if __name__ == "__main__":` entry in this process, as `python -m <module> <args>` would: the
analysis reruns parse their arguments only there. Returns the exit code."""

from __future__ import annotations

import runpy
import sys
import warnings


def run_module(module: str, *argv: str) -> int:
    saved = sys.argv
    sys.argv = [module, *argv]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "… found in sys.modules … prior to execution"
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 1
        return int(e.code or 0)
    finally:
        sys.argv = saved
    return 0
