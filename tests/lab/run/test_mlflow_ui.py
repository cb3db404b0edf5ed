"""The researcher's view, in a real browser: a tiny ablation trained and evaluated for real (`jobs.train_ablations`
on configs/test-ablations-tiny.yaml through `ray job submit`, the session's `tiny_ablation`: two conditions, a parent
run with a child per attempt, the first attempt of sft_chosen failed on purpose), then `make ui` on its MLflow DB;
headless Chromium (Debian's, driven by playwright) opens the link `make ui` prints — the experiment's
runs table in the lab's saved view, where the child runs are listed and TPR/FPR are columns — and the comparison of
the child runs, finds TPR and FPR there, and saves screenshots to artifacts/ (git-ignored)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, env, free_port, http_ok, stop_group, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"
VENV = Path(sys.executable).parent.parent  # the venv running the tests (not resolved: it is a symlink to python)
CHILDREN = ("dpo_no_ref-s0", "sft_chosen-s0")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make test installs it)")
def test_the_ui_shows_tpr_and_fpr_of_a_trained_ablation(tiny_ablation, tmp_path):
    import mlflow

    uri = tiny_ablation[-1]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # -o: the venv running this test is set up already (make test did it); `make ui` must not reinstall it
    db = uri.removeprefix("sqlite:///")
    make_ui = ["make", "-s", "ui", f"UI_PORT={port}", f"MLFLOW_DB={db}", f"VENV={VENV}", "-o", f"{VENV}/.installed"]
    ui_log = tmp_path / "ui.log"
    ARTIFACTS.mkdir(exist_ok=True)
    for shot in ("mlflow-experiment.png", "mlflow-compare.png"):
        (ARTIFACTS / shot).unlink(missing_ok=True)  # only this run's screenshots count
    with open(ui_log, "w") as ul:
        ui = subprocess.Popen(make_ui, cwd=ROOT, env=env(), start_new_session=True, stdout=ul, stderr=ul)
        try:
            _check(mlflow.MlflowClient(uri), url, ui_log)
        finally:
            stop_group(ui, grace=10)
    for shot in ("mlflow-experiment.png", "mlflow-compare.png"):
        assert (ARTIFACTS / shot).stat().st_size > 10_000


def _check(client, url: str, ui_log: Path) -> None:
    """The finished ablation in MLflow, then in the browser: the link `make ui` printed, then the compare view."""
    from playwright.sync_api import sync_playwright

    exp = client.get_experiment_by_name("dpo-ablation-test")
    runs = client.search_runs([exp.experiment_id])
    children = {
        r.info.run_name: r.info.run_id
        for r in runs
        if r.info.status == "FINISHED" and r.data.tags.get("mlflow.parentRunId")
    }
    failed = [r.info.run_name for r in runs if r.info.status == "FAILED"]
    assert sorted(children) == list(CHILDREN) and failed == ["sft_chosen-s0"] and len(runs) == 4
    wait_for(lambda: http_ok(url), 180, "the MLflow UI (make ui)")
    view = f"{url}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning&viewStateShareKey=rates"
    printed = ui_log.read_text().splitlines()  # banner, header, one line per experiment, then the server's log
    assert printed[2] == f"  dpo-ablation-test: {view}", printed[:4]
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        try:
            page = browser.new_page(viewport={"width": 3000, "height": 1000})  # the view: 14 rate columns
            page.goto(view, wait_until="commit", timeout=90_000)
            # the child runs are listed (not collapsed under the parent) and the rates are columns
            for name in (*CHILDREN, "ablations"):
                page.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=90_000)
            assert page.get_by_test_id("saved-views-trigger").inner_text() == "rates"  # the lab's view is active
            assistant = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
            if assistant.count():  # the assistant panel takes a third of the width: close it as a researcher would
                assistant.click()
            for column in (
                "metrics.`display/tpr`",
                "metrics.`display/fpr`",
                "metrics.`display/introspection`",
                "tags.`condition`",
            ):
                page.locator(f'[role=columnheader][col-id="{column}"]').wait_for(state="visible", timeout=30_000)
            cells = page.locator('[role=gridcell][col-id="metrics.`display/tpr`"]')
            # both finished children's TPR; the parent and the failed attempt have none
            assert sorted(cells.all_inner_texts()) == ["-", "-", "0", "0"]
            conditions = page.locator('[role=gridcell][col-id="tags.`condition`"]').all_inner_texts()
            assert sorted(conditions) == ["-", "dpo_no_ref", "sft_chosen", "sft_chosen"]
            page.get_by_text("4 matching runs").wait_for(state="visible", timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "mlflow-experiment.png"))

            ids = ",".join(f'"{children[c]}"' for c in CHILDREN)
            page.goto(f'{url}/#/compare-runs?runs=[{ids}]&experiments=["{exp.experiment_id}"]', timeout=90_000)
            for name in (*CHILDREN, "loss"):  # the plot's default axis: the first metric both runs logged
                page.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=90_000)
            page.get_by_role("combobox").nth(1).click()  # the plot's metrics: add TPR and FPR as a researcher would
            for metric in ("tpr", "fpr"):
                page.keyboard.type(metric)
                page.get_by_role("option", name=metric, exact=True).wait_for(state="attached", timeout=30_000)
                page.keyboard.press("Enter")
            page.keyboard.press("Escape")
            if assistant.count():
                assistant.click()
            for metric in ("tpr", "fpr"):  # axis titles of the parallel-coordinates plot (SVG text)
                axis = page.locator("svg text").filter(has_text=re.compile(f"^{metric}$"))
                axis.first.wait_for(state="visible", timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "mlflow-compare.png"))
        finally:
            browser.close()
