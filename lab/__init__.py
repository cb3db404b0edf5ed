"""introspection-lab core: models, steering, concepts, prompts, trials, judges, metrics, storage, tracking, fan-out.

Importing `lab` sets the offline/loopback defaults every entry point needs (they can still be overridden from the
environment): no model-hub traffic, no MLflow or Ray telemetry, Ray auth off on a local head.
"""

from __future__ import annotations

import os

_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    # Ray starts workers at niceness 15; a model replica is the workload, and at 15 it starves behind any other
    # process (measured: a sweep 4x slower than a plain loop on a busy 2-core machine)
    "RAY_worker_niceness": "0",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # model-load bars from every actor would bury the sweep's own bar
    "TRANSFORMERS_VERBOSITY": "error",
    "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning",
}
for _k, _v in _DEFAULTS.items():
    os.environ.setdefault(_k, _v)

from lab.errors import LabError  # noqa: E402

__all__ = ["LabError"]
__version__ = "0.1.0"
