"""Score a judge against hand labels: `python -m jobs.judge_agreement [--labels CSV] [--judge NAME|CONFIG.yaml]`.

The labels CSV has columns concept,response,detected,identified (0/1; identified is 0 when detected is 0). Prints
accuracy and Cohen's kappa per field, a confusion table per field, the number of unparseable verdicts, and last the
line `detection_accuracy=<x> identification_accuracy=<y>`. Identification is scored over all rows, counting a
verdict that is not `detected` as not identified.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs.cli import Job, bare_parser
from lab.config import load_yaml
from lab.errors import LabError
from lab.judges import Answer, Judge, Verdict, make_judge
from lab.judges.agreement import accuracy, cohen_kappa, confusion, format_confusion
from lab.reporting.calibration import DEFAULT_LABELS, LABEL_COLUMNS as COLUMNS, read_labels  # noqa: F401


def load_judge(spec: str) -> Judge:
    """A registered judge name, or a YAML file with `name` and optional `options` (also under a `judge:` key)."""
    if spec.endswith((".yaml", ".yml")) or Path(spec).is_file():
        data = load_yaml(spec)
        data = data.get("judge", data) if isinstance(data.get("judge"), dict) else data
        if "name" not in data:
            raise LabError(f"judge config {spec} needs a 'name' key")
        options = data.get("options") or {k: v for k, v in data.items() if k != "name"}
        if not isinstance(options, dict):
            raise LabError(f"judge config {spec}: 'options' must be a mapping")
        return make_judge(str(data["name"]), **options)
    return make_judge(spec)


def score(rows: list[dict[str, Any]], verdicts: list[Verdict]) -> dict[str, Any]:
    """Confusions, accuracies and kappas for detection and (all-row) identification."""
    det_pred = [v.detected is True for v in verdicts]
    id_pred = [v.detected is True and v.identified is True for v in verdicts]
    det = confusion([r["detected"] for r in rows], det_pred)
    ide = confusion([r["identified"] for r in rows], id_pred)
    return {
        "detected": det,
        "identified": ide,
        "parse_errors": sum(v.parse_error for v in verdicts),
        "detection_accuracy": accuracy(det),
        "identification_accuracy": accuracy(ide),
        "detection_kappa": cohen_kappa(det),
        "identification_kappa": cohen_kappa(ide),
    }


def main(argv: list[str] | None = None) -> int:
    """Grade the labelled responses with the judge and print agreement; exit 0, or 2 on bad input."""
    with Job(__name__, argv) as job:
        ap = bare_parser(__doc__.splitlines()[0])
        ap.add_argument("--labels", default=str(DEFAULT_LABELS), help="hand-labelled CSV (default: shipped labels)")
        ap.add_argument("--judge", default="rules", help="judge name or YAML config file with name + options")
        args = ap.parse_args(argv)
        try:
            rows = read_labels(args.labels)
        except UnicodeDecodeError:
            raise LabError(f"labels file {args.labels} is not a UTF-8 CSV") from None
        if args.dry_run:  # the judge is not built (an `hf` judge would load its model)
            print(f"dry run: {len(rows)} labelled answers from {args.labels} would be graded by judge {args.judge}")
            return 0
        judge = load_judge(args.judge)
        verdicts = judge.grade([Answer(concept=r["concept"], text=r["response"]) for r in rows])
        if len(verdicts) != len(rows):
            raise LabError(f"judge {judge.name} returned {len(verdicts)} verdicts for {len(rows)} answers")
        s = score(rows, verdicts)
        print(f"judge: {judge.name} {judge.version}  labels: {args.labels}  rows: {len(rows)}")
        for field in ("detected", "identified"):
            key = "detection" if field == "detected" else "identification"
            print(f"{field}: accuracy={s[key + '_accuracy']:.4f} kappa={s[key + '_kappa']:.4f}")
            print(format_confusion(s[field], field))
        print(f"unparseable verdicts: {s['parse_errors']}")
        print(
            f"detection_accuracy={s['detection_accuracy']:.4f} "
            f"identification_accuracy={s['identification_accuracy']:.4f}"
        )
    return job.code


if __name__ == "__main__":
    raise SystemExit(main())
