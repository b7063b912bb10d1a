"""Progress of long runs on stderr that reads well on a terminal and in a log file.

On a terminal, :class:`Progress` is a tqdm bar. Where stderr is not a terminal (a Slurm or
nohup log, a pipe), a bar's carriage returns would pile up into one unreadable line, so it
prints plain lines instead: one each time another ``PERCENT_STEP`` % of the work is done or
``LOG_SECONDS`` have passed since the last line (whichever comes first), and one at the end.
:func:`heartbeat` prints lines for a step that reports no progress of its own (GDAL writing a
Cloud-Optimized GeoTIFF): when it starts, every ``LOG_SECONDS`` while it runs, and when it ends.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO

PERCENT_STEP = 5
LOG_SECONDS = 60.0


def duration(seconds: float) -> str:
    """``seconds`` as ``12 s``, ``4 min 05 s`` or ``2 h 03 min``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Counts ``total`` units of work (``initial`` done before), like a tqdm bar: ``update(n)``,
    ``close()``. ``terminal`` None: whether ``stream`` (default stderr) is a terminal."""

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        label: str | None = None,
        unit: str = "tile",
        enabled: bool = True,
        stream: IO[str] | None = None,
        terminal: bool | None = None,
        seconds: float = LOG_SECONDS,
        percent_step: float = PERCENT_STEP,
    ):
        self.stream = sys.stderr if stream is None else stream
        self.total, self.initial, self.done = total, initial, initial
        self.label, self.unit, self.enabled = label, unit, enabled
        self.seconds, self.percent_step = seconds, percent_step
        self.start = self.last_time = time.monotonic()
        self.last_step = self._step(initial)
        self.bar = None
        if enabled and (self.stream.isatty() if terminal is None else terminal):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit=unit, desc=label, file=self.stream)
        elif enabled and initial:
            self._line(f"resumed with {initial} done before")

    def _step(self, done: int) -> int:
        return int(100 * done / max(self.total, 1) // self.percent_step)

    def _line(self, note: str = "") -> None:
        elapsed = time.monotonic() - self.start
        percent = 100 * self.done / max(self.total, 1)
        text = f"{self.done}/{self.total} {self.unit}s ({percent:.0f} %), {duration(elapsed)}"
        new = self.done - self.initial
        if 0 < new and self.done < self.total:
            text += f", about {duration(elapsed / new * (self.total - self.done))} left"
        if note:
            text += f"; {note}"
        print(f"{self.label}: {text}" if self.label else text, file=self.stream, flush=True)
        self.last_time = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and self.done < self.total:
            step = self._step(self.done)
            if step > self.last_step or time.monotonic() - self.last_time >= self.seconds:
                self.last_step = step
                self._line()

    def close(self) -> None:
        """Ends the bar, or prints the last line (once)."""
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.done > self.initial and self.done >= self.total:
            self._line()
        self.enabled = False


@contextlib.contextmanager
def heartbeat(
    start: str,
    status: Callable[[], str],
    *,
    label: str | None = None,
    enabled: bool = True,
    stream: IO[str] | None = None,
    seconds: float = LOG_SECONDS,
) -> Iterator[None]:
    """Lines on ``stream`` (default stderr) for the block: ``start`` when it starts, ``status()``
    with the time so far every ``seconds`` while it runs (from a thread), and ``status()`` with
    its duration when it ends (not when it raises). Each prefixed by ``label``."""
    stream = sys.stderr if stream is None else stream
    if not enabled:
        yield
        return
    began = time.monotonic()
    stop = threading.Event()

    def line(text: str) -> None:
        print(f"{label}: {text}" if label else text, file=stream, flush=True)

    def beat() -> None:
        while not stop.wait(seconds):
            line(f"{status()}, {duration(time.monotonic() - began)} so far")

    line(start)
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    line(f"{status()}, done in {duration(time.monotonic() - began)}")
