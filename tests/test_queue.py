"""Tests of the C-backed EDF deadline queue (airan.sched.queue / airan._edfq).

The core of it is a hypothesis state machine that drives a DeadlineQueue and
a pure-Python oracle (a list sorted by (deadline, insertion seq)) with the
same operations, including every error path and extreme int64 values, and
checks after every step that both hold the same entries in the same order.
"""

from __future__ import annotations

import doctest
import enum
import gc
import importlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import airan.sched.queue
from airan.sched.queue import (
    SLACK_INF,
    DeadlineQueue,
    DuplicateTaskIdError,
    QueueEmptyError,
    QueueEntry,
    QueueError,
    QueueFullError,
    UnknownTaskIdError,
)

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
U64_MAX = 2**64 - 1


# ---- the oracle ---------------------------------------------------------------


def sat(x: int) -> int:
    """Clamp an exact (big) int to the int64 range, as the C code saturates."""
    return I64_MIN if x < I64_MIN else I64_MAX if x > I64_MAX else x


def oracle_slack(ordered: list[tuple[int, int]], now_ns: int) -> int:
    """edfq_slack's definition over (deadline, cost) pairs in queue order.

    S_j = sat(S_{j-1} + cost_j); slack = min_j sat(sat(deadline_j - now) - S_j).
    """
    best = SLACK_INF
    demand = 0
    for deadline, cost in ordered:
        demand = sat(demand + cost)
        best = min(best, sat(sat(deadline - now_ns) - demand))
    return best


class Oracle:
    """Pure-Python model of the queue: entries sorted by (deadline, seq)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: list[tuple[int, int, int, int]] = []  # (deadline, seq, id, cost)
        self.seq = 0

    def ids(self) -> set[int]:
        return {item[2] for item in self.items}

    def push(self, deadline: int, task_id: int, cost: int) -> None:
        self.items.append((deadline, self.seq, task_id, cost))
        self.seq += 1
        self.items.sort(key=lambda item: (item[0], item[1]))

    def pop(self) -> QueueEntry:
        deadline, _, task_id, cost = self.items.pop(0)
        return QueueEntry(deadline, task_id, cost)

    def index(self, task_id: int) -> int:
        return next(k for k, item in enumerate(self.items) if item[2] == task_id)

    def entries(self) -> list[QueueEntry]:
        return [QueueEntry(d, i, c) for d, _, i, c in self.items]

    def slack(self, now_ns: int) -> int:
        return oracle_slack([(d, c) for d, _, _, c in self.items], now_ns)


# ---- strategies ---------------------------------------------------------------

INT64_EDGES = [I64_MIN, I64_MIN + 1, -1, 0, 1, I64_MAX - 1, I64_MAX]
int64s = st.one_of(
    st.integers(-20, 20),  # small: lots of equal deadlines (FIFO ties)
    st.sampled_from(INT64_EDGES),
    st.integers(I64_MIN, I64_MAX),
)
costs = st.one_of(
    st.integers(0, 20),
    st.sampled_from([0, 1, 2**62, I64_MAX - 1, I64_MAX]),
    st.integers(0, I64_MAX),
)
bad_costs = st.one_of(st.integers(-5, -1), st.just(I64_MIN))
task_ids = st.one_of(
    st.integers(0, 12),  # small: lots of duplicate / known ids
    st.sampled_from([2**63, U64_MAX - 1, U64_MAX]),
)


# ---- the state machine ----------------------------------------------------------


class QueueMachine(RuleBasedStateMachine):
    """DeadlineQueue vs Oracle, step by step."""

    q: DeadlineQueue
    model: Oracle

    @initialize(capacity=st.integers(1, 8))
    def create(self, capacity: int) -> None:
        self.q = DeadlineQueue(capacity)
        self.model = Oracle(capacity)
        assert self.q.capacity == capacity

    @rule(deadline=int64s, task_id=task_ids, cost=costs)
    def push(self, deadline: int, task_id: int, cost: int) -> None:
        if task_id in self.model.ids():
            with pytest.raises(DuplicateTaskIdError, match=f"task_id {task_id} is already"):
                self.q.push(deadline, task_id, cost)
        elif len(self.model.items) == self.model.capacity:
            with pytest.raises(QueueFullError, match=rf"\(capacity {self.model.capacity}\)"):
                self.q.push(deadline, task_id, cost)
        else:
            self.q.push(deadline, task_id, cost)
            self.model.push(deadline, task_id, cost)

    @rule(deadline=int64s, task_id=task_ids, cost=bad_costs)
    def push_negative_cost(self, deadline: int, task_id: int, cost: int) -> None:
        with pytest.raises(ValueError, match=f"cost_ns must be >= 0, got {cost}"):
            self.q.push(deadline, task_id, cost)

    @rule()
    def pop(self) -> None:
        if not self.model.items:
            with pytest.raises(QueueEmptyError):
                self.q.pop()
        else:
            assert self.q.pop() == self.model.pop()

    @rule()
    def peek(self) -> None:
        if not self.model.items:
            with pytest.raises(QueueEmptyError):
                self.q.peek()
        else:
            assert self.q.peek() == self.model.entries()[0]

    @rule(task_id=task_ids)
    def remove(self, task_id: int) -> None:
        if task_id not in self.model.ids():
            with pytest.raises(UnknownTaskIdError, match=f"task_id {task_id} is not queued"):
                self.q.remove(task_id)
        else:
            deadline, _, _, cost = self.model.items.pop(self.model.index(task_id))
            assert self.q.remove(task_id) == QueueEntry(deadline, task_id, cost)

    @rule(task_id=task_ids, cost=costs)
    def update_cost(self, task_id: int, cost: int) -> None:
        if task_id not in self.model.ids():
            with pytest.raises(UnknownTaskIdError, match=f"task_id {task_id} is not queued"):
                self.q.update_cost(task_id, cost)
        else:
            k = self.model.index(task_id)
            deadline, seq, _, _ = self.model.items[k]
            self.model.items[k] = (deadline, seq, task_id, cost)
            self.q.update_cost(task_id, cost)

    @rule(task_id=task_ids, cost=bad_costs)
    def update_cost_negative(self, task_id: int, cost: int) -> None:
        with pytest.raises(ValueError, match=f"cost_ns must be >= 0, got {cost}"):
            self.q.update_cost(task_id, cost)

    @rule(now=int64s)
    def slack(self, now: int) -> None:
        assert self.q.slack(now) == self.model.slack(now)

    @rule(task_id=task_ids)
    def contains(self, task_id: int) -> None:
        assert (task_id in self.q) == (task_id in self.model.ids())

    @precondition(lambda self: len(self.model.items) > 0)
    @rule(data=st.data())
    def touch_queued_id(self, data: st.DataObject) -> None:
        """Operate on an id known to be queued (ids are otherwise drawn blind)."""
        task_id = data.draw(st.sampled_from(sorted(self.model.ids())))
        op = data.draw(st.sampled_from(["remove", "update_cost", "push_duplicate"]))
        k = self.model.index(task_id)
        deadline, seq, _, cost = self.model.items[k]
        if op == "remove":
            self.model.items.pop(k)
            assert self.q.remove(task_id) == QueueEntry(deadline, task_id, cost)
        elif op == "update_cost":
            new_cost = data.draw(costs)
            self.model.items[k] = (deadline, seq, task_id, new_cost)
            self.q.update_cost(task_id, new_cost)
        else:
            with pytest.raises(DuplicateTaskIdError):
                self.q.push(deadline, task_id, cost)

    @rule(
        arg=st.sampled_from(["deadline_ns", "task_id", "cost_ns"]),
        bad=st.sampled_from([True, 1.0, "1", None, I64_MAX + 1, I64_MIN - 1, U64_MAX + 1]),
    )
    def push_bad_argument(self, arg: str, bad: object) -> None:
        kwargs: dict[str, Any] = {"deadline_ns": 0, "task_id": 99, "cost_ns": 0}
        kwargs[arg] = bad
        if arg == "task_id" and bad == I64_MAX + 1:
            return  # a valid uint64 id
        expected = ValueError if type(bad) is int else TypeError
        with pytest.raises(expected, match=arg):
            self.q.push(**kwargs)

    @rule()
    def clear(self) -> None:
        self.q.clear()
        self.model.items.clear()

    @invariant()
    def same_entries(self) -> None:
        assert self.q.entries() == self.model.entries()
        assert len(self.q) == len(self.model.items)
        assert bool(self.q) == bool(self.model.items)


TestQueueMachine = QueueMachine.TestCase
TestQueueMachine.settings = settings(
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ---- the extension -----------------------------------------------------------


def test_extension_is_built() -> None:
    """The cffi extension must exist (no skip: the package is useless without it)."""
    mod = importlib.import_module("airan._edfq")
    lib, ffi = mod.lib, mod.ffi
    assert (lib.EDFQ_OK, lib.EDFQ_FULL, lib.EDFQ_EMPTY) == (0, 1, 2)
    assert (lib.EDFQ_DUPLICATE_ID, lib.EDFQ_NOT_FOUND, lib.EDFQ_BAD_COST) == (3, 4, 5)
    assert lib.EDFQ_SLACK_INF == SLACK_INF == I64_MAX
    messages = {ffi.string(lib.edfq_strerror(code)).decode() for code in range(6)}
    assert len(messages) == 6
    assert ffi.string(lib.edfq_strerror(99)) == b"unknown edfq status"
    assert lib.edfq_new(0) == ffi.NULL


def test_c_outputs_may_be_null() -> None:
    mod = importlib.import_module("airan._edfq")
    lib, ffi = mod.lib, mod.ffi
    q = ffi.gc(lib.edfq_new(2), lib.edfq_free)
    assert lib.edfq_push(q, 5, 1, 2) == lib.EDFQ_OK
    assert lib.edfq_peek(q, ffi.NULL, ffi.NULL, ffi.NULL) == lib.EDFQ_OK
    assert lib.edfq_get(q, 0, ffi.NULL, ffi.NULL, ffi.NULL) == lib.EDFQ_OK
    assert lib.edfq_get(q, 1, ffi.NULL, ffi.NULL, ffi.NULL) == lib.EDFQ_NOT_FOUND
    assert lib.edfq_remove(q, 1, ffi.NULL, ffi.NULL) == lib.EDFQ_OK
    assert lib.edfq_pop(q, ffi.NULL, ffi.NULL, ffi.NULL) == lib.EDFQ_EMPTY
    assert lib.edfq_push(q, 5, 1, -1) == lib.EDFQ_BAD_COST
    assert lib.edfq_len(q) == 0


# ---- ordering and slack --------------------------------------------------------


def test_edf_order_with_fifo_ties() -> None:
    q = DeadlineQueue(8)
    q.push(30, 1, 1)
    q.push(10, 2, 1)
    q.push(20, 3, 1)
    q.push(10, 4, 1)
    q.push(30, 5, 1)
    q.push(10, 6, 1)
    assert [e.task_id for e in q.entries()] == [2, 4, 6, 3, 1, 5]
    assert [q.pop().task_id for _ in range(len(q))] == [2, 4, 6, 3, 1, 5]


def test_worked_example_from_docs() -> None:
    q = DeadlineQueue(4)
    q.push(1_000, 1, 300)
    q.push(1_500, 2, 400)
    q.push(1_200, 3, 500)
    # queue order 1 (d=1000), 3 (d=1200), 2 (d=1500); S = 300, 800, 1200
    assert q.slack(100) == min(1_000 - 100 - 300, 1_200 - 100 - 800, 1_500 - 100 - 1_200)
    assert q.slack(100) == 200
    q.update_cost(1, 100)  # a slice of task 1 completed
    assert q.slack(100) == 200 + 200
    assert q.slack(700) == -200  # task 2 can no longer make it
    assert [e.task_id for e in q.entries()] == [1, 3, 2]  # cost change keeps order


def test_slack_empty_is_inf() -> None:
    q = DeadlineQueue(1)
    assert q.slack(0) == SLACK_INF
    assert q.slack(I64_MIN) == SLACK_INF
    q.push(0, 1, 0)
    q.pop()
    assert q.slack(I64_MAX) == SLACK_INF


@pytest.mark.parametrize(
    ("tasks", "now", "expected"),
    [
        ([(I64_MAX, 0)], I64_MIN, I64_MAX),  # deadline - now saturates high
        ([(I64_MIN, 0)], I64_MAX, I64_MIN),  # ... and low
        ([(I64_MAX, I64_MAX)], 0, 0),
        ([(I64_MAX, I64_MAX), (I64_MAX, I64_MAX)], 0, 0),  # demand saturates
        ([(0, I64_MAX), (I64_MAX, 5)], -1, I64_MIN + 2),  # min(1 - MAX, sat(MAX+1) - MAX)
        ([(I64_MIN, I64_MAX)], 0, I64_MIN),
        ([(-5, 0)], I64_MIN, I64_MAX - 4),  # -5 - MIN fits: no saturation
        ([(0, 2**62), (0, I64_MAX)], 0, I64_MIN + 1),  # a later task's demand saturates
    ],
)
def test_slack_saturates(tasks: list[tuple[int, int]], now: int, expected: int) -> None:
    q = DeadlineQueue(len(tasks))
    for k, (deadline, cost) in enumerate(tasks):
        q.push(deadline, k, cost)
    assert q.slack(now) == expected == oracle_slack(sorted(tasks, key=lambda t: t[0]), now)


@settings(max_examples=1000, deadline=None)
@given(tasks=st.lists(st.tuples(int64s, costs), min_size=1, max_size=8), now=int64s)
def test_slack_matches_oracle_on_extremes(tasks: list[tuple[int, int]], now: int) -> None:
    q = DeadlineQueue(8)
    for k, (deadline, cost) in enumerate(tasks):
        q.push(deadline, k, cost)
    assert q.slack(now) == oracle_slack(sorted(tasks, key=lambda t: t[0]), now)


@settings(max_examples=300, deadline=None)
@given(
    tasks=st.lists(
        st.tuples(st.integers(-(2**60), 2**60), st.integers(0, 2**50)), min_size=1, max_size=64
    ),
    now=st.integers(-(2**60), 2**60),
)
def test_slack_is_exact_on_realistic_timelines(tasks: list[tuple[int, int]], now: int) -> None:
    """Without saturation the slack is exactly min_j(d_j - now - sum of costs up to j)."""
    q = DeadlineQueue(64)
    for k, (deadline, cost) in enumerate(tasks):
        q.push(deadline, k, cost)
    ordered = sorted(tasks, key=lambda t: t[0])  # sorted() is stable: FIFO ties
    exact = min(d - now - sum(c for _, c in ordered[: j + 1]) for j, (d, _) in enumerate(ordered))
    assert q.slack(now) == exact


# ---- errors ------------------------------------------------------------------


def test_exception_hierarchy() -> None:
    assert issubclass(QueueEmptyError, QueueError)
    assert issubclass(QueueEmptyError, IndexError)
    assert issubclass(DuplicateTaskIdError, ValueError)
    assert issubclass(UnknownTaskIdError, LookupError)
    assert issubclass(QueueFullError, QueueError)
    for cls in (QueueFullError, QueueEmptyError, DuplicateTaskIdError, UnknownTaskIdError):
        assert issubclass(cls, QueueError)


def test_error_messages_and_queue_unchanged() -> None:
    q = DeadlineQueue(2)
    q.push(10, 7, 1)
    q.push(20, 8, 2)
    before = q.entries()

    with pytest.raises(QueueFullError, match=r"^deadline queue is full \(capacity 2\)$"):
        q.push(5, 9, 1)
    with pytest.raises(DuplicateTaskIdError, match=r"^task_id 7 is already queued$"):
        q.push(5, 7, 1)
    with pytest.raises(UnknownTaskIdError, match=r"^task_id 9 is not queued$"):
        q.remove(9)
    with pytest.raises(UnknownTaskIdError, match=r"^task_id 9 is not queued$"):
        q.update_cost(9, 1)
    with pytest.raises(ValueError, match=r"^cost_ns must be >= 0, got -5$"):
        q.push(5, 9, -5)
    with pytest.raises(ValueError, match=r"^cost_ns must be >= 0, got -5$"):
        q.update_cost(7, -5)
    assert q.entries() == before
    assert q.slack(0) == min(10 - 1, 20 - 3)

    q.clear()
    assert len(q) == 0 and not q
    with pytest.raises(QueueEmptyError, match="empty deadline queue"):
        q.pop()
    with pytest.raises(QueueEmptyError, match="empty deadline queue"):
        q.peek()
    with pytest.raises(IndexError):
        q.pop()
    assert q.entries() == []


def test_duplicate_reported_before_full() -> None:
    q = DeadlineQueue(1)
    q.push(1, 1, 1)
    with pytest.raises(DuplicateTaskIdError):
        q.push(1, 1, 1)


@pytest.mark.parametrize("capacity", [0, -1, 2**32, 2**64])
def test_capacity_out_of_range(capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity"):
        DeadlineQueue(capacity)


@pytest.mark.parametrize("capacity", [True, 4.0, "4", None])
def test_capacity_wrong_type(capacity: Any) -> None:
    with pytest.raises(TypeError, match="capacity"):
        DeadlineQueue(capacity)


BAD_TYPES: list[Any] = [True, False, 1.0, float("nan"), "1", None, b"1"]


def _call(q: DeadlineQueue, method: str, **kwargs: Any) -> None:
    getattr(q, method)(**kwargs)


METHOD_ARGS: list[tuple[str, dict[str, Any], str, int, int]] = [
    # (method, valid kwargs, argument under test, lowest valid, highest valid)
    ("push", {"deadline_ns": 0, "task_id": 1, "cost_ns": 0}, "deadline_ns", I64_MIN, I64_MAX),
    ("push", {"deadline_ns": 0, "task_id": 1, "cost_ns": 0}, "task_id", 0, U64_MAX),
    ("push", {"deadline_ns": 0, "task_id": 1, "cost_ns": 0}, "cost_ns", 0, I64_MAX),
    ("update_cost", {"task_id": 1, "cost_ns": 0}, "task_id", 0, U64_MAX),
    ("update_cost", {"task_id": 1, "cost_ns": 0}, "cost_ns", 0, I64_MAX),
    ("remove", {"task_id": 1}, "task_id", 0, U64_MAX),
    ("slack", {"now_ns": 0}, "now_ns", I64_MIN, I64_MAX),
]


@pytest.mark.parametrize(("method", "kwargs", "arg", "lo", "hi"), METHOD_ARGS)
def test_argument_validation(
    method: str, kwargs: dict[str, Any], arg: str, lo: int, hi: int
) -> None:
    q = DeadlineQueue(4)
    q.push(100, 1, 10)
    before = q.entries()
    for bad in BAD_TYPES:
        with pytest.raises(TypeError, match=f"^{arg} must be an int, got "):
            _call(q, method, **{**kwargs, arg: bad})
    for bad in (lo - 1, hi + 1, lo - 2**70, hi + 2**70):
        with pytest.raises(ValueError, match=f"^{arg} must "):
            _call(q, method, **{**kwargs, arg: bad})
    assert q.entries() == before


def test_extreme_valid_values_accepted() -> None:
    q = DeadlineQueue(4)
    q.push(I64_MIN, 0, I64_MAX)
    q.push(I64_MAX, U64_MAX, 0)
    assert U64_MAX in q and 0 in q
    assert q.peek() == QueueEntry(I64_MIN, 0, I64_MAX)
    q.update_cost(U64_MAX, I64_MAX)
    assert q.remove(U64_MAX) == QueueEntry(I64_MAX, U64_MAX, I64_MAX)
    assert q.slack(I64_MAX) == I64_MIN
    assert q.slack(I64_MIN) == sat(sat(I64_MIN - I64_MIN) - I64_MAX)


def test_int_subclasses_accepted() -> None:
    class Id(enum.IntEnum):
        RADIO = 3

    q = DeadlineQueue(2)
    q.push(Id.RADIO, Id.RADIO, Id.RADIO)
    entry = q.pop()
    assert entry == (3, 3, 3)
    assert all(type(v) is int for v in entry)
    q.push(1, Id.RADIO, 1)
    assert Id.RADIO in q
    q.update_cost(Id.RADIO, Id.RADIO)
    assert q.slack(Id.RADIO) == 1 - 3 - 3


def test_contains_rejects_non_ids() -> None:
    q = DeadlineQueue(2)
    q.push(1, 1, 1)
    q.push(1, 0, 1)
    assert 1 in q and 0 in q
    for other in (True, False, 1.0, "1", None, -1, U64_MAX + 1, object()):
        assert other not in q


# ---- misc ----------------------------------------------------------------------


def test_entries_is_a_snapshot() -> None:
    q = DeadlineQueue(3)
    q.push(1, 1, 1)
    snap = q.entries()
    q.push(0, 2, 1)
    assert snap == [QueueEntry(1, 1, 1)]
    assert q.entries() == [QueueEntry(0, 2, 1), QueueEntry(1, 1, 1)]
    assert isinstance(snap[0], QueueEntry)
    assert snap[0].deadline_ns == 1 and snap[0].task_id == 1 and snap[0].cost_ns == 1


def test_capacity_and_repr() -> None:
    q = DeadlineQueue(64)
    assert q.capacity == 64
    q.push(1, 1, 1)
    assert repr(q) == "DeadlineQueue(capacity=64, len=1)"


def test_fill_drain_refill() -> None:
    q = DeadlineQueue(5)
    for round_ in range(3):
        for k in range(5):
            q.push(5 - k, k + 10 * round_, k)
        with pytest.raises(QueueFullError):
            q.push(0, 999, 0)
        assert [q.pop().task_id for _ in range(5)] == [4 + 10 * round_ - k for k in range(5)]
        assert not q


def test_docstring_examples() -> None:
    failed, tried = doctest.testmod(airan.sched.queue)
    assert tried > 0 and failed == 0


def test_many_queues_are_freed() -> None:
    for _ in range(2_000):
        q = DeadlineQueue(1_000)
        q.push(1, 1, 1)
    del q
    gc.collect()
