"""The GPU as the device: CUDA streams with priorities, events for timing, graphs.

How this maps to the facts the design rests on (``ARCHITECTURE.md``):

* A GPU does not preempt a running kernel; stream priority only reorders thread blocks
  that have not started. The radio stream gets the device's greatest priority and the AI
  stream its least, and :class:`CupyExecutor` refuses a second AI slice while one is in
  flight: at most one AI slice is ever queued on the device, so the radio never waits
  for more than one bounded slice.
* Completions are observed with CUDA events: ``Event.done`` to poll, and
  ``cupy.cuda.get_elapsed_time`` for the duration (about 0.5 µs resolution).
* Python launch overhead is several µs per kernel, so a slice's ``work`` should be one
  graph launch: :class:`CapturedGraph` (:func:`capture`) records a callable once and
  replays it with a single launch.

This module imports without CuPy; CuPy is imported when an executor or a graph is made.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any

from airan.core.clock import Clock, WallClock
from airan.core.errors import FieldError
from airan.core.slices import Slice
from airan.sched.executors import NEVER, Completion, Failed, Stream

__all__ = ["CapturedGraph", "CupyExecutor", "capture"]

_AI_IN_FLIGHT = "CupyExecutor: an AI slice is already in flight; the arbiter allows one at a time"

#: Asked for when the device's priority range cannot be queried: CUDA clamps a stream
#: priority outside the range to the range's end, so this gives the greatest priority.
_CLAMPED_GREATEST = -1024

# (tag, stream, start event, end event)
_InFlight = tuple[object, int, Any, Any]


def _import_cupy() -> Any:
    """``cupy``, or a :class:`FieldError` on ``backend`` saying why it cannot be used."""
    try:
        import cupy
    except ModuleNotFoundError as e:
        if e.name != "cupy":
            raise FieldError("backend", f"cupy could not be imported: {e}") from e
        raise FieldError(
            "backend",
            "the CUDA executor needs CuPy, which is not installed "
            "(pip install 'airan[cuda12]' or 'airan[cuda13]'), or use the numpy backend",
        ) from e
    except Exception as e:  # ImportError for missing CUDA libraries, and worse
        raise FieldError("backend", f"cupy could not be imported: {type(e).__name__}: {e}") from e
    return cupy


def _priority_range(cp: Any) -> tuple[int, int]:
    """``(least, greatest)`` stream priorities of the current device (greatest <= least)."""
    query = getattr(cp.cuda.runtime, "deviceGetStreamPriorityRange", None)
    if query is not None:
        least, greatest = query()
        return int(least), int(greatest)
    # 0 is the default priority and the least one on every device that has priorities;
    # a value below the range is clamped to the greatest (cudaStreamCreateWithPriority).
    return 0, _CLAMPED_GREATEST


def _stream_priority(stream: Any) -> int | None:
    """The priority a stream actually got, when this CuPy can tell."""
    try:
        p = stream.priority
    except Exception:
        return None
    return int(p) if isinstance(p, int) else None


class CupyExecutor:
    """A CUDA device through CuPy: one stream per :class:`Stream`, events, one AI in flight.

    * ``radio_stream``: non-blocking, the device's greatest (numerically smallest)
      priority; ``ai_stream``: non-blocking, its least priority; the ``SHARED`` stream
      (what the ``fifo`` baseline puts everything on): non-blocking, least priority.
    * ``ai_stream_ptr`` is the raw ``cudaStream_t`` of the AI stream, for foreign work
      on it: ``torch.cuda.ExternalStream(executor.ai_stream_ptr)``.
    * ``submit`` calls ``Slice.work`` with the slice's stream current, between two
      recorded events; ``poll`` reports each slice whose end event is done.
    * At most one AI slice in flight: a second ``submit`` on ``Stream.AI`` before the
      first has been reported by ``poll`` raises :class:`RuntimeError`. ``SHARED`` has
      no such limit (the ``fifo`` baseline queues several on purpose).

    The constructor makes ``device_id`` the current CUDA device of the calling thread;
    the executor is meant to be driven from that one thread.
    """

    backend = "cupy"

    def __init__(self, device_id: int = 0) -> None:
        cp = _import_cupy()
        try:
            available = bool(cp.is_available())
        except Exception as e:
            raise FieldError(
                "backend", f"cupy.is_available() failed: {type(e).__name__}: {e}"
            ) from e
        if not available:
            raise FieldError(
                "backend",
                "no usable CUDA device: cupy.is_available() is False "
                "(no GPU or no driver is visible); use the numpy backend",
            )
        if isinstance(device_id, bool) or not isinstance(device_id, int):
            raise FieldError("device_id", f"must be an integer, got {device_id!r}")
        count = int(cp.cuda.runtime.getDeviceCount())
        if not 0 <= device_id < count:
            raise FieldError("device_id", f"must be in [0, {count}), got {device_id}")
        self._cp = cp
        self.device_id = device_id
        cp.cuda.Device(device_id).use()
        name = cp.cuda.runtime.getDeviceProperties(device_id)["name"]
        if isinstance(name, bytes):
            name = name.decode(errors="replace")
        self.device: str = str(name).strip() or f"CUDA device {device_id}"
        self._wall = WallClock()
        self.clock: Clock = self._wall

        least, greatest = _priority_range(cp)
        wanted = (greatest, least, least)  # indexed by Stream: RADIO, SHARED, AI
        try:
            streams = tuple(cp.cuda.Stream(non_blocking=True, priority=p) for p in wanted)
            self.priorities_enabled = True
        except TypeError:  # a CuPy whose Stream() has no priority argument
            warnings.warn(
                "this CuPy cannot create streams with a priority (cupy.cuda.Stream has no "
                "'priority' argument): the radio and AI streams get the same priority. "
                "At most one AI slice is still kept in flight; upgrade CuPy for priorities.",
                RuntimeWarning,
                stacklevel=2,
            )
            streams = tuple(cp.cuda.Stream(non_blocking=True) for _ in wanted)
            self.priorities_enabled = False
        self._streams: tuple[Any, ...] = streams
        self.radio_stream: Any = streams[Stream.RADIO]
        self.shared_stream: Any = streams[Stream.SHARED]
        self.ai_stream: Any = streams[Stream.AI]
        self.ai_stream_ptr: int = int(self.ai_stream.ptr)
        #: The priority each stream got (RADIO, SHARED, AI): read back from the stream
        #: where this CuPy can, else the one asked for; lower is served first.
        self.stream_priorities: tuple[int, ...] = tuple(
            q if (q := _stream_priority(s)) is not None else p
            for s, p in zip(streams, wanted, strict=True)
        )
        self._fifos: tuple[deque[_InFlight], ...] = (deque(), deque(), deque())
        self._failed: list[Completion] = []  # slices whose issue failed, for the next poll
        self._free_events: list[Any] = []
        self._closed = False

    def _event(self) -> Any:
        """A timing event from the pool, made on first need."""
        free = self._free_events
        return free.pop() if free else self._cp.cuda.Event()

    def submit(self, s: Slice, stream: Stream, tag: object) -> None:
        """Issue ``s.work()`` on ``stream``, between a start and an end event."""
        if self._closed:
            raise RuntimeError("CupyExecutor: submit after close()")
        work = s.work
        if work is None:
            raise FieldError("Slice.work", f"slice {s.op!r} has no work to issue on the GPU")
        try:
            idx = int(Stream(stream))
        except ValueError as e:
            raise FieldError("stream", f"must be a Stream (0, 1 or 2), got {stream!r}") from e
        fifo = self._fifos[idx]
        if idx == Stream.AI and fifo:
            raise RuntimeError(_AI_IN_FLIGHT)
        cs = self._streams[idx]
        ev_start = self._event()
        ev_end = self._event()
        try:
            with cs:  # work() enqueues its kernels (or a graph launch) on the current stream
                ev_start.record(cs)
                work()
                ev_end.record(cs)
        except Exception as exc:
            # A failed issue (a CUDA error, an exception in the work) is reported as a
            # failed completion at the next poll; re-recording a pooled event later
            # replaces what it captured, so both go back to the pool.
            self._free_events.extend((ev_start, ev_end))
            t = self.clock.now_ns()
            self._failed.append((Failed(tag, exc), idx, t, t))
            return
        fifo.append((tag, idx, ev_start, ev_end))

    def poll(self, out: list[Completion]) -> None:
        """Append ``(tag, stream, start_ns, end_ns)`` for each slice that has completed.

        A stream runs its slices in order, so each stream's in-flight list is drained
        from the head while the head's end event is done. The completion is observed
        here, at poll time: ``end_ns`` is the observation time on :attr:`clock`, late by
        at most the poll interval, while the duration ``end_ns - start_ns`` is the
        device time between the slice's two events, exact to about 0.5 µs (CUDA event
        resolution). It includes any time the slice shared the SMs with other streams.
        """
        elapsed_ms = self._cp.cuda.get_elapsed_time
        now = self.clock.now_ns
        free = self._free_events
        if self._failed:
            out.extend(self._failed)
            self._failed.clear()
        for fifo in self._fifos:
            while fifo:
                tag, idx, ev_start, ev_end = fifo[0]
                try:
                    if not ev_end.done:
                        break
                    fifo.popleft()
                    dur_ns = round(elapsed_ms(ev_start, ev_end) * 1e6)
                except Exception as exc:  # an asynchronous CUDA error surfaced here
                    if fifo and fifo[0][3] is ev_end:
                        fifo.popleft()
                    t = now()
                    out.append((Failed(tag, exc), idx, t, t))
                    continue
                end_ns = now()
                out.append((tag, idx, end_ns - dur_ns, end_ns))
                free.append(ev_start)
                free.append(ev_end)

    def wait(self, until_ns: int) -> None:
        """Return once a slice in flight has completed, or at ``until_ns`` on :attr:`clock`.

        Spins on the end events (a GPU slice lasts tens to hundreds of µs: sleeping
        would overshoot). With nothing in flight it sleeps until ``until_ns``.
        """
        if self._failed:
            return
        heads = [fifo[0][3] for fifo in self._fifos if fifo]
        if not heads:
            if until_ns >= NEVER:
                raise RuntimeError("CupyExecutor.wait: nothing in flight and nothing to wait for")
            self._wall.sleep_until(until_ns)
            return
        perf = time.perf_counter_ns
        deadline = perf() + (until_ns - self.clock.now_ns())
        while True:
            for ev in heads:
                try:
                    if ev.done:
                        return
                except Exception:  # a CUDA error: poll reports it
                    return
            if perf() >= deadline:
                return

    def busy(self) -> bool:
        """Whether any submitted slice has not been reported by :meth:`poll` yet."""
        return bool(self._failed) or any(self._fifos)

    def close(self) -> None:
        """Wait for all queued work on the executor's streams. Idempotent."""
        if self._closed:
            return
        for cs in self._streams:
            cs.synchronize()
        self._closed = True


class CapturedGraph:
    """A callable captured once into a CUDA graph and replayed with one launch.

    Construction calls ``fn`` once normally on ``stream`` (the warm-up: cuFFT plans,
    cuBLAS handles, memory pool growth and kernel compilation happen then, not during
    capture), synchronizes, then calls ``fn`` again with ``stream`` capturing: its kernels
    are recorded into :attr:`graph` instead of running. Calling the object launches the
    graph on the *current* stream (inside an executor's ``submit``: the slice's stream).

    Caveats:

    * Capture records the kernels ``fn`` enqueues on ``stream`` (the current stream
      while capturing), with their arguments fixed: every replay reads and writes the
      same device addresses. Inputs must live in fixed buffers that are updated in place
      (``buf[...] = new`` before the launch), and results be written into fixed buffers
      (``cupy.matmul(a, b, out=out)``, ``out[...] = a @ b``); what ``fn`` returns is lost.
    * No host synchronization inside ``fn`` during capture: no ``.get()``, ``float(x)``,
      ``print(x)``, ``stream.synchronize()``, no data-dependent Python control flow. They
      fail or break the capture.
    * No allocation should be needed inside ``fn`` during capture. Temporaries that do
      get allocated (``a @ b`` before the copy into ``out``) are taken from a memory pool
      private to this graph, so their blocks are never handed to other arrays while the
      graph can still write to them; the pool lives as long as the graph.
    * Work ``fn`` issues on other streams, or through libraries that do not use CuPy's
      current stream, is not captured.
    """

    def __init__(self, fn: Callable[[], object], stream: Any = None) -> None:
        cp = _import_cupy()
        if not callable(fn):
            raise FieldError("fn", f"must be callable, got {fn!r}")
        if stream is None:
            stream = cp.cuda.Stream(non_blocking=True)  # capture needs a non-default stream
        self._cp = cp
        self.fn = fn
        self.stream: Any = stream
        with stream:
            fn()  # warm-up, outside capture
        stream.synchronize()
        self._pool: Any = cp.cuda.MemoryPool()
        with stream, cp.cuda.using_allocator(self._pool.malloc):
            stream.begin_capture()
            try:
                fn()
            except BaseException:
                with contextlib.suppress(Exception):
                    stream.end_capture()  # leave the stream usable
                raise
            self.graph: Any = stream.end_capture()

    def __call__(self) -> None:
        """Launch the graph on the current stream (asynchronous)."""
        self.graph.launch(self._cp.cuda.get_current_stream())


def capture(fn: Callable[[], object], stream: Any = None) -> CapturedGraph:
    """Capture ``fn`` into a :class:`CapturedGraph` (see its caveats)."""
    return CapturedGraph(fn, stream)
