"""Every entry point, the same catalogue of bad input: exactly one line on stderr (`error: …`), exit code 2, and
nothing written (no output folder, no tracking DB, no lab cache, no stray file in the working dir).

The entry points are found, not listed: every module of the packages (and bench/ script) with an
`if __name__ == "__main__":` block (`grep -rl '__name__ == "__main__"' lab training analysis cluster jobs bench` finds
exactly `entry_points()`); `test_every_entry_point_is_in_the_catalogue` fails when one is added without its row here.
Calls are in process (a job's `main(argv)`, or the module's `__main__` block through runpy, as `python -m` runs it)
apart from a handful of real subprocesses for the process-level behaviour (exit status, stderr, time).

The catalogue: --run missing / empty / a wrong folder; a binary (non-UTF-8) and a non-YAML config; an unwritable
output (/proc/x); an unknown key (or option); an out-of-range value; a missing concept file; a typo in `first:N`
(`firts:10`); N beyond the 500-word list (`first:600`). Each entry point gets every case that names an input it
takes (a bench script has no config: it gets the unknown option)."""

from __future__ import annotations

import ast
import importlib
import os
import runpy
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from tests.conftest import ROOT

SOURCES = ("lab", "training", "analysis", "cluster", "jobs", "bench")
MISSING = "/nonexistent/run"
CONCEPTS_FILE = "/nonexistent/concepts.txt"


def _has_main_block(path: Path) -> bool:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            names = [n for n in (node.test.left, *node.test.comparators)]
            if any(isinstance(n, ast.Constant) and n.value == "__main__" for n in names):
                return True
    return False


def entry_points() -> list[str]:
    """Dotted module names (bench scripts as `bench/<name>.py`) of every file with a `__main__` block."""
    out = []
    for src in SOURCES:
        for p in sorted((ROOT / src).rglob("*.py")):
            if "__pycache__" in p.parts or not _has_main_block(p):
                continue
            rel = p.relative_to(ROOT)
            out.append(str(rel) if src == "bench" else ".".join(rel.with_suffix("").parts))
    return out


# jobs with --config: (config file, concepts key or None, a layer beyond the model: key=value)
CONFIG_JOBS = {
    "jobs.concept_injection": ("demo.yaml", "sweep.concepts", "sweep.layers=[99]"),
    "jobs.abliteration": ("abliteration-demo.yaml", "sweep.concepts", "refusal.direction_layer=99"),
    "jobs.bidirectional": ("bidirectional-demo.yaml", "sweep.concepts", "sweep.layers=[99]"),
    "jobs.calibrate_dose": ("calibrate-dose-demo.yaml", "sweep.concepts", "sweep.layers=[8, 99]"),
    "jobs.dose_response": ("dose-response-demo.yaml", "dose.concepts", "dose.layers=[18, 99]"),
    "jobs.feature_regression": ("feature-regression-demo.yaml", "concepts", "feature_layers=[16, 99]"),
    "jobs.gates": ("gates-demo.yaml", "dose.concepts", "dose.layers=[18, 99]"),
    "jobs.geometry": ("geometry-demo.yaml", "sweep.concepts", "sweep.layers=[99]"),
    "jobs.localisation": ("localisation-demo.yaml", "sweep.concepts", "sweep.layers=[99]"),
    "jobs.patching": ("patching-demo.yaml", "concepts", "patch_layers=[99]"),
    "jobs.probes": ("probes-demo.yaml", "concepts", "layers=[99]"),
    "jobs.robustness": ("robustness-demo.yaml", "sweep.concepts", "sweep.layers=[99]"),
    "jobs.stages": ("stages-demo.yaml", "sweep.concepts", "sweep.layers=[99]"),
    "jobs.steering_vector": ("steering-vector-demo.yaml", "evaluation.sweep.concepts", "bias.layers=[99]"),
    "jobs.train_ablations": ("ablations-demo.yaml", "evaluation.sweep.concepts", "evaluation.sweep.layers=[99]"),
    "jobs.transcoders": ("transcoders-demo.yaml", None, "layers=[12, 99]"),
    "jobs.serve_judge": ("judge-serve.yaml", None, "port=99999"),
}
# entry points with --run: (what a good run folder holds, for the cases that need one to get past it)
RUN_ENTRIES = {
    "analysis.gates": ("meta.json", "features/", "rows/", "readout.safetensors"),
    "analysis.gates_report": ("meta.json", "features/", "rows/", "readout.safetensors"),
    "analysis.geometry": ("vectors.safetensors", "rates.csv"),
    "analysis.localisation": ("shard-0.parquet",),
    "analysis.patching": ("patching/shard-0.parquet",),
    "analysis.regression": ("regression/spec.json",),
    "analysis.bias_guards": ("split.json", "arms/a/eval/trials/"),
    "analysis.scorecard": ("shard-0.parquet",),
    "jobs.regrade": ("shard-0.parquet",),
    "jobs.sync_mlflow": ("config.yaml",),
}
RUN_EXTRA = {"jobs.regrade": ["--judge", "rules"]}
REQUIRED = {
    "training.bias.examples": ["--write-split", "0"],
    "cluster.multinode_check": ["--out", "{tmp}/mn"],
    "cluster.ray_head": ["ports", "--node-ip", "127.0.0.2", "--dashboard-host", "127.0.0.1"],
}
# other inputs, per entry point: case -> (argv, text the error line must contain); {good} = a good run folder
OTHER: dict[str, dict[str, tuple[list[str], str]]] = {
    "analysis.gates": {
        "out_of_range": (["--run", "{good}", "--k", "0"], "--k must be >= 1"),
        "output_unwritable": (["--run", "{good}", "--out", "/proc/x/gates.csv"], "/proc/x"),
    },
    "analysis.gates_report": {"out_of_range": (["--run", "{good}", "--k", "0"], "--k must be >= 1")},
    "analysis.geometry": {"out_of_range": (["--run", "{good}", "--tau", "7"], "--tau is a detection rate")},
    "analysis.bias_guards": {"out_of_range": (["--run", "{good}", "--evaluation", "x"], "invalid choice: 'x'")},
    "jobs.regrade": {
        "out_of_range": (["--run", "{good}", "--judge", "rules", "--chunk", "0"], "--chunk must be >= 1"),
        "config_binary": (["--run", "{good}", "--judge", "{binary}"], "not a text file"),
        "config_not_yaml": (["--run", "{good}", "--judge", "{not_yaml}"], "is not valid YAML"),
    },
    "jobs.judge_agreement": {
        "run_missing": (["--labels", MISSING], "labels file not found"),
        "config_binary": (["--judge", "{binary}"], "not a text file"),
        "config_not_yaml": (["--judge", "{not_yaml}"], "is not valid YAML"),
    },
    "lab.protocol.prompts": {"out_of_range": (["--trial", "0"], "--trial is a trial number >= 1")},
    "lab.run.mlflow_view": {
        "run_missing": (["--db", MISSING], "no such MLflow database"),
        "out_of_range": (["--port", "0"], "--port must be 1..65535"),
    },
    "cluster.placement": {
        "out_of_range": (["smollm2-135m", "--gpus", "x"], "invalid int value: 'x'"),
        "output_unwritable": (["smollm2-135m", "--zero-out", "/proc/x/zero.json"], "/proc/x"),
    },
    "cluster.multinode_check": {
        "out_of_range": (["--out", "{tmp}/mn", "--items", "0"], "--items must be >= 1"),
        "output_unwritable": (["--out", "/proc/x"], "/proc/x"),
    },
    "training.bias.examples": {"out_of_range": (["--write-split", "x"], "invalid int value: 'x'")},
}
CASES = (
    "run_missing",
    "run_empty",
    "run_wrong",
    "config_binary",
    "config_not_yaml",
    "output_unwritable",
    "unknown_key",
    "out_of_range",
    "concept_file_missing",
    "concept_typo",
    "concept_beyond",
)


def catalogue(module: str) -> dict[str, tuple[list[str], str]]:
    """case -> (argv, expected text) for every case that names an input `module` takes."""
    extra = RUN_EXTRA.get(module, [])
    required = ["--run", "{good}", *extra] if module in RUN_ENTRIES else REQUIRED.get(module, [])
    unknown = ([*required, "--no-such-option"], "unrecognized arguments: --no-such-option")
    out: dict[str, tuple[list[str], str]] = {"unknown_key": unknown}
    if module in RUN_ENTRIES:
        out["run_missing"] = (["--run", MISSING, *extra], MISSING)
        out["run_empty"] = (["--run", "{empty}", *extra], "empty")
        out["run_wrong"] = (["--run", "{wrong}", *extra], "{wrong}")
    if module in CONFIG_JOBS:
        name, concepts, layer = CONFIG_JOBS[module]
        base = ["--config", str(ROOT / "configs" / name)]
        base += ["--set", "geometry={geometry}"] if module == "jobs.bidirectional" else []
        if module == "jobs.serve_judge":
            out["output_unwritable"] = ([*base, "--set", "model.cache_dir=/proc/x"], "/proc/x")
        else:
            out["output_unwritable"] = ([*base, "--output", "/proc/x"], "/proc/x")
            base += ["--output", "{tmp}/out", "--tracking-uri", "sqlite:///{tmp}/mlflow.db"]
        out["config_binary"] = (["--config", "{binary}"], "not a text file")
        out["config_not_yaml"] = (["--config", "{not_yaml}"], "is not valid YAML")
        out["unknown_key"] = ([*base, "--set", "no_such_key=1"], "unknown config key 'no_such_key'")
        out["out_of_range"] = ([*base, "--set", layer], "99")
        if concepts:
            out["concept_file_missing"] = ([*base, "--set", f"{concepts}={CONCEPTS_FILE}"], CONCEPTS_FILE)
            out["concept_typo"] = ([*base, "--set", f"{concepts}=firts:10"], "'firts:10' is not a known form")
            out["concept_beyond"] = ([*base, "--set", f"{concepts}=first:600"], "'first:600': N must be 1..500")
    out |= OTHER.get(module, {})
    return out


ROWS = [(m, c) for m in entry_points() for c in CASES if c in catalogue(m)]


def test_every_entry_point_is_in_the_catalogue():
    found = entry_points()
    assert len(found) >= 30 and all(m in found for m in (*CONFIG_JOBS, *RUN_ENTRIES, *OTHER))
    config_free = {"jobs.judge_agreement", "jobs.regrade", "jobs.sync_mlflow"}
    assert {m for m in found if m.startswith("jobs.")} == set(CONFIG_JOBS) | config_free
    assert {m for m in found if m.startswith("analysis.")} <= set(RUN_ENTRIES)
    for m in found:  # every entry point meets at least the unknown option; each job and rerun many more cases
        n = len(catalogue(m))
        assert n >= (8 if m in CONFIG_JOBS and CONFIG_JOBS[m][1] else 4 if m in RUN_ENTRIES else 1), (m, n)


def call(module: str, argv: list[str]) -> int:
    """The entry point run in this process as `python -m` would run it; its exit code."""
    if module.startswith("jobs."):
        try:
            return importlib.import_module(module).main(argv)
        except SystemExit as e:
            return int(e.code or 0)
    saved, path = sys.argv, list(sys.path)
    sys.argv = [module, *argv]
    if module.startswith("bench/"):  # as `python bench/x.py` runs it: bench/ first on the path
        sys.path.insert(0, str(ROOT / "bench"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "… found in sys.modules … prior to execution"
            if module.startswith("bench/"):
                runpy.run_path(str(ROOT / module), run_name="__main__")
            else:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else 1
    finally:
        sys.argv, sys.path[:] = saved, path
    return 0


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    """The catalogue's files and folders; the process in the repository (the demo configs name repo-relative inputs)
    with every output, tracking DB and cache pointed into `tmp_path`; returns (tmp_path, placeholders)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("INTROSPECTION_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/default-mlflow.db")
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "not-yaml.yaml").write_text("model: [smollm2-135m\nsweep: {layers: \n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "wrong").mkdir()
    (tmp_path / "wrong" / "notes.txt").write_text("not a run\n")
    (tmp_path / "geometry").mkdir()
    for f in ("geometry.json", "vectors.safetensors"):
        (tmp_path / "geometry" / f).write_text("{}")
    places = {
        "tmp": str(tmp_path),
        "binary": str(tmp_path / "binary.yaml"),
        "not_yaml": str(tmp_path / "not-yaml.yaml"),
        "empty": str(tmp_path / "empty"),
        "wrong": str(tmp_path / "wrong"),
        "geometry": str(tmp_path / "geometry"),
    }
    return tmp_path, places


def _good_run(tmp_path: Path, module: str) -> str:
    good = tmp_path / "good"
    for item in RUN_ENTRIES.get(module, ()):
        p = good / item
        if item.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        if item.endswith(".parquet"):
            import pandas as pd

            pd.DataFrame({"trial_id": ["t0"], "concept": ["Dust"], "response": ["No."]}).to_parquet(p, index=False)
        else:
            p.write_text("{}")
    return str(good)


def _tree(root: Path) -> set[str]:
    """Every path under `root`, and the repository's top level and results/ (where a relative default would land)."""
    repo = {f"repo:{p.relative_to(ROOT)}" for d in (ROOT, ROOT / "results") if d.is_dir() for p in d.iterdir()}
    return {str(p.relative_to(root)) for p in root.rglob("*")} | repo


@pytest.mark.parametrize("module,case", ROWS, ids=[f"{m}:{c}" for m, c in ROWS])
def test_bad_input_is_one_line_exit_2_nothing_written(module, case, inputs, capsys):
    tmp_path, places = inputs
    places["good"] = _good_run(tmp_path, module)
    argv, expected = catalogue(module)[case]
    argv = [a.format(**places) for a in argv]
    before = _tree(tmp_path)
    code = call(module, argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, (code, err)
    assert err.startswith("error: ") and "\n" not in err, err
    assert expected.format(**places) in err, err
    assert _tree(tmp_path) == before  # no output folder, tracking DB, cache or stray file


def test_abliteration_layer_beyond_the_model_fails_before_any_work(inputs, capsys):
    """The issue's case: refusal.direction_layer=99 (or sweep.layers=[12, 40]) used to fail after 68–95 s of work,
    leaving refusal_directions.safetensors behind; now the preflight refuses it from the model's config."""
    tmp_path, places = inputs
    from jobs import abliteration

    base = ["--config", str(ROOT / "configs/abliteration-demo.yaml"), "--output", f"{tmp_path}/out"]
    for bad, msg in (
        ("refusal.direction_layer=99", "refusal.direction_layer: layer 99 is out of range for smollm2-135m (0..29)"),
        ("sweep.layers=[12,40]", "sweep.layers: layer 40 is out of range for smollm2-135m (0..29)"),
        ("refusal.weights=[1.0,0.5]", "refusal.weights: 2 per-layer weights for smollm2-135m's 30 layers"),
    ):
        assert abliteration.main([*base, "--set", bad]) == 2
        assert capsys.readouterr().err.strip() == f"error: {msg}"
    assert not (tmp_path / "out").exists()


def test_concept_specs_are_a_known_form(tmp_path):
    from lab.errors import LabError
    from lab.protocol.words import select_concepts

    words = tmp_path / "concepts.txt"
    words.write_text("Bread\n# a comment\nOcean\n\n")
    assert select_concepts(str(words)) == ("Bread", "Ocean")
    assert select_concepts("first:500")[-1] == select_concepts("all")[-1]
    assert select_concepts("slice:2:4") == select_concepts("first:4")[2:]
    for bad, msg in (
        ("firts:10", "'firts:10' is not a known form"),
        ("first:600", "N must be 1..500"),
        ("first:0", "N must be 1..500"),
        ("slice:4:2", "need 0 <= A < B <= 500"),
        ("Bread", "'Bread' is not a known form"),  # one word is a list: [Bread]
        (str(tmp_path / "missing.txt"), f"concepts file {tmp_path / 'missing.txt'} not found"),
    ):
        with pytest.raises(LabError, match=msg.replace("[", r"\[")):
            select_concepts(bad)


def test_writable_probes_instead_of_trusting_os_access(tmp_path):
    from lab.errors import LabError
    from lab.run.preflight import writable

    assert writable(tmp_path / "a" / "b", "out") == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []  # the probe leaves nothing
    (tmp_path / "file").write_text("x")
    with pytest.raises(LabError, match="is not a directory"):
        writable(tmp_path / "file" / "sub", "out")
    with pytest.raises(LabError, match=r"^out /proc/x is not writable \(/proc: "):
        writable("/proc/x", "out")  # os.access(/proc, W_OK) is True for root: the old check let it pass


SUBPROCESS = [
    (["-m", "jobs.concept_injection", "--config", "configs/demo.yaml", "--output", "/proc/x"], "/proc/x"),
    (["-m", "analysis.regression", "--run", MISSING], MISSING),
    (["-m", "jobs.gates", "--config", "{binary}"], "not a text file"),
]


def test_as_processes_one_line_exit_2_quickly(tmp_path):
    """The exact process-level behaviour (stderr, exit status), and an unwritable --output refused in under 20 s,
    before any model work. The three run side by side."""
    binary = tmp_path / "b.yaml"
    binary.write_bytes(bytes(range(256)))
    env = {**os.environ, "INTROSPECTION_LAB_CACHE": str(tmp_path / "cache"), "PYTHONWARNINGS": "ignore"}
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, *[a.format(binary=binary) for a in argv]],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv, _ in SUBPROCESS
    ]
    results = [(p, *p.communicate(timeout=120), time.monotonic() - t0) for p in procs]
    for (argv, expected), (p, _out, err, took) in zip(SUBPROCESS, results):
        assert p.returncode == 2, (argv, err)
        assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, (argv, err)
        assert took < 20, (argv, took)
    assert not (tmp_path / "cache").exists()
