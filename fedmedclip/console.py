"""What the commands print, made to survive any terminal (docs/design.md §9).

- Errors, warnings and one-line results go out as plain lines (``error``, ``warning``, ``say``): never
  wrapped, never cut, whatever the width; colour only on a terminal. Scripts and tests can grep them.
- Tables (``print_table``) are drawn by rich on a terminal, folding cells to fit its width, and written as
  plain aligned columns otherwise: a pipe or a file gets every header and cell whole.
- Progress bars (``progress_bar``) are rich's, on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

# soft_wrap: whatever still goes through rich as text is printed as given, not folded at 80 columns.
console = Console(stderr=True, soft_wrap=True)


def error(message: str) -> None:
    """``error: message`` as one plain line on stderr."""
    typer.echo(typer.style("error:", fg=typer.colors.RED, bold=True) + f" {message}", err=True)


def warning(message: str) -> None:
    """``WARNING: message`` as one plain line on stderr."""
    typer.echo(typer.style("WARNING:", fg=typer.colors.RED, bold=True) + f" {message}", err=True)


def say(message: str) -> None:
    """A one-line message or result on stderr, as given."""
    typer.echo(message, err=True)


def print_table(table: Table, file: TextIO | None = None) -> None:
    """``table`` on ``file`` (stdout): rich's drawing on a terminal, plain aligned text otherwise."""
    stream = file if file is not None else sys.stdout
    if stream.isatty():
        for column in table.columns:
            column.overflow = "fold"  # a narrow terminal folds cells over lines instead of cutting them to "…"
        Console(file=stream).print(table)
        return
    stream.write(plain_table(table))
    stream.flush()


def plain_table(table: Table) -> str:
    """The table as text: an optional title line, then header and rows in columns two spaces apart."""
    header = [_plain(column.header) for column in table.columns]
    cells = [[_plain(cell) for cell in column.cells] for column in table.columns]
    rows = [header, *([column[index] for column in cells] for index in range(table.row_count))]
    widths = [max(len(row[index]) for row in rows) for index in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    if table.title:
        lines.insert(0, _plain(table.title))
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> str:
    if isinstance(value, Text):
        return value.plain
    if isinstance(value, str):
        return Text.from_markup(value).plain  # rich would read table strings as markup too
    return str(value)


class TableConsole:
    """A stand-in for ``rich.console.Console`` in commands that print lines and tables to stdout."""

    def print(self, renderable: Any) -> None:
        if isinstance(renderable, Table):
            print_table(renderable)
        elif sys.stdout.isatty():
            Console(soft_wrap=True).print(renderable)
        else:
            typer.echo(_plain(renderable))


def stdout_console() -> TableConsole:
    return TableConsole()


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A ``(done, total)`` callback that drives one progress bar on stderr."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update
