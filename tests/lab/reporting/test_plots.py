"""Rate plots: the vector controls beside TPR and FPR, the n behind every interval, and no text cut off at the edge
(a long ablation title was clipped at the right before titles were wrapped)."""

from __future__ import annotations

import pandas as pd

from lab.reporting import plots

RATES = ("tpr", "fpr", "introspection", "random_rate", "norm_matched_rate")
TITLE = "smollm2-135m: rates per condition (3 seed(s) pooled; layers 8,10,12,14,16, strengths 0.05,0.1,0.2,0.4)"


def _row(**key) -> dict:
    return key | {k: v for m in RATES for k, v in ((m, 0.25), (f"{m}_lo", 0.1), (f"{m}_hi", 0.5), (f"n_{m}", 40))}


def test_bars_show_controls_and_n_and_clip_no_text(tmp_path) -> None:
    for n_conditions, shown in ((2, RATES[:3]), (4, RATES)):
        table = pd.DataFrame([_row(condition=f"condition_{i} (FAILED)") for i in range(n_conditions)])
        fig = plots.bars_figure(table, "condition", shown, TITLE)
        texts = [t.get_text() for t in fig.findobj(plots.plt.Text)]
        assert texts.count("n=40") == n_conditions * len(shown)
        assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [m.upper() for m in shown]
        assert plots.clipped_texts(fig) == []
        assert plots.save(fig, tmp_path / f"bars{n_conditions}.png").stat().st_size > 10_000


def test_heatmaps_show_each_control_with_n(tmp_path) -> None:
    table = pd.DataFrame([_row(layer=layer, strength=s) for layer in (8, 12) for s in (0.1, 0.2)])
    path = plots.rate_heatmaps(table, tmp_path / "h.png", metrics=("tpr", "fpr", "random_rate"), title=TITLE)
    assert path.stat().st_size > 10_000
    fig = plots.plt.figure()
    plots.annotate_rate(fig.add_subplot(), 0, 0, pd.Series(_row()), "random_rate")
    assert [t.get_text() for t in fig.axes[0].texts] == ["0.25\n[0.10,0.50]\nn=40"]
    assert plots.wrap(TITLE, fig).count("\n") == 1  # 6.4 in wide: two lines


def test_heatmap_axes_carry_units() -> None:
    """The strength axis names its unit (relative: ‖s·v‖/‖resid‖, raw: the multiplier), the colour bar what it counts."""
    table = pd.DataFrame([_row(layer=layer, strength=s) for layer in (8, 12) for s in (0.1, 0.2)])
    for mode, label in (
        ("relative", "strength, relative: ‖s·v‖ / ‖resid‖"),
        ("raw", "strength, raw: multiplier s of v"),
        (None, "strength"),
    ):
        fig, _ = plots.heatmaps_figure(table, ("tpr", "fpr"), TITLE, strength_mode=mode)
        heat = [ax for ax in fig.axes if ax.get_title()]
        assert [ax.get_xlabel() for ax in heat] == [label, label]
        assert [ax.get_ylabel() for ax in heat] == ["layer (0-based block)"] * 2
        assert [ax.get_ylabel() for ax in fig.axes if not ax.get_title()] == ["share of trials"] * 2
        fig.tight_layout()
        assert plots.clipped_texts(fig) == []
        plots.plt.close(fig)
