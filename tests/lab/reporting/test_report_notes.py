"""Under every rate table: one line on what n is and why an interval is wide where one is, then the reading (for a
grid of cells too: robustness, stages, adapters)."""

from __future__ import annotations

import pandas as pd

from lab.reporting import metrics
from lab.reporting.report import interpret_cells, n_note, print_rates

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
    assert lines[-3].startswith("note: n = the distinct generations") and "180 control trials count as n=2" in lines[-3]
    assert lines[-2].startswith("reading: TPR 0.45 is not above the random-vector control 0.50 (intervals overlap)")
    assert lines[-1] == "reading: no injected concept was named with a detection claim (0/20, 95% CI up to 0.16)"


def test_a_grid_of_cells_gets_a_reading() -> None:
    """Robustness / stages: the cells where TPR is above the random-vector control, named, or none."""
    flat = metrics.summarize(_trials(40, 20, 40, 40, temperature=1.0))
    strong = metrics.summarize(_trials(40, 40, 40, 40, temperature=1.0).assign(detected=lambda d: d.kind != "random"))
    table = pd.DataFrame(
        [{"prompt_variant": "original", "dialogue_format": "standard"} | flat]
        + [{"prompt_variant": "skeptical", "dialogue_format": "plain"} | strong]
    )
    assert interpret_cells(table, ("prompt_variant", "dialogue_format")) == [
        "reading: TPR is above the random-vector control (intervals apart) in 1 of 2 cells: skeptical × plain; "
        "detection looks concept-specific there, not elsewhere",
        "reading: no injected concept was named with a detection claim in any of the cells",
    ]
    assert interpret_cells(table.iloc[:1], ("prompt_variant", "dialogue_format"))[0].startswith(
        "reading: TPR is above the random-vector control in none of the 1 cells (intervals overlap)"
    )
