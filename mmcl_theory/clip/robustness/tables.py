"""Reading CSV tables of results: one-line errors for a bad file; bad rows skipped and listed, or
(without a list to keep them) refused."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Sequence


def read_table(path: str | os.PathLike, what: str, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV file with a header. One-line ValueError naming the file when it is
    missing, not UTF-8, not valid CSV, empty, without data rows, or without a ``required`` column."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} = {str(path)!r}: no such file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid UTF-8 at byte {e.start}; expected a CSV file") from None
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = [(reader.line_num, r) for r in reader]
    except csv.Error as e:
        raise ValueError(f"{path}, line {reader.line_num}: not valid CSV ({e})") from None
    header = reader.fieldnames or []
    if not header:
        raise ValueError(f"{path}: empty file; expected a CSV header with the columns {', '.join(required)}")
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column {missing[0]!r} (the header has {', '.join(header[:8])}"
                         f"{', ...' if len(header) > 8 else ''}; needed: {', '.join(required)})")
    if not rows:
        raise ValueError(f"{path}: no data rows below the header")
    return rows



def skip_row(skipped: list[tuple[str, str]] | None, where: str, reason: str) -> None:
    """Record a skipped row, or raise the one-line ValueError when the caller keeps no list."""
    if skipped is None:
        raise ValueError(f"{where}: {reason}")
    skipped.append((where, reason))


def fraction(text: str | None) -> tuple[float, str | None]:
    """(value, None) for a finite accuracy fraction in [0, 1]; (nan, why not) otherwise."""
    try:
        value = float((text or "").strip())
    except ValueError:
        return math.nan, f"accuracy {text!r} is not a number"
    if not 0.0 <= value <= 1.0:  # also false for nan
        return math.nan, f"accuracy {text!r} is not allowed: a fraction in [0, 1]"
    return value, None


def step_number(text: str | None) -> tuple[int, str | None]:
    try:
        return int((text or "").strip()), None
    except ValueError:
        return -1, f"step {text!r} is not an integer"


def usable_id(where: str, id_acc: float, skipped: list | None) -> bool:
    """An ID accuracy of exactly 0 or 1 has no finite logit/probit: the checkpoint is skipped."""
    if 0.0 < id_acc < 1.0:
        return True
    skip_row(skipped, where, f"ID accuracy {id_acc!r} has no finite transform (allowed: strictly between 0 and 1)")
    return False
