"""Downloaded tables: a cell someone else wrote never runs as a spreadsheet formula."""

from __future__ import annotations

import csv
import io

import pytest

from core.export import csv_bytes, spreadsheet_safe


@pytest.mark.parametrize("text", ["=HYPERLINK(\"http://x\",\"y\")", "+1+2", "-2+3", "@SUM(A1)", "\t=1", "\r=1"])
def test_a_formula_is_written_as_text(text):
    assert spreadsheet_safe(text) == "'" + text
    rows = list(csv.reader(io.StringIO(csv_bytes([{"q": text}], ["q"]).decode("utf-8-sig"))))
    assert rows == [["q"], ["'" + text]]


@pytest.mark.parametrize("value", ["plain question", "what is 2+2?", "", 42, 1.5, None])
def test_everything_else_is_written_as_it_is(value):
    assert spreadsheet_safe(value) == value
    [header, row] = list(csv.reader(io.StringIO(csv_bytes([{"v": value}], ["v"]).decode("utf-8-sig"))))
    assert row == ["" if value is None else str(value)]


def test_columns_keep_their_order_and_unicode_survives():
    data = csv_bytes([{"b": "ünïcödé ✓", "a": "x\ny"}], ["a", "b"])
    assert data.startswith("\ufeff".encode("utf-8"))
    assert list(csv.reader(io.StringIO(data.decode("utf-8-sig")))) == [["a", "b"], ["x\ny", "ünïcödé ✓"]]
