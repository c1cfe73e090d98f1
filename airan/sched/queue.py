"""Deadline-ordered (EDF) ready queue of the radio tenant, backed by C.

:class:`DeadlineQueue` wraps ``native/edfq.c`` (built by cffi as
``airan._edfq``): a fixed-capacity array of ``(deadline_ns, task_id,
cost_ns)`` entries kept in earliest-deadline-first order, ties in deadline
broken first-in first-out.  Besides the usual queue operations it computes
the processor-demand *slack* of the queued radio work, which the arbiter uses
to decide whether AI work may be admitted (see ``docs/deadline-queue.md``).

Arguments are validated here, before the C code is called: every time or
cost is an ``int`` (``bool`` and ``float`` are refused) in the int64 range,
``cost_ns`` is ``>= 0`` and ``task_id`` is an ``int`` in the uint64 range.
A failed call raises and leaves the queue unchanged.

Neither the C queue nor this wrapper is thread-safe: a queue belongs to one
thread (the arbiter's).  The hot-path methods (``push``, ``pop``, ``peek``,
``slack``, ``update_cost``, ``len()``) reuse per-instance output buffers and
do no allocation beyond the returned tuple.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from airan._edfq import ffi, lib
from airan.core.errors import AiranError

if TYPE_CHECKING:
    from airan._edfq import _CData

__all__ = [
    "SLACK_INF",
    "DeadlineQueue",
    "DuplicateTaskIdError",
    "QueueEmptyError",
    "QueueEntry",
    "QueueError",
    "QueueFullError",
    "UnknownTaskIdError",
]

SLACK_INF: Final[int] = 2**63 - 1
""":meth:`DeadlineQueue.slack` of an empty queue (``INT64_MAX``)."""

_I64_MIN: Final = -(2**63)
_I64_MAX: Final = 2**63 - 1
_U64_MAX: Final = 2**64 - 1
_U32_MAX: Final = 2**32 - 1
_ENTRY_BYTES: Final = 32  # sizeof(edfq_entry_t), for ffi.gc's memory-pressure hint

# The C status codes.
_FULL: Final = lib.EDFQ_FULL
_EMPTY: Final = lib.EDFQ_EMPTY
_DUPLICATE_ID: Final = lib.EDFQ_DUPLICATE_ID
_NOT_FOUND: Final = lib.EDFQ_NOT_FOUND
_BAD_COST: Final = lib.EDFQ_BAD_COST

# C entry points, bound once (module globals are cheaper to reach than
# attribute lookups on ``lib`` in the hot path).
_new = lib.edfq_new
_free = lib.edfq_free
_push = lib.edfq_push
_pop = lib.edfq_pop
_peek = lib.edfq_peek
_remove = lib.edfq_remove
_update_cost = lib.edfq_update_cost
_contains = lib.edfq_contains
_get = lib.edfq_get
_len = lib.edfq_len
_clear = lib.edfq_clear
_slack = lib.edfq_slack


class QueueError(AiranError):
    """Base class of the errors raised by :class:`DeadlineQueue`."""


class QueueFullError(QueueError):
    """``push`` on a queue that already holds ``capacity`` tasks."""


class QueueEmptyError(QueueError, IndexError):
    """``pop`` or ``peek`` on an empty queue."""


class DuplicateTaskIdError(QueueError, ValueError):
    """``push`` of a ``task_id`` that is already queued."""


class UnknownTaskIdError(QueueError, LookupError):
    """``remove`` or ``update_cost`` of a ``task_id`` that is not queued."""


class QueueEntry(NamedTuple):
    """One queued task, as returned by ``pop``, ``peek``, ``remove``, ``entries``."""

    deadline_ns: int
    """Absolute deadline, ns on the arbiter's clock."""
    task_id: int
    """Caller-chosen id, unique within the queue (uint64)."""
    cost_ns: int
    """Predicted remaining processor time, ns (>= 0)."""


# tuple.__new__ builds a QueueEntry about twice as fast as QueueEntry(...),
# whose generated __new__ is a Python function.
_make_entry: Final[Callable[[type[QueueEntry], tuple[int, int, int]], QueueEntry]] = tuple.__new__

# The C functions report an entry into a per-queue int64_t[3] buffer
# (deadline_ns, id as uint64, cost_ns); one struct.unpack_from turns it into a
# tuple of ints about three times faster than three cdata reads.
_unpack_entry: Final[Callable[[Any], tuple[int, int, int]]] = struct.Struct("=qQq").unpack_from


# ---- argument validation (slow paths: only reached for non-plain or bad values)


def _checked_int(name: str, value: object, lo: int, hi: int) -> int:
    """``value`` as a plain ``int`` if it is an int (not bool) in ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)  # int subclasses (IntEnum, ...) -> int
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in the range [{lo}, {hi}], got {value}")
    return value


def _checked_i64(name: str, value: object) -> int:
    return _checked_int(name, value, _I64_MIN, _I64_MAX)


def _checked_task_id(value: object) -> int:
    return _checked_int("task_id", value, 0, _U64_MAX)


def _checked_cost(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        raise ValueError(f"cost_ns must be >= 0, got {value}")
    return _checked_int("cost_ns", value, 0, _I64_MAX)


class DeadlineQueue:
    """Fixed-capacity earliest-deadline-first queue of radio tasks (C-backed).

    Tasks are ``(deadline_ns, task_id, cost_ns)``; they leave in order of
    deadline, FIFO among equal deadlines.  ``task_id`` must be unique within
    the queue.  ``push``/``remove``/``update_cost``/``in`` are O(n),
    ``pop``/``peek``/``len`` O(1), ``slack`` one O(n) pass.  Not thread-safe.

    >>> q = DeadlineQueue(4)
    >>> q.push(1_000, task_id=1, cost_ns=300)
    >>> q.push(1_500, task_id=2, cost_ns=400)
    >>> q.slack(now_ns=100)  # min(1000-100-300, 1500-100-700)
    600
    >>> q.pop()
    QueueEntry(deadline_ns=1000, task_id=1, cost_ns=300)
    """

    __slots__ = ("__weakref__", "_buf", "_capacity", "_out", "_pc", "_pd", "_pid", "_q")

    _q: _CData
    _capacity: int
    _out: _CData  # int64_t[3]: deadline_ns, id (as uint64_t), cost_ns
    _pd: _CData  # &_out[0]
    _pid: _CData  # (uint64_t *)&_out[1]
    _pc: _CData  # &_out[2]
    _buf: Any  # ffi.buffer(_out)

    def __init__(self, capacity: int) -> None:
        """Create an empty queue holding at most ``capacity`` (1 .. 2**32-1) tasks.

        Raises ``TypeError`` if ``capacity`` is not an int, ``ValueError`` if it
        is out of range and ``MemoryError`` if the array cannot be allocated.
        """
        capacity = _checked_int("capacity", capacity, 1, _U32_MAX)
        raw = _new(capacity)
        if raw == ffi.NULL:
            raise MemoryError(f"cannot allocate a deadline queue of capacity {capacity}")
        self._q = ffi.gc(raw, _free, size=capacity * _ENTRY_BYTES)
        self._capacity = capacity
        # Output buffer reused by pop/peek/remove/entries.
        self._out = ffi.new("int64_t[3]")
        self._pd = self._out + 0
        self._pid = ffi.cast("uint64_t *", self._out + 1)
        self._pc = self._out + 2
        self._buf = ffi.buffer(self._out)

    # ---- hot path ---------------------------------------------------------

    def push(self, deadline_ns: int, task_id: int, cost_ns: int) -> None:
        """Queue task ``task_id`` due at ``deadline_ns`` needing ``cost_ns`` ns.

        Raises ``TypeError``/``ValueError`` for bad arguments (``cost_ns < 0``
        included), :class:`DuplicateTaskIdError` if ``task_id`` is already
        queued and :class:`QueueFullError` if the queue is full.
        """
        if type(deadline_ns) is not int or not _I64_MIN <= deadline_ns <= _I64_MAX:
            deadline_ns = _checked_i64("deadline_ns", deadline_ns)
        if type(task_id) is not int or not 0 <= task_id <= _U64_MAX:
            task_id = _checked_task_id(task_id)
        if type(cost_ns) is not int or not 0 <= cost_ns <= _I64_MAX:
            cost_ns = _checked_cost(cost_ns)
        rc = _push(self._q, deadline_ns, task_id, cost_ns)
        if rc:
            raise self._error(rc, task_id, cost_ns)

    def pop(self) -> QueueEntry:
        """Remove and return the earliest-deadline task (:class:`QueueEmptyError` if none)."""
        if _pop(self._q, self._pd, self._pid, self._pc):
            raise QueueEmptyError("pop from an empty deadline queue")
        return _make_entry(QueueEntry, _unpack_entry(self._buf))

    def peek(self) -> QueueEntry:
        """Return the earliest-deadline task, leaving it queued (QueueEmptyError if none)."""
        if _peek(self._q, self._pd, self._pid, self._pc):
            raise QueueEmptyError("peek at an empty deadline queue")
        return _make_entry(QueueEntry, _unpack_entry(self._buf))

    def update_cost(self, task_id: int, cost_ns: int) -> None:
        """Set the predicted remaining cost of a queued task; its place is unchanged.

        Raises ``TypeError``/``ValueError`` for bad arguments and
        :class:`UnknownTaskIdError` if ``task_id`` is not queued.
        """
        if type(task_id) is not int or not 0 <= task_id <= _U64_MAX:
            task_id = _checked_task_id(task_id)
        if type(cost_ns) is not int or not 0 <= cost_ns <= _I64_MAX:
            cost_ns = _checked_cost(cost_ns)
        rc = _update_cost(self._q, task_id, cost_ns)
        if rc:
            raise self._error(rc, task_id, cost_ns)

    def slack(self, now_ns: int) -> int:
        """Processor-demand slack of the queued tasks at time ``now_ns``.

        With the tasks in queue order and ``S_j`` the sum of the costs of the
        first ``j`` of them, this is ``min_j(deadline_j - now_ns - S_j)``: the
        least margin by which any task meets its deadline if they all run
        back-to-back from ``now_ns``; negative means a deadline cannot be met.
        Every intermediate step saturates to the int64 range (so the result
        is exact for any realistic timeline).  :data:`SLACK_INF` when empty.
        """
        if type(now_ns) is not int or not _I64_MIN <= now_ns <= _I64_MAX:
            now_ns = _checked_i64("now_ns", now_ns)
        return _slack(self._q, now_ns)

    def __len__(self) -> int:
        """Number of queued tasks."""
        return _len(self._q)

    def __bool__(self) -> bool:
        """True if any task is queued."""
        return _len(self._q) != 0

    # ---- the rest ---------------------------------------------------------

    def remove(self, task_id: int) -> QueueEntry:
        """Remove and return the task ``task_id`` wherever it is in the queue.

        Raises :class:`UnknownTaskIdError` if it is not queued.
        """
        if type(task_id) is not int or not 0 <= task_id <= _U64_MAX:
            task_id = _checked_task_id(task_id)
        rc = _remove(self._q, task_id, self._pd, self._pc)
        if rc:
            raise self._error(rc, task_id, None)
        deadline_ns, _, cost_ns = _unpack_entry(self._buf)
        return _make_entry(QueueEntry, (deadline_ns, task_id, cost_ns))

    def clear(self) -> None:
        """Drop every queued task."""
        _clear(self._q)

    @property
    def capacity(self) -> int:
        """Maximum number of tasks the queue can hold."""
        return self._capacity

    def __contains__(self, task_id: object) -> bool:
        """True if a task with this id is queued (False for anything not a valid id). O(n)."""
        if type(task_id) is not int or not 0 <= task_id <= _U64_MAX:
            if isinstance(task_id, bool) or not isinstance(task_id, int):
                return False
            if not 0 <= task_id <= _U64_MAX:
                return False
            task_id = int(task_id)
        return bool(_contains(self._q, task_id))

    def entries(self) -> list[QueueEntry]:
        """Snapshot of the queued tasks in queue order (head first). O(n)."""
        q, pd, pid, pc, buf = self._q, self._pd, self._pid, self._pc, self._buf
        out: list[QueueEntry] = []
        for index in range(_len(q)):
            _get(q, index, pd, pid, pc)
            out.append(_make_entry(QueueEntry, _unpack_entry(buf)))
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(capacity={self._capacity}, len={len(self)})"

    def _error(self, rc: int, task_id: int, cost_ns: int | None) -> Exception:
        """The exception for C status ``rc`` (never ``EDFQ_OK``)."""
        if rc == _FULL:
            return QueueFullError(f"deadline queue is full (capacity {self._capacity})")
        if rc == _DUPLICATE_ID:
            return DuplicateTaskIdError(f"task_id {task_id} is already queued")
        if rc == _NOT_FOUND:
            return UnknownTaskIdError(f"task_id {task_id} is not queued")
        if rc == _BAD_COST:
            return ValueError(f"cost_ns must be >= 0, got {cost_ns}")
        if rc == _EMPTY:
            return QueueEmptyError("the deadline queue is empty")
        reason = ffi.string(lib.edfq_strerror(rc)).decode()
        return QueueError(f"edfq status {rc}: {reason}")
