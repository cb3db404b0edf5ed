"""What a job checks before any model work and before it writes anything (`check_config`), and where its results
land under `ray job submit` (`anchor`).

`check_config(cfg)` walks a job's (nested) config dataclass once:
- every path it will write (`output_dir`, `cache_dir`, `transcoder_dir`, a model's `cache_dir`, the lab cache, the
  sqlite tracking store and its `mlartifacts/`) is really writable: a temp entry is created and removed in the
  nearest existing folder (`os.access` says yes to root even on /proc);
- every input path it names exists (`sweep_dir`, `detection_from`, refusal files and `directions`, `data.path`,
  `transcoders.dir`, a LoRA `adapter` unless the stage creates it, `source`/`geometry` as a folder or MLflow run id);
- every model it names is known (registry, local HF folder, hub id) and every layer is inside the model, read from
  the model's config (the registry's `ModelSpec`, or `config.json` of a local folder or the HF cache), not its weights;
  fields named `layer`, `layers`, `*_layer`, `*_layers` are layers (0-based blocks) of the nearest model in scope.

`anchor(cfg)`: under a Ray job (cwd is Ray's `_ray_pkg_…` copy of the working dir, deleted with the job) a relative
output path or sqlite tracking URI is resolved against `$LAB_SUBMIT_DIR` (the submitting user's directory, set by
the README's submit command), or refused in one line; outside Ray nothing changes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.config import ModelConfig
from lab.errors import LabError

SUBMIT_DIR_ENV = "LAB_SUBMIT_DIR"
WRITTEN = ("output_dir", "cache_dir", "transcoder_dir")
INPUTS = ("sweep_dir", "detection_from", "extra_harmful", "extra_harmless", "directions", "calibration")
RUN_OR_DIR = ("source", "geometry")
SHIPPED = {"harmful": "harmful", "harmless": "harmless"}  # refusal lists: the shipped name or a file
_LAYER = re.compile(r"(^|_)layers?$")
_RUN_ID = re.compile(r"[0-9a-f]{32}")


def under_ray_job() -> bool:
    """True in the driver of a `ray job submit` (its working dir is Ray's temporary `_ray_pkg_…` copy)."""
    return bool(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")) or "_ray_pkg_" in str(Path.cwd())


def user_path(path: str, what: str) -> str:
    """`path` as the user means it: unchanged outside a Ray job; under one, a relative path is taken from
    `$LAB_SUBMIT_DIR` (or refused), never from Ray's temporary copy of the working dir."""
    p = Path(path).expanduser()
    if p.is_absolute() or not under_ray_job():
        return str(path)
    base = os.environ.get(SUBMIT_DIR_ENV, "")
    if not base or not Path(base).is_absolute():
        raise LabError(
            f"{what} '{path}' is relative and this runs under `ray job submit`, in a temporary copy of the working "
            f'dir deleted with the job: submit with `-- env {SUBMIT_DIR_ENV}="$PWD" python -m jobs.…` (README) or give '
            "an absolute path"
        )
    return str(Path(base) / p)


def user_uri(uri: str) -> str:
    """A sqlite tracking URI with a relative path, anchored as `user_path` anchors paths."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + user_path(uri[len("sqlite:///") :], f"tracking URI {uri}: path")
    return uri


def anchor(cfg: Any) -> Any:
    """`cfg` with every written path and the tracking URI anchored (`user_path`); the same object outside Ray."""
    if not under_ray_job():
        return cfg
    from lab.run.tracking import TrackingConfig, resolve_uri

    def visit(obj: Any) -> Any:
        if isinstance(obj, TrackingConfig):
            return dataclasses.replace(obj, uri=user_uri(resolve_uri(obj))) if obj.enabled else obj
        if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
            return obj
        changes = {}
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            v = getattr(obj, f.name)
            if f.name in WRITTEN and isinstance(v, str) and v:
                new: Any = user_path(v, f.name)
            elif dataclasses.is_dataclass(v):
                new = visit(v)
            elif isinstance(v, tuple) and any(dataclasses.is_dataclass(x) for x in v):
                new = tuple(visit(x) for x in v)
            else:
                continue
            if new is not v:
                changes[f.name] = new
        return dataclasses.replace(obj, **changes) if changes else obj

    return visit(cfg)


def checked(cfg: Any, check: Callable[[Any], Any] | None = None, ray: bool = True) -> Any:
    """`cfg` anchored under a Ray job (`anchor`), then `check(cfg)` (a job's own input checks) and `check_job`;
    nothing is written."""
    cfg = anchor(cfg)
    if check is not None:
        check(cfg)
    check_job(cfg, ray)
    return cfg


def dry_run(
    cfg: Any, command: str, check: Callable[[Any], Any] | None = None, plan: Callable[[Any], Any] | None = None
) -> list[str]:
    """What `--dry-run` prints: the plan (trial count), judge, settings and destinations, and what a real run's
    preflight would refuse (an input another job makes, a key in the environment: a preset plans on a laptop before
    those exist) as a line rather than an error. Loads no model, starts no Ray, writes nothing."""
    from lab.config import summary

    try:
        cfg, refused = checked(cfg, check, ray=False), ""
    except LabError as e:
        refused = str(e)
    try:
        planned = plan(cfg) if plan else None
    except LabError as e:
        planned = (None, f"not plannable before its input exists: {e}")
    out = str(Path(getattr(cfg, "output_dir", "") or ".").absolute())
    lines = [f"dry run of {command}: nothing loaded, nothing written", *summary(cfg, planned), destinations(cfg, out)]
    return lines + ([f"preflight: a real run would stop here: {refused}"] if refused else [])


def check_job(cfg: Any, ray: bool = True) -> None:
    """`check_config`, then the services: the tracking URI answers (lab.run.tracking.check_uri) and, with `ray`, the
    Ray address (`runner.address`, `address` or $RAY_ADDRESS) is reachable."""
    from lab.run.parallel import check_address
    from lab.run.tracking import check_uri, resolve_uri

    check_config(cfg)
    tracking = getattr(cfg, "tracking", None)
    if tracking is not None and tracking.enabled:
        check_uri(resolve_uri(tracking))
    addr = getattr(getattr(cfg, "runner", None), "address", None) or getattr(cfg, "address", None)
    if ray and (addr := addr or os.environ.get("RAY_ADDRESS")):
        check_address(addr)


def destinations(cfg: Any, out: str) -> str:
    """The line a job prints at start and end: its output folder and tracking URI, both absolute."""
    from lab.run.tracking import resolve_uri

    tracking = getattr(cfg, "tracking", None)
    uri = resolve_uri(tracking) if tracking is not None and tracking.enabled else "off"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///") :]).absolute())
    return f"output: {out}  mlflow: {uri}"


def writable(path: str | os.PathLike, what: str) -> Path:
    """Fail in one line unless a file can be created where `path` (a folder, existing or not) will be: a temp entry
    is created and removed in the nearest existing folder. Returns the absolute path."""
    p = Path(path).expanduser().absolute()
    near = next(q for q in (p, *p.parents) if q.exists())
    if not near.is_dir():
        raise LabError(f"{what} {path} is not writable ({near} is not a directory)")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".lab-write-check-", dir=near)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise LabError(f"{what} {path} is not writable ({near}: {e.strerror or e})") from None
    return p


def check_tracking(tracking: Any) -> None:
    """The sqlite store's folder (the DB and `mlartifacts/` beside it) must be writable."""
    from lab.run.tracking import resolve_uri

    if not getattr(tracking, "enabled", False):
        return
    uri = resolve_uri(tracking)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :]).expanduser()
        writable(db.parent, f"tracking store {uri}: folder")
    if tracking.artifact_root and "://" not in tracking.artifact_root:
        writable(tracking.artifact_root, "tracking.artifact_root")


def model_depth(model: ModelConfig) -> int | None:
    """Decoder blocks of `model` from its config, never its weights: the registry, a local `config.json` or the HF
    cache's; None when none of them is on this machine."""
    from lab.model.loading import spec_for

    spec = spec_for(model.name)
    if spec is not None:
        return spec.n_layers
    path = Path(model.name) / "config.json"
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model.name, "config.json")
        except Exception:  # not a hub id (a path, odd characters): nothing cached to read
            found = None
        if not isinstance(found, str):
            return None
        path = Path(found)
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        raise LabError(f"model {model.name}: {path} is not a readable config.json") from None
    n = cfg.get("num_hidden_layers") or (cfg.get("text_config") or {}).get("num_hidden_layers")
    return int(n) if isinstance(n, int) else None


def check_model(model: ModelConfig, adapter_made: bool = False) -> None:
    from lab.model.loading import REGISTRY, spec_for

    name = model.name
    if spec_for(name) is None and not Path(name).is_dir():
        if Path(name).is_absolute() or name.startswith(".") or "/" not in name:
            raise LabError(f"unknown model '{name}' (registry: {', '.join(sorted(REGISTRY))}; or a local HF directory)")
    if model.adapter and not adapter_made and not (Path(model.adapter) / "adapter_config.json").is_file():
        raise LabError(f"LoRA adapter not found: {model.adapter} (expected adapter_config.json there)")
    if model.cache_dir:
        writable(model.cache_dir, "model.cache_dir")


def check_config(cfg: Any) -> None:
    """Every check of this module's docstring on a job config; one-line `LabError` on the first failure."""
    from lab.model.embedded import default_cache_dir

    models: list[ModelConfig] = []
    _visit(cfg, "", [], models)
    if models:
        writable(default_cache_dir(), "lab cache ($INTROSPECTION_LAB_CACHE)")
    if hasattr(cfg, "tracking"):
        check_tracking(cfg.tracking)


def _models_of(obj: Any) -> list[ModelConfig]:
    """The models a config section names: its `ModelConfig` fields, and those in (or of the items of) its lists."""
    out = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        items = v if isinstance(v, tuple) else (v,)
        for x in items:
            if isinstance(x, ModelConfig):
                out.append(x)
            elif dataclasses.is_dataclass(x) and isinstance(getattr(x, "model", None), ModelConfig):
                out.append(x.model)
    return out


def _visit(obj: Any, where: str, scope: list[ModelConfig], seen: list[ModelConfig]) -> None:
    if isinstance(obj, ModelConfig):
        seen.append(obj)
        return check_model(obj)
    scope = _models_of(obj) or scope
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        name, v, key = f.name, getattr(obj, f.name), f"{where}{f.name}"
        if isinstance(v, ModelConfig):
            seen.append(v)
            check_model(v, adapter_made=bool(getattr(obj, "create_adapter", False)))
        elif dataclasses.is_dataclass(v):
            _visit(v, key + ".", scope, seen)
        elif isinstance(v, tuple) and v and dataclasses.is_dataclass(v[0]):
            for i, x in enumerate(v):
                _visit(x, f"{key}[{i}].", scope, seen)
        elif isinstance(v, bool) or v is None or v == "" or v == ():
            continue
        elif _LAYER.search(name):
            _check_layers(key, v, scope)
        elif name in WRITTEN and isinstance(v, str):
            writable(v, "output folder" if key == "output_dir" else key)
        elif name == "dir" and where.endswith("transcoders.") and isinstance(v, str):
            _exists(v, key)
        elif name == "path" and where.endswith("data.") and isinstance(v, str):
            _exists(v, key)
        elif name in SHIPPED and isinstance(v, str) and v != SHIPPED[name]:
            _exists(v, key)
        elif name in INPUTS and isinstance(v, str):
            _exists(v, key)
        elif name in RUN_OR_DIR and isinstance(v, str) and not _RUN_ID.fullmatch(v):
            _exists(v, key, "or an MLflow run id")
        elif name == "refusal" and isinstance(v, str):
            _exists(v, key)
    if hasattr(obj, "direction_layer") and getattr(obj, "weights", ()):  # refusal: one ablation weight per layer
        for m in scope:
            n = model_depth(m)
            if n is not None and len(obj.weights) != n:
                raise LabError(f"{where}weights: {len(obj.weights)} per-layer weights for {m.name}'s {n} layers")


def _exists(path: str, key: str, alt: str = "") -> None:
    if not Path(path).expanduser().exists():
        raise LabError(f"{key}: {path} not found" + (f" (expected a file or folder {alt})" if alt else ""))


def _check_layers(key: str, value: Any, scope: list[ModelConfig]) -> None:
    layers = value if isinstance(value, tuple) else (value,)
    for m in scope:
        n = model_depth(m)
        if n is None:
            continue
        for layer in layers:
            if isinstance(layer, int) and not isinstance(layer, bool) and not 0 <= layer < n:
                raise LabError(f"{key}: layer {layer} is out of range for {m.name} (0..{n - 1})")
