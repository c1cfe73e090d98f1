"""Executors issue slices on a device and report their completions to the arbiter.

Every executor has the same contract (:class:`Executor`): ``submit`` a slice on a
stream with a tag, ``poll`` completions as ``(tag, stream, start_ns, end_ns)`` tuples on
the executor's clock (a slice that failed comes back with a :class:`Failed` tag),
``wait`` until a completion or a given time. The device is a
single server that does not preempt a running slice; between queued slices it serves
the radio stream first (as CUDA stream priorities reorder blocks not yet started).

* :class:`SimExecutor`: virtual time; durations drawn from a seeded, heavy-tailed
  profile. 10^6 slots in seconds, and the same seed gives the same run.
* :class:`NumpyExecutor`: the CPU, wall clock; ``Slice.work`` runs synchronously.
* ``CupyExecutor`` (:mod:`airan.sched.cupy_executor`): CUDA streams, events, graphs.
"""

from __future__ import annotations

import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

import numpy as np

from airan.core.clock import Clock, VirtualClock, WallClock
from airan.core.errors import FieldError
from airan.core.slices import Slice, SliceKey

#: "No time in particular": a wake-up time later than any run.
NEVER = 1 << 62

Completion = tuple[object, int, int, int]


class Failed:
    """The tag of a completion whose slice failed on the device: the slice's own tag
    and the error (an exception from ``Slice.work`` on the CPU, a CUDA error on a GPU).
    An executor never lets a slice's failure escape ``wait`` or ``poll``: it reports it
    as a completion, and the arbiter decides (``airan.core.faults``)."""

    __slots__ = ("error", "tag")

    def __init__(self, tag: object, error: BaseException) -> None:
        self.tag = tag
        self.error = error

    def __repr__(self) -> str:
        return f"Failed({self.tag!r}, {type(self.error).__name__}: {self.error})"


class InjectedWork:
    """A slice's work with a fault planted in it (``airan.sched.faults``).

    Run as work (CPU, GPU): the original work first, then ``error`` is raised if set,
    else the slice is stretched to ``target_ns`` (``spin(ns)`` on the device: a host
    wait on the CPU, a kernel that waits on the GPU). A simulated device takes
    ``target_ns`` as the slice's duration and reports ``error`` as a failed slice."""

    __slots__ = ("error", "inner", "spin", "target_ns")

    def __init__(
        self,
        inner: Callable[[], object] | None,
        *,
        target_ns: int = 0,
        error: BaseException | None = None,
        spin: Callable[[int], None] | None = None,
    ) -> None:
        self.inner = inner
        self.target_ns = target_ns
        self.error = error
        self.spin = spin

    def __call__(self) -> None:
        t0 = time.perf_counter_ns()
        if self.inner is not None:
            self.inner()
        if self.error is not None:
            raise self.error
        left = self.target_ns - (time.perf_counter_ns() - t0)
        if left > 0:
            (self.spin or host_spin)(left)


def host_spin(ns: int) -> None:
    """Keep the CPU busy for ``ns`` (a sleep for all but the last millisecond)."""
    end = time.perf_counter_ns() + ns
    if ns > 2_000_000:
        time.sleep((ns - 1_000_000) / 1e9)
    while time.perf_counter_ns() < end:
        pass


class Stream(IntEnum):
    """Device queues, in priority order (lower value is served first)."""

    RADIO = 0  #: the radio's high-priority stream
    SHARED = 1  #: one stream for everything: what the ``fifo`` baseline uses
    AI = 2  #: the AI's low-priority stream


class Executor(Protocol):
    """What the arbiter needs from a device."""

    backend: str
    device: str

    @property
    def clock(self) -> Clock: ...

    def submit(self, s: Slice, stream: Stream, tag: object) -> None: ...

    def poll(self, out: list[Completion]) -> None: ...

    def wait(self, until_ns: int) -> None: ...

    def busy(self) -> bool: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class DurationDist:
    """A heavy-tailed duration distribution with a hard upper bound.

    ``mean_ns * (1 - jitter)`` is a floor; on top sits a Lomax (Pareto II) tail with
    shape ``alpha`` scaled so that the mean is ``mean_ns``; draws are clipped at
    ``max_ns`` (the slice's worst case). ``alpha`` near 2 gives the long tails seen on
    shared GPUs; a larger ``alpha`` a tamer device.
    """

    mean_ns: float
    max_ns: int
    jitter: float = 0.15
    alpha: float = 2.5

    def __post_init__(self) -> None:
        if not self.mean_ns > 0:
            raise FieldError("DurationDist.mean_ns", f"must be > 0, got {self.mean_ns!r}")
        if self.max_ns < self.mean_ns:
            raise FieldError(
                "DurationDist.max_ns", f"must be >= mean_ns ({self.mean_ns}), got {self.max_ns}"
            )
        if not 0.0 <= self.jitter <= 1.0:
            raise FieldError("DurationDist.jitter", f"must be in [0, 1], got {self.jitter!r}")
        if not self.alpha > 1.0:
            raise FieldError("DurationDist.alpha", f"must be > 1, got {self.alpha!r}")

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        floor = self.mean_ns * (1.0 - self.jitter)
        scale = self.mean_ns * self.jitter * (self.alpha - 1.0)
        d = floor + scale * rng.pareto(self.alpha, n)
        return np.minimum(np.rint(d), self.max_ns).astype(np.int64)


class _Sampler:
    __slots__ = ("buf", "dist", "pos", "rng")

    def __init__(self, dist: DurationDist, rng: np.random.Generator) -> None:
        self.dist = dist
        self.rng = rng
        self.buf: list[int] = []
        self.pos = 0

    def refill(self) -> None:
        self.buf = self.dist.draw(self.rng, 4096).tolist()
        self.pos = 0


class _Completions:
    """Completed slices waiting for :meth:`poll`."""

    def __init__(self) -> None:
        self._done: list[Completion] = []

    def poll(self, out: list[Completion]) -> None:
        if self._done:
            out.extend(self._done)
            self._done.clear()


class SimExecutor(_Completions):
    """A simulated device in virtual time.

    Each slice's duration is drawn from ``profile[slice.key]``, from a random stream
    of its own seeded by ``(seed, key)``: the same seed gives the same durations to the
    same slices whatever else runs. ``model``, if given, supplies the distribution of
    keys the profile lacks (a cost model, for sources that make new shapes on the fly).
    """

    backend = "sim"

    def __init__(
        self,
        profile: Mapping[SliceKey, DurationDist],
        seed: int = 0,
        model: Callable[[SliceKey], DurationDist] | None = None,
    ) -> None:
        super().__init__()
        self._model = model
        self.device = "virtual device"
        self.clock: VirtualClock = VirtualClock()
        self._profile = dict(profile)
        self._seed = seed
        self._samplers: dict[SliceKey, _Sampler] = {}
        self._queues: tuple[deque[tuple[object, int, int]], ...] = (deque(), deque(), deque())
        self._tag: object = None
        self._stream = 0
        self._start = 0
        self._end = -1  # -1: idle

    def _sampler(self, key: SliceKey) -> _Sampler:
        """The key's sampler, made on first use, with a non-empty buffer."""
        smp = self._samplers.get(key)
        if smp is None:
            dist = self._profile.get(key)
            if dist is None and self._model is not None:
                dist = self._profile[key] = self._model(key)
            if dist is None:
                raise FieldError("profile", f"no duration distribution for slice {key!r}")
            ss = np.random.SeedSequence([self._seed, zlib.crc32(repr(key).encode())])
            smp = self._samplers[key] = _Sampler(dist, np.random.default_rng(ss))
        if smp.pos >= len(smp.buf):
            smp.refill()
        return smp

    def submit(self, s: Slice, stream: Stream, tag: object) -> None:
        smp = self._samplers.get(s.key)
        if smp is None or smp.pos >= len(smp.buf):
            smp = self._sampler(s.key)
        d = smp.buf[smp.pos]
        smp.pos += 1
        w = s.work
        if type(w) is InjectedWork:  # a planted fault: its duration, or a failed slice
            if w.error is not None:
                tag = Failed(tag, w.error)
            elif w.target_ns > d:
                d = w.target_ns
        if self._end < 0:
            t = self.clock.t
            self._tag, self._stream, self._start, self._end = tag, stream, t, t + d
        else:
            self._queues[stream].append((tag, int(stream), d))

    def wait(self, until_ns: int) -> None:
        if self._done:
            return
        end = self._end
        if 0 <= end <= until_ns:
            self.clock.t = end
            self._done.append((self._tag, self._stream, self._start, end))
            for q in self._queues:
                if q:
                    tag, stream, d = q.popleft()
                    self._tag, self._stream, self._start, self._end = tag, stream, end, end + d
                    return
            self._end = -1
            self._tag = None
        elif until_ns > self.clock.t:
            if until_ns >= NEVER:
                raise RuntimeError("SimExecutor.wait: nothing in flight and nothing to wait for")
            self.clock.t = until_ns

    def busy(self) -> bool:
        return self._end >= 0

    def close(self) -> None:
        pass


class PacedSimExecutor(SimExecutor):
    """A simulated device in real time: durations are drawn as by :class:`SimExecutor`,
    but its clock never runs ahead of the wall clock (``wait`` sleeps until then).

    A live node on it behaves in time like one on a device (slot indications, E2
    reporting periods, controls) while costing almost no CPU: what a RIC test bed, the
    fake node of :mod:`airan.testing` and ``Node.simulated`` use.
    """

    backend = "sim-paced"

    def __init__(
        self,
        profile: Mapping[SliceKey, DurationDist],
        seed: int = 0,
        model: Callable[[SliceKey], DurationDist] | None = None,
    ) -> None:
        super().__init__(profile, seed, model)
        self.device = "simulated device (real time)"
        self._wall = WallClock()

    def wait(self, until_ns: int) -> None:
        if self._done:
            return
        end = self._end
        target = end if 0 <= end <= until_ns else until_ns
        if NEVER > target > self.clock.t:
            self._wall.sleep_until(target, spin_ns=0)  # pacing only: virtual time stays exact
        super().wait(until_ns)


class NumpyExecutor(_Completions):
    """The CPU as the device, on the wall clock.

    ``submit`` only queues the slice, like a launch on a device queue; ``wait`` runs
    the next queued slice (radio stream first) synchronously and reports it. So the
    arbiter's decision time never includes the work, and the CPU, like a GPU, never
    interrupts a slice once it has started.
    """

    backend = "numpy"

    def __init__(self, device: str | None = None) -> None:
        import platform

        super().__init__()
        self.device = device or f"CPU ({platform.processor() or platform.machine()})"
        self.clock: Clock = WallClock()
        self._queues: tuple[deque[tuple[Slice, int, object]], ...] = (deque(), deque(), deque())

    def submit(self, s: Slice, stream: Stream, tag: object) -> None:
        if s.work is None:
            raise FieldError("Slice.work", f"slice {s.op!r} has no work to run on the CPU")
        self._queues[stream].append((s, int(stream), tag))

    def wait(self, until_ns: int) -> None:
        if self._done:
            return
        for q in self._queues:
            if q:
                s, stream, tag = q.popleft()
                now = self.clock.now_ns
                start = now()
                try:
                    s.work()  # type: ignore[misc]
                except Exception as exc:  # the slice failed, the executor goes on
                    tag = Failed(tag, exc)
                self._done.append((tag, stream, start, now()))
                return
        if until_ns >= NEVER:
            raise RuntimeError("NumpyExecutor.wait: nothing in flight and nothing to wait for")
        self.clock.sleep_until(until_ns)  # type: ignore[attr-defined]

    def busy(self) -> bool:
        return any(self._queues)

    def close(self) -> None:
        pass
