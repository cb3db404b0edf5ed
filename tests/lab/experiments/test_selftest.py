"""Pipeline self-tests (lab.experiments.selftest): a broken judge stops a sweep before generating; a disabled injection fails the
steering self-test; a real injection passes it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lab.errors import LabError
from lab.experiments import selftest
from lab.experiments.concept_injection import (
    InjectionConfig,
    JudgeConfig,
    model_key,
    plan,
    prepare,
    run_sweep,
    vector_cache_dir,
)
from lab.generate.runner import VectorBank
from lab.judges import Verdict, make_judge, register_judge
from lab.protocol.trials import SweepConfig
from lab.run.parallel import FanOutConfig
from lab.run.tracking import TrackingConfig


class _YesJudge:
    name, version = "test-selftest-yes", "0"

    def grade(self, answers):
        return [Verdict(True, True, True, "always yes", self.name, self.version) for _ in answers]


register_judge("test-selftest-yes")(lambda: _YesJudge())


def _cfg(tmp_path, **sweep):
    return InjectionConfig(
        sweep=SweepConfig(
            **{
                "concepts": ("Dust",),
                "layers": (12,),
                "strengths": (0.3,),
                "strength_mode": "relative",
                "trials_per_concept": 1,
                "controls": (),
                "max_new_tokens": 4,
            }
            | sweep
        ),
        runner=FanOutConfig(num_actors=0, threads=2),
        tracking=TrackingConfig(enabled=False),
        output_dir=str(tmp_path / "out"),
    )


def test_the_rules_judge_passes_its_canned_answers():
    selftest.check_judge(make_judge("rules"))


def test_a_yes_to_everything_judge_stops_the_sweep_before_generating(tmp_path):
    cfg = dataclasses.replace(_cfg(tmp_path), judge=JudgeConfig(name="test-selftest-yes"))
    with pytest.raises(LabError, match="judge self-test failed: judge 'test-selftest-yes' graded a clear denial"):
        run_sweep(cfg, progress=False)
    assert not (tmp_path / "out").exists()  # nothing generated, nothing stored


def _prepare(embedded, cfg, probes):
    p = plan(cfg)
    return prepare(
        embedded,
        ["Dust"],
        p.layers,
        cfg.sweep.template,
        cfg.sweep.baseline,
        vector_cache_dir(cfg),
        model_key(cfg.model),
        4,
        (),
        None,
        probes,
    )


@pytest.mark.slow  # ~80 s on a loaded 2-core machine (concept vectors + 3 forwards)
def test_steering_selftest_passes_a_real_injection_and_fails_a_disabled_one(embedded, tmp_path):
    cfg = _cfg(tmp_path)
    probes = selftest.probes(plan(cfg).trials)
    assert [(t.kind, t.layer, t.strength) for t in probes] == [("injection", 12, 0.3)]
    ctx = _prepare(embedded, cfg, probes)  # passes: the concept's first token gains log-probability
    gains = selftest.check_steering(embedded, ctx.bank, probes)
    assert gains[12] == pytest.approx(0.3673, abs=1e-3)  # " Dust" gains log-probability at the next position
    zero = VectorBank(
        {k: dataclasses.replace(v, vector=torch.zeros_like(v.vector)) for k, v in ctx.bank.vectors.items()},
        ctx.bank.typical_norm,
    )
    with pytest.raises(LabError, match="steering self-test failed: the injection at layer 12 is disabled"):
        selftest.check_steering(embedded, zero, probes)
    off = _cfg(tmp_path, strengths=(0.0,))  # a config error: every strength 0
    with pytest.raises(LabError, match="steering self-test failed: the injection at layer 12 is disabled"):
        _prepare(embedded, off, selftest.probes(plan(off).trials))


def test_probes_use_the_concepts_own_vectors_only():
    """Named bank vectors (a projection, a difference) are never probed: they need not raise the concept's word."""
    from lab.protocol.trials import vector_trials

    sweep = SweepConfig(concepts=("Dust",), layers=(12,), strengths=(0.3,), strength_mode="relative")
    own = plan(InjectionConfig(sweep=sweep)).trials
    named = vector_trials(sweep, "m", [("Dust|proj", "Dust", 9.0), ("Dust-Bread", "Dust", 9.0)], 12, "raw", 1)
    assert [(t.concept, t.vector, t.strength) for t in selftest.probes([*named, *own])] == [("Dust", "", 0.3)]
    assert selftest.probes(named) == ()
