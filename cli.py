"""What every command-line script shares: one-line errors, the entry wrapper, argparse types.

A script wraps its work in :func:`run_script`. Expected failures (missing data, a bad file, a
request that cannot be met) are :class:`UserError` or a subclass (``run_layout.LayoutError``,
``presets.PlanError``, ...); ``run_script`` prints one line
``{prog}: error: ...`` on stderr and returns exit status 1, never a traceback. A
:class:`UsageError` (a bad command line found after argparse, or by :class:`ArgumentParser`)
returns 2, like argparse's own errors. A script with further statuses passes ``statuses``; one
that can be stopped and rerun passes ``interrupted`` (Ctrl-C: one line, status 130). Anything
else is a bug and keeps its traceback.

This module imports only the standard library and knows no experiment: the argument types of
presets and seeds are the plan's (``presets.preset_name``, ``presets.preset_list``,
``presets.seed_list``), so that every other module can derive its errors from
:class:`UserError`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

__all__ = [
    "EXIT_ERROR",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "UserError",
    "UsageError",
    "ArgumentParser",
    "one_line",
    "run_script",
    "run_main",
    "int_at_least",
    "positive_int",
    "non_negative_int",
    "non_negative_float",
    "print_table",
]

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class UserError(Exception):
    """An expected failure that a script reports as one line: the message says what is wrong
    and, where it can, what to do (which file is missing, which script makes it)."""


class UsageError(UserError):
    """A bad command line: exit status 2 (argparse's own status for bad options)."""


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` that raises :class:`UsageError` where argparse would
    print its usage and exit, so that :func:`run_script` reports a bad command line in one line
    (``--help`` still prints and exits 0)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def one_line(error: BaseException | str) -> str:
    """An error message on one line: runs of whitespace (newlines too) become one space; an
    exception without a message gives its class name."""
    text = " ".join(str(error).split())
    return text or (type(error).__name__ if isinstance(error, BaseException) else "")


def run_script(
    prog: str,
    body: Callable[[], int | None],
    *,
    statuses: Mapping[type[BaseException], int] | None = None,
    interrupted: str | None = None,
) -> int:
    """Run a script's ``body`` and return its exit status: what ``body`` returns (``None``
    is 0), or for an exception that is expected, after printing ``{prog}: error: <one line>``
    on stderr, its status.

    Expected are :class:`UserError` (status 1), :class:`UsageError` (2) and the classes in
    ``statuses`` (``{exception class: status}``), which may add classes (``{OSError: 1}``) or
    give a subclass of ``UserError`` its own status; the most specific class of an exception
    decides. With ``interrupted`` set, Ctrl-C (``KeyboardInterrupt``) prints
    ``{prog}: {interrupted}`` and returns 130; without it, it propagates. Other exceptions
    propagate with their traceback: they are bugs.
    """
    table: dict[type[BaseException], int] = {UserError: EXIT_ERROR, UsageError: EXIT_USAGE, **(statuses or {})}
    try:
        status = body()
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        status = next((table[c] for c in type(e).__mro__ if c in table), None)
        if status is None:
            raise
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return status
    return 0 if status is None else status


def run_main(
    parser: ArgumentParser,
    body: Callable[[argparse.Namespace], int | None],
    argv: Sequence[str] | None = None,
    **run_script_options: Any,
) -> int:
    """A script's ``main``, the one convention of every script: parse ``argv`` (default
    ``sys.argv[1:]``) with ``parser`` and run ``body(args)``, both inside :func:`run_script`
    under the name ``parser.prog``, so that a bad command line is one line and exit status 2
    like every other expected failure. ``run_script_options`` (``statuses``, ``interrupted``)
    go to :func:`run_script`."""
    if not isinstance(parser, ArgumentParser):
        raise TypeError("run_main needs a cli.ArgumentParser (argparse's own would exit by itself)")
    return run_script(parser.prog, lambda: body(parser.parse_args(argv)), **run_script_options)


def int_at_least(text: str, minimum: int) -> int:
    """``int(text)`` if it is at least ``minimum``, else ``argparse.ArgumentTypeError``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    return int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0."""
    return int_at_least(text, 0)


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
