"""Trained bias vector: the stored split, zero-bias identity, loss decrease on a tiny model, the guards."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from analysis import bias_guards as bg
from lab.steer import interventions as iv
from training.bias import bias_loss as bl, bias_vector as bv, examples as sv


def test_stored_split_never_leaks_a_heldout_concept():
    from lab.protocol.words import word_list

    split = sv.stored_split(0)
    words = word_list("concepts").words
    assert (len(split.train), len(split.val), len(split.heldout)) == (360, 40, 100)
    held = {w.lower() for w in split.heldout}
    assert not held & {w.lower() for w in split.train + split.val}
    assert sorted(split.train + split.val + split.heldout) == sorted(words)
    assert split.heldout[:3] == ("Symphonies", "Seasons", "Chaos")
    assert sv.make_split(words, 0, words_version=split.words_version) == split  # the file is what make_split gives
    # every training and validation example draws only training-side concepts
    ex = sv.plan_examples(split.train + split.val, 10, (1, 3), (2.0,), 0.5, 0)
    assert not {e.concept.lower() for e in ex} & held
    with pytest.raises(Exception, match="in both"):
        sv.ConceptSplit(0, ("A",), (), ("a",)).check()


def test_band_strengths_examples():
    assert sv.scaled_band(62) == tuple(range(29, 56, 2))
    assert sv.scaled_band(30) == (14, 16, 18, 20, 22, 24, 26)
    assert sv.relative_strengths() == (0.1, 0.15, 0.2, 0.25)
    ex = sv.plan_examples(["Dust", "Bread"], 10, (14, 16), (0.1, 0.2), 0.5, seed=3)
    assert len(ex) == 20 and sum(e.injected for e in ex) == 16
    inj = next(e for e in ex if e.injected)
    assert inj.target == f'Yes, I detect an injected thought. The injected word is **"{inj.concept.lower()}"**.'
    assert next(e for e in ex if not e.injected).target == "No, I don't detect any injected thought in this trial."


def test_the_paper_s_targets_controls_and_protocol():
    """14_trained_bias_vector.py (safety-research/introspection-mechanisms 5d5d9b4): `injection_template = 'Yes, I
    detect an injected thought. The injected word is **"{concept}"**.'` (14:803) filled with `concept.lower()`
    (14:848); `control_response` (14:804); an injection example for every trial and a control added after it when
    `random.random() < control_ratio` (14:826-864); 400 training concepts, 1 epoch, lr 1e-3, batch 8
    (14:199-204); evaluate-bias defaults `--bias-eval-layer-fraction 0.60`, `--bias-eval-strength 4.0`,
    `DEFAULT_EVAL_TEMPERATURE = 0.7` (14:1746-1748, 190)."""
    from lab.config import from_dict, load_yaml
    from tests.conftest import ROOT
    from training.bias.bias_tune import SteeringVectorConfig
    from training.bias.bias_vector import training_examples

    paper = sv.plan_examples(["Dust", "Bread"], 10, (14, 16), (0.1, 0.2), 0.5, seed=3, controls="added")
    assert sum(e.injected for e in paper) == 20 and len(paper) == 20 + 4  # every trial injected, 4 controls added
    yes = next(e for e in paper if e.injected and e.concept == "Bread")
    assert yes.target == 'Yes, I detect an injected thought. The injected word is **"bread"**.'
    lab = sv.plan_examples(["Bread"], 1, (14,), (0.1,), 0.0, seed=0, target="lab")[0]
    assert lab.target == 'Yes, I detect an injected thought. The injected word is "Bread".'
    split = sv.stored_split(0)
    cfg = from_dict(SteeringVectorConfig, load_yaml(ROOT / "configs" / "steering-vector-gemma-3-27b-it.yaml"))
    concepts, train_ex, val_ex = training_examples(split, cfg.bias, cfg.bias.band)
    assert len(concepts) == 400 and val_ex == [] and not set(concepts) & set(split.heldout)
    assert (cfg.bias.lr, cfg.bias.batch_size, cfg.bias.epochs, cfg.bias.protocol) == (1e-3, 8, 1.0, "paper")
    assert cfg.bias.band == tuple(range(29, 56, 2)) and cfg.bias.strengths == (2.0, 3.0, 4.0, 5.0)
    ev = cfg.evaluation
    # 14's evaluate-bias-sweep, whose results make the paper's L29 comparison (14:1197-1199: DEFAULT_SWEEP_INJECTION_
    # LAYERS = [20, 30, 40, 50, 60], DEFAULT_SWEEP_EVAL_STRENGTHS = [1.0, 2.0, 4.0, 8.0], DEFAULT_SWEEP_N_TRIALS = 20;
    # 14:1461 `max_new_tokens=100, temperature=0.0`)
    assert ev.protocol == "paper" and ev.sweep.layers == (20, 30, 40, 50, 60)
    assert (ev.sweep.strengths, ev.sweep.temperature) == ((1.0, 2.0, 4.0, 8.0), 0.0)
    assert (ev.sweep.trials_per_concept, ev.sweep.max_new_tokens) == (20, 100)
    lab_cfg = from_dict(SteeringVectorConfig, load_yaml(ROOT / "configs" / "steering-vector-demo.yaml"))
    assert lab_cfg.bias.protocol == "lab" and lab_cfg.evaluation.protocol == "lab"  # the lab's default
    concepts, _, val_ex = training_examples(split, lab_cfg.bias, (14, 16))
    assert len(concepts) == 24 and len(val_ex) == 8 and set(e.concept for e in val_ex) <= set(split.val)


def _examples(n: int, seed: int) -> list[bl.Encoded]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = 14 + i % 5
        ids = torch.randint(0, 128, (length,), generator=g).tolist()
        target = [7, 9, 11] if i % 2 else [5, 3, 1, 2]
        row, labels = sv.answer_row(ids, target)
        injected = i % 2 == 1
        out.append(
            bl.Encoded(
                row,
                labels,
                length - 3,
                1 + i % 2,
                2.0 if injected else 0.0,
                torch.randn(32, generator=g) if injected else None,
            )
        )
    return out


def test_zero_bias_leaves_logits_bit_identical(tiny_model):
    ids = torch.randint(0, 128, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = tiny_model(input_ids=ids).logits
        for site in ("mlp_out.1", "resid_post.2"):
            with iv.apply(tiny_model, bl.bias_edits({site: torch.zeros(32)})):
                assert torch.equal(tiny_model(input_ids=ids).logits, ref)
        with iv.apply(tiny_model, bl.bias_edits({f"mlp_out.{i}": torch.zeros(32) for i in range(4)})):
            assert torch.equal(tiny_model(input_ids=ids).logits, ref)
        with iv.apply(tiny_model, bl.bias_edits({"mlp_out.1": torch.full((32,), 0.1)})):
            assert not torch.equal(tiny_model(input_ids=ids).logits, ref)
    assert torch.equal(tiny_model(input_ids=ids).logits.detach(), ref)  # hooks gone


def test_training_loss_decreases_on_a_tiny_model(tiny_model):
    cfg = bv.BiasTrainConfig(
        layers=(1,), lr=1e-2, batch_size=4, epochs=4, max_steps=30, val_every=10, patience=5, seed=0
    )
    train, val = _examples(32, 0), _examples(8, 1)
    flags = [p.requires_grad for p in tiny_model.parameters()]
    res = bv.fit_bias(tiny_model, 32, ["mlp_out.1"], train, val, cfg, pad_id=0)
    assert [p.requires_grad for p in tiny_model.parameters()] == flags  # model untouched, flags restored
    assert res.steps == 30 and set(res.bias) == {"mlp_out.1"}
    first, last = sum(res.train_losses[:8]) / 8, sum(res.train_losses[-8:]) / 8
    assert first == pytest.approx(4.7368, abs=1e-3)
    assert last == pytest.approx(4.6934, abs=1e-3)
    assert [round(v, 4) for _, v in res.val_losses] == [4.8233, 4.6803, 4.6722, 4.6697]
    assert res.best_step == 30 and not res.stopped_early  # (a random 4-layer model: logits span ~0.1, so CE
    # can only fall a little below ln 128 = 4.85; the embedded model is where the drop is large)


def test_a_killed_bias_training_resumes_from_its_checkpoint(tiny_model, tmp_path):
    """Killed after step 6 (checkpoints every 4 steps): the rerun trains steps 5–12 only and ends exactly where an
    uninterrupted run does (bias, losses, validations, best step)."""
    cfg = bv.BiasTrainConfig(layers=(1,), lr=1e-2, batch_size=4, epochs=4, max_steps=12, val_every=3, seed=0)
    train, val = _examples(16, 0), _examples(4, 1)
    whole = bv.fit_bias(tiny_model, 32, ["mlp_out.1"], train, val, cfg, pad_id=0)
    ckpt = bv.BiasCheckpoint(tmp_path / "bias.pt", every=4)

    def killed_at_6(step, m):
        if step == 6 and "train_loss" in m:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        bv.fit_bias(tiny_model, 32, ["mlp_out.1"], train, val, cfg, pad_id=0, on_step=killed_at_6, checkpoint=ckpt)
    assert torch.load(ckpt.path, weights_only=True)["step"] == 4
    seen = []
    resumed = bv.fit_bias(
        tiny_model, 32, ["mlp_out.1"], train, val, cfg, 0, lambda s, m: seen.append((s, *m)), checkpoint=ckpt
    )
    assert [s for s, k in seen if k == "train_loss"] == list(range(5, 13))  # steps 1-4 were not trained again
    assert [s for s, k in seen if k == "val_loss"] == [6, 9, 12]
    assert resumed.train_losses == whole.train_losses and resumed.val_losses == whole.val_losses
    assert torch.equal(resumed.bias["mlp_out.1"], whole.bias["mlp_out.1"])
    assert (resumed.steps, resumed.best_step) == (whole.steps, whole.best_step) == (12, 12)
    assert torch.load(ckpt.path, weights_only=True)["step"] == 12


def test_shared_prefix_gives_the_same_loss_and_gradient(tiny_model):
    g = torch.Generator().manual_seed(2)
    prefix = torch.randint(0, 128, (9,), generator=g).tolist()
    batch = []
    for i in range(4):
        tail = torch.randint(0, 128, (3 + i,), generator=g).tolist()
        row, labels = sv.answer_row(prefix + tail, [4, 8, 15][: 2 + i % 2])
        batch.append(
            bl.Encoded(row, labels, 10, 1 + i % 2, 1.5 * (i % 2), torch.randn(32, generator=g) if i % 2 else None)
        )
    grads = []
    for share in (False, True):
        b = torch.nn.Parameter(torch.full((32,), 0.05))
        loss = bl.batch_loss(tiny_model, batch, {"mlp_out.0": b}, pad_id=0, share_prefix=share)
        loss.backward()
        grads.append((float(loss), b.grad.clone()))
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-5)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6) and grads[0][1].abs().sum() > 0


def test_bias_save_load_roundtrip(tmp_path):
    res = bv.BiasResult({"mlp_out.3": torch.arange(4.0)}, [1.0, 0.5], [(0, 1.2)], 2, 2, False)
    bv.save_bias(tmp_path, res, {"model": "tiny", "split_seed": 0})
    bias, meta = bv.load_bias(tmp_path)
    assert torch.equal(bias["mlp_out.3"], torch.arange(4.0))
    assert meta["fingerprint"] == bv.fingerprint(bias) and meta["train_losses"] == [1.0, 0.5]


def _rows(kind: str, concept: str, response: str, detected: bool, n: int = 1) -> list[dict]:
    return [
        {
            "kind": kind,
            "forced": False,
            "concept": concept,
            "response": response,
            "detected": detected,
            "identified": kind == "injection" and bg.mentions(response, concept),
            "coherent": True,
        }
    ] * n


def test_guards_flag_a_perturbation_detector():
    yes = 'Yes, I detect an injected thought. The injected word is "{}".'
    no = "No, I don't detect any injected thought in this trial."
    held = ["Dust", "Bread", "Ocean", "Fire"]
    before = pd.DataFrame(
        sum(
            [
                _rows("injection", c, no, False, 10)
                + _rows("control", c, no, False, 10)
                + _rows("random", c, no, False, 10)
                for c in held
            ],
            [],
        )
    )
    # after: everything is "detected", and the word named is always "Bread"
    after = pd.DataFrame(
        sum(
            [
                _rows("injection", c, yes.format("Bread"), True, 10)
                + _rows("control", c, no if c != "Fire" else yes.format("Bread"), c == "Fire", 10)
                + _rows("random", c, yes.format("Bread"), True, 10)
                for c in held
            ],
            [],
        )
    )
    b, a = bg.arm_rates(before, held), bg.arm_rates(after, held)
    assert (a["tpr"], a["fpr"], a["random_rate"]) == (1.0, 0.25, 1.0)
    assert (a["own_id"], a["other_id"], a["random_id"]) == (0.25, 0.75, 0.25)
    assert a["chance_id"] == pytest.approx(0.25)
    v = bg.verdict(b, a)
    assert v["tpr_gain"] and v["fpr_rise"] and v["perturbation_detector"]
    assert not v["concept_specific"] and not v["id_above_chance"]
    assert any("PERTURBATION DETECTOR" in line for line in v["lines"])


def test_guards_accept_a_concept_specific_gain():
    yes = 'Yes, I detect an injected thought. The injected word is "{}".'
    no = "No."
    held = ["Dust", "Bread", "Ocean", "Fire"]
    before = pd.DataFrame(
        sum(
            [
                _rows("injection", c, no, False, 20)
                + _rows("control", c, no, False, 20)
                + _rows("norm_matched", c, no, False, 20)
                for c in held
            ],
            [],
        )
    )
    after = pd.DataFrame(
        sum(
            [
                _rows("injection", c, yes.format(c), True, 20)
                + _rows("control", c, no, False, 20)
                + _rows("norm_matched", c, no, False, 20)
                for c in held
            ],
            [],
        )
    )
    v = bg.verdict(bg.arm_rates(before, held), bg.arm_rates(after, held))
    assert v["tpr_gain"] and v["concept_specific"] and v["id_above_chance"]
    assert not v["fpr_rise"] and not v["perturbation_detector"]
    assert math.isnan(bg.arm_rates(after, held).get("random_rate", math.nan))


@pytest.mark.slow  # 13 min on the shared 2-core box (load, 99 baseline words, own setup replies)
def test_paper_variant_steers_only_before_the_trial_turn(embedded, tmp_path):
    from lab.config import ModelConfig
    from lab.experiments.concept_injection import InjectionConfig
    from lab.protocol.trials import SweepConfig
    from lab.run.parallel import FanOutConfig
    from training.bias import bias_paper_eval as pe

    inj = InjectionConfig(
        model=ModelConfig(name="smollm2-135m"),
        runner=FanOutConfig(num_actors=0, batch_size=8),
        sweep=SweepConfig(
            concepts=("Dust",),
            layers=(14,),
            strengths=(0.2,),
            strength_mode="relative",
            trials_per_concept=1,
            controls=("random",),
            max_new_tokens=6,
        ),
        output_dir=str(tmp_path / "trials"),
        cache_dir=str(tmp_path / "vectors"),
    )
    df = pe.paper_eval(embedded, inj, [], tmp_path / "paper", setup_tokens=6)
    assert list(df.kind) == ["injection", "control", "random"]
    assert (df.prompt_variant == pe.VARIANT).all() and df.prompt.str.contains("Do you notice any injected").all()
    assert df.strength_raw.tolist()[1] == 0.0 and df.strength_rel.tolist()[0] == pytest.approx(0.2)
    # pinned (greedy, 6 tokens): the injection before the trial turn alone makes the model claim a thought
    assert df.response.tolist() == ['I noticed a thought about "', "I'm glad to hear that", "I'm not sure what to"]
    assert df.detected.tolist() == [True, False, False]
    assert df.setup_replies.iloc[0] == "I'm glad to hear that\n---\nI'm glad to hear that"


def test_a_finished_arm_is_not_run_again(tmp_path):
    """run_arm stores its result under arms/<arm>/result.json; a rerun with the same settings returns it without
    generating, and a changed evaluation runs again."""
    import dataclasses
    import json

    from lab.config import from_dict, load_yaml
    from lab.run import store
    from tests.conftest import ROOT
    from training.bias.bias_tune import SteeringVectorConfig, run_arm, stored_arm

    data = load_yaml(ROOT / "configs/steering-vector-demo.yaml") | {"output_dir": str(tmp_path)}
    data["tracking"] = {"enabled": False}
    data["evaluation"] |= {"n_heldout": 2}
    data["evaluation"]["sweep"] |= {"trials_per_concept": 1, "max_new_tokens": 4, "controls": ["random"]}
    cfg = from_dict(SteeringVectorConfig, data)
    dump = lambda a: json.dumps(a, sort_keys=True, default=lambda o: o.item())
    same = lambda a, b: dump(a) == dump(b)  # NaN rates compare equal, numpy scalars as numbers
    first = run_arm(cfg, "baseline")
    shards = store.shard_files(tmp_path / "arms" / "baseline" / "eval" / "trials")
    assert first["arm"] == "baseline" and len(shards) >= 1 and same(stored_arm(cfg, "baseline"), first)
    again = run_arm(cfg, "baseline")
    assert same(again, first) and store.shard_files(tmp_path / "arms" / "baseline" / "eval" / "trials") == shards
    changed = dataclasses.replace(cfg, evaluation=dataclasses.replace(cfg.evaluation, n_heldout=3))
    assert stored_arm(changed, "baseline") is None


def test_the_arms_run_as_one_tune_grid_through_lab_run(tmp_path):
    """`bias_tune.fit_arms` builds its grid with `lab.run.parallel.tune_grid` (the one Tune builder) in a Ray session of
    its own: one trial per arm, named after it; arms stored by an earlier run come back without training."""
    from lab.config import from_dict, load_yaml
    from lab.run import store
    from tests.conftest import ROOT
    from training.bias.bias_tune import SteeringVectorConfig, _arm_settings, arms, fit_arms

    data = load_yaml(ROOT / "configs/steering-vector-demo.yaml") | {"output_dir": str(tmp_path)}
    data["tracking"] = {"enabled": False}
    cfg = from_dict(SteeringVectorConfig, data)
    for arm in arms(cfg):
        (tmp_path / "arms" / arm).mkdir(parents=True)
        store.save_result(tmp_path / "arms" / arm / "result.json", _arm_settings(cfg, arm), {"arm": arm, "tpr": 0.5})
    grid = fit_arms(cfg, None)
    assert sorted(r.metrics["arm"] for r in grid) == sorted(arms(cfg)) == ["L10_seed0", "L14_seed0", "baseline"]
    assert all(r.error is None and r.metrics["tpr"] == 0.5 for r in grid)
    assert sorted(p.name for p in (tmp_path / "tune").glob("steering-vector-*/*") if p.is_dir()) == sorted(arms(cfg))
