"""What every job shares: `--config`/`--set` parsing into a frozen config (`--show-config` prints it with each key's
help), and one-line errors (exit 2)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import yaml

from lab.config import describe, from_dict, load_yaml
from lab.errors import LabError

T = TypeVar("T")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", required=True, help="YAML config file (see configs/)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value by dotted key, e.g. --set sweep.layers=[10,12]",
    )
    p.add_argument("--output", help="override output_dir")
    p.add_argument("--tracking-uri", help="override tracking.uri (MLflow)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--show-config", action="store_true", help="print the resolved config, each key's help, and exit")
    return p


def apply_overrides(data: dict[str, Any], sets: Sequence[str]) -> dict[str, Any]:
    for item in sets:
        if "=" not in item:
            raise LabError(f"--set expects KEY=VALUE, got '{item}'")
        key, raw = item.split("=", 1)
        node = data
        *parents, last = key.strip().split(".")
        for k in parents:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise LabError(f"--set {key}: '{k}' is not a section")
        node[last] = yaml.safe_load(raw)
    return data


def load_config(cls: type[T], args: argparse.Namespace) -> T:
    data = apply_overrides(load_yaml(args.config), args.set)
    if getattr(args, "output", None):
        data["output_dir"] = args.output
    if getattr(args, "tracking_uri", None):
        data.setdefault("tracking", {})["uri"] = args.tracking_uri
    cfg = from_dict(cls, data)
    if getattr(args, "show_config", False):
        print(describe(cfg), end="")
        raise SystemExit(0)
    return cfg


def configure(cls: type[T], doc: str | None, argv: list[str] | None) -> tuple[T, argparse.Namespace]:
    """Parse the command line into a `cls` config and check, before any model or Ray starts, that its tracking
    store answers and its `output_dir` is writable."""
    from lab.run.experiment import preflight

    args = parser((doc or cls.__name__).splitlines()[0]).parse_args(argv)
    cfg = load_config(cls, args)
    preflight(cfg.tracking, output_dir=cfg.output_dir)  # type: ignore[attr-defined]
    return cfg, args


def entry(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a job's main so that a `LabError` becomes one line on stderr and exit code 2."""

    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except LabError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    wrapped.__doc__ = main.__doc__
    return wrapped
