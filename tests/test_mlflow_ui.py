"""The researcher's view, in a real browser: `make ui` serves a finished comparison (two conditions, a parent run
with a child per condition, logged by lab/comparison.py as a stage or adapter comparison is); headless Chromium
(Debian's, driven by playwright) opens the experiment and the comparison of its child runs, finds TPR and FPR on the
page and saves screenshots to artifacts/ (git-ignored)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, env, free_port, stop_group, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"


def _rows(condition: str, detected: list[bool]) -> list[dict]:
    """Stored trial rows of one condition: one injection and one control per trial number."""
    return [
        {"trial_id": f"{condition}-{kind}-{i}", "concept": "Dust", "layer": 12, "strength": 0.2, "kind": kind}
        | {"forced": False, "trial_number": i + 1, "sample": 0, "temperature": 1.0, "prompt": "p"}
        | {"detected": d if kind == "injection" else False, "identified": False, "coherent": True}
        | {"parse_error": False, "response": f"{condition} {kind} {i}"}
        for i, d in enumerate(detected)
        for kind in ("injection", "control")
    ]


def _up(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make test installs it)")
def test_the_ui_shows_tpr_and_fpr_of_each_condition(tmp_path):
    import pandas as pd
    from playwright.sync_api import sync_playwright

    from lab.comparison import compare
    from lab.tracking import TrackingConfig

    db = tmp_path / "mlflow.db"
    cfg = TrackingConfig(uri=f"sqlite:///{db}", experiment="ablation-ui")
    groups = {
        "dpo_no_ref": pd.DataFrame(_rows("dpo_no_ref", [True, False, False, False])),
        "sft_chosen": pd.DataFrame(_rows("sft_chosen", [True, True, False, False])),
    }
    tags = {c: {"condition": c, "model": "smollm2-135m", "seed": "0"} for c in groups}
    params = {"model.name": "smollm2-135m"}
    rep = compare(groups, tmp_path, cfg, params, "ui", child_tags=tags, run_name="ablation smollm2-135m", quiet=True)
    assert rep.run_id

    import mlflow

    client = mlflow.MlflowClient(cfg.uri)
    exp = client.get_experiment_by_name("ablation-ui")
    children = [r.info.run_id for r in client.search_runs([exp.experiment_id]) if r.info.run_id != rep.run_id]
    assert len(children) == 2

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ui = subprocess.Popen(
        ["make", "-s", "ui", f"UI_PORT={port}", f"MLFLOW_DB={db}"],
        cwd=ROOT,
        env=env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        wait_for(lambda: _up(url), 120, "the MLflow UI (make ui)")
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
            )
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                # the model-training view (runs table), not the GenAI overview a fresh browser would open
                runs_page = f"{url}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
                page.goto(runs_page, wait_until="commit", timeout=90_000)
                page.get_by_text("ablation smollm2-135m", exact=True).first.wait_for(state="visible", timeout=90_000)
                page.screenshot(path=str(ARTIFACTS / "mlflow-experiment.png"))

                runs = ",".join(f'"{r}"' for r in children)
                compare_url = f'{url}/#/compare-runs?runs=[{runs}]&experiments=["{exp.experiment_id}"]'
                page.goto(compare_url, wait_until="commit", timeout=90_000)
                for name in ("dpo_no_ref", "sft_chosen", "tpr"):  # TPR is the parallel-coordinates default
                    page.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=90_000)
                page.get_by_role("combobox").nth(1).click()  # the plot's metrics: add FPR as a researcher would
                page.keyboard.type("fpr")
                page.get_by_role("option", name="fpr", exact=True).wait_for(state="attached", timeout=30_000)
                page.keyboard.press("Enter")
                page.keyboard.press("Escape")
                page.get_by_text("fpr", exact=True).first.wait_for(state="visible", timeout=30_000)
                page.screenshot(path=str(ARTIFACTS / "mlflow-compare.png"))
            finally:
                browser.close()
    finally:
        stop_group(ui, grace=10)
    for shot in ("mlflow-experiment.png", "mlflow-compare.png"):
        assert (ARTIFACTS / shot).stat().st_size > 10_000
