"""`train("dpo", ...)` for a handful of steps on the embedded SmolLM2-135M (CPU; slow on a shared 2-core box)."""

from __future__ import annotations

import pytest
import torch

from tests.training_fixtures import single_thread
from training.lora.conditions import TrainHParams
from training.lora.trainer import train
from training.preference.data import to_conversational
from training.preference.synthetic import generate_pairs


@pytest.mark.slow
def test_dpo_on_the_embedded_model(tmp_path) -> None:
    from lab.model.loading import load

    with single_thread():  # far faster than 2 threads on a loaded 2-core machine
        _check(tmp_path, load("smollm2-135m"))


def _check(tmp_path, lm) -> None:
    from peft import PeftModel

    rows = [to_conversational(r) for r in generate_pairs(6, seed=0, domains=["math", "science"])]
    ids = torch.tensor([lm.tokenizer.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True)["input_ids"]])
    with torch.no_grad():
        before = lm.model(input_ids=ids).logits
    hp = TrainHParams(learning_rate=1e-4, gradient_accumulation_steps=1, max_length=256)
    res = train("dpo", rows, output_dir=tmp_path / "dpo", model=lm, hparams=hp, max_steps=3)
    assert [s for s, _ in res.losses] == [1, 2, 3]
    assert res.losses[0][1] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 1
    with torch.no_grad():
        assert torch.equal(lm.model(input_ids=ids).logits, before)  # base model restored
        adapted = PeftModel.from_pretrained(lm.model, str(res.adapter_dir))
        assert (adapted(input_ids=ids).logits - before).abs().max() > 1e-5
