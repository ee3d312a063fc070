"""Memo helpers of a worker: a value computed once per unit (or its error, raised again), and a getter that says
whose cost a shared value is."""
from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")


def once(compute: Callable[[], T]) -> Callable[[], T]:
    """``compute()`` on the first call; later calls return its value, or raise its error again (a reference that
    cannot be trained fails every cell that needs it, without being retrained for each)."""
    outcome: list = []

    def get() -> T:
        if not outcome:
            try:
                outcome.append((True, compute()))
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as error:
                outcome.append((False, error))
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    return get


def first_use(get: Callable[[], tuple]) -> Callable[[], tuple]:
    """A (model, info) getter whose info says ``cache: reused`` (nothing paid) after its first use: the cost of a
    reference shared by several deletion sets is recorded with the first of them only."""
    uses = []

    def first() -> tuple:
        model, info = get()
        uses.append(True)
        return (model, info) if len(uses) == 1 else (model, {**info, "cache": "reused", "seconds_this_run": 0.0})

    return first
