"""Exact loss checks (≤ 1e-6) on a tiny float64 model: our trainers against TRL and against hand computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from trl import DPOConfig, DPOTrainer

from tests.training_fixtures import corpus, single_thread, tiny_model, tiny_tokenizer
from training.lora.conditions import LoraSettings, TrainHParams, get_condition
from training.lora.losses import token_logps
from training.lora.trainer import prepare_pairs
from training.lora.trl_setup import build_trainer, trl_args
from training.preference.data import to_conversational

ROWS = [
    to_conversational(r)
    for r in [
        {"prompt": "What is 2 + 2 ?", "chosen": "It is 4 .", "rejected": "It is 5 , I think ."},
        {"prompt": "Symbol of gold ?", "chosen": "Au", "rejected": "Ag , maybe"},
        {"prompt": "Say hi .", "chosen": "Hi !", "rejected": "No ."},
        {"prompt": "Is the sky blue ?", "chosen": "Yes , on a clear day .", "rejected": "No"},
    ]
]
TOK = tiny_tokenizer(corpus(ROWS))
LORA = LoraSettings(r=4, alpha=8)
HP = TrainHParams(per_device_batch_size=2, gradient_accumulation_steps=1, gradient_checkpointing=False, max_length=64)
TOL = 1e-6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def _trainer(name: str, tmp_path, **overrides):
    cond = get_condition(name)
    args = trl_args(HP, output_dir=tmp_path / name, n_rows=len(ROWS))
    model = tiny_model(len(TOK), seed=0).double()
    t = build_trainer(cond, model, TOK, prepare_pairs(cond, ROWS, 0), None, args, LORA)
    t.model.eval()
    return t


def _batch(trainer):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(2)])


def _perturb(peft_model, seed: int = 1) -> None:
    """Make the adapter non-zero (deterministically) so that policy != reference."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(peft_model.named_parameters()):
            if "lora_B" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))


def _seq_logps(model, batch, adapter: bool = True):
    kwargs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    with torch.no_grad():
        if adapter:
            logits = model(**kwargs).logits
        else:
            with model.disable_adapter():
                logits = model(**kwargs).logits
    mask = batch["completion_mask"][:, 1:].double()
    lp = token_logps(logits, batch["input_ids"])
    return (lp * mask).sum(1), mask.sum(1), logits


def _loss(trainer, batch, **kw) -> float:
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, batch, **kw))


def _metric(trainer, key: str) -> float:
    return trainer._metrics["train" if trainer.model.training else "eval"][key][-1]


def test_dpo_equals_trl_dpo_and_hand_computation(tmp_path) -> None:
    ours = _trainer("dpo", tmp_path)
    args = DPOConfig(
        **trl_args(HP, output_dir=tmp_path / "trl", n_rows=len(ROWS)),
        beta=0.1,
        loss_type=["sigmoid"],
        precompute_ref_log_probs=True,
    )
    trl = DPOTrainer(
        model=tiny_model(len(TOK), seed=0).double(),
        args=args,
        processing_class=TOK,
        train_dataset=prepare_pairs(get_condition("dpo"), ROWS, 0),
        peft_config=LORA.peft_config(),
    )
    trl.model.eval()
    for t in (ours, trl):
        _perturb(t.model)
    batch = _batch(ours)
    assert torch.equal(batch["input_ids"], _batch(trl)["input_ids"])
    ours_loss, trl_loss = _loss(ours, batch), _loss(trl, batch)
    assert abs(ours_loss - trl_loss) <= TOL
    pol, _, _ = _seq_logps(ours.model, batch)
    ref, _, _ = _seq_logps(ours.model, batch, adapter=False)
    assert torch.allclose(ref.float(), torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]]), atol=1e-5)
    pc, pr = pol.chunk(2)
    rc, rr = ref.chunk(2)
    hand = (-F.logsigmoid(0.1 * ((pc - rc) - (pr - rr)))).mean().item()
    assert abs(ours_loss - hand) <= TOL
    assert abs(ours_loss - 0.6931471805599453) > 1e-4  # the perturbation made the test non-trivial


def test_dpo_no_ref_uses_zero_reference(tmp_path) -> None:
    t = _trainer("dpo_no_ref", tmp_path)
    _perturb(t.model)
    batch = _batch(t)
    assert batch["ref_chosen_logps"].abs().sum() == 0 and batch["ref_rejected_logps"].abs().sum() == 0
    pc, pr = _seq_logps(t.model, batch)[0].chunk(2)
    hand = (-F.logsigmoid(0.1 * (pc - pr))).mean().item()
    assert abs(_loss(t, batch) - hand) <= TOL


def test_margin_loss_equals_hand_computation(tmp_path) -> None:
    t = _trainer("margin", tmp_path)
    _perturb(t.model)
    batch = _batch(t)
    sums, counts, _ = _seq_logps(t.model, batch)
    avg_c, avg_r = (sums / counts).chunk(2)
    hand = torch.clamp(1.0 - (avg_c - avg_r), min=0).mean().item()
    assert hand > 0
    assert abs(_loss(t, batch) - hand) <= TOL
    assert _metric(t, "kl") == 0.0


def test_margin_kl_is_zero_for_a_zero_adapter_and_exact_otherwise(tmp_path) -> None:
    t = _trainer("margin_kl", tmp_path)
    batch = _batch(t)
    sums, counts, _ = _seq_logps(t.model, batch)
    avg_c, avg_r = (sums / counts).chunk(2)
    hinge = torch.clamp(1.0 - (avg_c - avg_r), min=0).mean().item()
    assert abs(_loss(t, batch) - hinge) <= TOL and _metric(t, "kl") == 0.0  # policy == reference: KL exactly 0

    _perturb(t.model)
    sums, counts, logits = _seq_logps(t.model, batch)
    _, _, ref_logits = _seq_logps(t.model, batch, adapter=False)
    avg_c, avg_r = (sums / counts).chunk(2)
    hinge = torch.clamp(1.0 - (avg_c - avg_r), min=0).mean()
    mask = batch["completion_mask"][:, 1:].bool()
    kl_tok = F.kl_div(
        torch.log_softmax(ref_logits[:, :-1], -1),
        torch.log_softmax(logits[:, :-1], -1),
        log_target=True,
        reduction="none",
    ).sum(-1)  # KL(policy ‖ ref) per position
    kl = kl_tok[mask].mean()
    assert kl > 1e-4
    assert abs(_loss(t, batch) - (hinge + 0.1 * kl).item()) <= TOL
    assert abs(_metric(t, "kl") - kl.item()) <= TOL


def test_sft_kl_matches_trl_sft_when_the_adapter_is_zero(tmp_path) -> None:
    plain, kl = _trainer("sft_chosen", tmp_path), _trainer("sft_kl", tmp_path)
    batch = plain.data_collator([plain.train_dataset[i] for i in range(2)])
    trl_loss = _loss(plain, batch)
    assert abs(_loss(kl, batch) - trl_loss) <= TOL and _metric(kl, "kl") == 0.0
    with torch.no_grad():
        logits = kl.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    mask = batch["labels"][:, 1:] != -100
    hand = -token_logps(logits, batch["input_ids"])[mask].mean().item()
    assert abs(trl_loss - hand) <= TOL

    _perturb(kl.model)
    with torch.no_grad():
        logits = kl.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        with kl.model.disable_adapter():
            ref = kl.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    lp, lq = torch.log_softmax(logits[:, :-1], -1), torch.log_softmax(ref[:, :-1], -1)
    kl_hand = (lp.exp() * (lp - lq)).sum(-1)[mask].mean()
    nll = -token_logps(logits, batch["input_ids"])[mask].mean()
    assert abs(_loss(kl, batch) - (nll + 0.1 * kl_hand).item()) <= TOL


@pytest.mark.parametrize("name, field", [("sft_chosen", "chosen"), ("sft_rejected", "rejected")])
def test_sft_trains_on_the_right_completion(tmp_path, name: str, field: str) -> None:
    t = _trainer(name, tmp_path)
    row = t.train_dataset[0]
    labels = [i for i in row["labels"] if i != -100]
    assert ROWS[0][field][0]["content"] in TOK.decode(labels)


def test_reversed_and_shuffled_pairs_reach_the_trainer(tmp_path) -> None:
    rev = prepare_pairs(get_condition("dpo_reversed"), ROWS, 0)
    assert rev["chosen"] == [r["rejected"] for r in ROWS]
    shuf = prepare_pairs(get_condition("dpo_shuffled"), ROWS * 25, 0)
    n_swapped = sum(c == r["rejected"] for c, r in zip(shuf["chosen"], ROWS * 25))
    assert 25 < n_swapped < 75
