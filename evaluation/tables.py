"""Rows of dicts from CSV (written by :func:`itermask._shared.write_csv`) and as a markdown table: what every
evaluation writes for a person to read."""
from __future__ import annotations

import csv
import math
from pathlib import Path


def read_csv(path: Path) -> list[dict]:
    """The rows of a CSV written by :func:`~itermask._shared.write_csv`, numbers as int or float and empty cells as None."""
    with open(path) as handle:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None if text in ("", "None") else text


def markdown_table(rows: list[dict], decimals: int = 3) -> str:
    """A markdown table of ``rows``: numbers to ``decimals`` places, nan and None as "–".

    >>> print(markdown_table([{"scan": "a", "dice": 0.81234, "ml": None}]))
    | scan | dice | ml |
    |---|---|---|
    | a | 0.812 | – |
    """
    keys = list(rows[0])

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        return f"{value:.{decimals}f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)
