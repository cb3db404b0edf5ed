"""Registries raise on a duplicate name (one line, the original entry kept); judge options are checked at the edge."""

from __future__ import annotations

import pytest

from lab.errors import LabError


def _one_line(excinfo: pytest.ExceptionInfo[LabError], message: str) -> None:
    assert str(excinfo.value) == message and "\n" not in str(excinfo.value)


def test_model_registry_refuses_a_duplicate_name() -> None:
    import dataclasses

    from lab.model.loading import REGISTRY, register_model

    before = dict(REGISTRY)
    clone = dataclasses.replace(REGISTRY["smollm2-135m"], n_layers=99)
    with pytest.raises(LabError) as e:
        register_model(clone)
    _one_line(e, "model 'smollm2-135m' is already registered")
    assert REGISTRY == before and REGISTRY["smollm2-135m"].n_layers == 30


def test_judge_registry_refuses_a_duplicate_name() -> None:
    from lab.judges import judge_names, make_judge, register_judge

    names = judge_names()
    with pytest.raises(LabError) as e:
        register_judge("rules")(lambda: None)
    _one_line(e, "judge 'rules' is already registered")
    assert judge_names() == names and make_judge("rules").name == "rules"


def test_condition_registry_refuses_a_duplicate_name() -> None:
    import dataclasses

    from training.lora.conditions import CONDITIONS, register

    before = dict(CONDITIONS)
    with pytest.raises(LabError) as e:
        register(dataclasses.replace(CONDITIONS["dpo"], beta=0.5))
    _one_line(e, "training condition 'dpo' is already registered")
    assert CONDITIONS == before and CONDITIONS["dpo"].beta == 0.1


def test_check_judge_options_names_the_bad_key_and_the_known_ones() -> None:
    from lab.judges import check_judge_options, judge_names, make_judge

    assert {"hf", "openai", "rules"} <= set(judge_names())
    check_judge_options("rules", {"related": {"Dust": ["powder"]}})
    check_judge_options("openai", {"base_url": "http://127.0.0.1:1/v1", "model": "m", "timeout": 5})
    check_judge_options("hf", {"model": "smollm2-135m", "batch_size": 2})
    cases = [
        ("rules", {"relatd": 1}, "unknown option 'judge.options.relatd' for judge 'rules' (known: related)"),
        (
            "hf",
            {"batchsize": 2},
            "unknown option 'judge.options.batchsize' for judge 'hf' (known: batch_size, max_new_tokens, model, "
            "paper_experiment, prompt, threads)",
        ),
        (
            "openai",
            {"base_url": "x", "model": "m", "temprature": 0},
            "unknown option 'judge.options.temprature' for judge 'openai' (known: api_key_env, backoff, backoff_max, "
            "base_url, check, concurrency, max_retries, max_tokens, model, paper_experiment, prompt, timeout)",
        ),
        (
            "openai",
            {"api_key": "sk-x"},
            "judge 'openai': never put the API key in a config; name its environment variable in api_key_env",
        ),
        ("gpt-judge", {}, f"unknown judge 'gpt-judge' (known: {', '.join(judge_names())})"),
    ]
    for name, options, message in cases:
        with pytest.raises(LabError) as e:
            check_judge_options(name, options)
        _one_line(e, message)
    with pytest.raises(LabError) as e:  # make_judge checks the same way: no TypeError traceback
        make_judge("rules", relatd=1)
    _one_line(e, cases[0][2])


def test_judge_file_typo_is_one_line_exit_2(tmp_path, capsys) -> None:
    """A judge YAML with a misspelt option: exit 2 with the one-line error (was a TypeError traceback)."""
    from jobs.judge_agreement import main

    cfg = tmp_path / "judge.yaml"
    cfg.write_text("judge:\n  name: rules\n  options:\n    relatd: 1\n")
    assert main(["--judge", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "error: unknown option 'judge.options.relatd' for judge 'rules' (known: related)"
    ]
