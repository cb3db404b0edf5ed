"""Refusal directions from the paper's own instructions (issue 26, differences 1 and 2): `refusal.prompts_from` reads
the paper's experiments/refusal_prompts.py (or AdvBench's CSV / an Alpaca JSON) and samples it exactly as
03d_refusal_abliteration.py does; the abliteration preset uses it and grades with the paper's judge as 03d does.

The paper's file cannot be shipped (its repository has no licence), so the sampling is tested on a synthetic file of
the same format: a module docstring, then `HARMFUL_PROMPTS = [...]` (520 strings) and `HARMLESS_PROMPTS = [...]`
(31,811 strings, 8 of them repeats) at safety-research/introspection-mechanisms@5d5d9b4."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from jobs.abliteration import AbliterationConfig
from lab.config import from_dict, load_yaml
from lab.errors import LabError
from lab.experiments import refusal
from tests.conftest import ROOT


def _paper_format(path, harmful, harmless):
    body = '"""Prompts for experiment 03d (abliteration) refusal direction experiments."""\n\nHARMFUL_PROMPTS = [\n'
    body += "".join(f"    {s!r},\n" for s in harmful) + "]\n\n\nHARMLESS_PROMPTS = [\n"
    body += "".join(f"    {s!r},\n" for s in harmless) + "]\n"
    path.write_text(body)
    return path


HARMFUL = [f"Write a tutorial on harmful thing {i}" for i in range(520)]  # 520 like the paper's list
HARMLESS = [f"Give three tips for task {i % 1200}" for i in range(1208)]  # 8 repeats, like the paper's list


def test_sampling_is_the_papers(tmp_path):
    """03d:1024 `random.seed(seed)` (seed 42, :1003/:1989), then compute_per_layer_refusal_directions (:210-211)
    `random.sample(harmful_prompts, min(n_instructions, len(harmful_prompts)))` then the same for harmless, with
    n_instructions 512 (:143 DEFAULT_N_INSTRUCTIONS), from HARMFUL_PROMPTS / HARMLESS_PROMPTS as imported (:59),
    repeats kept."""
    src = _paper_format(tmp_path / "refusal_prompts.py", HARMFUL, HARMLESS)
    random.seed(42)  # the paper's code, verbatim
    harmful_sample = random.sample(HARMFUL, min(512, len(HARMFUL)))
    harmless_sample = random.sample(HARMLESS, min(512, len(HARMLESS)))

    assert refusal.read_prompt_list(src, "harmful") == HARMFUL
    assert refusal.read_prompt_list(src, "harmless") == HARMLESS  # repeats kept: they change the draw
    rc = dataclasses.replace(refusal.RefusalConfig(), prompts_from=str(src), heldout=32)
    harmful, harmless, held = refusal.direction_prompts(rc)
    assert (harmful, harmless) == (harmful_sample, harmless_sample)
    assert len(harmful) == len(harmless) == 512 and harmful[:2] == harmful_sample[:2]
    assert held == [x for x in HARMFUL if x not in set(harmful_sample)] and len(held) == 8
    deduped = refusal.paper_sample(HARMFUL, list(dict.fromkeys(HARMLESS)))[1]
    assert deduped != harmless_sample  # reading the lists as sets would not be the paper's sample


def test_advbench_csv_and_alpaca_json(tmp_path):
    csv = tmp_path / "harmful_behaviors.csv"
    csv.write_text('goal,target\n"Write a script, quickly",Sure\nTeach fraud,Sure\n')
    alpaca = tmp_path / "alpaca_data.json"
    rows = [
        {"instruction": "Give three tips.", "input": "", "output": "…"},
        {"instruction": "Summarise this.", "input": "A text.", "output": "…"},
    ]
    alpaca.write_text(json.dumps(rows))
    assert refusal.read_prompt_list(csv, "harmful") == ["Write a script, quickly", "Teach fraud"]
    assert refusal.read_prompt_list(alpaca, "harmless") == ["Give three tips."]
    rc = dataclasses.replace(refusal.RefusalConfig(), prompts_from=str(csv), harmless_from=str(alpaca), heldout=1)
    with pytest.raises(LabError, match="no harmful instruction left out"):
        refusal.direction_prompts(rc)  # 2 harmful, both sampled: nothing left for the refusal check
    with pytest.raises(LabError, match="set refusal.harmless_from too"):
        refusal.direction_prompts(dataclasses.replace(rc, harmless_from=""))


def test_abliteration_preset_is_the_papers_and_fails_in_one_line_without_the_file():
    """03d:67-68 (10 trial numbers × 3 samples), 03d:1383-1412 (the LLM judge, gpt-4.1-mini: eval_utils.py:422),
    03d:143 / :1989 (512 instructions, seed 42)."""
    cfg = from_dict(AbliterationConfig, load_yaml(ROOT / "configs" / "abliteration-gemma-3-27b-it.yaml"))
    assert (cfg.sweep.trials_per_concept, cfg.sweep.samples) == (10, 3)
    assert cfg.judge.name == "openai"
    opts = cfg.judge.options
    assert (opts["model"], opts["prompt"], opts["paper_experiment"], opts["max_tokens"]) == (
        "gpt-4.1-mini",
        "paper",
        "03d",
        500,
    )
    rc = cfg.refusal
    assert rc.prompts_from.endswith("experiments/refusal_prompts.py") and (rc.n_instructions, rc.sample_seed) == (
        512,
        42,
    )
    with pytest.raises(LabError) as e:
        refusal.direction_prompts(rc)  # no copy of the paper's file on this machine
    assert "\n" not in str(e.value) and "git clone https://github.com/safety-research/introspection-mechanisms" in str(
        e.value
    )
