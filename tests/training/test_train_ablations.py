"""The DPO-component ablation job: config/search-space/report plumbing (fast), and one tiny ablation submitted with
`ray job submit` to a real local Ray head, read back from MLflow (parent + child runs, comparison artifacts)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from lab.errors import LabError
from tests.conftest import ROOT, submit


def _cfg(**over):
    from lab.config import from_dict, load_yaml
    from training.ablation.tune_config import AblationConfig

    return from_dict(AblationConfig, load_yaml(ROOT / "configs/test-ablations-tiny.yaml") | over)


# ---------------------------------------------------------------------------------------------------------------
# fast: no model, no Ray


def test_config_search_space_and_trial_keys() -> None:
    from training.ablation.tune_config import expected_trials, spec_from_config, trial_settings

    cfg = _cfg(
        seeds=[0, 1],
        conditions=[{"name": "dpo"}, {"name": "dpo", "domains": ["code", "math"]}],
        grid={"hparams.learning_rate": [1e-4, 1e-5]},
        fault_injection={},
    )
    trials = expected_trials(cfg)
    assert len(trials) == 2 * 2 * 2
    assert trials[0].key == "dpo-s0-learning_rate=0.0001" and trials[0].variant == "dpo[learning_rate=0.0001]"
    assert {t.label for t in trials} == {"dpo", "dpo@code,math"}
    spec = spec_from_config(cfg, {"condition": "dpo@code,math", "seed": 1, "hparams.learning_rate": 1e-5})
    cond, lora, hp = trial_settings(cfg, spec)
    assert cond.domains == ("code", "math") and hp.learning_rate == 1e-5 and lora.r == 4
    for bad, msg in [
        ({"conditions": []}, "at least one condition"),
        ({"conditions": [{"name": "dpo"}, {"name": "dpo"}]}, "duplicate condition 'dpo'"),
        ({"conditions": [{"name": "ppo"}]}, "unknown training condition 'ppo'"),
        ({"grid": {"hparams.nope": [1]}}, "grid key 'hparams.nope'"),
        ({"fault_injection": {"dpo": 1}}, "fault_injection names unknown condition 'dpo'"),
        ({"seeds": [0, 0]}, "seeds must be"),
    ]:
        with pytest.raises(LabError, match=msg):
            _cfg(**bad)


def test_preflight_validates_the_evaluation_and_paths(tmp_path) -> None:
    from jobs.train_ablations import main

    base = [
        "--config",
        "configs/test-ablations-tiny.yaml",
        "--output",
        str(tmp_path / "o"),
        "--tracking-uri",
        f"sqlite:///{tmp_path}/m.db",
    ]
    assert main(base + ["--set", "evaluation.sweep.layers=[99]"]) == 2
    assert main(base + ["--set", "data.path=/nonexistent.jsonl"]) == 2
    assert main(base + ["--set", "deepspeed=/nonexistent.json", "--set", "resources.workers=2"]) == 2
    assert main(base + ["--set", "conditions=[{name: ppo}]"]) == 2
    assert not (tmp_path / "o").exists()


def test_paper_preset_and_deepspeed_plumbing(monkeypatch) -> None:
    from jobs.cli import load_config, parser
    from training.ablation.distributed import concrete_deepspeed, scaling
    from training.ablation.tune_config import AblationConfig, absolutize, expected_trials

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(ROOT)
    cfg = absolutize(
        load_config(AblationConfig, parser("x").parse_args(["--config", "configs/ablations-olmo-3.1-32b.yaml"]))
    )
    assert cfg.model.name == "olmo-3.1-32b-sft" and cfg.lora.r == 64 and cfg.lora.alpha == 128
    assert cfg.hparams.learning_rate == 1e-5 and cfg.hparams.gradient_accumulation_steps == 8
    assert cfg.resources.distributed and cfg.deepspeed.endswith("cluster/deepspeed/zero3.json")
    assert len(expected_trials(cfg)) == 20  # 12 arms (two random-LoRA controls) + 8 single-domain DPO runs
    assert cfg.tracking.uri == f"sqlite:///{ROOT}/mlflow.db"  # the default, made absolute for trials elsewhere
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///rel/m.db")
    assert absolutize(cfg).tracking.uri == f"sqlite:///{ROOT}/mlflow.db"  # an explicit uri wins over the env
    assert (
        absolutize(dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, uri=None))).tracking.uri
        == f"sqlite:///{ROOT}/rel/m.db"
    )
    sc, tc = scaling(cfg.resources)
    assert sc.num_workers == 8 and sc.use_gpu and sc.resources_per_worker == {"CPU": 4, "GPU": 1}
    assert tc.backend == "nccl"
    ds = concrete_deepspeed(cfg.deepspeed, cfg.hparams, world_size=8, bf16=True)
    assert ds["zero_optimization"]["stage"] == 3 and ds["bf16"]["enabled"] is True
    assert ds["train_micro_batch_size_per_gpu"] == 1 and ds["train_batch_size"] == 64
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    ds2 = concrete_deepspeed(ROOT / "cluster/deepspeed/zero2.json", cfg.hparams, world_size=2)
    assert ds2["zero_optimization"]["stage"] == 2 and ds2["bf16"]["enabled"] is False


def test_failed_trials_stay_in_the_comparison(tmp_path) -> None:
    import pandas as pd

    from training.ablation.ablation_report import pool_seeds, report_ablation

    cfg = _cfg(output_dir=str(tmp_path), seeds=[0, 1])
    ok = {"status": "finished", "error": "", "eval_trials_hash": "h", "train/train_loss": 0.5}
    records = [
        {
            "trial": "dpo_no_ref-s0",
            "condition": "dpo_no_ref",
            "variant": "dpo_no_ref",
            "seed": 0,
            "attempts": 1,
            **ok,
            "k_tpr": 1,
            "n_tpr": 4,
            "k_fpr": 0,
            "n_fpr": 4,
            "k_introspection": 0,
            "n_introspection": 4,
        },
        # k = 0 of 7: Wilson's lower bound comes out as ~1e-17, not 0 (the plot must still draw)
        {
            "trial": "dpo_no_ref-s1",
            "condition": "dpo_no_ref",
            "variant": "dpo_no_ref",
            "seed": 1,
            "attempts": 1,
            **ok,
            "k_tpr": 3,
            "n_tpr": 4,
            "k_fpr": 1,
            "n_fpr": 4,
            "k_introspection": 0,
            "n_introspection": 3,
        },
        {
            "trial": "sft_chosen-s0",
            "condition": "sft_chosen",
            "variant": "sft_chosen",
            "seed": 0,
            "attempts": 2,
            "status": "failed",
            "error": "RuntimeError: boom",
        },
        {
            "trial": "sft_chosen-s1",
            "condition": "sft_chosen",
            "variant": "sft_chosen",
            "seed": 1,
            "attempts": 2,
            "status": "failed",
            "error": "RuntimeError: boom",
        },
    ]
    pooled = pool_seeds(records)
    dpo, sft = pooled.iloc[0], pooled.iloc[1]
    assert dpo["tpr"] == 0.5 and dpo["n_tpr"] == 8 and dpo["tpr_lo"] < 0.5 < dpo["tpr_hi"] and dpo["fpr"] == 1 / 8
    assert sft["status"] == "failed" and math.isnan(sft["tpr"]) and sft["failed"] == 2
    _, _, failed, paths = report_ablation(cfg, records)
    assert [f["trial"] for f in failed] == ["sft_chosen-s0", "sft_chosen-s1"]
    assert list(pd.read_csv(paths[0])["condition"]) == ["dpo_no_ref", "sft_chosen"]
    assert paths[2].stat().st_size > 1000 and json.loads(paths[3].read_text())[0]["error"] == "RuntimeError: boom"


# ---------------------------------------------------------------------------------------------------------------
# the real thing: `ray job submit` to a local head, then MLflow read back


# Each condition's child-run rates on configs/test-ablations-tiny.yaml (1 injected + 1 control trial; Wilson 95 %).
PINNED_CHILD_RATES: dict[str, dict[str, float]] = {
    cond: {
        k: v
        for m in ("tpr", "fpr", "introspection")
        for k, v in ((m, 0.0), (f"{m}_lo", 0.0), (f"{m}_hi", 0.7935), (f"n_{m}", 1.0))
    }
    for cond in ("dpo_no_ref", "sft_chosen")
}
# The sft_chosen child run of the same config trained by a 2-worker TorchTrainer.
PINNED_TWO_WORKER: dict[str, float] = {"tpr": 0.0, "fpr": 0.0, "introspection": 0.0, "n_tpr": 1.0}


def test_submit_tiny_ablation_and_read_back(ray_head, tiny_ablation, tmp_path):
    address, client = ray_head
    entry, sid, proc, logs, out, uri = tiny_ablation  # submitted with `ray job submit`, finished SUCCEEDED
    assert "fault_injection: attempt 1 of 'sft_chosen' fails on purpose" in logs  # the retry really happened
    assert "mlflow:  parent run" in logs

    import mlflow
    import pandas as pd

    ml = mlflow.MlflowClient(uri)
    exp = ml.get_experiment_by_name("dpo-ablation-test")
    runs = ml.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.tags["failed_trials"] == "none"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    done = {r.data.tags["condition"]: r for r in children if r.info.status == "FINISHED"}
    failed = [r for r in children if r.info.status == "FAILED"]
    assert set(done) == {"dpo_no_ref", "sft_chosen"}
    assert [r.data.tags["condition"] for r in failed] == ["sft_chosen"]  # the first, failed attempt
    assert done["sft_chosen"].data.tags["attempt"] == "2" and done["dpo_no_ref"].data.tags["attempt"] == "1"
    for cond, r in done.items():
        assert r.data.tags["seed"] == "0" and r.data.tags["domain"] == "all"
        assert r.data.params["condition.name"] == cond and r.data.params["lora.r"] == "4"
        assert [m.step for m in ml.get_metric_history(r.info.run_id, "loss")] == [1, 2]
        assert "L12_s0.2/tpr" in r.data.metrics
    assert len({r.data.tags["eval_trials_hash"] for r in done.values()}) == 1  # same trials for every condition
    got = {
        cond: {
            k: round(r.data.metrics[k], 4)
            for m in ("tpr", "fpr", "introspection")
            for k in (m, f"{m}_lo", f"{m}_hi", f"n_{m}")
        }
        for cond, r in done.items()
    }
    assert got == PINNED_CHILD_RATES, got  # greedy decoding, seeded training: the same numbers every run

    arts = {a.path for a in ml.list_artifacts(parent.info.run_id)}
    assert {"comparison.csv", "comparison.png", "trials.csv", "failed_trials.json"} <= arts
    # the parent carries provenance like every job's top-level run (bench/readme_tables.py prints its commit; under
    # `ray job submit` the code runs from Ray's copy of the working dir, where git may say "unknown")
    from lab.run.provenance import data_fingerprint

    assert parent.data.tags["provenance.data"] == data_fingerprint() and "provenance.git_commit" in parent.data.tags
    comp = pd.read_csv(ml.download_artifacts(parent.info.run_id, "comparison.csv", str(tmp_path)))
    assert list(comp["condition"]) == ["dpo_no_ref", "sft_chosen"] and set(comp["status"]) == {"finished"}
    assert comp["n_tpr"].tolist() == [1, 1]
    assert comp[["tpr", "fpr", "introspection"]].round(4).to_dict("list") == {
        m: [PINNED_CHILD_RATES[c][m] for c in ("dpo_no_ref", "sft_chosen")] for m in ("tpr", "fpr", "introspection")
    }
    trials = pd.read_csv(out / "report" / "trials.csv")
    assert dict(zip(trials["condition"], trials["attempts"])) == {"dpo_no_ref": 1, "sft_chosen": 2}

    # a rerun of the finished config trains nothing: every trial's adapter + evaluation is stored under its key
    again = f"{sid}-again"
    proc = submit(address, again, entry)
    logs = client.get_job_logs(again)
    assert str(client.get_job_status(again)).endswith("SUCCEEDED"), proc.stdout + proc.stderr + logs
    assert "2 of 2 trials already stored (adapter + evaluation): not trained again" in logs
    assert "fault_injection" not in logs
    rerun = pd.read_csv(out / "report" / "comparison.csv")
    assert rerun[["condition", "tpr", "fpr", "introspection"]].equals(
        comp[["condition", "tpr", "fpr", "introspection"]]
    )
    children = [r for r in ml.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 3  # no new child run: nothing was trained or evaluated again
    tops = [r.info.run_id for r in ml.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    assert tops == [parent.info.run_id]  # nor a second parent run: the rerun resumed the first one
    assert "SystemExit" not in logs and "Traceback" not in logs  # a normal shutdown prints no traceback


def test_a_failing_attempt_leaves_a_failed_child_run(tmp_path) -> None:
    """In process, no model: an attempt that raises ends its child run FAILED with the error, and counts attempts."""
    import mlflow

    from training.ablation.trial import attempts, clear_attempts, run_trial
    from training.ablation.tune_config import TrialSpec

    uri = f"sqlite:///{tmp_path}/m.db"
    cfg = _cfg(
        output_dir=str(tmp_path / "o"), tracking={"uri": uri, "experiment": "t"}, fault_injection={"sft_chosen": 5}
    )
    spec = TrialSpec("sft_chosen", 0)
    clear_attempts(cfg)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="fails on purpose"):
            run_trial(cfg, spec, parent_run_id=None)
    assert attempts(cfg, spec) == 2
    ml = mlflow.MlflowClient(uri)
    runs = ml.search_runs([ml.get_experiment_by_name("t").experiment_id], order_by=["attribute.start_time ASC"])
    assert [r.info.status for r in runs] == ["FAILED", "FAILED"]
    assert [r.data.tags["attempt"] for r in runs] == ["1", "2"]
    assert "fault_injection" in runs[0].data.tags["error"] and runs[0].data.tags["condition"] == "sft_chosen"
    assert runs[0].data.params["condition.objective"] == "sft" and runs[0].data.params["seed"] == "0"


@pytest.mark.slow  # 80-120 s (3 Ray worker processes, each importing torch/TRL): `make test-slow`; the default suite
# keeps the multi-rank ZeRO-3 DPO step and sharded generation (tests/lab/model/test_zero3.py) and the Tune ablation via `ray job
# submit` (the `tiny_ablation` fixture)
def test_trial_as_a_two_worker_torchtrainer(tmp_path):
    """The multi-GPU trial path on CPU: Ray Train TorchTrainer × 2 (gloo, world size 2) trains, then an evaluation
    worker scores the adapter; the child run records the mode. (DeepSpeed itself is not installed here.)"""
    import subprocess

    import mlflow

    from tests.conftest import PY, env

    db = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.run(
        [
            PY,
            "-m",
            "jobs.train_ablations",
            "--config",
            "configs/test-ablations-tiny.yaml",
            "--set",
            "conditions=[{name: sft_chosen}]",
            "--set",
            "fault_injection={}",
            "--set",
            "resources.workers=2",
            "--set",
            "resources.cpus_per_worker=1",
            "--set",
            "resources.eval_cpus=1",
            "--set",
            "ray_cpus=4",
            "--output",
            str(tmp_path / "out"),
            "--tracking-uri",
            db,
            "--quiet",
        ],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "world_size=2" in proc.stdout + proc.stderr
    ml = mlflow.MlflowClient(db)
    runs = ml.search_runs([ml.get_experiment_by_name("dpo-ablation-test").experiment_id])
    child = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(child) == 1 and child[0].info.status == "FINISHED"
    assert child[0].data.tags["mode"] == "torchtrainer x2"
    got = {k: round(child[0].data.metrics[k], 4) for k in ("tpr", "fpr", "introspection", "n_tpr")}
    assert got == PINNED_TWO_WORKER, child[0].data.metrics  # world size 2: its own (deterministic) numbers
