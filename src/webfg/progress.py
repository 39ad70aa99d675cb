"""Progress of long loops, for a person at a terminal and for a log file alike.

On a terminal one line is redrawn in place (count, percent, rate, ETA). Anywhere
else (a Snakemake log, a Slurm output file) a redrawn line would be thousands of
carriage returns, so a plain line is written every ``interval`` seconds and once
at the end. Everything goes to stderr by default: the workflow's scripts point
stderr at the rule's log file.

    for batch in progress(loader, total=len(loader), desc="epoch 3/30", unit="batch"):
        ...
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


def format_seconds(seconds: float) -> str:
    """``75`` → ``1:15``, ``3725`` → ``1:02:05``."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Counts finished items and reports rate and ETA.

    ``tty=None`` asks the stream (``isatty``). ``interval`` is the least time
    between two reports: default 0.2 s on a terminal, 30 s in a log file.
    ``clock`` is injectable so the reports can be tested without sleeping.
    """

    def __init__(
        self,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        stream: TextIO | None = None,
        interval: float | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.interval = interval if interval is not None else (0.2 if tty else 30.0)
        self.clock = clock
        self.count = 0
        self.start = self.last_report = clock()
        self.closed = False

    def rate(self) -> float:
        elapsed = self.clock() - self.start
        return self.count / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        """The report: ``desc: 450/1000 45% 12.3 it/s elapsed 0:36 ETA 0:44``."""
        elapsed = self.clock() - self.start
        rate = self.rate()
        parts = [f"{self.desc}:" if self.desc else ""]
        if self.total:
            parts.append(f"{self.count}/{self.total} {100 * self.count / self.total:.0f}%")
        else:
            parts.append(f"{self.count}")
        parts.append(f"{rate:.3g} {self.unit}/s" if rate else f"- {self.unit}/s")
        parts.append(f"elapsed {format_seconds(elapsed)}")
        if self.total and rate and self.count < self.total:
            parts.append(f"ETA {format_seconds((self.total - self.count) / rate)}")
        return " ".join(p for p in parts if p)

    def _write(self, final: bool = False) -> None:
        if self.tty:
            end = "\n" if final else ""
            self.stream.write("\r\x1b[K" + self.line() + end)  # \x1b[K clears the old tail
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
        self.last_report = self.clock()

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.clock() - self.last_report >= self.interval:
            self._write()

    def close(self) -> None:
        """Write the final report once (total time and mean rate)."""
        if not self.closed:
            self.closed = True
            self._write(final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable: Iterable[T], total: int | None = None, **kwargs) -> Iterator[T]:
    """Yield from ``iterable``, reporting after each item; ``total`` defaults to ``len()``."""
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with Progress(total=total, **kwargs) as bar:
        for item in iterable:
            yield item
            bar.update()
