"""The comparison table as text: Markdown, CSV (raw numbers, one column per mean and per
half-width) or a rich table for a terminal. Text cells read `mean ± half-width`, with `[k/n]`
when only k of the row's n runs logged the metric."""

from __future__ import annotations

import csv
import io
import math

from rizzrun.compare.table import KINDS, Cell, Table

FORMATS = ("rich", "markdown", "csv")
HEAD = ("run", "n")
TAIL = ("status", "step")


def fixed(value: float) -> bool:
    """Whether `value` reads well with 4 decimals (else 4 significant digits)."""
    return value == 0 or 1e-3 <= abs(value) < 1e4


def number(value: float, like: float | None = None) -> str:
    """`value` as text; `like`: the number it stands beside (a mean for its half-width), whose
    style it takes, so 0.7000 ± 0.0000 rather than 0.7000 ± 3.4e-16."""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.4f}" if fixed(value if like is None else like) else f"{value:.4g}"


def cell_text(cell: Cell | None, n: int) -> str:
    if cell is None:
        return "—"
    text = number(cell.mean) if cell.ci is None else f"{number(cell.mean)} ± {number(cell.ci, like=cell.mean)}"
    return text if cell.count == n else f"{text} [{cell.count}/{n}]"


def is_numeric(table: Table, index: int) -> bool:
    """Column `index` of header(table) holds numbers (n, step, the metrics)."""
    first_metric = len(HEAD) + len(table.keys) + len(TAIL)
    return index == 1 or index == first_metric - 1 or index >= first_metric


def header(table: Table) -> list[str]:
    return [*HEAD, *table.keys, *TAIL, *(f"{m} {kind}" for m in table.metrics for kind in KINDS)]


def text_rows(table: Table) -> list[list[str]]:
    return [[row.label, str(row.n), *(row.keys[k] for k in table.keys), row.status, row.step,
             *(cell_text(row.cells[m, kind], row.n) for m in table.metrics for kind in KINDS)]
            for row in table.rows]


def markdown(table: Table) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    columns = header(table)
    rule = "| " + " | ".join("---:" if is_numeric(table, i) else "---" for i in range(len(columns))) + " |"
    return "\n".join([line(columns), rule, *map(line, text_rows(table))]) + "\n"


def csv_text(table: Table) -> str:
    """Raw numbers: per metric and kind the mean and its CI half-width (empty for one run), and
    per metric how many of the row's runs logged it."""
    columns = [*HEAD, *table.keys, *TAIL]
    for metric in table.metrics:
        for kind in KINDS:
            columns += [f"{metric} {kind}", f"{metric} {kind} ci95"]
        columns.append(f"{metric} runs")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in table.rows:
        values = [row.label, row.n, *(row.keys[k] for k in table.keys), row.status, row.step]
        for metric in table.metrics:
            for kind in KINDS:
                cell = row.cells[metric, kind]
                values += [repr(cell.mean), "" if cell.ci is None else repr(cell.ci)] if cell else ["", ""]
            cell = row.cells[metric, KINDS[0]]
            values.append(cell.count if cell else 0)
        writer.writerow(values)
    return out.getvalue()


def rich_table(table: Table):
    from rich.table import Table as RichTable

    shown = RichTable(show_lines=False, header_style="bold")
    for index, name in enumerate(header(table)):
        shown.add_column(name, justify="right" if is_numeric(table, index) else "left", overflow="fold")
    for cells in text_rows(table):
        shown.add_row(*cells)
    return shown


def render(table: Table, fmt: str, file) -> None:
    """Write `table` to `file` as `fmt` (one of FORMATS)."""
    if fmt == "markdown":
        file.write(markdown(table))
    elif fmt == "csv":
        file.write(csv_text(table))
    else:
        from rich.console import Console

        Console(file=file).print(rich_table(table))
