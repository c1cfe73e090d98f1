"""Clocks: the wall clock for real executors, a virtual clock for simulation and tests."""

from __future__ import annotations

import time
from typing import Protocol

from airan.core.errors import FieldError


class Clock(Protocol):
    """A monotonic nanosecond clock. Times are relative to the clock's own origin."""

    def now_ns(self) -> int: ...


class WallClock:
    """``time.perf_counter_ns`` relative to the moment the clock was made."""

    __slots__ = ("_origin",)

    def __init__(self) -> None:
        self._origin = time.perf_counter_ns()

    def now_ns(self) -> int:
        return time.perf_counter_ns() - self._origin

    def sleep_until(self, t_ns: int, spin_ns: int = 1_000_000) -> None:
        """Sleep until ``t_ns``; the last ``spin_ns`` are spent polling for precision.

        A sleeping thread can wake up a millisecond late on a loaded or virtualised
        host, which a radio cannot afford: like a DU's polling cores, the loop spins
        through the last millisecond before the next event."""
        remaining = t_ns - self.now_ns()
        if remaining > spin_ns:
            time.sleep((remaining - spin_ns) / 1e9)
        while self.now_ns() < t_ns:
            pass


class VirtualClock:
    """Simulated time: it moves only when told to, and never backwards."""

    __slots__ = ("t",)

    def __init__(self, start_ns: int = 0) -> None:
        self.t = start_ns

    def now_ns(self) -> int:
        return self.t

    def advance_to(self, t_ns: int) -> None:
        if t_ns < self.t:
            raise FieldError("t_ns", f"virtual time cannot go back from {self.t} to {t_ns}")
        self.t = t_ns
