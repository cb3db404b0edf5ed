"""A training run killed mid-way (SIGKILL by PID, after its step-4 checkpoint) restarts from that checkpoint: the rerun
trains steps 5–6 only and ends with the same adapter, loss curve and train_loss as a run that was never killed; a
trial's checkpoints survive a new attempt only when the same settings wrote them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.training_fixtures import corpus, single_thread, tiny_model, tiny_tokenizer
from training.lora.conditions import LoraSettings, TrainHParams
from training.preference.data import to_conversational
from training.preference.synthetic import generate_pairs

ROWS = [to_conversational(r) for r in generate_pairs(14, seed=0)]  # 2 rows in each of the 7 domains
TOK = tiny_tokenizer(corpus(ROWS))
LORA = LoraSettings(r=4, alpha=8, dropout=0.1)  # dropout: the RNG state must be restored too
HP = TrainHParams(learning_rate=1e-3, gradient_accumulation_steps=1, per_device_batch_size=2, max_length=128)
KILL_AFTER = 4  # the checkpoint the killed run last wrote (every 2 steps, 6 in all)


def _train(condition: str, out: Path, ckpt: Path, callbacks=()):
    from training.lora.trainer import train

    return train(
        condition,
        ROWS,
        output_dir=out,
        model=tiny_model(len(TOK)),
        tokenizer=TOK,
        lora=LORA,
        hparams=HP,
        max_steps=6,
        seed=3,
        callbacks=callbacks,
        overwrite=True,
        checkpoint_dir=ckpt,
        checkpoint_steps=2,
    )


def _child(condition: str, out: str, ckpt: str, marker: str) -> None:
    """The run that gets killed (a subprocess): after saving checkpoint-4 it says so and waits to be killed."""
    from transformers import TrainerCallback

    class Stall(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.global_step == KILL_AFTER:
                Path(marker).write_text(str(os.getpid()))
                time.sleep(600)

    torch.set_num_threads(1)
    _train(condition, Path(out), Path(ckpt), [Stall()])


class Steps:
    """Records the optimizer steps that logged a loss in this process."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Steps(TrainerCallback):
            def __init__(self):
                self.steps: list[int] = []

            def on_log(self, args, state, control, logs=None, **kw):
                if logs and "loss" in logs:
                    self.steps.append(int(state.global_step))

        return _Steps()


def _adapter(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


@pytest.mark.parametrize("condition", ["dpo", "sft_chosen"])
def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, condition) -> None:
    from tests.conftest import ROOT, env, wait_for
    from training.lora.trl_setup import last_checkpoint

    out, ckpt, marker = tmp_path / "adapter", tmp_path / "checkpoints", tmp_path / "saved"
    code = (
        f"from tests.training.test_training_resume import _child; _child({condition!r}, {str(out)!r}, {str(ckpt)!r}, "
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code + f"{str(marker)!r})"],
        cwd=ROOT,
        env=env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: marker.exists() or proc.poll() is not None, 240, "checkpoint-4 of the run to be killed")
        assert marker.exists(), proc.stderr.read()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)  # by PID, as a lost node or the OOM killer would
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # no adapter from the killed run
    assert sorted(p.name for p in ckpt.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert last_checkpoint(ckpt) == str(ckpt / "checkpoint-4")

    with single_thread():
        rec = Steps()
        resumed = _train(condition, out, ckpt, [rec])
        whole = _train(condition, tmp_path / "whole", tmp_path / "whole-ckpt")
    assert rec.steps == [5, 6]  # only the steps after the checkpoint were trained again
    assert resumed.metrics["resumed_from_step"] == KILL_AFTER and resumed.metrics["train_steps"] == 6
    assert "resumed_from_step" not in whole.metrics
    assert [s for s, _ in resumed.losses] == [1, 2, 3, 4, 5, 6]  # the curve of the killed run is kept
    assert resumed.losses == whole.losses  # step by step, to the Trainer's 4 logged decimals
    assert resumed.metrics["train_loss"] == pytest.approx(whole.metrics["train_loss"], abs=1e-4)
    a, b = _adapter(out), _adapter(tmp_path / "whole")
    assert sorted(a) == sorted(b) and len(a) == 28  # A and B of the 7 linear layers of 2 blocks
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit-identical on CPU: optimizer, scheduler, RNG and data order restored
    assert json.loads((out / "training.json").read_text())["metrics"]["resumed_from_step"] == KILL_AFTER
    assert sorted(p.name for p in ckpt.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]


def test_a_checkpoint_left_by_a_partial_save_is_skipped(tmp_path) -> None:
    from training.lora.trl_setup import last_checkpoint

    assert last_checkpoint(tmp_path / "none") is None
    for step, complete in ((2, True), (10, True), (12, False)):  # 12: killed while saving (no trainer_state.json)
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if complete:
            (d / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")


def test_a_trial_keeps_its_checkpoints_only_for_the_same_settings(tmp_path) -> None:
    """train_ablations: a new attempt of a trial empties its folder but keeps checkpoints/ that the same settings
    wrote (resources such as the checkpoint interval do not count); a changed hyper-parameter starts afresh."""
    from lab.config import from_dict, load_yaml
    from tests.conftest import ROOT
    from training.ablation.trial import prepare_trial_dir
    from training.ablation.tune_config import AblationConfig, TrialSpec

    def cfg(**over):
        data = load_yaml(ROOT / "configs/test-ablations-tiny.yaml") | {"output_dir": str(tmp_path)}
        for k, v in over.items():
            data[k] = dict(data.get(k) or {}, **v)
        return from_dict(AblationConfig, data)

    spec = TrialSpec("sft_chosen", 0)
    tdir = prepare_trial_dir(cfg(), spec)
    assert tdir == tmp_path / "trials" / "sft_chosen-s0"
    assert sorted(p.name for p in (tdir / "checkpoints").iterdir()) == ["settings.json"]
    step2 = tdir / "checkpoints" / "checkpoint-2"
    step2.mkdir()
    (step2 / "trainer_state.json").write_text("{}")
    (tdir / "eval").mkdir()
    (tdir / "result.tmp").write_text("{}")
    prepare_trial_dir(cfg(resources={"checkpoint_steps": 7, "threads": 2}), spec)
    assert sorted(p.name for p in tdir.iterdir()) == ["checkpoints"] and step2.is_dir()
    prepare_trial_dir(cfg(hparams={"learning_rate": 2e-3}), spec)
    assert sorted(p.name for p in (tdir / "checkpoints").iterdir()) == ["settings.json"]
