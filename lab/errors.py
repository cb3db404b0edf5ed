"""One exception type for bad input: its message is a single line a researcher can act on; and the one way every
entry point (`python -m jobs.*`, `python -m analysis.* --run`, the other `__main__` modules) turns it into one line
on stderr and exit code 2, argument-parsing errors included."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

EXIT_BAD_INPUT = 2


class LabError(ValueError):
    """A user-facing error (bad config, missing artefact, unreachable service). Jobs print it as one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are a `LabError` (one line, exit 2 through `fail`) instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        raise LabError(f"{message} (see: {self.prog} --help)")


def fail(e: LabError) -> int:
    """Print `e` as the one line `error: …` on stderr; the exit code of bad input."""
    print(f"error: {e}", file=sys.stderr, flush=True)
    return EXIT_BAD_INPUT


@contextmanager
def one_line_errors() -> Iterator[None]:
    """For a `__main__` block: a `LabError` inside ends the process with one line on stderr and exit code 2."""
    try:
        yield
    except LabError as e:
        raise SystemExit(fail(e)) from None


def input_folder(path: str, *needs: str, what: str = "--run", made_by: str = "") -> Path:
    """`path` as an existing, non-empty folder holding each of `needs` (glob patterns; 'a|b' = either), else one
    `LabError` naming what is wrong (`made_by`: the job whose output folder it should be)."""
    p = Path(path).expanduser()
    hint = f" (expected the output folder of {made_by})" if made_by else ""
    if not p.exists():
        raise LabError(f"{what} {path}: no such folder{hint}")
    if not p.is_dir():
        raise LabError(f"{what} {path} is not a folder{hint}")
    if not any(p.iterdir()):
        raise LabError(f"{what} {path} is an empty folder{hint}")
    for need in needs:
        if not any(any(p.glob(alt)) for alt in need.split("|")):
            raise LabError(f"{what} {path} holds no {need.replace('|', ' or ')}{hint}")
    return p
