"""Judge-corrected rates (lab.reporting.calibration): θ by hand, clipping, the chance-level judge, and the printed table."""

from __future__ import annotations

import pandas as pd
import pytest

from lab.errors import LabError
from lab.judges import Verdict, make_judge, register_judge
from lab.reporting import calibration, report
from lab.reporting.calibration import Calibration, calibrate, corrected, corrected_interval
from lab.run.tracking import TrackingConfig

CAL = Calibration("detection", tp=88, fn=12, tn=96, fp=4)  # sensitivity 0.88, specificity 0.96 (J = 0.84)


class _YesJudge:
    name, version = "test-calibration-yes", "0"

    def grade(self, answers):
        return [Verdict(True, True, True, "always yes", self.name, self.version) for _ in answers]


register_judge("test-calibration-yes")(lambda: _YesJudge())


def test_theta_matches_hand_computation_and_clips():
    assert CAL.sensitivity == 0.88 and CAL.specificity == 0.96
    assert corrected(0.30, 0.88, 0.96) == pytest.approx((0.30 + 0.96 - 1) / (0.88 + 0.96 - 1))  # 0.30952…
    assert corrected(0.30, 0.88, 0.96) == pytest.approx(0.3095238095, abs=1e-9)
    assert corrected(0.02, 0.88, 0.96) == 0.0  # below the judge's false-positive floor: clipped up
    assert corrected(0.95, 0.88, 0.96) == 1.0  # above what the judge can reach: clipped down
    theta, lo, hi = corrected_interval(30, 100, CAL)
    assert theta == pytest.approx(0.3095238095, abs=1e-9)
    assert (round(lo, 4), round(hi, 4)) == (0.1984, 0.4262)
    assert corrected_interval(0, 40, CAL)[:2] == (0.0, 0.0)
    assert corrected_interval(0, 0, CAL)[1:] == (0.0, 1.0)


def test_chance_level_judge_is_a_clear_error():
    with pytest.raises(LabError, match="no better than chance"):
        corrected(0.5, 0.5, 0.5)
    with pytest.raises(LabError, match="no better than chance at detection"):
        corrected_interval(3, 10, Calibration("detection", tp=5, fn=5, tn=5, fp=5))
    with pytest.raises(LabError, match="no better than chance at detection"):  # says yes to everything: J = 0
        calibrate(make_judge("test-calibration-yes"), calibration.DEFAULT_LABELS)


def test_rules_judge_calibrated_on_the_project_labels():
    cal = calibrate(make_judge("rules"), calibration.DEFAULT_LABELS)
    assert cal["detection"] == Calibration("detection", tp=121, fn=0, tn=99, fp=0)
    assert cal["identification"] == Calibration("identification", tp=76, fn=11, tn=132, fp=1)


def test_printed_table_and_metrics_carry_corrected_rates(tmp_path, capsys):
    rows = []
    for i in range(20):
        rows.append(
            dict(
                kind="injection",
                forced=False,
                layer=1,
                strength=4.0,
                concept="Dust",
                detected=i < 6,
                identified=i < 2,
                coherent=True,
                trial_id=f"i{i}",
            )
        )
        rows.append(
            dict(
                kind="control",
                forced=False,
                layer=1,
                strength=4.0,
                concept="Dust",
                detected=i < 1,
                identified=False,
                coherent=True,
                trial_id=f"c{i}",
            )
        )
    cal = {"detection": CAL, "identification": Calibration("identification", tp=40, fn=10, tn=45, fp=5)}
    rep = report.report_rates(pd.DataFrame(rows), tmp_path, TrackingConfig(enabled=False), {}, "t", calibration=cal)
    out = capsys.readouterr().out
    assert "tpr_corrected" in out and "fpr_corrected" in out
    assert rep.overall["tpr_corrected"] == pytest.approx((0.30 + 0.96 - 1) / 0.84)
    assert rep.overall["fpr_corrected"] == pytest.approx((0.05 + 0.96 - 1) / 0.84)
    assert rep.overall["introspection_corrected"] == pytest.approx((0.10 + 0.90 - 1) / 0.70)
    metrics = report.rate_metrics(rep.overall)
    assert {"tpr_corrected", "tpr_corrected_lo", "tpr_corrected_hi"} <= set(metrics)
    assert "L1_s4/tpr_corrected" in report.table_metrics(rep.table)


def test_judge_config_names_an_existing_labels_file():
    from lab.experiments.concept_injection import JudgeConfig

    assert JudgeConfig().calibration is None  # off by default
    assert calibration.for_judge(JudgeConfig()) is None
    assert calibration.for_judge(JudgeConfig(calibration=str(calibration.DEFAULT_LABELS)))["detection"].tp == 121
    with pytest.raises(LabError, match="labels file not found"):
        JudgeConfig(calibration="no/such/labels.csv")
