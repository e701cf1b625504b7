"""Strict reading of the loaders' text inputs: JSON, JSON Lines, line files, CSV/TSV.

Nothing is silently replaced. A whole-file format (JSON, a class list) that is not UTF-8 or not
valid JSON raises DataLayoutError naming the file, the byte offset or line, and the expected layout.
A record-per-line format (JSON Lines, TSV/CSV rows, annotation lines) yields its bad lines as
problems, which the loaders skip and list in ``.skipped``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import DataLayoutError

_SURROGATE = re.compile("[\ud800-\udfff]")


def _read_bytes(path: Path, what: str, expected: str) -> bytes:
    """The bytes of a file; missing or unreadable -> DataLayoutError naming it and what was expected."""
    if not path.is_file():
        raise DataLayoutError(f"{what}: expected the file {path} ({expected})")
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataLayoutError(f"{what}: cannot read {path} ({e.strerror})") from None


def read_text_file(path: Path, what: str, expected: str) -> str:
    """The UTF-8 text of a file; missing, unreadable or not UTF-8 -> DataLayoutError (file, byte offset)."""
    data = _read_bytes(path, what, expected)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataLayoutError(f"{what}: {path} is not valid UTF-8 at byte {e.start} "
                              f"(0x{data[e.start]:02x}); expected {expected}") from None


def read_json_file(path: Path, what: str, expected: str) -> Any:
    """The parsed JSON of a file; missing, not UTF-8 or not JSON -> DataLayoutError naming file and position."""
    text = read_text_file(path, what, expected)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataLayoutError(f"{what}: {path} is not valid JSON at line {e.lineno} column {e.colno} ({e.msg}); "
                              f"expected {expected}") from None


def require_json_lists(data: Any, path: Path, what: str, keys: tuple[str, ...], expected: str) -> None:
    """DataLayoutError unless data is a JSON object whose ``keys`` all hold lists."""
    if not isinstance(data, dict):
        raise DataLayoutError(f"{what}: {path} holds a JSON {type(data).__name__}, not an object; expected {expected}")
    for key in keys:
        if key not in data:
            raise DataLayoutError(f"{what}: {path} has no {key!r} key; expected {expected}")
        if not isinstance(data[key], list):
            raise DataLayoutError(f"{what}: {path}: {key!r} is a {type(data[key]).__name__}, not a list; "
                                  f"expected {expected}")


def text_problem(text: str) -> str | None:
    """Why a caption cannot be used ('empty caption', 'not valid UTF-8 ...'), or None when it can."""
    bad = _SURROGATE.search(text)
    if bad:
        return f"caption is not valid UTF-8 (undecodable byte at character {bad.start()})"
    if not text.strip():
        return "empty caption"
    return None


def iter_lines(path: Path, what: str, expected: str) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number from 1, text or None, problem or None) of each line of a file, decoded strictly per line:
    a line that is not UTF-8 gives (n, None, 'not valid UTF-8 at byte B of the file')."""
    data = _read_bytes(path, what, expected)
    offset = 0
    for lineno, raw in enumerate(data.splitlines(keepends=True), start=1):
        try:
            yield lineno, raw.decode("utf-8").rstrip("\r\n"), None
        except UnicodeDecodeError as e:
            yield lineno, None, f"not valid UTF-8 at byte {offset + e.start} of the file"
        offset += len(raw)


def iter_csv_rows(path: Path, delimiter: str, what: str, quoting: int = csv.QUOTE_MINIMAL
                  ) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """(line number where the row starts, fields or None, problem or None) of a CSV/TSV file.

    Bytes are decoded with surrogateescape so a row with bad UTF-8 is reported as a problem and the
    other rows are kept; a broken file (unclosed quote, oversized field) is a DataLayoutError.
    """
    if not path.is_file():
        raise DataLayoutError(f"{what}: expected the file {path}")
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting, strict=quoting != csv.QUOTE_NONE)
        start = 1
        try:
            for row in reader:
                bad = next((m for m in map(_SURROGATE.search, row) if m), None)
                yield start, (None if bad else row), ("not valid UTF-8" if bad else None)
                start = reader.line_num + 1
        except csv.Error as e:
            raise DataLayoutError(f"{what}: {path} is not a readable {'TSV' if delimiter == chr(9) else 'CSV'} file "
                                  f"at line {reader.line_num} ({e})") from None
