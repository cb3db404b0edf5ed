"""`train()` end to end on a tiny random model: every condition writes a loadable adapter that changes the model."""

from __future__ import annotations

import json

import pytest
import torch

from lab.errors import LabError
from tests.training_fixtures import corpus, single_thread, tiny_model, tiny_tokenizer
from training.lora.conditions import CONDITIONS, LoraSettings, TrainHParams
from training.lora.ds_config import deepspeed_config, zero_stage
from training.lora.trainer import TrainResult, train
from training.preference.data import to_conversational
from training.preference.synthetic import generate_pairs

ROWS = [to_conversational(r) for r in generate_pairs(28, seed=0)]  # 4 rows in each of the 7 domains
TOK = tiny_tokenizer(corpus(ROWS))
LORA = LoraSettings(r=4, alpha=8)
HP = TrainHParams(learning_rate=1e-3, gradient_accumulation_steps=2, max_length=128)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def _logits(model) -> torch.Tensor:
    ids = torch.tensor([TOK.apply_chat_template(ROWS[0]["prompt"], add_generation_prompt=True)["input_ids"]])
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def _run(name: str, out, **kw) -> TrainResult:
    kw.setdefault("max_steps", 3)
    return train(
        name,
        ROWS,
        output_dir=out,
        model=kw.pop("model", None) or tiny_model(len(TOK)),
        tokenizer=TOK,
        lora=LORA,
        hparams=HP,
        **kw,
    )


@pytest.mark.parametrize("name", sorted(CONDITIONS))
def test_every_condition_trains_saves_and_changes_the_model(tmp_path, name: str) -> None:
    from peft import PeftModel

    base = tiny_model(len(TOK))
    before = _logits(tiny_model(len(TOK)))
    res = _run(name, tmp_path / name, model=base)
    assert res.adapter_dir == tmp_path / name and (res.adapter_dir / "adapter_config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary directory left behind
    record = json.loads((res.adapter_dir / "training.json").read_text())
    assert record["condition"]["name"] == name and record["lora"]["r"] == 4
    if CONDITIONS[name].objective == "none":  # random_lora, random_lora_peft
        assert res.losses == [] and res.metrics["train_steps"] == 0
    else:
        assert [s for s, _ in res.losses] == [1, 2, 3] and res.metrics["train_steps"] == 3
        assert all(torch.isfinite(torch.tensor(loss)) for _, loss in res.losses)
    assert torch.equal(_logits(base), before)  # the caller's model is restored
    adapted = PeftModel.from_pretrained(tiny_model(len(TOK)), str(res.adapter_dir))
    assert (_logits(adapted) - before).abs().max() > 1e-6


def test_output_dir_is_protected_and_replaced_atomically(tmp_path) -> None:
    out = tmp_path / "run"
    first = _run("sft_chosen", out, max_steps=1)
    with pytest.raises(LabError, match="already exists"):
        _run("sft_chosen", out, max_steps=1)
    second = _run("margin", out, max_steps=2, overwrite=True)
    assert second.adapter_dir == first.adapter_dir == out
    assert json.loads((out / "training.json").read_text())["condition"]["name"] == "margin"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_domain_subset_eval_data_and_schedule(tmp_path) -> None:
    res = _run("dpo@math,code", tmp_path / "sub", max_steps=None, eval_data=ROWS[:4])
    assert res.metrics["train_steps"] == 4  # 8 math+code rows, 2 per optimizer step, 1 epoch
    assert "eval_loss" in res.metrics
    lrs = [h["learning_rate"] for h in res.log_history if "learning_rate" in h]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] == pytest.approx(1e-3)  # linear decay, no warm-up (< 10 steps)


def test_bad_inputs_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(LabError, match="unknown training condition"):
        _run("ppo", tmp_path / "a")
    with pytest.raises(LabError, match="row 1: field 'rejected' is missing"):
        train(
            "dpo",
            [{"prompt": "q", "chosen": "a"}],
            output_dir=tmp_path / "b",
            model=tiny_model(len(TOK)),
            tokenizer=TOK,
        )
    with pytest.raises(LabError, match="needs tokenizer="):
        train("dpo", ROWS, output_dir=tmp_path / "c", model=tiny_model(len(TOK)))
    assert not list(tmp_path.iterdir())


def test_deepspeed_config_plumbing(tmp_path) -> None:
    p = tmp_path / "zero3.json"
    p.write_text(json.dumps({"zero_optimization": {"stage": 3}, "gradient_accumulation_steps": 8}))
    cfg = deepspeed_config(p)
    assert zero_stage(cfg) == 3 and cfg["gradient_accumulation_steps"] == 8
    assert cfg["train_micro_batch_size_per_gpu"] == "auto" and cfg["gradient_clipping"] == "auto"
    d = {"zero_optimization": {"stage": 2}}
    assert zero_stage(deepspeed_config(d)) == 2 and d == {"zero_optimization": {"stage": 2}}  # input not mutated
    assert deepspeed_config(None) is None
    with pytest.raises(LabError, match="not found"):
        deepspeed_config(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(LabError, match="not valid JSON"):
        deepspeed_config(tmp_path / "bad.json")
    with pytest.raises(LabError, match="stage must be 0, 1, 2 or 3"):
        deepspeed_config({"zero_optimization": {"stage": 4}})


def test_deepspeed_missing_is_a_clear_error(tmp_path) -> None:
    pytest.importorskip("torch")
    try:
        import deepspeed  # noqa: F401

        pytest.skip("deepspeed is installed: the real path is exercised on the cluster")
    except ImportError:
        pass
    with pytest.raises(LabError, match="deepspeed is not installed"):
        _run("dpo", tmp_path / "ds", deepspeed={"zero_optimization": {"stage": 2}})
