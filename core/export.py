"""Tables people download: CSV that a spreadsheet opens as text, never as a formula.

A kept question or a provider's error text is someone else's words. A cell that starts with `=`,
`+`, `-`, `@` (or a tab or carriage return before one) is run as a formula by Excel, LibreOffice
and Google Sheets (OWASP "CSV injection"), so such a cell is written with a leading apostrophe,
which every one of them shows as plain text.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """`value`, or for text that a spreadsheet would run as a formula, the same text as plain text."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_bytes(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> bytes:
    """UTF-8 CSV (with a byte-order mark, so Excel reads accents right) of `rows`, in `columns` order."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else spreadsheet_safe(row.get(c)) for c in columns])
    return ("\ufeff" + out.getvalue()).encode("utf-8")
