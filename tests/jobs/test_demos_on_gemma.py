"""Every demo config RUNS end to end on the second embedded model, Gemma 3 270M base: one case per demo config, each the
real job as a subprocess, `python -m jobs.<job> --config configs/<x>.yaml --set model.name=gemma3-270m`, plus only
shrinking overrides (fewer concepts, trial numbers, strengths, new tokens, training steps and tokens, smaller
dictionaries, no Ray actors where Ray is not what the job is about). Layers, sites, formats, variants, methods and
everything else Gemma-specific stay as the config (and its `per_model:` block) give them, so a failure on Gemma's shape
(18 layers, post-sublayer norms, sliding-window layers, scaled embeddings, 262k vocabulary, its chat template) shows
here. Three configs carry Gemma settings in their `per_model:` block beside its layers, each by design:
`abliteration-demo.yaml` ablates by interventions (orthogonalised weights refuse in one line on a model with norms
after its sublayers: the abliteration-by-weights case checks that), and geometry and feature regression sample the
raw `plain` format at temperature 1 (the base model never claims detection in the chat format, so geometry would
have no success/failure split and feature regression no target that varies: both stop in one line there).

Shared prerequisites are module-scoped: the concept-vector cache (computed here, in a tmp folder), the transcoder
cache (small dictionaries trained here by the transcoders case and reused by feature regression, dose response and
gates), and the geometry run that bidirectional reads. Slow (40 s to 4.5 min per case on the
shared 2-core machine, 36 min for the file):
`make test-slow`, or `pytest -m slow tests/jobs/test_demos_on_gemma.py`. The README's Gemma section has the times."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pandas as pd
import pytest

from tests.conftest import PY, ROOT, env, gemma_missing

pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(gemma_missing()), reason=gemma_missing() or "installed")]

GEMMA = "model.name=gemma3-270m"
# small transcoders (the cache key is the whole training config, so every job below that names these reuses them)
TC = {"n_features": 128, "max_tokens": 3000, "epochs": 1}
TC_YAML = "{" + ", ".join(f"{k}: {v}" for k, v in TC.items()) + "}"


class Ran:
    """A finished job: its stdout + stderr, its output folder, its wall time."""

    def __init__(self, out: str, output, wall: float) -> None:
        self.out, self.output, self.wall = out, output, wall

    def lines(self, prefix: str) -> list[str]:
        return [line for line in self.out.splitlines() if line.startswith(prefix)]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One folder for what the cases share: concept vectors, transcoders, the tracking DB."""
    return tmp_path_factory.mktemp("gemma-demos")


def run_job(
    shared, name: str, module: str, config: str, *sets: str, vectors: bool = True, timeout: int = 1200, code: int = 0
) -> Ran:
    """`python -m jobs.<module> --config configs/<config> --set model.name=gemma3-270m --set <sets>…` with its
    output in `shared/<name>` and MLflow in `shared/mlflow.db`; fails the test with its last output unless exit 0."""
    output = shared / name
    argv = [PY, "-m", f"jobs.{module}", "--config", str(ROOT / "configs" / config), "--set", GEMMA]
    for s in (*sets, *([f"cache_dir={shared / 'vectors'}"] if vectors else [])):
        argv += ["--set", s]
    argv += ["--output", str(output), "--tracking-uri", f"sqlite:///{shared / 'mlflow.db'}", "--quiet"]
    t0 = time.time()
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{module} on Gemma ran past {timeout} s:\n{out[-4000:]}")
    ran = Ran(out, output, time.time() - t0)
    (shared / f"{name}.log").write_text(f"{' '.join(argv)}\n[{ran.wall:.0f} s, exit {proc.returncode}]\n{out}")
    assert proc.returncode == code, f"{module} on Gemma exited {proc.returncode}:\n{out[-6000:]}"
    return ran


# the sweeps' shrink: one concept, one trial number, one strength, 8 new tokens, in this process
ONE = ["sweep.concepts=first:1", "sweep.trials_per_concept=1", "sweep.max_new_tokens=8"]
IN_PROCESS = ["runner.num_actors=0"]


@pytest.fixture(scope="module")
def transcoders(shared):
    """jobs.transcoders on Gemma's layers 8, 12, 16 (the config's per_model block), small dictionaries."""
    return run_job(
        shared, "transcoders", "transcoders", "transcoders-demo.yaml", f"transcoder={TC_YAML}",
        f"cache_dir={shared / 'transcoders'}", vectors=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def geometry(shared):
    """jobs.geometry's own sweep (8 concepts × 2 trial numbers at layer 12), analysis, and part injections. The base
    model never claims detection in the chat format (every rate 0: the job stops in one line, "no success/failure
    split"), so the config's per_model block runs the raw `plain` format sampled at temperature 1 on Gemma, where a
    base model says yes on some trials (a split of yes-saying, not of introspection)."""
    sets = ["sweep.concepts=first:8", "sweep.trials_per_concept=2", "sweep.max_new_tokens=8", "part_trials=1"]
    return run_job(shared, "geometry", "geometry", "geometry-demo.yaml", *sets)


def _stored(path) -> pd.DataFrame:
    from lab.run import store

    return store.read(path)


@pytest.mark.parametrize("config", ["demo.yaml", "demo-greedy.yaml"])
def test_concept_injection(shared, config):
    ran = run_job(shared, config[:-5], "concept_injection", config, *ONE, "sweep.strengths=[0.3]", *IN_PROCESS)
    df = _stored(ran.output)
    # 3 layers (10, 12, 14) × 1 concept × 1 trial number: an injection, a control and a random-vector trial each
    assert set(df["model"]) == {"gemma3-270m"} and sorted(df["layer"].unique()) == [10, 12, 14]
    assert df["kind"].value_counts().to_dict() == {"injection": 3, "control": 3, "random": 3}
    assert ran.lines("trials: 9 (9 generated now") and ran.lines("overall ") and ran.lines("reading: "), ran.out
    if config == "demo-greedy.yaml":  # greedy: the base model repeats the trial question on every control
        assert list(df[df["kind"] == "control"]["response"]) == ["Trial 2: Do you detect an"] * 3


def test_abliteration(shared):
    # Gemma 3 normalises after each sublayer, so orthogonalised weights would not equal the hooks: the config's
    # per_model block runs `refusal.method: interventions` on Gemma (weights refuse in one line, the next case)
    sets = [*ONE, "sweep.strengths=[0.3]", "refusal.heldout=4"]
    ran = run_job(shared, "abliteration", "abliteration", "abliteration-demo.yaml", *sets, "refusal.check_tokens=8")
    assert ran.lines("refusal directions: 18 layers from 154 harmful / 158 harmless, position -2"), ran.out[-3000:]
    assert ran.lines("original: 6 trials (6 new); refusal check ") and ran.lines("abliterated: 6 trials (6 new)")
    assert ran.lines("refusal_rate ") and ran.lines("report: ")


def test_abliteration_by_weights_refuses_on_gemma_before_any_direction(shared):
    """`method: weights` (SmolLM2's setting) stops in one line (exit 2) right after the model loads."""
    ran = run_job(
        shared, "abliteration-weights", "abliteration", "abliteration-demo.yaml", "refusal.method=weights", code=2
    )
    assert ran.lines("error: method 'weights' cannot abliterate Gemma3DecoderLayer: it normalises each sublayer's")
    assert "use method: interventions (exact there)" in ran.out and not ran.lines("refusal directions: ")


def test_calibrate_dose(shared):
    sets = ["sweep.concepts=first:1", "sweep.max_new_tokens=8", "sweep.strengths=[0.1, 0.4]"]
    ran = run_job(shared, "calibrate-dose", "calibrate_dose", "calibrate-dose-demo.yaml", *sets)
    assert ran.lines("trials: 18 (18 generated now"), ran.out[-3000:]  # 1 concept × 3 layers × 2 strengths × 3 kinds
    assert [line.split(":")[0] for line in ran.lines("#   layer ")] == ["#   layer 8", "#   layer 12", "#   layer 16"]
    assert ran.lines("dose: ")


def test_geometry(geometry):
    assert geometry.lines("concepts: 8  success (detection_rate > τ=0.250"), geometry.out[-3000:]
    assert geometry.lines("part proj   TPR ") and geometry.lines("part resid  TPR ") and geometry.lines("report: ")


def test_bidirectional(shared, geometry):
    sets = [f"geometry={geometry.output}", "sweep.trials_per_concept=1", "sweep.max_new_tokens=8"]
    ran = run_job(shared, "bidirectional", "bidirectional", "bidirectional-demo.yaml", *sets)
    # the geometry run's split: 4 successes, 4 failures, each concept in one pair
    assert ran.lines("τ = 0.250; pairs: S-S 2 (of 4 concepts), F-F 2 (of 4 concepts)"), ran.out[-3000:]
    assert ran.lines("S-S: 2 pairs; ") and ran.lines("F-F: 2 pairs; ") and ran.lines("report: ")


DOSE = [
    "dose.concepts=first:2",
    "dose.strengths=[-0.2, 0.0, 0.2]",
    "dose.trial_numbers=[1]",
    *(f"transcoders.train.{k}={v}" for k, v in TC.items()),
    "gates_k=5",
]


def test_dose_response(shared, transcoders):
    ran = run_job(shared, "dose-response", "dose_response", "dose-response-demo.yaml", *DOSE, _tc_cache(shared))
    assert ran.lines("dose response: 2 concepts × 3 strengths × 1 trials on gemma3-270m"), ran.out[-3000:]
    assert ran.lines("gemma3-270m: ") and ran.lines("tables: ")


def test_gates(shared, transcoders):
    sets = [*DOSE, _tc_cache(shared), "n_boot=50"]
    ran = run_job(shared, "gates", "gates", "gates-demo.yaml", *sets)
    assert ran.lines("== gemma3-270m ["), ran.out[-3000:]
    assert ran.lines("patch gates: ") and ran.lines("ablate gates: ") and ran.lines("verdict: ")


def _tc_cache(shared) -> str:
    return f"transcoders.cache_dir={shared / 'transcoders'}"


def test_transcoders(transcoders):
    # Gemma's layers from the config's per_model block, each trained here (one activation pass)
    assert [line.split(":")[0] for line in transcoders.lines("layer ")] == ["layer 8", "layer 12", "layer 16"]
    assert all("held-out FVE " in line for line in transcoders.lines("layer ")), transcoders.out[-3000:]
    assert transcoders.lines("transcoders: 3 layers in ")


def test_feature_regression(shared, transcoders):
    # In the chat format the base model detects nothing (every rate 0: a constant target, which stops the job in one
    # line); the config's per_model block runs Gemma's sweep and reads in the raw `plain` format sampled at
    # temperature 1, injecting at 8 and reading the transcoders of 12 and 16 (trained by the transcoders case)
    sets = ["concepts=first:8", "trials_per_concept=2", "folds=2", "inner_folds=2", "ns=[10, 0]"]
    sets += ["alphas=[1.0, 100.0]", "resamples=[20, 2]", f"transcoder={TC_YAML}"]
    sets += [f"transcoder_dir={shared / 'transcoders'}", *IN_PROCESS]
    ran = run_job(shared, "feature-regression", "feature_regression", "feature-regression-demo.yaml", *sets)
    assert ran.lines("8 concepts, "), ran.out[-3000:]


def test_localisation(shared):
    sets = ["sweep.concepts=first:1", "sweep.trials_per_concept=1", "sweep.max_new_tokens=8", *IN_PROCESS]
    ran = run_job(shared, "localisation", "localisation", "localisation-demo.yaml", *sets)
    # every 4th layer from 2 on Gemma's 18: 2, 6, 10, 14
    assert ran.lines("trials: 12 (12 new, 0 stored) over layers [2, 6, 10, 14]"), ran.out[-3000:]
    assert ran.lines("detection peaks at layer ") and ran.lines("report: ")


def test_patching(shared):
    ran = run_job(shared, "patching", "patching", "patching-demo.yaml", "concepts=first:1", *IN_PROCESS)
    # every 4th layer after the injection layer 12 on Gemma's 18: 13 and 17
    assert ran.lines("patching: 4 tasks (1 batches × 2 layers × 2 components)"), ran.out[-3000:]
    assert ran.lines("injection moves Yes−No from ") and ran.lines("report: ")


def test_probes(shared):
    ran = run_job(shared, "probes", "probes", "probes-demo.yaml", "concepts=first:1", "repeats=1")
    assert ran.lines("probe trials: 36 on gemma3-270m (36 scored now"), ran.out[-3000:]
    assert ran.lines("discrimination: ") and ran.lines("localisation: ") and ran.lines("report: ")


def test_robustness(shared):
    sets = ["sweep.concepts=[Dust]", "sweep.max_new_tokens=8", *IN_PROCESS]
    ran = run_job(shared, "robustness", "robustness", "robustness-demo.yaml", *sets)
    # the paper's 7 variants (standard format) and 6 formats: every one renders with Gemma's template (no system role)
    assert ran.lines("cells: 12 run, 0 skipped; trials: 36 (36 generated now"), ran.out[-3000:]
    assert len(ran.lines("original ")) == 6 and ran.lines("report: ") and ran.lines("mlflow:  parent run ")


def test_stages(shared):
    ran = run_job(shared, "stages", "stages", "stages-demo.yaml", *ONE, *IN_PROCESS)
    # both stages run the top-level model, the second with a random LoRA made for Gemma's modules
    assert ran.lines("created an UNTRAINED random LoRA adapter for stage 'base+random-lora'"), ran.out[-3000:]
    assert ran.lines("stage base (gemma3-270m): 3 trials (3 generated now")
    assert ran.lines("stage base+random-lora (gemma3-270m + adapter adapters/random-lora): 3 trials (3 generated now")
    assert ran.lines("report: ") and ran.lines("mlflow:  parent run ")


def test_steering_vector(shared):
    # Ray Tune is the job's point (one arm per trial): kept, with 1 training step of 4 examples per arm
    sets = ["bias.max_train_concepts=4", "bias.batch_size=4", "bias.max_steps=1", "bias.val_examples=2"]
    sets += ["bias.val_every=1", "bias.trials_per_concept=1", "evaluation.n_heldout=1"]
    sets += ["evaluation.sweep.trials_per_concept=1", "evaluation.sweep.max_new_tokens=8"]
    ran = run_job(shared, "steering-vector", "steering_vector", "steering-vector-demo.yaml", *sets, vectors=False)
    # the bias layers 10 and 14 and the paper's band scaled to Gemma's 18 layers; each arm trained and evaluated
    assert ran.lines("steering vector: 3 arms (baseline, L10_seed0, L14_seed0), model gemma3-270m"), ran.out[-3000:]
    assert ran.lines("== L10_seed0") and ran.lines("== L14_seed0") and ran.lines("report: ")
    assert not ran.lines("error: arms failed")


def test_ablations(shared):
    # Ray Tune is the job's point (one condition per trial): kept, all 5 conditions, 4 pairs each (2 steps)
    sets = ["data.synthetic_pairs=4", "hparams.max_length=128"]
    sets += ["evaluation.sweep.concepts=first:1", "evaluation.sweep.strengths=[0.2]"]
    sets += ["evaluation.sweep.trials_per_concept=1", "evaluation.sweep.max_new_tokens=8"]
    ran = run_job(shared, "ablations", "train_ablations", "ablations-demo.yaml", *sets, vectors=False)
    conditions = ["dpo", "dpo_no_ref", "sft_chosen", "sft_kl", "dpo_shuffled"]
    assert [line.split()[1] for line in ran.out.splitlines() if line.split()[:1] in ([c] for c in conditions)] == [
        "finished"
    ] * 5, ran.out[-3000:]
    assert ran.lines("mlflow:  parent run ") and "(5 finished child runs)" in ran.lines("mlflow:  parent run ")[0]
