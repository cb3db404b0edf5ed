"""The paper's preference-data recipe on a local copy of a preference data set in the Hugging Face layout.

`load_paper_preferences(path, eos_token)` reads a `save_to_disk` directory or a directory of Parquet / JSONL files
(`training.preference.data` reads both) with `prompt` / `chosen` / `rejected` columns and a domain column (`source` by default,
else `domain`), and applies the paper's rules (safety-research/introspection-mechanisms): keep only the domains
asked for (include / exclude by source), drop rows whose prompt is over 500 characters or either answer over 1500
(the count is reported), format each answer as " " + answer + EOS, and split 90/10 at random with a seed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.errors import LabError
from training.preference.data import read_source, split_indices, validate_rows


@dataclass(frozen=True)
class PaperData:
    """Train / eval `datasets.Dataset`s (plain `prompt`, `chosen`, `rejected`, `domain`) and what was dropped."""

    train: Any
    eval: Any
    n_read: int
    dropped_domain: int
    dropped_long: int
    dropped_invalid: int
    domains: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"{self.n_read} rows read; dropped {self.dropped_domain} by domain, {self.dropped_long} over the "
            f"length limits, {self.dropped_invalid} empty or identical; {len(self.train)} train / "
            f"{len(self.eval)} eval; domains {dict(sorted(self.domains.items()))}"
        )


def _text(value: Any) -> str:
    """A string as is; a list of chat messages → the last message's content (the answer / the user turn)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and value and isinstance(value[-1], Mapping):
        return str(value[-1].get("content") or "")
    return "" if value is None else str(value)


def load_paper_preferences(
    source: Any,
    eos_token: str,
    *,
    split: str | None = None,
    domain_column: str = "source",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    max_prompt_chars: int = 500,
    max_answer_chars: int = 1500,
    eval_fraction: float = 0.1,
    seed: int = 0,
) -> PaperData:
    """The paper's filtered, formatted, split preference rows (see the module docstring)."""
    from datasets import Dataset

    if not eos_token:
        raise LabError("load_paper_preferences needs the tokenizer's eos_token")
    name, rows = read_source(source, split)
    doms = [str(r.get(domain_column) or r.get("domain") or "general") for r in rows]
    have = set(doms)
    unknown = [d for d in list(include) + list(exclude) if d not in have]
    if unknown:
        raise LabError(f"domain '{unknown[0]}' is not in {name} (domains: {', '.join(sorted(have))})")
    keep, n_dom, n_long, n_bad = [], 0, 0, 0
    for row, dom in zip(rows, doms):
        if (include and dom not in include) or dom in exclude:
            n_dom += 1
            continue
        prompt, chosen, rejected = (_text(row.get(f)) for f in ("prompt", "chosen", "rejected"))
        if len(prompt) > max_prompt_chars or max(len(chosen), len(rejected)) > max_answer_chars:
            n_long += 1
            continue
        if not (prompt.strip() and chosen.strip() and rejected.strip()) or chosen == rejected:
            n_bad += 1
            continue
        keep.append(
            {
                "prompt": prompt,
                "chosen": " " + chosen + eos_token,
                "rejected": " " + rejected + eos_token,
                "domain": dom,
            }
        )
    if not keep:
        raise LabError(f"{name}: no preference rows left after the domain and length filters")
    keep = validate_rows(keep, source=name)
    tr, ev = split_indices(["all"] * len(keep), eval_fraction, seed)  # one random split, not stratified
    return PaperData(
        Dataset.from_list([keep[i] for i in tr]),
        Dataset.from_list([keep[i] for i in ev]),
        len(rows),
        n_dom,
        n_long,
        n_bad,
        dict(Counter(r["domain"] for r in keep)),
    )
