"""What every job shares: `--config`/`--set` parsing into a frozen config (`--show-config` prints it with each key's
help, `--dry-run` plans it and prints what would run), the preflight before any model work (lab.run.preflight), the
absolute output and tracking paths at start and end, and one-line errors (exit 2) through `Job`."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from lab.config import apply_overrides, describe, for_model, from_dict, load_yaml, sections
from lab.errors import ArgumentParser, LabError, fail
from lab.run.preflight import checked, dry_run

T = TypeVar("T")
_Raw = argparse.RawDescriptionHelpFormatter
_Plan = Callable[[Any], "Sequence[Any] | tuple[int, str]"]


# the job this process runs (set by `Job`): its module and command line; once started, the line saying where its
# results go (printed at start and end), its output folder and the command that reruns its report
_RUN: dict[str, Any] = {"job": "jobs", "argv": [], "where": "", "output": "", "rerun": ""}


def parser(description: str, cls: type | None = None) -> argparse.ArgumentParser:
    """The shared command line; `cls` (the job's config class) lists its sections in `--help`."""
    epilog = sections(cls) if cls is not None and dataclasses.is_dataclass(cls) else None
    p = ArgumentParser(prog=f"python -m {_RUN['job']}", description=description, epilog=epilog, formatter_class=_Raw)
    p.add_argument("--config", help="YAML config file (see configs/); required unless --show-config")
    sets = "override a config value by dotted key, e.g. --set sweep.layers=[10,12]"
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=sets)
    p.add_argument("--output", help="override output_dir")
    p.add_argument("--tracking-uri", help="override tracking.uri (MLflow)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--show-config", action="store_true", help="print the resolved config, each key's help, and exit")
    p.add_argument("--dry-run", action="store_true", help="check and plan: print trials, judge, settings; run nothing")
    return p


def bare_parser(description: str, cls: type | None = None) -> argparse.ArgumentParser:
    """The parser of a job without the shared options (`python -m jobs.X` usage, one-line errors, `--dry-run`);
    `cls`, the config it reads if any, lists its sections in `--help`."""
    epilog = sections(cls) if cls is not None and dataclasses.is_dataclass(cls) else None
    p = ArgumentParser(prog=f"python -m {_RUN['job']}", description=description, epilog=epilog, formatter_class=_Raw)
    p.add_argument("--dry-run", action="store_true", help="check the inputs, print what would run; run nothing")
    return p


def load_config(cls: type[T], args: argparse.Namespace) -> T:
    if not args.config and not getattr(args, "show_config", False):
        raise LabError(f"--config is required (see: python -m {_RUN['job']} --help)")
    data = for_model(apply_overrides(load_yaml(args.config) if args.config else {}, args.set), args.set)
    if getattr(args, "output", None):
        data["output_dir"] = args.output
    if getattr(args, "tracking_uri", None):
        data.setdefault("tracking", {})["uri"] = args.tracking_uri
    cfg = from_dict(cls, data)
    if getattr(args, "show_config", False):
        print(describe(cfg), end="")
        raise SystemExit(0)
    return cfg


def configure(
    cls: type[T],
    doc: str | None,
    argv: list[str] | None,
    plan: _Plan | None = None,
    rerun: str = "",
    check: Callable[[T], Any] | None = None,
) -> tuple[T, argparse.Namespace]:
    """Parse the command line into a `cls` config, then before any model, Ray or write: anchor its paths (under a
    Ray job), run `check(cfg)` (the job's own input checks) and the preflight (lab.run.preflight.check_config +
    tracking, Ray address, output folder). `--dry-run`: print `plan(cfg)`'s trial count, the judge and the settings,
    exit 0. Else print where results go; `rerun` (a command, `{output}` filled in) is printed if the job fails after
    starting (default: this command line again, which skips what is stored)."""
    args = parser((doc or cls.__name__).splitlines()[0], cls).parse_args(argv)
    if args.dry_run:
        print(*dry_run(load_config(cls, args), f"python -m {_RUN['job']}", check, plan), sep="\n")
        raise SystemExit(0)
    cfg = checked(load_config(cls, args), check)
    out = str(Path(getattr(cfg, "output_dir", "") or ".").absolute())
    begin(cfg, out, rerun.format(output=out) if rerun else "")
    return cfg, args


def begin(cfg: Any, out: str, rerun: str = "") -> None:
    """Say where results go (printed again at the end by `Job`)."""
    from lab.run.preflight import destinations

    _RUN.update(where=destinations(cfg, out), output=out)
    _RUN["rerun"] = rerun or shlex.join(["python", "-m", _RUN["job"], *_RUN["argv"]])
    print(_RUN["where"], flush=True)


class Job:
    """One run of a job, around its main's body: `with Job(__name__, argv) as job: ...` then `return job.code`.

    A `LabError` becomes one line on stderr and `job.code` 2; `--help`, `--show-config` and `--dry-run` raise
    SystemExit(0) through it; once a job has started (`configure`), where its results went is printed at the end, and
    after a failure, what was kept and the one command that reruns the report. A context manager rather than a wrapper
    around main: nothing of it is on the stack while the job runs, so a traceback, and the path from a config to the
    hook (docs/architecture.md), start in the job itself."""

    def __init__(self, module: str, argv: list[str] | None = None):
        spec = getattr(sys.modules.get(module), "__spec__", None)
        _RUN.update(job=spec.name if spec else module, where="", output="", rerun="")
        _RUN["argv"] = list(sys.argv[1:] if argv is None else argv)
        self.code = 0  # the job's exit code: 0, or 2 once the body raised a LabError

    def __enter__(self) -> Job:
        return self

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None, tb: Any) -> bool:
        if e is None:
            if _RUN["where"]:
                print(_RUN["where"], flush=True)
            return False
        if isinstance(e, SystemExit):  # --help, --show-config, --dry-run: exit 0 as argparse does
            return False
        if _RUN["where"] and Path(_RUN["output"]).exists():
            print(f"kept: what was done is in {_RUN['output']}; rerun the report with: {_RUN['rerun']}", flush=True)
        if isinstance(e, LabError):
            self.code = fail(e)
            return True
        return False
