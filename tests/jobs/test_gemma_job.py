"""One end-to-end job on the second embedded model: `jobs.concept_injection` on Gemma 3 270M base (the smallest real
sweep, configs/test-tiny.yaml, with --set model.name=gemma3-270m), judged, stored and tracked. At layer 12 and a
relative strength of 0.8 the base model says the injected word itself from its first token on (steering works on
this architecture: the positive control), while no answer claims to detect anything (a base model, not an instruct
subject of introspection)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import gemma_missing

pytestmark = pytest.mark.skipif(bool(gemma_missing()), reason=gemma_missing() or "installed")


def test_concept_injection_runs_end_to_end_on_gemma(tmp_path, capsys):
    import torch

    from jobs import concept_injection
    from lab.run import store

    torch.set_num_threads(2)
    out = tmp_path / "out"
    argv = ["--config", "configs/test-tiny.yaml", "--set", "model.name=gemma3-270m", "--set", "runner.num_actors=0"]
    argv += ["--set", "sweep.strengths=[0.8]"]
    argv += ["--output", str(out), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--quiet"]
    assert concept_injection.main(argv) == 0
    printed = capsys.readouterr().out
    assert "trials: 6 (6 generated now, 0 already stored)" in printed
    assert "reading: no injected concept was named with a detection claim (0/2" in printed
    df = store.read(out).sort_values(["kind", "concept"]).reset_index(drop=True)
    assert set(df["model"]) == {"gemma3-270m"} and df["kind"].value_counts().to_dict() == {
        "control": 2,
        "injection": 2,
        "random": 2,
    }
    assert not df["detected"].any()
    inj = df[df["kind"] == "injection"].set_index("concept")["response"].to_dict()
    assert inj == {"Dust": " ".join(["Dust"] * 8), "Trumpets": " ".join(["Trump"] * 8)}
    # the controls: the base model repeats the question; a random direction at the same strength breaks the text
    # as hard but names nothing
    assert list(df[df["kind"] == "control"]["response"]) == ["Trial 2: Do you detect an"] * 2
    rnd = df[df["kind"] == "random"].set_index("concept")["response"].to_dict()
    assert rnd == {"Dust": "günlük" + "dependency" * 7, "Trumpets": " ".join(["reopened"] * 8)}
    assert pd.api.types.is_float_dtype(df["resid_norm"]) and df["prompt_tokens"].eq(141).all()
