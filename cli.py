"""What every command-line script shares: one-line errors and argparse types.

A script wraps its work in :func:`run_script`; any :class:`UserError` (missing data, a bad
file, a request that cannot be met) or ``run_layout.LayoutError`` raised inside becomes one
line ``{prog}: error: ...`` on stderr and exit status 1, never a traceback. Bad options are
argparse's business (exit status 2) through the types below.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import presets
from run_layout import LayoutError

__all__ = [
    "UserError",
    "run_script",
    "preset_name",
    "positive_int",
    "non_negative_int",
    "non_negative_float",
    "print_table",
]


class UserError(Exception):
    """An expected failure that a script reports as one line: the message says what is wrong
    and, where it can, what to do (which file is missing, which script makes it)."""


def run_script(prog: str, body: Callable[[], None]) -> int:
    """Run a script's ``body``; a ``UserError`` or ``LayoutError`` becomes one line on stderr
    and exit status 1. Returns the exit status (0 on success)."""
    try:
        body()
    except (UserError, LayoutError) as e:
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0


def preset_name(text: str) -> str:
    """argparse type: one of the paper's presets (``presets.presets``)."""
    if text not in presets.presets:
        raise argparse.ArgumentTypeError(f"unknown preset {text!r}; known: {', '.join(presets.presets)}")
    return text


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0."""
    return _int_at_least(text, 0)


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def print_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A plain aligned text table on stdout (the summaries the scripts print at the end)."""
    rows = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for row in [list(header), *rows]:
        print("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))))
