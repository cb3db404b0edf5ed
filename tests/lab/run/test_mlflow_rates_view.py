"""The "rates" view in a real browser shows rounded rates with their interval columns: a run logged through the
lab's report path (`lab.reporting.report.log_run`, TPR 1/3 with its Wilson interval, FPR 0/5), `make ui` on its
store, headless Debian Chromium (driven by playwright) on the link `make ui` prints. No model, no Ray, but the MLflow
server takes 1-2 min to answer on two busy cores: slow."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, env, free_port, http_ok, stop_group, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
VENV = Path(sys.executable).parent.parent


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make test installs it)")
def test_the_rates_view_shows_rounded_rates_with_intervals(tmp_path):
    import mlflow

    from lab.reporting.metrics import wilson
    from lab.reporting.report import log_run, rate_metrics
    from lab.run.tracking import TrackingConfig

    db = tmp_path / "mlflow.db"
    cfg = TrackingConfig(uri=f"sqlite:///{db}", experiment="rounded-rates")
    tpr, tpr_lo, tpr_hi = wilson(1, 3)
    fpr, fpr_lo, fpr_hi = wilson(0, 5)
    row = {"tpr": tpr, "tpr_lo": tpr_lo, "tpr_hi": tpr_hi, "n_tpr": 3}
    row |= {"fpr": fpr, "fpr_lo": fpr_lo, "fpr_hi": fpr_hi, "n_fpr": 5}
    run_id = log_run(cfg, {"sweep.layers": "12"}, rate_metrics(row), run_name="one-third")
    stored = mlflow.MlflowClient(cfg.uri).get_run(run_id).data.metrics
    assert stored["tpr"] == 1 / 3 and stored["fpr_hi"] == fpr_hi  # full precision kept under the rate's name
    exp_id = mlflow.MlflowClient(cfg.uri).get_experiment_by_name("rounded-rates").experiment_id

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    make_ui = ["make", "-s", "ui", f"UI_PORT={port}", f"MLFLOW_DB={db}", f"VENV={VENV}", "-o", f"{VENV}/.installed"]
    log = tmp_path / "ui.log"
    with open(log, "w") as ul:
        ui = subprocess.Popen(make_ui, cwd=ROOT, env=env(), start_new_session=True, stdout=ul, stderr=ul)
        try:
            wait_for(lambda: http_ok(url), 180, "the MLflow UI (make ui)")
            view = f"{url}/#/experiments/{exp_id}/runs?workflowType=machine_learning&viewStateShareKey=rates"
            assert log.read_text().splitlines()[2] == f"  rounded-rates: {view}"
            cells = _cells(view)
        finally:
            stop_group(ui, grace=10)
    assert cells == {
        "display/tpr": "0.333",
        "display/tpr_lo": "0.061",
        "display/tpr_hi": "0.792",
        "display/fpr": "0",
        "display/fpr_lo": "0",
        "display/fpr_hi": "0.434",
        "n_tpr": "3",
        "n_fpr": "5",
    }


def _cells(view: str) -> dict[str, str]:
    """The run's cell under each rate and interval column of the view, as the browser shows it."""
    from playwright.sync_api import sync_playwright

    names = ("tpr", "tpr_lo", "tpr_hi", "fpr", "fpr_lo", "fpr_hi")
    cols = [f"display/{n}" for n in names] + ["n_tpr", "n_fpr"]
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        try:
            page = browser.new_page(viewport={"width": 2400, "height": 1000})
            page.goto(view, wait_until="commit", timeout=90_000)
            page.get_by_text("one-third", exact=True).first.wait_for(state="visible", timeout=90_000)
            assert page.get_by_test_id("saved-views-trigger").inner_text() == "rates"
            out = {}
            for c in cols:
                page.locator(f'[role=columnheader][col-id="metrics.`{c}`"]').wait_for(state="attached", timeout=30_000)
                out[c] = page.locator(f'[role=gridcell][col-id="metrics.`{c}`"]').first.inner_text()
            return out
        finally:
            browser.close()
