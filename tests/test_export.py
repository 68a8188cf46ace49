"""Exports: CSV cells cannot run as spreadsheet formulas; the other formats keep text exactly."""
from __future__ import annotations

import csv
import io
import json

import pytest

from dataset.export import csv_chunks, jsonl_lines, neutralise

DANGEROUS = ["=HYPERLINK(\"http://evil.example\",\"x\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A2)",
             "\tleading tab", "\rleading return"]


@pytest.mark.parametrize("text", DANGEROUS)
def test_a_formula_cell_is_neutralised(text):
    assert neutralise(text) == "'" + text


@pytest.mark.parametrize("value", ["Donoghue v Stevenson [1932] AC 562", "", None, 3, "a = b", "Step 1: x"])
def test_ordinary_cells_are_unchanged(value):
    assert neutralise(value) == value


def test_csv_export_writes_no_live_formula_but_jsonl_keeps_the_text():
    record = {"id": "x1", "question": DANGEROUS[0], "answer": DANGEROUS[1], "reasoning": "Step 1: fine",
              "case_citation": DANGEROUS[3], "topic": "Tort Law - Nuisance", "difficulty": "basic",
              "quality_flags": ["us_law"]}
    rows = list(csv.DictReader(io.StringIO("".join(csv_chunks(iter([record]))))))
    assert rows[0]["question"] == "'" + DANGEROUS[0] and rows[0]["answer"] == "'" + DANGEROUS[1]
    assert rows[0]["case_citation"] == "'" + DANGEROUS[3] and rows[0]["reasoning"] == "Step 1: fine"
    for row in rows:
        assert not any(str(cell).startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row.values())
    assert json.loads(next(jsonl_lines(iter([record]))))["question"] == DANGEROUS[0]
