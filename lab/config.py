"""Configs as frozen dataclasses, validated at the edge.

`from_dict(Cls, mapping)` builds a (nested) frozen dataclass from YAML-like data and raises a one-line `LabError`
for a key that does not exist, a value of the wrong type or a failed `validate()`. Every job config is built with it,
so a typo in a YAML file never passes silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from lab.errors import LabError

T = TypeVar("T")


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass `cls` from a mapping, recursively; unknown keys and bad types raise `LabError`."""
    where = path or cls.__name__
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise LabError(f"config section '{where}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        near = difflib.get_close_matches(unknown[0], names, n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise LabError(f"unknown config key '{_join(path, unknown[0])}' ({hint}known keys: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(hints[k], v, _join(path, k)) for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise LabError(f"config section '{where}': {e}") from None
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-data form of a config dataclass (tuples become lists), the inverse of `from_dict`."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(obj)


def describe(obj: Any) -> str:
    """A config as YAML with each key's help text as a comment (`--show-config`); loading it gives `obj` back."""
    return "\n".join(_describe(obj, "")) + "\n"


def sections(cls: type) -> str:
    """A config class's top-level sections and keys with their help, for a job's `--help`."""
    rows = [(f.name, f.metadata.get("help", "")) for f in dataclasses.fields(cls) if f.init]
    width = max(len(n) for n, _ in rows)
    head = "config sections and keys (every key with its help and value: --config FILE --show-config):\n"
    return head + "\n".join(f"  {n:<{width}}  {h}".rstrip() for n, h in rows)


_SHOWN = ("model.name", "name", "layer", "layers", "strength", "strengths", "strength_mode", "concepts", "temperature")
_SHOWN += ("samples", "trials_per_concept", "num_actors", "method", "conditions", "seeds")


def summary(cfg: Any, planned: Any = None) -> list[str]:
    """What `--dry-run` prints of a config: the trial count (`planned`: the trials, or (count, what they are)), the
    judge(s) and the settings that shape the plan (model, layers, strengths, concepts, sampling, actors)."""
    trials = []
    if isinstance(planned, tuple) and len(planned) == 2 and planned[0] is None:  # (None, why it cannot be counted)
        trials = [f"trials: {planned[1]}"]
    elif isinstance(planned, tuple) and len(planned) == 2 and isinstance(planned[0], int):
        trials = [f"trials: {planned[0]} {planned[1]}"]
    elif planned is not None:
        trials = [f"trials: {len(planned)}"]
    flat = flatten(to_dict(cfg))
    judges = sorted({str(v) for k, v in flat.items() if k == "judge.name" or k.endswith(".judge.name")})
    shown = {k: v for k, v in flat.items() if k.split(".")[-1] in _SHOWN or k in _SHOWN}
    return [
        *trials,
        f"judge: {', '.join(judges) or 'none (no judged generations)'}",
        "settings: " + "; ".join(f"{k}={v}" for k, v in shown.items()),
    ]


def _describe(obj: Any, indent: str) -> list[str]:
    lines: list[str] = []
    for f in dataclasses.fields(obj):
        value, note = getattr(obj, f.name), f.metadata.get("help", "")
        key, comment = f"{indent}{f.name}:", f"  # {note}" if note else ""
        if dataclasses.is_dataclass(value):
            lines += [key + comment, *_describe(value, indent + "  ")]
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            lines.append(key + comment)
            for item in value:
                body = _describe(item, indent + "    ")
                lines += [f"{indent}  - {body[0].lstrip()}", *body[1:]]
        else:
            lines.append(f"{key} {_scalar(to_dict(value))}{comment}")
    return lines


def _scalar(value: Any) -> str:
    """One value in YAML flow style, on one line."""
    return yaml.safe_dump([value], default_flow_style=True, width=math.inf).strip()[1:-1]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` → `{"a.b": 1}`: the form MLflow params take."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def apply_overrides(data: dict[str, Any], sets: Sequence[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` overrides (dotted keys, YAML values) applied to config data, in place."""
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
        try:
            node[last] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise LabError(f"--set {key}: not a YAML value ({str(e).splitlines()[0]})") from None
    return data


def for_model(data: dict[str, Any], sets: Sequence[str] = ()) -> dict[str, Any]:
    """Apply the config's `per_model:` block: overrides for the model it runs (`model.name` after `--set`), merged
    over the rest, then `sets` again so a `--set` always wins. A demo written for one embedded model names the other's
    layers there (`per_model: {gemma3-270m: {layers: [8, 12, 16]}}`), so `--set model.name=gemma3-270m` runs as is."""
    blocks = data.pop("per_model", None) or {}
    if not isinstance(blocks, dict) or not all(isinstance(v, dict) for v in blocks.values()):
        raise LabError("per_model must map a model name to a mapping of config overrides")
    model = data.get("model") or {}
    name = model.get("name", ModelConfig.name) if isinstance(model, dict) else ModelConfig.name
    if name not in blocks:
        return data
    return apply_overrides(_merge(data, blocks[name]), sets)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_yaml(path: str | os.PathLike, what: str = "config file") -> dict[str, Any]:
    """The mapping in a YAML file (JSON, a subset, by its `.json` suffix); one-line errors naming `what`."""
    p = Path(path)
    if not p.is_file():
        raise LabError(f"{what} not found: {p}")
    kind = "JSON" if p.suffix == ".json" else "YAML"
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LabError(f"{what} {p} is not a text file (not UTF-8)") from None
    except OSError as e:
        raise LabError(f"{what} {p} cannot be read ({e.strerror or e})") from None
    try:
        data = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise LabError(f"{what} {p} is not valid {kind}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise LabError(f"{what} {p} must hold a mapping at the top level")
    return data


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, path)
            except LabError as e:
                errors.append(str(e))
        raise LabError(errors[0] if errors else f"'{path}' has a bad value {value!r}")
    if origin is Literal:
        if value not in args:
            raise LabError(f"'{path}' must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else Any
        return tuple(_coerce(inner, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise LabError(f"'{path}' must be a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # NaN: no setting means it
            raise LabError(f"'{path}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise LabError(f"'{path}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise LabError(f"'{path}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise LabError(f"'{path}' must be a string, got {value!r}")
        return str(value)
    return value


def check_strength(value: float, where: str = "strength") -> float:
    """Strengths are finite and ≥ 0 (0 means no injection)."""
    if not math.isfinite(value) or value < 0:
        raise LabError(f"{where} must be a finite number >= 0, got {value}")
    return value


@dataclass(frozen=True)
class ModelConfig:
    """Which model to load and how."""

    name: str = field(default="smollm2-135m", metadata={"help": "registry name, local HF dir, or hub id on a cluster"})
    dtype: Literal["float32", "bfloat16", "float16"] = field(default="float32", metadata={"help": "weights dtype"})
    device: Literal["cpu", "cuda", "auto"] = field(
        default="cpu", metadata={"help": "cpu; cuda = one GPU; auto = device_map across the actor's GPUs"}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "safetensors cache for converted GGUF models"})
    adapter: str | None = field(default=None, metadata={"help": "path of a PEFT LoRA adapter to load on top"})
    shard: Literal["none", "zero3"] = field(
        default="none",
        metadata={"help": "none: one process per replica; zero3: DeepSpeed ZeRO-3 over workers_per_replica Ray actors"},
    )
    workers_per_replica: int = field(default=1, metadata={"help": "ranks of one ZeRO-3 replica (one GPU each)"})
    offload: bool = field(default=False, metadata={"help": "ZeRO-3 parameters offloaded to CPU memory"})

    def __post_init__(self) -> None:
        if self.shard != "none" or self.workers_per_replica != 1 or self.offload:
            ShardConfig(self.shard, self.workers_per_replica, self.offload)  # one-line errors


@dataclass(frozen=True)
class ShardConfig:
    """How one model replica is laid out over processes: `model.shard`, `model.workers_per_replica`, `model.offload`
    (`ModelConfig` documents them; lab/model/sharded.py runs them)."""

    shard: Literal["none", "zero3"] = "none"
    workers_per_replica: int = 1
    offload: bool = False

    def __post_init__(self) -> None:
        if self.shard not in ("none", "zero3"):
            raise LabError(f"model.shard must be 'none' or 'zero3', got {self.shard!r}")
        if self.workers_per_replica < 1 or (self.shard == "none" and self.workers_per_replica != 1):
            raise LabError("model.workers_per_replica must be >= 1 (and 1 unless model.shard is zero3)")
        if self.offload and self.shard != "zero3":
            raise LabError("model.offload needs model.shard: zero3")
