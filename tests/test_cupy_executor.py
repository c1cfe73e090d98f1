"""The CUDA executor.

Two parts:

* tests marked ``gpu`` run the executor on a real CUDA device through CuPy; they are
  skipped unless :func:`airan.backend.probe_cupy` finds one;
* the other tests drive the executor's own logic (stream choice, the one-AI-slice rule,
  the event pool, poll/wait bookkeeping, graph capture order) against a small stand-in
  for the part of CuPy it uses, so that logic is checked on every machine. The stand-in
  says nothing about CUDA itself: only the ``gpu`` tests do.
"""

from __future__ import annotations

import itertools
import sys
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from airan.backend import probe_cupy
from airan.core.errors import FieldError
from airan.core.slices import Slice, SliceKind
from airan.sched.cupy_executor import CapturedGraph, CupyExecutor, capture
from airan.sched.executors import NEVER, Completion, Failed, Stream

GPU = probe_cupy()
gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(GPU is None, reason="no usable CUDA device through CuPy")


def _slice(work: Callable[[], object] | None, kind: SliceKind = SliceKind.AI) -> Slice:
    return Slice.make(kind, "test.op", 1_000_000, {"n": 1}, work=work)


# --------------------------------------------------------------------------------------
# A stand-in for the few CuPy APIs the executor uses. A fake stream runs its queued
# operations in order when the test calls ``advance``; a "kernel" is an operation with a
# duration, an event an operation that takes its timestamp.
# --------------------------------------------------------------------------------------


class FakeEvent:
    created = 0

    def __init__(self, block: bool = False, disable_timing: bool = False) -> None:
        assert not disable_timing, "timing events are needed"
        FakeEvent.created += 1
        self.stream: FakeStream | None = None
        self.t_ms: float | None = None

    def record(self, stream: FakeStream | None = None) -> None:
        assert stream is not None
        self.stream = stream
        self.t_ms = None
        stream.ops.append(("event", self))

    @property
    def done(self) -> bool:
        return self.t_ms is not None


class FakeGraph:
    def __init__(self, ops: list[tuple[str, Any]]) -> None:
        self.ops = ops
        self.launched_on: list[FakeStream] = []

    def launch(self, stream: FakeStream | None = None) -> None:
        assert stream is not None
        self.launched_on.append(stream)
        stream.ops.extend(self.ops)


class FakeCuda:
    """The fake ``cupy.cuda`` namespace, with a stack of current streams."""

    PRIORITY_RANGE = (0, -5)  # (least, greatest)

    def __init__(self, cp: FakeCupy, with_range: bool, with_priority: bool) -> None:
        self.cp = cp
        self.null = FakeStream(self, null=True)
        self.current: list[FakeStream] = [self.null]
        self.allocators: list[object] = [None]
        runtime = types.SimpleNamespace(
            getDeviceCount=lambda: 1,
            getDeviceProperties=lambda i: {"name": b"Fake GPU 9000"},
        )
        if with_range:
            runtime.deviceGetStreamPriorityRange = lambda: self.PRIORITY_RANGE
        self.runtime = runtime
        self.Event = FakeEvent
        self.with_priority = with_priority
        self.device_used: int | None = None

    def Stream(self, null: bool = False, non_blocking: bool = False, **kw: Any) -> FakeStream:
        if "priority" in kw and not self.with_priority:
            raise TypeError("Stream() got an unexpected keyword argument 'priority'")
        return FakeStream(self, null=null, non_blocking=non_blocking, **kw)

    def Device(self, i: int) -> Any:
        def use() -> None:
            self.device_used = i

        return types.SimpleNamespace(use=use)

    def get_current_stream(self) -> FakeStream:
        return self.current[-1]

    @staticmethod
    def get_elapsed_time(a: FakeEvent, b: FakeEvent) -> float:
        assert a.t_ms is not None and b.t_ms is not None
        return b.t_ms - a.t_ms

    def MemoryPool(self) -> Any:
        return types.SimpleNamespace(malloc=object())

    @contextmanager
    def using_allocator(self, malloc: object = None) -> Iterator[None]:
        self.allocators.append(malloc)
        try:
            yield
        finally:
            self.allocators.pop()


class FakeStream:
    _ptrs = itertools.count(0x1000, 0x10)

    def __init__(
        self,
        cuda: FakeCuda,
        null: bool = False,
        non_blocking: bool = False,
        priority: int | None = None,
    ) -> None:
        self.cuda = cuda
        self.ptr = 0 if null else next(FakeStream._ptrs)
        self.non_blocking = non_blocking
        least, greatest = FakeCuda.PRIORITY_RANGE
        p = 0 if priority is None else priority
        self.priority = min(max(p, greatest), least)  # CUDA clamps into the range
        self.ops: list[tuple[str, Any]] = []
        self.t_ms = 0.0
        self.capturing: list[tuple[str, Any]] | None = None
        self.synchronized = 0

    def __enter__(self) -> FakeStream:
        self.cuda.current.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.cuda.current.pop() is self

    def kernel(self, ms: float) -> None:
        (self.capturing if self.capturing is not None else self.ops).append(("kernel", ms))

    def advance(self, n: int | None = None) -> None:
        """Run the next ``n`` queued operations (all of them by default)."""
        n = len(self.ops) if n is None else n
        for kind, x in self.ops[:n]:
            if kind == "kernel":
                self.t_ms += x
            else:
                x.t_ms = self.t_ms
        del self.ops[:n]

    def synchronize(self) -> None:
        self.synchronized += 1
        self.advance()

    def begin_capture(self) -> None:
        assert self.ptr != 0, "cannot capture on the legacy default stream"
        self.capturing = []

    def end_capture(self) -> FakeGraph:
        assert self.capturing is not None
        g = FakeGraph(self.capturing)
        self.capturing = None
        return g


class FakeCupy(types.ModuleType):
    def __init__(
        self, available: bool = True, with_range: bool = True, with_priority: bool = True
    ) -> None:
        super().__init__("cupy")
        self._available = available
        self.cuda = FakeCuda(self, with_range, with_priority)

    def is_available(self) -> bool:
        return self._available

    def kernel(self, ms: float) -> None:
        """Enqueue a kernel of ``ms`` milliseconds on the current stream."""
        self.cuda.get_current_stream().kernel(ms)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCupy:
    cp = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    return cp


def _drain(ex: CupyExecutor) -> list[Completion]:
    out: list[Completion] = []
    ex.poll(out)
    return out


# ------------------------------------------------------------------- logic, on a fake


def test_streams_take_the_ends_of_the_priority_range(fake: FakeCupy) -> None:
    ex = CupyExecutor()
    least, greatest = FakeCuda.PRIORITY_RANGE
    assert ex.device == "Fake GPU 9000"
    assert ex.backend == "cupy"
    assert fake.cuda.device_used == 0
    assert ex.radio_stream.priority == greatest
    assert ex.ai_stream.priority == least
    assert ex.shared_stream.priority == least
    assert ex.stream_priorities == (greatest, least, least)
    assert all(s.non_blocking for s in (ex.radio_stream, ex.shared_stream, ex.ai_stream))
    assert ex.ai_stream_ptr == ex.ai_stream.ptr and isinstance(ex.ai_stream_ptr, int)
    assert ex.priorities_enabled


def test_priority_range_fallback_relies_on_clamping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", FakeCupy(with_range=False))
    ex = CupyExecutor()
    assert ex.stream_priorities == (-5, 0, 0)  # read back after the clamp


def test_cupy_without_stream_priorities_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", FakeCupy(with_priority=False))
    with pytest.warns(RuntimeWarning, match="priority"):
        ex = CupyExecutor()
    assert not ex.priorities_enabled


def test_no_device_is_a_field_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", FakeCupy(available=False))
    with pytest.raises(FieldError, match=r"backend: .*cupy.is_available\(\) is False"):
        CupyExecutor()


def test_bad_device_id(fake: FakeCupy) -> None:
    with pytest.raises(FieldError, match="device_id"):
        CupyExecutor(device_id=3)


def test_submit_poll_reports_the_event_duration(fake: FakeCupy) -> None:
    ex = CupyExecutor()
    ran_on: list[Any] = []

    def work() -> None:
        ran_on.append(fake.cuda.get_current_stream())
        fake.kernel(0.25)

    ex.submit(_slice(work), Stream.AI, "t1")
    assert ran_on == [ex.ai_stream]
    assert fake.cuda.get_current_stream() is fake.cuda.null  # restored after submit
    assert ex.busy()
    assert _drain(ex) == []
    ex.ai_stream.advance()
    before = ex.clock.now_ns()
    [(tag, stream, start, end)] = _drain(ex)
    assert (tag, stream) == ("t1", int(Stream.AI))
    assert end - start == 250_000
    assert end >= before  # the observation time
    assert not ex.busy()


def test_events_come_from_a_pool(fake: FakeCupy) -> None:
    ex = CupyExecutor()
    FakeEvent.created = 0
    for i in range(5):
        ex.submit(_slice(lambda: fake.kernel(0.01)), Stream.RADIO, i)
        ex.radio_stream.advance()
        assert len(_drain(ex)) == 1
    assert FakeEvent.created == 2


def test_one_ai_slice_in_flight(fake: FakeCupy) -> None:
    ex = CupyExecutor()
    ex.submit(_slice(lambda: fake.kernel(0.1)), Stream.AI, "a")
    with pytest.raises(RuntimeError, match="an AI slice is already in flight"):
        ex.submit(_slice(lambda: fake.kernel(0.1)), Stream.AI, "b")
    # The radio is never held back by the rule.
    ex.submit(_slice(lambda: fake.kernel(0.1), SliceKind.RAN), Stream.RADIO, "r")
    ex.ai_stream.advance()
    assert [c[0] for c in _drain(ex)] == ["a"]
    ex.submit(_slice(lambda: fake.kernel(0.1)), Stream.AI, "b")  # reported: allowed again


def test_shared_queues_several_in_order(fake: FakeCupy) -> None:
    ex = CupyExecutor()
    for i, kind in enumerate([SliceKind.AI, SliceKind.RAN, SliceKind.AI, SliceKind.AI]):
        ex.submit(_slice(lambda: fake.kernel(0.05), kind), Stream.SHARED, i)
    ex.shared_stream.advance(2 * 3)  # two slices: start event, kernel, end event each
    assert [c[0] for c in _drain(ex)] == [0, 1]
    assert ex.busy()
    ex.shared_stream.advance()
    done = _drain(ex)
    assert [c[0] for c in done] == [2, 3]
    assert all(c[1] == int(Stream.SHARED) and c[3] - c[2] == 50_000 for c in done)


def test_submit_rejects_bad_input(fake: FakeCupy) -> None:
    ex = CupyExecutor()
    with pytest.raises(FieldError, match=r"Slice\.work"):
        ex.submit(_slice(None), Stream.AI, "x")
    with pytest.raises(FieldError, match="stream"):
        ex.submit(_slice(lambda: None), 7, "x")  # type: ignore[arg-type]
    assert not ex.busy()


def test_failed_work_is_reported_as_a_failed_completion(fake: FakeCupy) -> None:
    """An issue that raises (a CUDA error, a bug in the work) never escapes submit: it
    comes back from the next poll as a completion tagged Failed, with the error, and
    nothing stays in flight (docs/reliability.md, executor error)."""
    ex = CupyExecutor()

    def boom() -> None:
        raise ValueError("boom")

    ex.submit(_slice(boom), Stream.AI, "x")
    assert ex.busy()  # until the failure is polled
    ex.wait(NEVER)  # returns at once: a failure is waiting
    out = _drain(ex)
    assert len(out) == 1
    tag, stream, start, end = out[0]
    assert isinstance(tag, Failed) and tag.tag == "x" and str(tag.error) == "boom"
    assert stream == Stream.AI and start == end
    assert not ex.busy()
    assert fake.cuda.get_current_stream() is fake.cuda.null
    ex.submit(_slice(lambda: fake.kernel(0.1)), Stream.AI, "y")  # the AI slot is free


def test_wait(fake: FakeCupy) -> None:
    ex = CupyExecutor()
    with pytest.raises(RuntimeError, match="nothing in flight"):
        ex.wait(NEVER)
    t = ex.clock.now_ns() + 2_000_000
    ex.wait(t)  # nothing in flight: sleeps until t
    assert ex.clock.now_ns() >= t
    ex.submit(_slice(lambda: fake.kernel(0.1)), Stream.AI, "a")
    t = ex.clock.now_ns() + 2_000_000
    ex.wait(t)  # in flight, never done: returns at t
    assert ex.clock.now_ns() >= t
    ex.ai_stream.advance()
    t0 = time.perf_counter_ns()
    ex.wait(ex.clock.now_ns() + 10**9)  # done: returns at once
    assert time.perf_counter_ns() - t0 < 500_000_000
    assert len(_drain(ex)) == 1


def test_close_synchronizes_and_ends_submission(fake: FakeCupy) -> None:
    ex = CupyExecutor()
    ex.submit(_slice(lambda: fake.kernel(0.1)), Stream.AI, "a")
    ex.close()
    ex.close()
    assert all(s.synchronized == 1 for s in (ex.radio_stream, ex.shared_stream, ex.ai_stream))
    assert [c[0] for c in _drain(ex)] == ["a"]
    with pytest.raises(RuntimeError, match="after close"):
        ex.submit(_slice(lambda: None), Stream.RADIO, "b")


def test_capture_warms_up_then_captures_then_replays(fake: FakeCupy) -> None:
    calls: list[tuple[Any, bool, object]] = []

    def fn() -> None:
        s = fake.cuda.get_current_stream()
        calls.append((s, s.capturing is not None, fake.cuda.allocators[-1]))
        fake.kernel(0.2)

    g = capture(fn)
    assert isinstance(g, CapturedGraph)
    (s1, cap1, alloc1), (s2, cap2, alloc2) = calls
    assert s1 is s2 is g.stream and s1.ptr != 0
    assert not cap1 and alloc1 is None  # warm-up: outside capture, the default allocator
    assert cap2 and alloc2 is g._pool.malloc  # capture: temporaries from a private pool
    assert g.stream.synchronized == 1
    assert g.graph.ops == [("kernel", 0.2)]

    ex = CupyExecutor()
    ex.submit(_slice(g), Stream.AI, "g")
    assert g.graph.launched_on == [ex.ai_stream]
    assert len(calls) == 2  # replay does not call fn
    ex.ai_stream.advance()
    [(_, _, start, end)] = _drain(ex)
    assert end - start == 200_000


def test_capture_error_ends_the_capture(fake: FakeCupy) -> None:
    n = 0

    def fn() -> None:
        nonlocal n
        n += 1
        if n == 2:
            raise RuntimeError("not capturable")

    s = fake.cuda.Stream(non_blocking=True)
    with pytest.raises(RuntimeError, match="not capturable"):
        CapturedGraph(fn, s)
    assert s.capturing is None


# ------------------------------------------------------------------- on a real GPU


@gpu
@needs_gpu
def test_gpu_radio_priority_is_higher_than_ai() -> None:
    import cupy as cp

    ex = CupyExecutor()
    try:
        if not ex.priorities_enabled:
            pytest.skip("this CuPy cannot create streams with a priority")
        get = getattr(cp.cuda.runtime, "streamGetPriority", None)
        if get is not None:
            radio, ai = get(ex.radio_stream.ptr), get(ex.ai_stream.ptr)
        else:
            radio, ai = ex.stream_priorities[Stream.RADIO], ex.stream_priorities[Stream.AI]
        assert radio < ai  # numerically smaller is served first
        assert ex.ai_stream_ptr == ex.ai_stream.ptr != 0
    finally:
        ex.close()


def _gpu_matmul(n: int = 1024) -> tuple[Any, Callable[[], object]]:
    import cupy as cp

    rng = cp.random.default_rng(0)
    a = rng.random((n, n), dtype=cp.float32)
    b = rng.random((n, n), dtype=cp.float32)
    out = cp.empty((n, n), dtype=cp.float32)
    cp.cuda.Device().synchronize()
    return out, lambda: cp.matmul(a, b, out=out)


def _until_done(ex: CupyExecutor, n: int, timeout_s: float = 10.0) -> list[Completion]:
    out: list[Completion] = []
    limit = ex.clock.now_ns() + int(timeout_s * 1e9)
    while len(out) < n and ex.clock.now_ns() < limit:
        ex.wait(limit)
        ex.poll(out)
    return out


@gpu
@needs_gpu
def test_gpu_submit_poll_matmul() -> None:
    ex = CupyExecutor()
    try:
        _, work = _gpu_matmul()
        ex.submit(_slice(work), Stream.AI, "mm")
        [(tag, stream, start, end)] = _until_done(ex, 1)
        assert (tag, stream) == ("mm", int(Stream.AI))
        assert end > start
        assert not ex.busy()
    finally:
        ex.close()


@gpu
@needs_gpu
def test_gpu_second_ai_slice_is_refused() -> None:
    ex = CupyExecutor()
    try:
        _, work = _gpu_matmul()
        ex.submit(_slice(work), Stream.AI, 1)
        with pytest.raises(RuntimeError, match="already in flight"):
            ex.submit(_slice(work), Stream.AI, 2)
        assert len(_until_done(ex, 1)) == 1
        ex.submit(_slice(work), Stream.AI, 3)
        assert [c[0] for c in _until_done(ex, 1)] == [3]
    finally:
        ex.close()


@gpu
@needs_gpu
def test_gpu_shared_accepts_several() -> None:
    ex = CupyExecutor()
    try:
        _, work = _gpu_matmul(512)
        for i in range(4):
            ex.submit(_slice(work), Stream.SHARED, i)
        done = _until_done(ex, 4)
        assert [c[0] for c in done] == [0, 1, 2, 3]
        assert all(c[1] == int(Stream.SHARED) and c[3] > c[2] for c in done)
    finally:
        ex.close()


@gpu
@needs_gpu
def test_gpu_captured_graph_matches_direct_call() -> None:
    import cupy as cp

    n = 256
    rng = cp.random.default_rng(1)
    a = rng.random((n, n), dtype=cp.float32)
    b = rng.random((n, n), dtype=cp.float32)
    out = cp.zeros((n, n), dtype=cp.float32)

    def fn() -> None:
        out[...] = a @ b  # a temporary, then a copy into the fixed buffer

    fn()
    expected = out.copy()
    sync = cp.cuda.Device().synchronize  # the non-blocking streams do not wait for the
    sync()  # default stream that made the inputs: order them by hand
    g = capture(fn)
    out.fill(0)
    sync()
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        g()
    s.synchronize()
    np.testing.assert_allclose(cp.asnumpy(out), cp.asnumpy(expected), rtol=1e-5)

    a[...] = rng.random((n, n), dtype=cp.float32)  # new input, in place
    sync()
    with s:
        g()
    s.synchronize()
    np.testing.assert_allclose(cp.asnumpy(out), cp.asnumpy(a @ b), rtol=1e-4, atol=1e-4)

    ex = CupyExecutor()
    try:
        out.fill(0)
        sync()
        ex.submit(_slice(g), Stream.RADIO, "graph")
        [(tag, stream, start, end)] = _until_done(ex, 1)
        assert (tag, stream) == ("graph", int(Stream.RADIO)) and end > start
        np.testing.assert_allclose(cp.asnumpy(out), cp.asnumpy(a @ b), rtol=1e-4, atol=1e-4)
    finally:
        ex.close()


@gpu
@needs_gpu
def test_gpu_wait_returns_once_the_slice_completes() -> None:
    ex = CupyExecutor()
    try:
        _, work = _gpu_matmul(2048)
        ex.submit(_slice(work), Stream.AI, "w")
        t0 = ex.clock.now_ns()
        limit = t0 + 10**10  # 10 s: far beyond the slice
        ex.wait(limit)
        assert ex.clock.now_ns() < limit
        out: list[Completion] = []
        ex.poll(out)
        assert [c[0] for c in out] == ["w"]
    finally:
        ex.close()
