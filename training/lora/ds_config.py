"""DeepSpeed plumbing for `train(..., deepspeed=...)`: read/validate a ZeRO config and initialise the backend.

The config (a JSON path or a dict) goes to the TRL config's `deepspeed=`: cluster/deepspeed/zero3.json, or the
config generated for a placement plan (`python -m cluster.placement <model> --training --zero-out FILE`, or
`cluster.zero.zero_config(plan)` in code; the committed JSONs are that generator's output);
batch-size, accumulation and clipping keys it leaves out become "auto" so transformers fills them from the
hyper-parameters (explicit values that disagree make transformers stop). On CPU (measured, docs ENVIRONMENT.md) it
works only with `use_cpu=True` and `deepspeed.init_distributed(dist_backend="gloo")` before the config is built.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lab.config import load_yaml
from lab.errors import LabError

AUTO_KEYS = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size", "gradient_clipping")


def deepspeed_config(spec: str | os.PathLike[str] | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A validated copy of a DeepSpeed config (None stays None)."""
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        cfg, where = copy.deepcopy(dict(spec)), "deepspeed config"
    else:
        cfg, where = load_yaml(spec, "deepspeed config"), f"deepspeed config {spec}"
    zero = cfg.get("zero_optimization", {})
    if not isinstance(zero, dict):
        raise LabError(f"{where}: 'zero_optimization' must be an object")
    stage = zero.get("stage", 0)
    if isinstance(stage, bool) or stage not in (0, 1, 2, 3):
        raise LabError(f"{where}: zero_optimization.stage must be 0, 1, 2 or 3, got {stage!r}")
    for key in AUTO_KEYS:
        cfg.setdefault(key, "auto")
    return cfg


def zero_stage(cfg: Mapping[str, Any] | None) -> int:
    return int((cfg or {}).get("zero_optimization", {}).get("stage", 0)) if cfg else 0


def init_deepspeed(use_cpu: bool, extensions_dir: str | os.PathLike[str] | None = None) -> None:
    """Import deepspeed (one-line error if absent), point its C++ extension cache at an ignored project directory,
    and on CPU start a gloo process group (a no-op when one exists)."""
    try:
        import deepspeed
    except ImportError:
        raise LabError(
            "deepspeed is not installed (pip install 'introspection-lab[cluster]'); "
            "train without deepspeed= on one device"
        ) from None
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(extensions_dir or ".cache/torch_extensions").resolve()))
    import torch.distributed as dist

    if use_cpu and not (dist.is_available() and dist.is_initialized()):
        deepspeed.init_distributed(dist_backend="gloo")
