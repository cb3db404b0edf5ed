"""The training-stages job: same trials per checkpoint, one MLflow child per stage, a random LoRA created on demand."""

from __future__ import annotations

import subprocess

from lab.config import from_dict, load_yaml
from tests.conftest import ROOT, TINY_SWEEP, env, job_command

CONFIG = "configs/stages-demo.yaml"


def test_paper_preset_plans_without_loading():
    from jobs.stages import StagesConfig, check_stage
    from lab.protocol.prompts import dialogue_format

    cfg = from_dict(StagesConfig, load_yaml(ROOT / "configs/stages-olmo-3.1-32b.yaml"))
    assert [s.model.name for s in cfg.stages] == [f"olmo-3.1-32b-{x}" for x in ("base", "sft", "dpo", "instruct")]
    plans = [check_stage(cfg, s) for s in cfg.stages]
    assert all(p.layers == (25, 32, 38, 44, 51) and p.strengths == (1, 2, 4, 8) and p.mode == "raw" for p in plans)
    # the base model has no chat template: 03's raw "User:/Assistant:" text, tokenized with encode() (03:210-221, 829)
    base = cfg.injection(cfg.stages[0]).sweep
    assert base.dialogue_format == "plain_03" and dialogue_format("plain_03").kind == "text"
    assert base.template == "{encode}Tell me about {word}" and base.baseline == "baseline_words_paper"
    assert len({len(p.trials) for p in plans}) == 1


def test_missing_adapter_fails_in_one_line(tmp_path):
    args = job_command(
        "stages",
        CONFIG,
        tmp_path,
        "--set",
        f"stages=[{{name: a, model: {{name: smollm2-135m, adapter: {tmp_path}/nope}}}}]",
    )
    proc = subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: stage 'a': LoRA adapter not found")


def test_two_stages_with_a_created_random_adapter(tmp_path):
    from mlflow.tracking import MlflowClient

    adapter = tmp_path / "adapters" / "random"
    db = f"sqlite:///{tmp_path}/mlflow.db"
    stages = (
        f"stages=[{{name: plain, model: {{name: smollm2-135m}}}}, {{name: lora, model: {{name: smollm2-135m, "
        f"adapter: {adapter}}}, create_adapter: true}}]"
    )
    args = job_command(
        "stages",
        CONFIG,
        tmp_path,
        "--set",
        stages,
        *TINY_SWEEP,
        "--set",
        "runner.num_actors=0",  # each stage in this process: the Ray fan-out is tested by the sweep tests
        "--quiet",
    )
    proc = subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "created an UNTRAINED random LoRA adapter for stage 'lora'" in proc.stdout
    assert (adapter / "adapter_config.json").is_file()
    c = MlflowClient(db)
    runs = c.search_runs([c.get_experiment_by_name("stages-demo").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.data.tags["stage"] for r in children} == {"plain", "lora"}
    assert len({frozenset(r.data.metrics) for r in children}) == 1
    assert {"tpr", "fpr", "tpr_lo", "fpr_hi", "L12_s0.2/tpr"} <= set(children[0].data.metrics)
    assert {"tpr_vs_fpr.png", "stages.csv"} <= {a.path for a in c.list_artifacts(parents[0].info.run_id)}
    # concept vectors were extracted per checkpoint: the adapted model's differ
    import pandas as pd

    from lab.run import store

    norms = {s: store.read(tmp_path / "out" / s)["resid_norm"].iloc[0] for s in ("plain", "lora")}
    assert norms["plain"] != norms["lora"]
    # a rerun reuses the adapter and the stored trials
    again = subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert (
        again.returncode == 0
        and "created an UNTRAINED" not in again.stdout
        and again.stdout.count("0 generated now") == 2
    )
    assert len(pd.read_csv(tmp_path / "out" / "report" / "stages.csv")) == 2
