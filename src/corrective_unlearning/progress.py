"""Progress bars that suit where the output goes: tqdm on a terminal (or in a notebook), and plain periodic lines
everywhere else (a log file, a pipe, a batch system's output), where tqdm's carriage returns pile up into one
unreadable line.

    bar = progress_bar(recipe.steps, "train", enabled=runtime.progress)
    bar.update(10); bar.set_postfix(loss="0.312")    # on a log: "train: 10/100 (10%) loss=0.312"
    bar.close()
    for item in progress_bar(len(items), "auto: candidates", progress, iterable=items): ...

Off a terminal a line is printed each time another tenth of the total is done, and otherwise at most every
``interval`` seconds (default 30) while the bar moves, and once on close if the last line did not show the end.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, TextIO

DEFAULT_INTERVAL = 30.0


def progress_bar(total: int | None, desc: str = "", enabled: bool = True, *, iterable: Iterable | None = None,
                 unit: str = "it", leave: bool = True, file: TextIO | None = None,
                 interval: float = DEFAULT_INTERVAL):
    """A tqdm bar when ``file`` (default: stderr) is a terminal or a notebook shows the output, else a
    :class:`PlainProgress` printing plain lines; nothing at all when not ``enabled``. Both take ``update``,
    ``set_postfix``, ``set_postfix_str``, ``set_description``, ``close``, ``with`` and iteration over
    ``iterable``."""
    stream = file if file is not None else sys.stderr
    if enabled and (_is_terminal(stream) or _notebook()):
        from tqdm.auto import (
            tqdm,  # lazy: tqdm's notebook detection is slow to import; only a terminal or notebook bar needs it
        )

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=file)
    return PlainProgress(total, desc, enabled=enabled, iterable=iterable, file=stream, interval=interval)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def _notebook() -> bool:
    """Output shown by a Jupyter kernel, where tqdm.auto draws a widget (its stderr is no terminal)."""
    if "ipykernel" not in sys.modules:
        return False
    from tqdm.auto import (
        tqdm,  # lazy: tqdm's notebook detection is slow to import; only a terminal or notebook bar needs it
    )

    return any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)


class PlainProgress:
    """A progress bar as plain lines ``desc: n/total (p%) postfix``: at each tenth of ``total``, at most every
    ``interval`` seconds otherwise, and on close when the last line is behind. Silent when not ``enabled``."""

    def __init__(self, total: int | None, desc: str = "", enabled: bool = True, iterable: Iterable | None = None,
                 file: TextIO | None = None, interval: float = DEFAULT_INTERVAL) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.enabled, self.iterable = total, desc, enabled, iterable
        self.file, self.interval = file, interval
        self.n, self.postfix = 0, ""
        self._printed_n, self._tenth = 0, 0
        self._started = self._last = time.monotonic()
        self._closed = False

    # -- tqdm's interface, as far as this package uses it ------------------------------------------------------------
    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        tenth = self._tenths()
        if tenth > self._tenth or now - self._last >= self.interval:
            self._tenth = max(tenth, self._tenth)
            self._print(now)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **values: Any) -> None:
        values = {**(ordered_dict or {}), **values}
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = str(text)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.n != self._printed_n:
            self._print(time.monotonic())

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("this progress bar was made without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    # -- the line ----------------------------------------------------------------------------------------------------
    def _tenths(self) -> int:
        return int(10 * self.n / self.total) if self.total else 0

    def line(self) -> str:
        """``desc: 40/100 (40%) 12s loss=0.3``."""
        count = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n}"
        elapsed = f"{time.monotonic() - self._started:.0f}s"
        parts = [f"{self.desc}:" if self.desc else "", count, elapsed, self.postfix]
        return " ".join(part for part in parts if part)

    def _print(self, now: float) -> None:
        self._last, self._printed_n = now, self.n
        if not self.enabled or self.file is None:
            return
        try:
            print(self.line(), file=self.file, flush=True)
        except (OSError, ValueError):  # a closed or broken stream: progress is never worth a failure
            pass
