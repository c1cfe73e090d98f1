"""Stateful fuzzing of the C deadline queue through its Python API, against a reference
model: what tests/test_queue.py does not already cover.

tests/test_queue.py drives one :class:`DeadlineQueue` (capacity 1..8) and an oracle
through the wrapper, whose argument checks stop bad values before C sees them. Here:

* :class:`RawQueueMachine` drives the cffi functions themselves (``airan._edfq.lib``),
  so negative costs, every error precedence edfq.h documents (BAD_COST, then
  DUPLICATE_ID, then FULL; BAD_COST before NOT_FOUND), outputs left untouched on an
  error, NULL output pointers and ``edfq_get`` past the end reach the C code; with two
  queues at once (their sequence counters and storage must stay independent) and
  queues freed and recreated mid-run;
* :class:`WrapperQueueMachine` uses capacities up to 256 with bulk fills (the FULL
  path at sizes the other machine never reaches), refills of ids that were just
  removed or popped, bad arguments to every method at any moment (the queue must be
  unchanged after each), and metamorphic checks of ``slack``: shifting ``now`` by
  ``delta`` shifts the slack by ``-delta`` when nothing saturates, and the slack never
  exceeds any single task's own margin.

The same file runs against an AddressSanitizer/UBSan build of the extension with
``make -C native pytest-asan``. ``AIRAN_FUZZ_EXAMPLES`` (default 100) sets the
number of runs per machine.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from airan._edfq import ffi, lib
from airan.sched.queue import (
    SLACK_INF,
    DeadlineQueue,
    DuplicateTaskIdError,
    QueueEmptyError,
    QueueEntry,
    QueueFullError,
    UnknownTaskIdError,
)

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
U64_MAX = 2**64 - 1
SENTINEL = 0x5A5A5A5A5A5A5A5A
SENTINEL_U = 0xA5A5A5A5A5A5A5A5
EXAMPLES = int(os.environ.get("AIRAN_FUZZ_EXAMPLES", "100"))

OK, FULL, EMPTY = lib.EDFQ_OK, lib.EDFQ_FULL, lib.EDFQ_EMPTY
DUPLICATE, NOT_FOUND, BAD_COST = lib.EDFQ_DUPLICATE_ID, lib.EDFQ_NOT_FOUND, lib.EDFQ_BAD_COST


def sat(x: int) -> int:
    return I64_MIN if x < I64_MIN else I64_MAX if x > I64_MAX else x


class Model:
    """The reference: an unsorted list of (deadline, seq, id, cost), linear scans."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: list[tuple[int, int, int, int]] = []
        self.seq = 0

    def find(self, task_id: int) -> int | None:
        return next((k for k, it in enumerate(self.items) if it[2] == task_id), None)

    def push_status(self, task_id: int, cost: int) -> int:
        """edfq.h: BAD_COST, then DUPLICATE_ID, then FULL."""
        if cost < 0:
            return BAD_COST
        if self.find(task_id) is not None:
            return DUPLICATE
        return FULL if len(self.items) >= self.capacity else OK

    def push(self, deadline: int, task_id: int, cost: int) -> None:
        self.items.append((deadline, self.seq, task_id, cost))
        self.seq += 1

    def ordered(self) -> list[tuple[int, int, int, int]]:
        return sorted(self.items, key=lambda it: (it[0], it[1]))

    def head(self) -> tuple[int, int, int, int] | None:
        return min(self.items, key=lambda it: (it[0], it[1]), default=None)

    def remove(self, task_id: int) -> tuple[int, int, int, int]:
        k = self.find(task_id)
        assert k is not None
        return self.items.pop(k)

    def slack(self, now: int) -> int:
        best, demand = SLACK_INF, 0
        for deadline, _, _, cost in self.ordered():
            demand = sat(demand + cost)
            best = min(best, sat(sat(deadline - now) - demand))
        return best

    def entries(self) -> list[QueueEntry]:
        return [QueueEntry(d, i, c) for d, _, i, c in self.ordered()]


# ---- strategies -------------------------------------------------------------------

EDGES = [I64_MIN, I64_MIN + 1, -1, 0, 1, I64_MAX - 1, I64_MAX]
int64s = st.one_of(st.integers(-8, 8), st.sampled_from(EDGES), st.integers(I64_MIN, I64_MAX))
any_costs = st.one_of(  # negative ones included: the raw API must refuse them
    st.integers(-3, 12), st.sampled_from(EDGES), st.integers(I64_MIN, I64_MAX)
)
good_costs = st.one_of(st.integers(0, 12), st.sampled_from([0, 2**62, I64_MAX]))
ids = st.one_of(st.integers(0, 10), st.sampled_from([2**63 - 1, 2**63, U64_MAX]))


def _fuzz_settings(steps: int) -> settings:
    return settings(
        max_examples=EXAMPLES,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


# ---- the raw C API, two queues at once ---------------------------------------------


class _RawQueue:
    """One ``edfq_t`` (freed by cffi's gc) and its model."""

    def __init__(self, capacity: int) -> None:
        raw = lib.edfq_new(capacity)
        assert raw != ffi.NULL
        self.q = ffi.gc(raw, lib.edfq_free)
        self.model = Model(capacity)


class RawQueueMachine(RuleBasedStateMachine):
    """The cffi functions, with arguments the wrapper would refuse, on two queues."""

    queues = Bundle("queues")

    def __init__(self) -> None:
        super().__init__()
        self.live: list[_RawQueue] = []
        self.d = ffi.new("int64_t *")
        self.id = ffi.new("uint64_t *")
        self.c = ffi.new("int64_t *")

    def _reset_outputs(self) -> None:
        self.d[0], self.id[0], self.c[0] = SENTINEL, SENTINEL_U, SENTINEL

    def _outputs_untouched(self) -> bool:
        return (self.d[0], self.id[0], self.c[0]) == (SENTINEL, SENTINEL_U, SENTINEL)

    @initialize(target=queues, capacity=st.integers(1, 6))
    def first(self, capacity: int) -> _RawQueue:
        assert lib.edfq_new(0) == ffi.NULL
        rq = _RawQueue(capacity)
        self.live.append(rq)
        return rq

    @precondition(lambda self: len(self.live) < 3)
    @rule(target=queues, capacity=st.integers(1, 6))
    def another(self, capacity: int) -> _RawQueue:
        rq = _RawQueue(capacity)
        self.live.append(rq)
        return rq

    @precondition(lambda self: len(self.live) > 1)
    @rule(rq=consumes(queues))
    def free(self, rq: _RawQueue) -> None:
        """Drop a queue mid-run (cffi frees it when its last reference goes): the others
        must not notice."""
        self.live.remove(rq)
        del rq

    @rule(rq=queues, deadline=int64s, task_id=ids, cost=any_costs)
    def push(self, rq: _RawQueue, deadline: int, task_id: int, cost: int) -> None:
        want = rq.model.push_status(task_id, cost)
        assert lib.edfq_push(rq.q, deadline, task_id, cost) == want
        if want == OK:
            rq.model.push(deadline, task_id, cost)

    @rule(rq=queues, data=st.data(), cost=any_costs)
    def push_queued_id(self, rq: _RawQueue, data: st.DataObject, cost: int) -> None:
        """A known duplicate, with any cost: BAD_COST wins over DUPLICATE_ID."""
        if not rq.model.items:
            return
        task_id = data.draw(st.sampled_from([it[2] for it in rq.model.items]))
        want = BAD_COST if cost < 0 else DUPLICATE
        assert lib.edfq_push(rq.q, 0, task_id, cost) == want

    @rule(rq=queues, use_null=st.booleans())
    def pop(self, rq: _RawQueue, use_null: bool) -> None:
        head = rq.model.head()
        self._reset_outputs()
        if use_null:
            st_ = lib.edfq_pop(rq.q, ffi.NULL, ffi.NULL, ffi.NULL)
        else:
            st_ = lib.edfq_pop(rq.q, self.d, self.id, self.c)
        if head is None:
            assert st_ == EMPTY and self._outputs_untouched()
            return
        assert st_ == OK
        if not use_null:
            assert (self.d[0], self.id[0], self.c[0]) == (head[0], head[2], head[3])
        rq.model.remove(head[2])

    @rule(rq=queues)
    def peek(self, rq: _RawQueue) -> None:
        head = rq.model.head()
        self._reset_outputs()
        st_ = lib.edfq_peek(rq.q, self.d, self.id, self.c)
        if head is None:
            assert st_ == EMPTY and self._outputs_untouched()
        else:
            assert st_ == OK and (self.d[0], self.id[0], self.c[0]) == (head[0], head[2], head[3])

    @rule(rq=queues, task_id=ids, use_null=st.booleans())
    def remove(self, rq: _RawQueue, task_id: int, use_null: bool) -> None:
        self._reset_outputs()
        found = rq.model.find(task_id)
        if use_null:
            st_ = lib.edfq_remove(rq.q, task_id, ffi.NULL, ffi.NULL)
        else:
            st_ = lib.edfq_remove(rq.q, task_id, self.d, self.c)
        if found is None:
            assert st_ == NOT_FOUND and self._outputs_untouched()
            return
        d, _, _, c = rq.model.remove(task_id)
        assert st_ == OK
        if not use_null:
            assert (self.d[0], self.c[0], self.id[0]) == (d, c, SENTINEL_U)

    @rule(rq=queues, task_id=ids, cost=any_costs)
    def update_cost(self, rq: _RawQueue, task_id: int, cost: int) -> None:
        found = rq.model.find(task_id)
        want = BAD_COST if cost < 0 else NOT_FOUND if found is None else OK
        assert lib.edfq_update_cost(rq.q, task_id, cost) == want
        if want == OK:
            assert found is not None
            d, seq, i, _ = rq.model.items[found]
            rq.model.items[found] = (d, seq, i, cost)

    @rule(rq=queues, index=st.integers(0, 2**32 - 1))
    def get_any_index(self, rq: _RawQueue, index: int) -> None:
        self._reset_outputs()
        st_ = lib.edfq_get(rq.q, index, self.d, self.id, self.c)
        ordered = rq.model.ordered()
        if index >= len(ordered):
            assert st_ == NOT_FOUND and self._outputs_untouched()
        else:
            d, _, i, c = ordered[index]
            assert st_ == OK and (self.d[0], self.id[0], self.c[0]) == (d, i, c)

    @rule(rq=queues, now=int64s)
    def slack(self, rq: _RawQueue, now: int) -> None:
        assert lib.edfq_slack(rq.q, now) == rq.model.slack(now)

    @rule(rq=queues, task_id=ids)
    def contains(self, rq: _RawQueue, task_id: int) -> None:
        assert lib.edfq_contains(rq.q, task_id) == (rq.model.find(task_id) is not None)

    @rule(rq=queues)
    def clear(self, rq: _RawQueue) -> None:
        lib.edfq_clear(rq.q)
        rq.model.items.clear()

    @rule(code=st.integers(-(2**31), 2**31 - 1))
    def strerror(self, code: int) -> None:
        text = ffi.string(lib.edfq_strerror(code)).decode()
        assert text and (text == "unknown edfq status") == (not (OK <= code <= BAD_COST))

    @invariant()
    def every_queue_matches_its_model(self) -> None:
        for rq in self.live:
            m = rq.model
            assert lib.edfq_len(rq.q) == len(m.items)
            assert lib.edfq_capacity(rq.q) == m.capacity
            for k, (d, _, i, c) in enumerate(m.ordered()):
                assert lib.edfq_get(rq.q, k, self.d, self.id, self.c) == OK
                assert (self.d[0], self.id[0], self.c[0]) == (d, i, c)


TestRawQueueMachine = RawQueueMachine.TestCase
TestRawQueueMachine.settings = _fuzz_settings(60)


# ---- the wrapper, large capacities -----------------------------------------------


#: the valid range of each argument of each method
_RANGES: dict[str, list[tuple[int, int]]] = {
    "push": [(I64_MIN, I64_MAX), (0, U64_MAX), (0, I64_MAX)],
    "update_cost": [(0, U64_MAX), (0, I64_MAX)],
    "remove": [(0, U64_MAX)],
    "slack": [(I64_MIN, I64_MAX)],
}


class WrapperQueueMachine(RuleBasedStateMachine):
    """:class:`DeadlineQueue` with capacities up to 256, bulk fills, id reuse, bad
    arguments to every method, metamorphic slack checks."""

    q: DeadlineQueue
    model: Model

    def __init__(self) -> None:
        super().__init__()
        self.gone: list[int] = []  # ids popped or removed: candidates for reuse

    @initialize(capacity=st.one_of(st.integers(1, 4), st.integers(16, 256)))
    def create(self, capacity: int) -> None:
        self.q = DeadlineQueue(capacity)
        self.model = Model(capacity)

    def _push(self, deadline: int, task_id: int, cost: int) -> None:
        want = self.model.push_status(task_id, cost)
        if want == DUPLICATE:
            with pytest.raises(DuplicateTaskIdError):
                self.q.push(deadline, task_id, cost)
        elif want == FULL:
            with pytest.raises(QueueFullError, match=f"capacity {self.model.capacity}"):
                self.q.push(deadline, task_id, cost)
        else:
            self.q.push(deadline, task_id, cost)
            self.model.push(deadline, task_id, cost)

    @rule(deadline=int64s, task_id=ids, cost=good_costs)
    def push(self, deadline: int, task_id: int, cost: int) -> None:
        self._push(deadline, task_id, cost)

    @rule(
        n=st.integers(1, 300),
        first_id=st.integers(0, U64_MAX - 300),
        base=st.integers(-(2**40), 2**40),
        step=st.integers(-3, 3),
    )
    def fill(self, n: int, first_id: int, base: int, step: int) -> None:
        """Many pushes at once, possibly past capacity: every one beyond is refused."""
        for k in range(n):
            self._push(base + step * k, first_id + k, k % 7)

    @precondition(lambda self: bool(self.gone))
    @rule(data=st.data(), deadline=int64s, cost=good_costs)
    def reuse_an_id(self, data: st.DataObject, deadline: int, cost: int) -> None:
        """An id that left the queue may be queued again."""
        self._push(deadline, data.draw(st.sampled_from(self.gone)), cost)

    @rule()
    def pop(self) -> None:
        head = self.model.head()
        if head is None:
            with pytest.raises(QueueEmptyError):
                self.q.pop()
            return
        assert self.q.pop() == QueueEntry(head[0], head[2], head[3])
        self.model.remove(head[2])
        self.gone.append(head[2])

    @precondition(lambda self: bool(self.model.items))
    @rule(data=st.data())
    def remove_queued(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from([it[2] for it in self.model.items]))
        d, _, _, c = self.model.remove(task_id)
        assert self.q.remove(task_id) == QueueEntry(d, task_id, c)
        self.gone.append(task_id)

    @rule(task_id=ids)
    def remove_absent_or_not(self, task_id: int) -> None:
        if self.model.find(task_id) is None:
            with pytest.raises(UnknownTaskIdError):
                self.q.remove(task_id)
        else:
            d, _, _, c = self.model.remove(task_id)
            assert self.q.remove(task_id) == QueueEntry(d, task_id, c)

    @precondition(lambda self: bool(self.model.items))
    @rule(data=st.data(), cost=good_costs)
    def update_queued(self, data: st.DataObject, cost: int) -> None:
        k = data.draw(st.integers(0, len(self.model.items) - 1))
        d, seq, i, _ = self.model.items[k]
        self.q.update_cost(i, cost)
        self.model.items[k] = (d, seq, i, cost)

    @rule(
        method=st.sampled_from(sorted(_RANGES)),
        bad=st.sampled_from(
            [None, 1.5, float("nan"), "7", b"7", True, I64_MIN - 1, I64_MAX + 1, U64_MAX + 1, -1]
        ),
        position=st.integers(0, 2),
    )
    def bad_argument(self, method: str, bad: Any, position: int) -> None:
        """Any refused call leaves the queue exactly as it was."""
        ranges = _RANGES[method]
        k = position % len(ranges)
        lo, hi = ranges[k]
        if type(bad) is int and lo <= bad <= hi:
            return  # a valid value (-1 as a deadline, 2**63 as an id): not this rule's
        call: list[Any] = [lo if lo > 0 else 0 for lo, _ in ranges]
        call[k] = bad
        before = self.q.entries()
        with pytest.raises((TypeError, ValueError)):
            getattr(self.q, method)(*call)
        assert self.q.entries() == before

    @rule(now=st.integers(-(2**50), 2**50), delta=st.integers(-(2**40), 2**40))
    def slack_shifts_with_now(self, now: int, delta: int) -> None:
        """slack(now + delta) == slack(now) - delta while nothing saturates."""
        a, b = self.q.slack(now), self.q.slack(now + delta)
        assert a == self.model.slack(now) and b == self.model.slack(now + delta)
        if not self.model.items:
            assert a == b == SLACK_INF
            return
        exact = all(abs(d) < 2**60 for d, _, _, _ in self.model.items)
        exact = exact and sum(c for _, _, _, c in self.model.items) < 2**61
        if exact:
            assert b == a - delta

    @rule(now=int64s)
    def slack_is_at_most_each_margin(self, now: int) -> None:
        """No task can do better than running first and alone."""
        s = self.q.slack(now)
        for d, _, _, c in self.model.items:
            assert s <= sat(sat(d - now) - c)

    @invariant()
    def same_entries(self) -> None:
        assert len(self.q) == len(self.model.items)
        assert self.q.entries() == self.model.entries()


TestWrapperQueueMachine = WrapperQueueMachine.TestCase
TestWrapperQueueMachine.settings = _fuzz_settings(40)
