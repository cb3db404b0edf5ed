"""The one table printer: columns as (header, cell) pairs, widths fitted to the widest cell.

A cell is a format template over the row's fields (`"{layer}"`, `"{corr:+.2f}"`) or a function of the row
(`interval("tpr")` prints `0.45 [0.38,0.52] n=200`). Numbers are right-aligned when the template says so (`>`);
everything else is left-aligned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

Cell = str | Callable[[Mapping[str, Any]], str]
Column = tuple[str, Cell]


def interval(k: str, with_n: bool = True, digits: int = 2, signed: bool = False) -> Callable[[Mapping[str, Any]], str]:
    """`0.25 [0.10,0.48] n=12`: rate or effect `k` with `k_lo`/`k_hi` and `n_k` (the distinct samples behind it);
    `n/a` where the value is missing."""
    f = f"{'+' if signed else ''}.{digits}f"

    def cell(r: Mapping[str, Any]) -> str:
        v = r.get(k, math.nan)
        if v is None or v != v:
            return "n/a"
        n = r.get(f"n_{k}", math.nan)
        shown = f"{v:{f}} [{r[k + '_lo']:{f}},{r[k + '_hi']:{f}}]"
        return shown + (f" n={int(n)}" if with_n and n is not None and n == n else "")

    return cell


def rows_of(table: pd.DataFrame | Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return table.to_dict("records") if isinstance(table, pd.DataFrame) else list(table)


def format_table(table: pd.DataFrame | Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> list[str]:
    """The header line and one line per row."""
    cells = [[c(r) if callable(c) else c.format(**r) for _, c in columns] for r in rows_of(table)]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, (h, _) in enumerate(columns)]
    right = [isinstance(c, str) and ":>" in c for _, c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()

    return [line([h for h, _ in columns])] + [line(row) for row in cells]


def print_table(table: pd.DataFrame | Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> None:
    for text in format_table(table, columns):
        print(text)
