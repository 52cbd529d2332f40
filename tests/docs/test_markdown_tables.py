"""Every Markdown table of the docs and the README renders: its separator row has one cell per header cell, and every
row as many cells (a table with a wrong count is shown as plain text)."""

from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def cells(line: str) -> int:
    return len(line.strip().strip("|").replace("\\|", "").split("|"))


def tables(text: str):
    lines, in_code = text.splitlines(), False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            in_code = not in_code
        if in_code or i + 1 >= len(lines) or not line.startswith("|"):
            continue
        separator = lines[i + 1]
        if separator.startswith("|") and set(separator.replace("|", "").strip()) <= set("-: ") and "-" in separator:
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(row)
            yield i + 1, line, separator, rows


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_tables_have_consistent_columns(doc):
    for number, header, separator, rows in tables(doc.read_text(encoding="utf-8")):
        assert cells(separator) == cells(header), f"{doc.name}:{number}: separator has a different column count"
        for offset, row in enumerate(rows):
            assert cells(row) == cells(header), f"{doc.name}:{number + 2 + offset}: row has a different column count"


def test_a_bad_table_is_caught():
    bad = "| a | b |\n| --- | --- | --- |\n| 1 | 2 |\n"
    ((number, header, separator, rows),) = tables(bad)
    assert cells(separator) != cells(header)
