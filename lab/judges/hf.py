"""An in-process HF chat model as a judge ("hf"), and `ChatModel`, the batched greedy generator it shares with the
Ray Serve endpoint (jobs/serve_judge.py).

`ChatModel` renders conversations with the model's chat template, left-pads a batch and decodes greedily; each row
may have its own token budget (the batch runs to the largest, then each row is cut to its own: greedy decoding
makes that identical to running the row alone). The judge uses the same prompt and strict parser as the HTTP judge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.config import ModelConfig, from_dict
from lab.errors import LabError
from lab.judges.base import Conversation, Failed
from lab.judges.llm import ChatJudge
from lab.judges.registry import register_judge


@dataclass(frozen=True)
class Generated:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn) or "length" (budget spent)


class ChatModel:
    """A loaded chat model that answers conversations greedily, in left-padded batches."""

    def __init__(self, model: ModelConfig, threads: int = 0):
        from lab.model import loading

        loading.threads(threads)
        self.lm = loading.load(model)
        self.name = model.name

    def generate(
        self, conversations: Sequence[Conversation], max_new_tokens: int | Sequence[int], batch_size: int = 8
    ) -> list[Generated]:
        budgets = [max_new_tokens] * len(conversations) if isinstance(max_new_tokens, int) else list(max_new_tokens)
        if len(budgets) != len(conversations) or any(b < 1 for b in budgets):
            raise ValueError("one positive token budget per conversation")
        out: list[Generated] = []
        for i in range(0, len(conversations), max(batch_size, 1)):
            out += self._batch(conversations[i : i + batch_size], budgets[i : i + batch_size])
        return out

    def _batch(self, conversations: Sequence[Conversation], budgets: Sequence[int]) -> list[Generated]:
        import torch

        tok = self.lm.tokenizer
        prompts = [self.lm.chat([dict(m) for m in c]) for c in conversations]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.lm.device)
        with torch.inference_mode():
            ids = self.lm.model.generate(
                **enc, max_new_tokens=max(budgets), do_sample=False, pad_token_id=tok.pad_token_id
            )
        stops = {t for t in (tok.eos_token_id, tok.pad_token_id) if t is not None}
        gen_cfg = getattr(self.lm.model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None)
        stops |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        width = enc["input_ids"].shape[1]
        results = []
        for row, budget, mask in zip(ids[:, width:].tolist(), budgets, enc["attention_mask"]):
            row = row[:budget]
            end = next((k for k, t in enumerate(row) if t in stops), None)
            kept = row if end is None else row[:end]
            results.append(
                Generated(
                    tok.decode(kept, skip_special_tokens=True).strip(),
                    int(mask.sum()),
                    len(kept),
                    "length" if end is None else "stop",
                )
            )
        return results


class HFJudge(ChatJudge):
    """The LLM judge on an in-process HF chat model (loaded on first use), greedy, batched with left padding."""

    name = "hf"

    def __init__(
        self,
        model: ModelConfig,
        batch_size: int = 8,
        max_new_tokens: int | None = None,
        threads: int = 0,
        prompt: str | Path | None = None,
        paper_experiment: str | None = None,
    ):
        super().__init__(prompt, paper_experiment)
        max_new_tokens = max_new_tokens or (500 if self.paper else 128)
        if batch_size < 1 or max_new_tokens < 1:
            raise LabError("hf judge: batch_size and max_new_tokens must be >= 1")
        _check_model_name(model.name)
        self.model_cfg, self.batch_size, self.max_new_tokens, self.threads = model, batch_size, max_new_tokens, threads
        self.version = f"hf:{model.name}@{self.prompt.version}"
        self._model: ChatModel | None = None

    @property
    def chat_model(self) -> ChatModel:
        if self._model is None:
            self._model = ChatModel(self.model_cfg, self.threads)
        return self._model

    def complete(self, conversations: Sequence[Conversation], forced: Sequence[bool]) -> list[str | Failed]:
        out = self.chat_model.generate(conversations, self.max_new_tokens, self.batch_size)
        self.count("requests", len(out))
        return [g.text for g in out]


def _check_model_name(name: str) -> None:
    from lab.model.loading import REGISTRY, spec_for

    if spec_for(name) is None and not Path(name).is_dir() and ("/" not in name or name.startswith((".", "/"))):
        raise LabError(
            f"hf judge: unknown model '{name}' (registry: {', '.join(sorted(REGISTRY))}; "
            "or a local HF directory, or a hub id already in the HF cache)"
        )


@register_judge("hf", options=("batch_size", "max_new_tokens", "threads", "prompt", "paper_experiment"))
def make_hf_judge(model: str | Mapping[str, Any] = "smollm2-135m", **options: Any) -> HFJudge:
    cfg = from_dict(ModelConfig, {"name": model} if isinstance(model, str) else dict(model), "hf.model")
    return HFJudge(cfg, **options)  # options checked by make_judge against the registered names
