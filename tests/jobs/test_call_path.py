"""The path of one injection from a config to the hook, traced on the real job (docs/architecture.md, "One flow").

`jobs.concept_injection --config configs/test-tiny.yaml` runs in process on the embedded model; the first time an
injection's `Add` edits a residual, the test records the repository files on the stack (what a reader follows from
the job to the hook) and the files on the stack that built that `Add`. No file may be added to the path unnoticed.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from jobs import concept_injection
from lab.steer import interventions

ROOT = Path(__file__).resolve().parents[2]

PATH = [  # the job, its experiment, the one execute, the runner, its decode loop, the hook
    "jobs/concept_injection.py",
    "lab/experiments/concept_injection.py",
    "lab/run/experiment.py",
    "lab/generate/runner.py",
    "lab/generate/decode.py",
    "lab/steer/interventions.py",
]


def _repo_files(stack: traceback.StackSummary) -> list[str]:
    files: list[str] = []
    for frame in stack:
        f = Path(frame.filename)
        if f.is_relative_to(ROOT) and ".venv" not in f.parts and f.relative_to(ROOT).parts[0] != "tests":
            name = f.relative_to(ROOT).as_posix()
            if name not in files:
                files.append(name)
    return files


def test_one_injection_passes_through_six_files(embedded, tmp_path, monkeypatch):
    seen: dict[str, list[str]] = {}
    edit, init = interventions.Add.edit, interventions.Add.__post_init__

    def traced_edit(self, *a):
        seen.setdefault("path", _repo_files(traceback.extract_stack()))
        seen.setdefault("built", self._built)
        return edit(self, *a)

    def traced_init(self):
        init(self)
        object.__setattr__(self, "_built", _repo_files(traceback.extract_stack()))

    monkeypatch.setattr(interventions.Add, "edit", traced_edit)
    monkeypatch.setattr(interventions.Add, "__post_init__", traced_init)
    sets = ["runner.num_actors=0", "sweep.selftest=false", "tracking.enabled=false"]
    argv = ["--config", "configs/test-tiny.yaml", "--output", str(tmp_path / "out"), "--quiet"]
    assert concept_injection.main(argv + [a for s in sets for a in ("--set", s)]) == 0
    assert seen["path"] == PATH and len(PATH) <= 6
    # the Add at the hook was built by the one Injection, called from the decode loop for the rows still decoding
    assert seen["built"] == [*PATH[:-1], "lab/steer/injection.py"]
