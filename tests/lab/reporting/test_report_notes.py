"""Under every rate table: one line on what n is and why an interval is wide where one is, then the reading (for a
grid of cells too: robustness, stages, adapters)."""

from __future__ import annotations

import pandas as pd

from lab.reporting import metrics
from lab.reporting.report import interpret, interpret_cells, n_note, print_rates

RATES = ("tpr", "fpr", "random_rate")


def _trials(n_inj: int, yes_inj: int, n_ctl: int, ctl_prompts: int, temperature: float = 0.0) -> pd.DataFrame:
    """Injections (distinct prompts, `yes_inj` claim detection), controls over `ctl_prompts` distinct prompts, and as
    many random-vector trials as injections (half claim detection)."""
    base = {"model": "m", "forced": False, "identified": False, "max_new_tokens": 8, "temperature": temperature}
    base |= {"seed": 0, "sample": 0, "coherent": True, "layer": 12, "strength": 0.2}
    rows = [
        base
        | {"kind": "injection", "prompt": f"p{i}", "concept": f"c{i}", "strength_raw": 1.0, "detected": i < yes_inj}
        for i in range(n_inj)
    ]
    rows += [
        base
        | {"kind": "control", "prompt": f"p{i % ctl_prompts}", "concept": "", "strength_raw": 0.0, "detected": False}
        for i in range(n_ctl)
    ]
    rows += [
        base | {"kind": "random", "prompt": f"p{i}", "concept": f"c{i}", "strength_raw": 1.0, "detected": i % 2 == 0}
        for i in range(n_inj)
    ]
    return pd.DataFrame(rows)


def test_greedy_duplicates_explain_a_wide_fpr() -> None:
    """Today's greedy demo: 180 controls are 2 distinct generations, so FPR 0.00 [0.00,0.66] with n=2."""
    o = metrics.summarize(_trials(20, 9, 180, 2))
    assert (o["n_fpr"], o["trials_fpr"]) == (2, 180)
    assert n_note([o], RATES) == (
        "note: n = the distinct generations behind a rate (n (inj/ctl): TPR/FPR); intervals are Wilson 95 %; under "
        "greedy decoding identical prompts give one generation, so 180 control trials count as n=2 and FPR's "
        "interval is wide (0.00 [0.00,0.66]): sample (temperature > 0) for an n that grows with the trials"
    )


def test_few_sampled_trials_explain_a_wide_interval_and_many_need_no_excuse() -> None:
    few = metrics.summarize(_trials(4, 2, 4, 4, temperature=1.0))
    assert n_note([few], RATES) == (
        "note: n = the distinct generations behind a rate (n (inj/ctl): TPR/FPR); intervals are Wilson 95 %; with "
        "n=4 an interval is still 0.70 wide (TPR 0.50 [0.15,0.85]): more trials narrow it"
    )
    many = metrics.summarize(_trials(200, 100, 200, 200, temperature=1.0))
    assert n_note([many], RATES) == (
        "note: n = the distinct generations behind a rate (n (inj/ctl): TPR/FPR); intervals are Wilson 95 %"
    )


def test_the_demo_table_prints_the_note_then_the_reading(capsys) -> None:
    df = _trials(20, 9, 180, 2)
    print_rates(metrics.rates(df), metrics.summarize(df))
    lines = capsys.readouterr().out.splitlines()
    assert lines[-4].startswith("note: n = the distinct generations") and "180 control trials count as n=2" in lines[-4]
    assert lines[-3] == (
        "reading: TPR 0.45 is not above FPR 0.00 (intervals overlap): it claims detection about as often with no "
        "injection, so no evidence that it detects the injection"
    )
    assert lines[-2].startswith("reading: TPR 0.45 is not above the random-vector control 0.50 (intervals overlap)")
    assert lines[-1] == "reading: no injected concept was named with a detection claim (0/20, 95% CI up to 0.16)"


def test_a_grid_of_cells_gets_a_reading() -> None:
    """Robustness / stages: the cells where TPR is above the random-vector control, named, or none."""
    flat = metrics.summarize(_trials(40, 20, 40, 40, temperature=1.0))
    strong = metrics.summarize(
        _trials(40, 40, 40, 40, temperature=1.0).assign(detected=lambda d: d.kind == "injection")
    )
    # yes to everything but the random vectors: above the random control, not above FPR (a yes-bias, not detection)
    yes = metrics.summarize(_trials(40, 40, 40, 40, temperature=1.0).assign(detected=lambda d: d.kind != "random"))
    table = pd.DataFrame(
        [{"prompt_variant": "original", "dialogue_format": "standard"} | flat]
        + [{"prompt_variant": "skeptical", "dialogue_format": "plain"} | strong]
        + [{"prompt_variant": "casual", "dialogue_format": "plain"} | yes]
    )
    assert interpret_cells(table, ("prompt_variant", "dialogue_format")) == [
        "reading: TPR is above both FPR and the random-vector control (intervals apart) in 1 of 3 cells: skeptical × "
        "plain; detection looks concept-specific there, not elsewhere",
        "reading: no injected concept was named with a detection claim in any of the cells",
    ]
    assert interpret_cells(table.iloc[:1], ("prompt_variant", "dialogue_format"))[0].startswith(
        "reading: TPR is above both FPR and the random-vector control in none of the 1 cells (intervals overlap)"
    )


def test_tpr_no_higher_than_fpr_is_read_as_no_detection_even_above_the_random_control() -> None:
    """Gemma 3 270M's sampled demo: TPR 0.07 ≈ FPR 0.06 while random vectors gave 0.00 — the random vectors lower
    the yes-rate; that is not concept-specific detection."""
    o = metrics.summarize(_trials(180, 13, 180, 180, temperature=1.0))
    o |= {
        "fpr": 0.06,
        "fpr_lo": 0.03,
        "fpr_hi": 0.11,
        "random_rate": 0.0,
        "random_rate_lo": 0.0,
        "random_rate_hi": 0.02,
    }
    o |= {"tpr": 0.07, "tpr_lo": 0.04, "tpr_hi": 0.11}
    assert interpret(o)[:2] == [
        "reading: TPR 0.07 is not above FPR 0.06 (intervals overlap): it claims detection about as often with no "
        "injection, so no evidence that it detects the injection",
        "reading: TPR is above the random-vector control (intervals apart) but not above FPR: the random vectors "
        "lower the yes-rate below the no-injection one; no evidence of concept-specific detection",
    ]
