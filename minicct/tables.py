"""Plain-text tables, formatted in one place (report tables, lessons).

    format_table([("site", "<16"), ("acc %", "7.1f"), " | ", ("SNR", "7.2f")], rows)
A column is (title, format spec of its cells); the title is aligned like the cells (left for '<', right
otherwise) in the spec's width. A plain string column (e.g. " | ") is a separator written on every line.
Rows are sequences with one value per (title, spec) column; a string value (e.g. "" for an empty cell) is
aligned like the title. Returns the header, a rule of dashes the width
of the header, and one line per row.
"""
from __future__ import annotations

import re


def _title(title, spec):
    m = re.match(r"([<>^]?)(\d*)", spec)
    align, width = m.group(1) or ">", m.group(2)
    return format(title, f"{align}{width}")


def format_table(columns, rows) -> str:
    head = "".join(c if isinstance(c, str) else _title(*c) for c in columns)
    lines = [head, "-" * len(head)]
    for row in rows:
        cells, values = [], iter(row)
        for c in columns:
            if isinstance(c, str):
                cells.append(c)
                continue
            v = next(values)
            cells.append(_title(v, c[1]) if isinstance(v, str) else format(v, c[1]))
        lines.append("".join(cells))
    return "\n".join(lines)
