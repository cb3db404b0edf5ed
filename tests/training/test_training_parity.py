"""DPO-ablation parity with the paper's code: weight decay, PEFT's random-LoRA control, the paper's data recipe on a
local Hugging Face-layout data set, and validation every K steps with early stopping and best-checkpoint restore."""

from __future__ import annotations

import json

import pytest
import torch

from lab.config import load_yaml
from lab.errors import LabError
from tests.training_fixtures import corpus, single_thread, tiny_model, tiny_tokenizer
from training.lora.conditions import PAPER_HPARAMS, LoraSettings, TrainHParams, get_condition
from training.lora.trainer import train
from training.lora.trl_setup import early_stopping, trl_args
from training.preference.data import to_conversational, write_jsonl, write_parquet
from training.preference.paper_data import load_paper_preferences
from training.preference.synthetic import generate_pairs

ROWS = [to_conversational(r) for r in generate_pairs(7, seed=0)]
TOK = tiny_tokenizer(corpus(ROWS))
LORA = LoraSettings(r=4, alpha=8)


def test_weight_decay_defaults_to_torch_adamw_and_reaches_the_trl_config(tmp_path) -> None:
    from trl import DPOConfig

    assert (
        PAPER_HPARAMS.weight_decay
        == 0.01
        == torch.optim.AdamW([torch.zeros(1, requires_grad=True)]).defaults["weight_decay"]
    )
    cfg = DPOConfig(
        **{
            k: v
            for k, v in trl_args(PAPER_HPARAMS, output_dir=tmp_path, n_rows=10).items()
            if k != "precompute_ref_batch_size"
        }
    )
    assert cfg.weight_decay == 0.01 and cfg.eval_strategy == "no" and cfg.save_strategy == "no"
    assert not cfg.load_best_model_at_end and early_stopping(PAPER_HPARAMS) == []


def test_validation_options_build_the_trl_config_and_the_early_stopping_callback(tmp_path) -> None:
    from transformers import EarlyStoppingCallback
    from trl import DPOConfig, SFTConfig

    hp = TrainHParams(eval_steps=200, early_stopping_patience=3)
    args = {k: v for k, v in trl_args(hp, output_dir=tmp_path, n_rows=4500).items() if k != "precompute_ref_batch_size"}
    for cls in (DPOConfig, SFTConfig):
        cfg = cls(**args)
        assert (cfg.eval_strategy, cfg.eval_steps, cfg.save_strategy, cfg.save_steps) == ("steps", 200, "steps", 200)
        assert cfg.load_best_model_at_end and cfg.metric_for_best_model == "eval_loss" and not cfg.greater_is_better
    (cb,) = early_stopping(hp)
    assert isinstance(cb, EarlyStoppingCallback) and cb.early_stopping_patience == 3
    with pytest.raises(LabError, match="early_stopping_patience needs eval_steps"):
        TrainHParams(early_stopping_patience=2)
    with pytest.raises(LabError, match="needs eval_data"):
        train(
            "dpo",
            ROWS,
            output_dir=tmp_path / "x",
            model=tiny_model(len(TOK)),
            tokenizer=TOK,
            lora=LORA,
            hparams=hp,
            max_steps=1,
        )


def test_paper_preset_validates_every_200_steps() -> None:
    hp = load_yaml("configs/ablations-olmo-3.1-32b.yaml")["hparams"]
    assert hp["eval_steps"] == 200 and hp["early_stopping_patience"] > 0 and hp["weight_decay"] == 0.01
    conds = [c["name"] for c in load_yaml("configs/ablations-olmo-3.1-32b.yaml")["conditions"]]
    assert "random_lora_peft" in conds and "random_lora" in conds


def test_random_lora_peft_is_peft_s_own_init(tmp_path) -> None:
    from peft import get_peft_model
    from safetensors.torch import load_file
    from transformers import set_seed

    cond = get_condition("random_lora_peft")
    assert cond.objective == "none" and cond.random_init == "peft" and cond.random_delta_rel == 0
    with single_thread():
        res = train(cond, ROWS, output_dir=tmp_path / "a", model=tiny_model(len(TOK)), tokenizer=TOK, lora=LORA, seed=7)
        saved = load_file(str(res.adapter_dir / "adapter_model.safetensors"))
        base = tiny_model(len(TOK))
        set_seed(7)
        direct = get_peft_model(base, LORA.peft_config(init_lora_weights=False))
    ref = {k: v for k, v in direct.state_dict().items() if "lora_" in k}
    b_keys = [k for k in saved if "lora_B" in k]
    assert (
        len(b_keys) == 14 and json.loads((res.adapter_dir / "training.json").read_text())["metrics"]["train_steps"] == 0
    )  # 7 linear layers × 2 blocks
    for k, v in saved.items():
        ours = ref[k.replace(".weight", ".default.weight")]
        assert torch.equal(v, ours), k
    assert all(saved[k].abs().max() > 0 for k in b_keys)  # B is non-zero (PEFT's default init would zero it)
    with pytest.raises(LabError, match="random_init 'peft' goes with objective 'none'"):
        get_condition("dpo").__class__("x", "dpo", random_init="peft")


PAPER_ROWS = [
    {"prompt": "Add 2 and 2.", "chosen": "4", "rejected": "5", "source": "math"},
    {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No.", "source": "general"},
    {"prompt": "p" * 501, "chosen": "a", "rejected": "b", "source": "general"},  # prompt over 500 characters
    {"prompt": "Long answer?", "chosen": "x" * 1501, "rejected": "b", "source": "code"},  # answer over 1500
    {"prompt": "Edge.", "chosen": "y" * 1500, "rejected": "z", "source": "code"},  # exactly at the limit: kept
    {"prompt": "Same?", "chosen": "s", "rejected": "s", "source": "general"},  # identical: dropped
] + [
    {"prompt": f"Question {i}?", "chosen": f"Good {i}.", "rejected": f"Bad {i}.", "source": "safety"} for i in range(14)
]


def test_paper_data_recipe_on_a_save_to_disk_directory(tmp_path) -> None:
    from datasets import Dataset

    Dataset.from_list(PAPER_ROWS).save_to_disk(str(tmp_path / "ds"))
    pd = load_paper_preferences(tmp_path / "ds", "</s>", seed=0)
    assert (pd.n_read, pd.dropped_domain, pd.dropped_long, pd.dropped_invalid) == (20, 0, 2, 1)
    assert (len(pd.train), len(pd.eval)) == (15, 2) and pd.domains == {"math": 1, "general": 1, "code": 1, "safety": 14}
    rows = pd.train.to_list() + pd.eval.to_list()
    by_prompt = {r["prompt"]: r for r in rows}
    assert by_prompt["Add 2 and 2."] == {
        "prompt": "Add 2 and 2.",
        "chosen": " 4</s>",
        "rejected": " 5</s>",
        "domain": "math",
    }
    assert by_prompt["Edge."]["chosen"] == " " + "y" * 1500 + "</s>"
    again = load_paper_preferences(tmp_path / "ds", "</s>", seed=0)
    assert again.eval.to_list() == pd.eval.to_list()  # the split is deterministic in its seed
    assert load_paper_preferences(tmp_path / "ds", "</s>", seed=1).eval["prompt"] != pd.eval["prompt"]
    assert "dropped 0 by domain, 2 over the length limits, 1 empty or identical" in pd.summary()


def test_paper_data_recipe_on_parquet_and_jsonl_files_with_domain_filters(tmp_path) -> None:
    write_parquet(PAPER_ROWS[:10], tmp_path / "hub" / "data" / "train-00000-of-00002.parquet")
    write_jsonl(PAPER_ROWS[10:], tmp_path / "hub" / "data" / "train-00001-of-00002.jsonl")
    write_parquet(PAPER_ROWS[:1], tmp_path / "hub" / "data" / "test-00000-of-00001.parquet")
    only = load_paper_preferences(tmp_path / "hub", "<eos>", split="train", include=["safety", "math"])
    assert only.n_read == 20 and only.dropped_domain == 5 and only.domains == {"math": 1, "safety": 14}
    drop = load_paper_preferences(tmp_path / "hub", "<eos>", split="train", exclude=["safety"])
    assert drop.dropped_domain == 14 and set(drop.domains) == {"math", "general", "code"}
    with pytest.raises(LabError, match="domain 'poetry' is not in"):
        load_paper_preferences(tmp_path / "hub", "<eos>", split="train", include=["poetry"])


def test_validation_runs_stops_early_and_restores_the_best_checkpoint(tmp_path) -> None:
    hp = TrainHParams(
        learning_rate=0.3,
        gradient_accumulation_steps=1,
        max_length=128,
        gradient_checkpointing=False,
        eval_steps=1,
        early_stopping_patience=1,
    )  # a huge step size: eval loss soon gets worse
    with single_thread():
        res = train(
            "sft_chosen",
            ROWS,
            eval_data=ROWS[:2],
            output_dir=tmp_path / "v",
            model=tiny_model(len(TOK)),
            tokenizer=TOK,
            lora=LORA,
            hparams=hp,
            max_steps=6,
        )
    evals = [(h["step"], h["eval_loss"]) for h in res.log_history if "eval_loss" in h and "train_runtime" not in h]
    assert res.metrics["train_steps"] == 2  # stopped early: step 2's eval loss is worse, patience 1 (of 6 steps)
    assert [s for s, _ in evals[:2]] == [1, 2] and evals[1][1] > evals[0][1]
    assert evals[0][1] == pytest.approx(5.1303, abs=1e-3) and evals[1][1] == pytest.approx(5.1519, abs=1e-3)
    best_step, best = evals[0]
    assert res.metrics["best_eval_loss"] == pytest.approx(best) and res.metrics["best_step"] == best_step
    assert res.metrics["eval_loss"] == pytest.approx(best)  # the restored best checkpoint is what was saved
    assert not (res.adapter_dir / "_trainer").exists()


def test_ablation_data_spec_with_the_paper_layout(tmp_path) -> None:
    from datasets import Dataset

    from training.ablation.fitting import load_rows
    from training.ablation.tune_config import DataSpec

    Dataset.from_list(PAPER_ROWS).save_to_disk(str(tmp_path / "ds"))
    spec = DataSpec(path=str(tmp_path / "ds"), layout="paper", exclude_domains=("code",), split_seed=0)
    train_ds, eval_ds = load_rows(spec, "</s>")
    assert (len(train_ds), len(eval_ds)) == (14, 2) and "code" not in set(train_ds["domain"]) | set(eval_ds["domain"])
    assert all(c.startswith(" ") and c.endswith("</s>") for c in train_ds["chosen"])
    with pytest.raises(LabError, match="layout 'paper' needs data.path"):
        DataSpec(layout="paper")


def test_paper_truncates_where_the_lab_drops_and_maps_domains_as_03f(tmp_path) -> None:
    """The paper cuts the prompt to 500 characters and each answer to 1500 (`user_prompt[:500]`,
    `chosen_response[:1500]`, experiments/03f_dpo_mechanism_ablation.py:518-525) and adds the leading space only where
    there is none (03f:527-528); it names domains from the `prompt_id` source ('flan_v2_converted': 'nlp_task',
    03f:272; `_get_dpo_source`, 03f:281-285) with a keyword fallback ('in this task' → nlp_task, 'solve' → math,
    03f:290-306), and reads the user prompt as `chosen[0]['content']` (03f:497)."""
    from training.preference.paper_data import PAPER_DOMAINS, keyword_domain, paper_domain

    assert PAPER_DOMAINS == (
        "code",
        "general",
        "instruction_following",
        "math",
        "multilingual",
        "nlp_task",
        "safety",
        "science",
    )
    assert paper_domain("flan_v2_converted-request-12", "Write a poem") == "nlp_task"
    assert paper_domain("tulu_v3.9_aya_100k-request-3", "solve x") == "multilingual"  # the source map wins
    assert paper_domain("somewhere-else-request-1", "In this task, solve x") == "nlp_task"  # nlp before math
    assert paper_domain("no-marker", "Please solve 2x = 4") == "math"
    assert keyword_domain("How do I hack a python script?") == "safety"  # safety is checked first
    assert keyword_domain("Tell me about dogs") == "general"
    dolci = [
        {
            "prompt_id": "tulu-3-sft-personas-math-request-1",
            "chosen": [{"role": "user", "content": "p" * 600}, {"role": "assistant", "content": "c" * 1600}],
            "rejected": [{"role": "user", "content": "p" * 600}, {"role": "assistant", "content": " r"}],
        },
        {
            "prompt_id": "x-request-2",
            "chosen": [{"role": "user", "content": "Classify this review."}, {"role": "assistant", "content": "ok"}],
            "rejected": [{"role": "user", "content": "Classify this review."}, {"role": "assistant", "content": "no"}],
        },
    ]
    write_jsonl(dolci, tmp_path / "d.jsonl")
    paper = load_paper_preferences(
        tmp_path / "d.jsonl", "</s>", long_rows="truncate", domain_map="paper", eval_fraction=0.0
    )
    rows = {r["domain"]: r for r in paper.train.to_list()}
    assert paper.dropped_long == 0 and set(rows) == {"math", "nlp_task"}
    assert rows["math"]["prompt"] == "p" * 500 and rows["math"]["chosen"] == " " + "c" * 1500 + "</s>"
    assert rows["math"]["rejected"] == " r</s>"  # already spaced: no second space
    lab = load_paper_preferences(tmp_path / "d.jsonl", "</s>", domain_map="paper", eval_fraction=0.0)
    assert lab.dropped_long == 1 and lab.domains == {"nlp_task": 1}  # the lab's default drops the long row


def test_paper_preset_names_the_paper_data_patience_layer_and_pooled_controls() -> None:
    """configs/ablations-olmo-3.1-32b.yaml against 03f: allenai/dolci-instruct-dpo (03f:469), patience = 10
    (03f:1680), DEFAULT_LAYER_IDX = 37 (03f:225), DEFAULT_N_CONTROL = 300 (03f:227), control i at trial number
    `(i % n_trials) + 1` (03f:2921)."""
    from lab.config import ModelConfig, from_dict
    from lab.experiments.concept_injection import plan
    from training.ablation.evaluate import EvalSpec, injection_config, pool_controls
    from training.ablation.tune_config import DataSpec

    cfg = load_yaml("configs/ablations-olmo-3.1-32b.yaml")
    data = from_dict(DataSpec, cfg["data"], "data")
    assert "dolci-instruct-dpo" in data.path and (data.layout, data.long_rows, data.domain_map) == (
        "paper",
        "truncate",
        "paper",
    )
    assert DataSpec().path is None and DataSpec().long_rows == "drop"  # the lab's default stays synthetic
    assert cfg["hparams"]["early_stopping_patience"] == 10
    ev = from_dict(EvalSpec, cfg["evaluation"], "evaluation")
    assert ev.sweep.layers == (37,) and ev.pooled_controls == 300
    small = EvalSpec(
        sweep=ev.sweep.__class__(
            concepts="first:4",
            layers=(3,),
            strengths=(4.0,),
            strength_mode="raw",
            trials_per_concept=3,
            controls=(),
            selftest=False,
        ),
        pooled_controls=7,
    )
    trials = plan(injection_config(ModelConfig(), None, small, "/nonexistent")).trials
    kept = pool_controls(trials, 7)
    controls = [t for t in kept if t.kind == "control"]
    assert len([t for t in kept if t.kind == "injection"]) == 12 and len(controls) == 7
    assert sorted(t.trial_number for t in controls) == [1, 1, 1, 2, 2, 3, 3]  # i % 3 + 1 for i in 0..6
    assert pool_controls(trials, 0) == list(trials)
    with pytest.raises(LabError, match="too few to pool 13"):
        pool_controls(trials, 13)
