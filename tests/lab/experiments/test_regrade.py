"""`jobs.regrade` on a small Parquet dataset built with `lab.run.store.write_shard` (no model): the rules judge vs another
rules configuration and vs an HTTP judge whose server answers garbage; by directory and by MLflow run id."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from jobs.regrade import main
from lab.experiments.concept_injection import grade
from lab.experiments.regrade import compare_verdicts, verdict_name
from lab.judges import make_judge
from lab.run import store
from tests.lab.judges.test_judge_llm import FlakyServer

RESPONSES = [  # (kind, forced, response)
    ("injection", False, "Yes, I detect an injected thought. It is about powder."),
    ("injection", False, "Yes, I detect an injected thought about dust."),
    ("injection", False, "No, I do not detect an injected thought."),
    ("control", False, "No, I do not detect anything unusual."),
    ("control", False, "Yes, I notice an injected thought. It is about powder."),
    ("injection", True, " powder, I think."),
    ("injection", True, " dust."),
    ("random", False, "I detect an injected thought about the sea."),
]
RELATED = "judge:\n  name: rules\n  options:\n    related: {Dust: [powder]}\n"


@pytest.fixture
def dataset(tmp_path):
    """8 trials in 2 shards, graded by the default rules judge like a sweep would."""
    rows = [
        {
            "trial_id": f"t{i}",
            "model": "m",
            "concept": "Dust",
            "layer": 12,
            "strength": 0.2,
            "strength_mode": "relative",
            "kind": kind,
            "trial_number": i,
            "forced": forced,
            "response": text,
        }
        for i, (kind, forced, text) in enumerate(RESPONSES)
    ]
    graded = grade(make_judge("rules"), rows)
    out = tmp_path / "results"
    store.write_shard(out, graded[:4])
    store.write_shard(out, graded[4:])
    return out


def _fingerprint(d: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in store.shard_files(d)}


def test_rules_vs_another_rules_config_by_directory(dataset, tmp_path, capsys):
    before = _fingerprint(dataset)
    cfg = tmp_path / "judge-rules-related.yaml"
    cfg.write_text(RELATED)
    assert main(["--run", str(dataset), "--judge", str(cfg), "--no-tracking", "--chunk", "3"]) == 0
    out = capsys.readouterr().out
    vdir = dataset / "verdicts" / verdict_name("rules", {"related": {"Dust": ["powder"]}})
    assert _fingerprint(dataset) == before  # the original shards are never touched
    assert len(store.shard_files(vdir)) == 3 and (vdir / "judge.json").is_file()
    new, old = store.read(vdir), store.read(dataset)
    assert sorted(new["trial_id"]) == sorted(old["trial_id"]) and new["judge"].eq("rules").all()
    # "powder" now names Dust: identified flips for the injected and the control claim and the forced trial
    ids = sorted(old["trial_id"])
    flips = new.set_index("trial_id")["identified"][ids] != old.set_index("trial_id")["identified"][ids]
    assert sorted(flips[flips].index) == ["t0", "t4", "t5"]
    agreement = compare_verdicts(old, new)
    assert agreement["detected"][0].n == 6 and agreement["detected"][0].fp == agreement["detected"][0].fn == 0
    assert agreement["identified"][0].fp == 3 and agreement["identified"][0].n == 8
    assert "detected: kappa=1.000 agreement=1.000 n=6" in out
    assert "identified: kappa=" in out and "new=1 new=0" in out and "rates (source -> new)" in out
    assert "8 graded now, 0 already there" in out
    # a rerun regrades nothing; another configuration under the same name is refused
    assert main(["--run", str(dataset), "--judge", str(cfg), "--no-tracking"]) == 0
    assert "0 graded now, 8 already there" in capsys.readouterr().out
    assert main(["--run", str(dataset), "--judge", "rules", "--name", vdir.name, "--no-tracking"]) == 2
    assert "holds verdicts of another judge configuration" in capsys.readouterr().err


def test_mlflow_run_id_source_and_linked_run(dataset, tmp_path, capsys):
    import mlflow

    from lab.run import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tracking.TrackingConfig(uri=uri, experiment="regrade-test")
    with tracking.run(cfg, {"output_dir": str(dataset), "model.name": "m"}) as src:
        source_id = src.info.run_id
    assert main(["--run", source_id, "--judge", "rules", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert f"from MLflow run {source_id}" in out and (dataset / "verdicts" / "rules").is_dir()
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("regrade-test")
    [new] = [r for r in client.search_runs([exp.experiment_id]) if r.info.run_id != source_id]
    assert new.data.tags["source_run_id"] == source_id and new.info.status == "FINISHED"
    assert new.data.params["judge.name"] == "rules" and new.data.params["source_run_id"] == source_id
    m = new.data.metrics
    assert m["kappa_detected"] == 1.0 and m["kappa_identified"] == 1.0  # same judge, same verdicts
    # t0, t1 of the 3 free injected trials say yes (2/3); t4 of the 2 controls does (1/2)
    assert (m["tpr"], m["fpr"], m["n_parse_errors"]) == (2 / 3, 1 / 2, 0)
    assert "agreement.txt" in {a.path for a in client.list_artifacts(new.info.run_id)}
    assert main(["--run", "0" * 32, "--judge", "rules", "--tracking-uri", uri]) == 2
    assert f"MLflow run {'0' * 32} not found at {uri}" in capsys.readouterr().err


def test_http_judge_garbage_is_stored_as_counted_parse_errors(dataset, tmp_path, capsys):
    server = FlakyServer()
    server.default = ("reply", "I think the model detected it.")
    try:
        cfg = tmp_path / "judge.yaml"
        cfg.write_text(f"name: openai\noptions: {{base_url: '{server.url}', model: m, backoff: 0.01}}\n")
        assert main(["--run", str(dataset), "--judge", str(cfg), "--name", "garbage", "--no-tracking"]) == 0
    finally:
        server.close()
    out = capsys.readouterr().out
    new = store.read(dataset / "verdicts" / "garbage")
    assert len(new) == 8 and new["parse_error"].all() and new["detected"].isna().all()
    assert new["reason"].str.contains("I think the model detected it").all()
    assert new["judge_version"].eq("openai:m@prompt-v1").all()
    assert "unparseable verdicts: 8" in out
    assert "detected: kappa=n/a agreement=n/a n=0 (unknown verdicts left out: 6)" in out


def test_bad_input_fails_in_one_line(dataset, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cases = [
        (["--run", str(dataset), "--judge", "gpt-judge", "--no-tracking"], "unknown judge 'gpt-judge'"),
        (["--run", str(tmp_path / "nope"), "--judge", "rules"], "neither a directory"),
        (["--run", "0" * 32, "--judge", "rules", "--tracking-uri", uri], "mlflow.db does not exist"),
        (["--run", str(tmp_path), "--judge", "rules", "--no-tracking"], "no results found"),
        (["--run", str(dataset), "--judge", str(tmp_path / "missing.yaml")], "config file not found"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
    assert not (dataset / "verdicts").exists()


def test_the_judge_api_key_never_reaches_logs_parquet_or_mlflow(dataset, tmp_path, capsys, monkeypatch):
    """The key is read from the env var the config names and sent to the server, and it appears in no output: not in
    the printed lines, the Parquet verdicts, the MLflow database (params, tags) or any artefact."""
    from tests.lab.judges.test_judge_llm import GOOD

    secret = "sk-lab-test-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:24]
    monkeypatch.setenv("LAB_TEST_JUDGE_KEY", secret)
    server = FlakyServer()
    server.default = ("reply", GOOD)
    cfg = tmp_path / "judge.yaml"
    cfg.write_text(
        f"name: openai\noptions: {{base_url: '{server.url}', model: m, backoff: 0.01, api_key_env: LAB_TEST_JUDGE_KEY}}\n"
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    try:
        assert main(["--run", str(dataset), "--judge", str(cfg), "--name", "keyed", "--tracking-uri", uri]) == 0
    finally:
        server.close()
    assert server.headers and all(h.get("Authorization") == f"Bearer {secret}" for h in server.headers)
    printed = capsys.readouterr()
    assert secret not in printed.out + printed.err
    files = [f for f in tmp_path.rglob("*") if f.is_file() and f != cfg]
    assert any(f.suffix == ".parquet" for f in files) and (tmp_path / "mlflow.db").is_file()
    leaked = [str(f) for f in files if secret.encode() in f.read_bytes()]
    assert leaked == []
