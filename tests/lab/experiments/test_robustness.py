"""The robustness grid job: one MLflow parent with a child per (variant, format), identical metric keys; a chat
format on a model without a chat template is reported as skipped, not a crash."""

from __future__ import annotations

import subprocess

import pytest

from lab.config import from_dict, load_yaml
from tests.conftest import ROOT, TINY_SWEEP, env, job_command

CONFIG = "configs/robustness-demo.yaml"
TINY = [
    *TINY_SWEEP,
    "--set",
    "runner.cpus_per_actor=1",
    "--set",
    "runner.batch_size=8",
    "--quiet",
]


def _run(tmp_path, *extra):
    db = f"sqlite:///{tmp_path}/mlflow.db"
    args = job_command("robustness", CONFIG, tmp_path, *TINY, *extra)
    proc = subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, db


def _runs(db, experiment):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(db)
    runs = c.search_runs([c.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return c, parents, children


def test_demo_config_runs_the_papers_variants_and_formats():
    from jobs.robustness import RobustnessConfig

    cfg = from_dict(RobustnessConfig, load_yaml(ROOT / CONFIG))
    variants = ["original", "alternative", "skeptical", "structured", "anti_reward", "unprompted", "hints"]
    formats = ["standard", "plain", "simulated_user", "character", "no_chat", "story"]
    assert cfg.cells() == [(v, "standard") for v in variants] + [("original", f) for f in formats[1:]]
    assert cfg.sweep.temperature == 1.0 and cfg.judge.name == "rules"
    cross = from_dict(RobustnessConfig, load_yaml(ROOT / CONFIG) | {"layout": "cross"})
    assert len(cross.cells()) == 7 * 6
    assert cfg.injection("skeptical", "story").sweep.prompt_variant == "skeptical"


def test_grid_parent_and_children(tmp_path):
    cross = ("--set", "variants=[original,skeptical]", "--set", "formats=[standard,plain]", "--set", "layout=cross")
    proc, db = _run(tmp_path, *cross)
    assert "cells: 4 run, 0 skipped" in proc.stdout
    c, parents, children = _runs(db, "robustness-demo")
    assert len(parents) == 1 and len(children) == 4
    pid = parents[0].info.run_id
    assert all(r.data.tags["mlflow.parentRunId"] == pid for r in children)
    keys = {frozenset(r.data.metrics) for r in children}
    assert len(keys) == 1 and {
        "tpr",
        "fpr",
        "introspection",
        "random_rate",
        "tpr_lo",
        "fpr_hi",
        "n_fpr",
        "trials_fpr",
    } <= set(next(iter(keys)))
    cells = {(r.data.tags["prompt_variant"], r.data.tags["dialogue_format"]) for r in children}
    assert cells == {("original", "standard"), ("original", "plain"), ("skeptical", "standard"), ("skeptical", "plain")}
    assert {a.path for a in c.list_artifacts(pid)} >= {"grid.png", "cells.csv"}
    # every cell has its own trials in the one dataset; a rerun generates nothing
    from lab.run import store

    df = store.read(tmp_path / "out")
    assert df.groupby(["prompt_variant", "dialogue_format"]).size().to_dict() == {k: 3 for k in cells}
    again, _ = _run(tmp_path, *cross)
    assert "(0 generated now, 12 already stored)" in again.stdout


@pytest.fixture(scope="module")
def no_template_model(tmp_path_factory):
    """A tiny random Llama in a local HF directory whose tokenizer has no chat template."""
    from lab.protocol.prompts import variants
    from lab.protocol.words import word_list
    from tests.training_fixtures import tiny_model, tiny_tokenizer

    texts = [v.preamble + " " + v.ack + " " + v.trial for v in variants().values()] + list(word_list("baseline").words)
    tok = tiny_tokenizer(texts + ["Dust Trial 1 2 User Assistant Ok Response Tell me about"])
    tok.chat_template = None
    d = tmp_path_factory.mktemp("no-template")
    tiny_model(len(tok), layers=2).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_chat_format_without_template_is_skipped(tmp_path, no_template_model):
    proc, db = _run(
        tmp_path,
        "--set",
        f"model.name={no_template_model}",
        "--set",
        "variants=[original]",
        "--set",
        "formats=[standard,lab_simulated_user_chat,plain]",
        "--set",
        "sweep.layers=[1]",
        "--set",
        "sweep.strength_mode=raw",
        "--set",
        "sweep.strengths=[1.0]",
    )
    assert "skipped: original × standard: dialogue format 'standard' needs a chat template" in proc.stdout
    assert "skipped: original × lab_simulated_user_chat" in proc.stdout
    assert "cells: 1 run, 2 skipped" in proc.stdout
    import pandas as pd

    cells = pd.read_csv(tmp_path / "out" / "report" / "cells.csv")
    assert dict(zip(cells.dialogue_format, cells.status)) == {
        "standard": "skipped",
        "lab_simulated_user_chat": "skipped",
        "plain": "ok",
    }
    _, parents, children = _runs(db, "robustness-demo")
    assert len(children) == 1 and children[0].data.tags["dialogue_format"] == "plain"
    assert "standard" in parents[0].data.tags["skipped_cells"]


def test_only_inapplicable_cells_fail_in_one_line(tmp_path, no_template_model):
    args = job_command(
        "robustness",
        CONFIG,
        tmp_path,
        "--set",
        f"model.name={no_template_model}",
        "--set",
        "formats=[standard]",
        "--set",
        "variants=[original]",
        "--set",
        "sweep.layers=[1]",
        "--quiet",
    )
    proc = subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: no (variant, format)")
