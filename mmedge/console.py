"""Terminal output shared by all commands: rich tables and progress on stderr, JSON on stdout.

Human-readable output goes to stderr so that ``--json`` output on stdout stays parseable even
while progress is shown.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["console", "human_bytes", "note", "print_json", "progress", "table"]

console = Console(stderr=True, highlight=False)


def note(label: str, message: str, style: str = "yellow") -> None:
    """``label message`` on stderr, the label styled; the message is printed as written, so square
    brackets in it (``[inputs.x.preprocess]``, shapes) are not taken for rich markup and dropped."""
    console.print(f"[{style}]{label}[/{style}] {escape(message)}", soft_wrap=True)


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout (NaN/inf become null so any JSON parser reads it)."""
    print(json.dumps(_finite(data), indent=2, default=str))


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A rich table with right-aligned numeric columns."""
    t = Table(title=title, title_justify="left")
    rows = [list(r) for r in rows]
    for i, col in enumerate(columns):
        numeric = bool(rows) and all(isinstance(r[i], int | float) for r in rows)
        t.add_column(col, justify="right" if numeric else "left")
    for r in rows:
        t.add_row(*(f"{v:.4g}" if isinstance(v, float) else escape(str(v)) for v in r))
    return t


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


@contextmanager
def progress(enabled: bool = True) -> Iterator[Progress]:
    """A progress display on stderr; disabled (but still usable) for --json or non-TTY runs."""
    p = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
    )
    with p:
        yield p
