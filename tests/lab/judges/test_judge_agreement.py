"""jobs.judge_agreement on the shipped hand labels, the agreement maths, and one-line errors on bad input."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from jobs.judge_agreement import DEFAULT_LABELS, main, read_labels
from lab.errors import LabError
from lab.judges import Answer, Verdict, register_judge
from lab.judges.agreement import Confusion, accuracy, cohen_kappa, confusion

LAST = re.compile(r"^detection_accuracy=(\d\.\d{4}) identification_accuracy=(\d\.\d{4})$")


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_shipped_labels_are_sound() -> None:
    rows = read_labels(DEFAULT_LABELS)
    assert len(rows) == 220 and sum(r["detected"] for r in rows) == 121 and sum(r["identified"] for r in rows) == 87
    concepts = set((Path(DEFAULT_LABELS).parent / "concepts.txt").read_text().split())
    assert all(r["concept"] in concepts for r in rows)
    assert all(r["detected"] or not r["identified"] for r in rows)
    assert 0.3 < sum(r["detected"] for r in rows) / len(rows) < 0.7
    assert len({(r["concept"], r["response"]) for r in rows}) == len(rows)


def test_rules_judge_agrees_with_hand_labels(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(capsys, [])
    assert rc == 0 and not err
    m = LAST.match(out.strip().splitlines()[-1])
    assert m, out
    det, ide = map(float, m.groups())
    assert (det, ide) == (1.0, 0.9455)  # rules judge 1.0.0 on the shipped labels: 208 of 220 identified right
    assert "identified: accuracy=0.9455 kappa=0.8836" in out
    assert "kappa=" in out and "unparseable verdicts: 0" in out and "judge=1" in out


def test_kappa_hand_computed() -> None:
    # tp=20 fp=5 fn=10 tn=15: p_o = 35/50 = 0.7; p_e = 0.6*0.5 + 0.4*0.5 = 0.5; kappa = 0.2/0.5 = 0.4
    ref = [True] * 30 + [False] * 20
    pred = [True] * 20 + [False] * 10 + [True] * 5 + [False] * 15
    c = confusion(ref, pred)
    assert c == Confusion(tp=20, fp=5, fn=10, tn=15)
    assert accuracy(c) == pytest.approx(0.7)
    assert cohen_kappa(c) == pytest.approx(0.4)
    # tp=45 fp=15 fn=5 tn=35: p_o = 0.8; p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = 0.6
    assert cohen_kappa(Confusion(45, 15, 5, 35)) == pytest.approx(0.6)
    assert cohen_kappa(Confusion(3, 0, 0, 0)) == 1.0  # both constant and agreeing
    assert cohen_kappa(Confusion(0, 2, 0, 0)) == 0.0  # both constant, disagreeing
    assert math.isnan(cohen_kappa(Confusion(0, 0, 0, 0)))
    with pytest.raises(ValueError):
        confusion([True], [True, False])


def _write(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        ([["concept", "response", "detected"], ["Bread", "Yes.", "1"]], "lacks column 'identified'"),
        (
            [
                ["concept", "response", "detected", "identified"],
                ["Bread", "Yes.", "1", "1"],
                ["Bread", "No.", "yes", "0"],
            ],
            "row 3: column 'detected' must be 0 or 1",
        ),
        (
            [["concept", "response", "detected", "identified"], ["Bread", "No.", "0", "2"]],
            "row 2: column 'identified' must be 0 or 1",
        ),
        ([["concept", "response", "detected", "identified"], ["Bread", "No.", "0", "1"]], "row 2: identified=1 needs"),
        ([["concept", "response", "detected", "identified"]], "has no rows"),
    ],
)
def test_bad_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: list[list[str]], needle: str) -> None:
    rc, out, err = _run(capsys, ["--labels", str(_write(tmp_path / "l.csv", rows))])
    assert rc == 2 and not out
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err


def test_missing_file_and_unknown_judge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(capsys, ["--labels", str(tmp_path / "nope.csv")])
    assert rc == 2 and err.startswith("error: labels file not found")
    rc, _, err = _run(capsys, ["--judge", "no-such-judge"])
    assert rc == 2 and "unknown judge 'no-such-judge'" in err
    with pytest.raises(LabError):
        read_labels(tmp_path / "nope.csv")


def test_judge_from_yaml_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = _write(
        tmp_path / "l.csv",
        [
            ["concept", "response", "detected", "identified"],
            ["Oceans", "Yes, I detect an injected thought about the sea.", "1", "1"],
            ["Oceans", "No.", "0", "0"],
        ],
    )
    cfg = tmp_path / "judge.yaml"
    cfg.write_text("name: rules\noptions:\n  related:\n    Oceans: [sea]\n")
    rc, out, _ = _run(capsys, ["--labels", str(labels), "--judge", str(cfg)])
    assert rc == 0 and out.strip().splitlines()[-1] == "detection_accuracy=1.0000 identification_accuracy=1.0000"
    rc, out, _ = _run(capsys, ["--labels", str(labels)])
    assert out.strip().splitlines()[-1] == "detection_accuracy=1.0000 identification_accuracy=0.5000"
    bad = tmp_path / "bad.yaml"
    bad.write_text("options: {}\n")
    rc, _, err = _run(capsys, ["--labels", str(labels), "--judge", str(bad)])
    assert rc == 2 and "needs a 'name' key" in err


class _Unsure:
    name = "test-unsure"
    version = "0.0.1"

    def grade(self, answers: Sequence[Answer]) -> list[Verdict]:
        return [Verdict(None, None, None, "unparseable", self.name, self.version, parse_error=True) for _ in answers]


register_judge("test-unsure")(lambda: _Unsure())


def test_unparseable_verdicts_are_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = _write(
        tmp_path / "l.csv",
        [
            ["concept", "response", "detected", "identified"],
            ["Bread", "Yes, bread.", "1", "1"],
            ["Bread", "No.", "0", "0"],
        ],
    )
    rc, out, _ = _run(capsys, ["--labels", str(labels), "--judge", "test-unsure"])
    assert rc == 0 and "unparseable verdicts: 2" in out
    assert out.strip().splitlines()[-1] == "detection_accuracy=0.5000 identification_accuracy=0.5000"
