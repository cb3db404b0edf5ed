"""lab.run.tracking's client-side runs (`RunRef`): what a Tune trial or a Ray Train rank-0 worker logs, read back."""

from __future__ import annotations

import math


def test_run_ref_logs_params_steps_tags_artifacts_and_ends(tmp_path) -> None:
    import mlflow

    from lab.run import tracking

    cfg = tracking.TrackingConfig(uri=f"sqlite:///{tmp_path}/m.db", experiment="refs")
    with tracking.run(cfg, {"a": 1}, run_name="parent") as parent:
        parent_id = parent.info.run_id
    ref = tracking.start_run(cfg, "child", {"condition": "dpo"}, {"lora.r": 4, "targets": ("q", "v")}, parent_id)
    for step, loss in ((1, 0.75), (2, 0.5)):
        tracking.log_to_run(ref, {"loss": loss, "skipped": math.nan, "text": "x"}, step=step)
    tracking.log_to_run(ref, {"tpr": 0.25, "L12_s0.2/tpr": 0.5})
    tracking.tag_run(ref, {"attempt": 2})
    (tmp_path / "training.json").write_text("{}")
    tracking.log_artifacts_to_run(ref, tmp_path / "training.json", tmp_path / "missing.csv")
    before = tracking.job_seconds()
    tracking.end_run(ref, "FINISHED")
    after = tracking.job_seconds()

    client = mlflow.MlflowClient(ref.uri)
    got = client.get_run(ref.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "child"
    assert got.data.tags["mlflow.parentRunId"] == parent_id and got.data.tags["attempt"] == "2"
    assert got.data.params == {"lora.r": "4", "targets": "q,v"}
    metrics = dict(got.data.metrics)
    # the job's (this process's) time so far, logged as the run ends, rounded to 0.1 s
    assert round(before, 1) - 0.05 <= metrics.pop("wall_s") <= round(after, 1) + 0.05
    # full precision under the rate's name, rounded for the UI under display/ (overall rates only)
    assert metrics == {"loss": 0.5, "tpr": 0.25, "L12_s0.2/tpr": 0.5, "display/tpr": 0.25}
    assert [(m.step, m.value) for m in client.get_metric_history(ref.run_id, "loss")] == [(1, 0.75), (2, 0.5)]
    assert [a.path for a in client.list_artifacts(ref.run_id)] == ["training.json"]
    assert got.info.experiment_id == client.get_run(parent_id).info.experiment_id


def test_rates_are_rounded_for_display_and_kept_whole(tmp_path) -> None:
    """1/3 is stored as is under `tpr` and as 0.333 under `display/tpr` (the rates view's column), intervals too."""
    import mlflow

    from lab.reporting.metrics import wilson
    from lab.run import tracking

    cfg = tracking.TrackingConfig(uri=f"sqlite:///{tmp_path}/m.db", experiment="rounded")
    _, lo, hi = wilson(1, 3)
    with tracking.run(cfg, run_name="r") as active:
        tracking.log_metrics({"tpr": 1 / 3, "tpr_lo": lo, "tpr_hi": hi, "n_tpr": 3, "L12_s0.2/tpr": 1 / 3})
    m = mlflow.MlflowClient(cfg.uri).get_run(active.info.run_id).data.metrics
    assert m["tpr"] == 1 / 3 and m["display/tpr"] == 0.333
    assert (m["display/tpr_lo"], m["display/tpr_hi"]) == (0.061, 0.792) and m["tpr_lo"] == lo
    assert "display/n_tpr" not in m and "display/L12_s0.2/tpr" not in m


def test_experiments_open_in_the_model_training_view(tmp_path) -> None:
    """Created (or found without the tag) experiments carry mlflow.experimentKind = custom_model_development."""
    import mlflow

    from lab.run import tracking

    uri = f"sqlite:///{tmp_path}/m.db"
    client = mlflow.MlflowClient(uri)
    old = client.create_experiment("made-elsewhere")
    cfg = tracking.TrackingConfig(uri=uri, experiment="lab-made")
    new = tracking.ensure_experiment(cfg, uri)
    again = tracking.ensure_experiment(tracking.TrackingConfig(uri=uri, experiment="made-elsewhere"), uri)
    assert again == old
    for eid in (new, old):
        assert client.get_experiment(eid).tags["mlflow.experimentKind"] == "custom_model_development"


def test_experiments_carry_the_rates_view(tmp_path, capsys) -> None:
    """Every experiment the lab makes or finds gets the saved view `rates` (runs sorted by TPR, so child runs are
    listed beside their parent; rate columns); `make ui` prints its link. tests/lab/run/test_mlflow_ui.py opens it."""
    import json

    import mlflow

    from lab.run import mlflow_view, tracking

    uri = f"sqlite:///{tmp_path}/m.db"
    client = mlflow.MlflowClient(uri)
    old = client.create_experiment("made-elsewhere")
    new = tracking.ensure_experiment(tracking.TrackingConfig(uri=uri, experiment="lab-made"), uri)
    tracking.ensure_experiment(tracking.TrackingConfig(uri=uri, experiment="made-elsewhere"), uri)
    rates = ("tpr", "fpr", "introspection", "random_rate", "norm_matched_rate")
    for eid in (new, old):
        envelope = json.loads(client.get_experiment(eid).tags["mlflow.sharedViewState.rates"])
        assert envelope["name"] == "rates" and isinstance(envelope["createdAt"], int)
        assert json.loads(envelope["state"]) == {
            "searchFilter": "",
            "orderByKey": "metrics.`display/tpr`",
            "orderByAsc": False,
            "selectedColumns": [
                *(f"metrics.`display/{r}{p}`" for r in rates for p in ("", "_lo", "_hi")),
                "metrics.`n_tpr`",
                "metrics.`n_fpr`",
                "metrics.`wall_s`",
                "tags.`condition`",
                "tags.`seed`",
            ],
        }
    # an experiment holding an older view (rates without intervals) gets the current one
    stale = json.dumps({"name": "rates", "createdAt": 1, "state": json.dumps({"selectedColumns": ["metrics.`tpr`"]})})
    client.set_experiment_tag(old, "mlflow.sharedViewState.rates", stale)
    tracking.ensure_experiment(tracking.TrackingConfig(uri=uri, experiment="made-elsewhere"), uri)
    state = json.loads(json.loads(client.get_experiment(old).tags["mlflow.sharedViewState.rates"])["state"])
    assert state == mlflow_view.view_state()
    client.delete_experiment(client.create_experiment("not-the-lab's"))
    assert mlflow_view.main(["--db", str(tmp_path / "m.db"), "--port", "5123"]) == 0
    view = "runs?workflowType=machine_learning&viewStateShareKey=rates"
    assert capsys.readouterr().out.splitlines() == [
        f"  made-elsewhere: http://127.0.0.1:5123/#/experiments/{old}/{view}",
        f"  lab-made: http://127.0.0.1:5123/#/experiments/{new}/{view}",
    ]
    assert mlflow_view.experiments_with_view(tmp_path / "missing.db") == []


def test_a_rerun_that_adds_nothing_reuses_its_parent_run(tmp_path) -> None:
    """`reuse=True` (every trial already stored) resumes the finished parent of the same name and params: one parent
    run in the experiment, its children kept, its wall time the first run's; other params or names open a new one."""
    import mlflow

    from lab.run import tracking

    cfg = tracking.TrackingConfig(uri=f"sqlite:///{tmp_path}/m.db", experiment="ablate")
    params = {"seeds": (0, 1), "lr": 1e-4}
    with tracking.run(cfg, params, run_name="ablations") as first:
        child = tracking.start_run(cfg, "dpo-s0", parent_run_id=first.info.run_id)
        tracking.end_run(child)
    with tracking.run(cfg, params, run_name="ablations", reuse=True) as again:
        tracking.log_metrics({"tpr": 0.5})
    client = mlflow.MlflowClient(cfg.uri)
    assert again.info.run_id == first.info.run_id
    exp = client.get_experiment_by_name("ablate").experiment_id
    runs = client.search_runs([exp])
    assert sorted(r.info.run_name for r in runs) == ["ablations", "dpo-s0"]
    parent = client.get_run(first.info.run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["tpr"] == 0.5
    assert len(client.get_metric_history(first.info.run_id, "wall_s")) == 1
    with tracking.run(cfg, params | {"lr": 2e-4}, run_name="ablations", reuse=True) as other:
        pass
    with tracking.run(cfg, params, run_name="ablations") as fresh:  # reuse not asked: a new run, as before
        pass
    assert len({first.info.run_id, other.info.run_id, fresh.info.run_id}) == 3
