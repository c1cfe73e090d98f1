"""The units of device work: slices, radio tasks and AI jobs.

A :class:`Slice` is one bounded piece of device work that cannot be preempted once it
starts (a GPU does not preempt a running kernel). A :class:`RanTask` is the radio work
of one channel in one slot: a chain of slices with a release time and an absolute
deadline (the slot timing of 3GPP TS 38.211 §4.3 fixes both). An :class:`AiJob` is a
best-effort job that yields slices until it is done.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from airan.core.errors import FieldError

Shape = tuple[tuple[str, int], ...]
SliceKey = tuple[str, Shape]


class SliceKind(StrEnum):
    """Which tenant a slice belongs to."""

    RAN = "ran"
    AI = "ai"


def _check_int(field_name: str, value: object, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(field_name, f"must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise FieldError(field_name, f"must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True, slots=True, eq=False)
class Slice:
    """One non-preemptible unit of device work.

    ``op`` names the operation (``"pusch.decode"``, ``"ai.decode"``) and ``shape`` its
    features (PRBs, layers, batch, tokens...): together they are the key under which
    the :class:`~airan.core.estimator.Estimator` learns the slice's duration.
    ``bound_ns`` is the declared upper bound of its duration, used until the estimator
    has seen enough samples. ``work`` issues the work on the device (executors call it;
    the simulator does not). ``tokens`` counts the AI tokens the slice completes.
    """

    kind: SliceKind
    op: str
    bound_ns: int
    shape: Shape = ()
    work: Callable[[], object] | None = None
    tokens: int = 0
    key: SliceKey = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, SliceKind):
            raise FieldError(
                "Slice.kind", f"must be SliceKind.RAN or SliceKind.AI, got {self.kind!r}"
            )
        if not isinstance(self.op, str) or not self.op:
            raise FieldError("Slice.op", f"must be a non-empty string, got {self.op!r}")
        _check_int("Slice.bound_ns", self.bound_ns, 1)
        _check_int("Slice.tokens", self.tokens, 0)
        if self.work is not None and not callable(self.work):
            raise FieldError("Slice.work", f"must be callable or None, got {self.work!r}")
        shape = self.shape
        if isinstance(shape, Mapping):
            shape = tuple(sorted(shape.items()))
        for name, value in shape:
            if not isinstance(name, str):
                raise FieldError("Slice.shape", f"feature names must be strings, got {name!r}")
            _check_int(f"Slice.shape[{name}]", value)
        object.__setattr__(self, "shape", tuple(shape))
        object.__setattr__(self, "key", (self.op, tuple(shape)))

    @classmethod
    def make(
        cls,
        kind: SliceKind,
        op: str,
        bound_ns: int,
        shape: Mapping[str, int] | None = None,
        work: Callable[[], object] | None = None,
        tokens: int = 0,
    ) -> Slice:
        """Build a slice from a ``{feature: value}`` mapping of shape features."""
        return cls(kind, op, bound_ns, tuple(sorted((shape or {}).items())), work, tokens)


_task_ids = itertools.count(1)
_END = object()  # never returned by a source: lets ``iter(next_slice, _END)`` pass None on


@dataclass(slots=True, eq=False)
class RanTask:
    """The radio work of one channel in one slot: a chain of slices run in order.

    ``release_ns`` is when the work may start (the samples are in, or the L2 has
    handed over the slot request) and ``deadline_ns`` the absolute time by which its
    last slice must have completed. Times are on the executor's clock.
    """

    release_ns: int
    deadline_ns: int
    slices: tuple[Slice, ...]
    name: str = "ran"
    slot: int = 0
    cell: int = 0
    task_id: int = 0
    next_index: int = 0
    completed_ns: int = -1

    def __post_init__(self) -> None:
        slices = self.slices
        if (  # the common, valid case in one cheap test; anything else is checked in full
            type(self.release_ns) is int
            and type(self.deadline_ns) is int
            and 0 <= self.release_ns < self.deadline_ns
            and type(slices) is tuple
            and slices
            and all(type(s) is Slice and s.kind is SliceKind.RAN for s in slices)
            and self.task_id == 0
        ):
            self.task_id = next(_task_ids)
            return
        _check_int("RanTask.release_ns", self.release_ns, 0)
        if self.deadline_ns is None:
            raise FieldError("RanTask.deadline_ns", "is required: radio work always has a deadline")
        _check_int("RanTask.deadline_ns", self.deadline_ns)
        if self.deadline_ns <= self.release_ns:
            raise FieldError(
                "RanTask.deadline_ns",
                f"must be after release_ns ({self.release_ns}), got {self.deadline_ns}",
            )
        slices = tuple(self.slices)
        if not slices:
            raise FieldError("RanTask.slices", "must hold at least one slice")
        for s in slices:
            if not isinstance(s, Slice) or s.kind is not SliceKind.RAN:
                raise FieldError("RanTask.slices", f"must be RAN slices, got {s!r}")
        self.slices = slices
        if self.task_id == 0:
            self.task_id = next(_task_ids)
        else:
            _check_int("RanTask.task_id", self.task_id, 1)

    @property
    def done(self) -> bool:
        return self.next_index >= len(self.slices)


@dataclass(frozen=True, slots=True)
class Slo:
    """An AI job's service-level objective (both optional)."""

    ttft_ms: float | None = None
    tokens_per_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("ttft_ms", "tokens_per_s"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise FieldError(f"Slo.{name}", f"must be > 0, got {v!r}")


class SliceSource(Protocol):
    """An object that hands out slices one at a time; ``None`` when the job is done.

    It may also have ``refused(slice)``: called when the arbiter will not issue the
    slice it offered (predicted over the largest AI slice), so that it offers a smaller
    one next."""

    def next_slice(self) -> Slice | None: ...


class AiJob:
    """A best-effort inference job: a sequence of AI slices, a tenant and a priority class.

    ``source`` is an iterable of slices (a generator, say) or an object with a
    ``next_slice()`` method. The arbiter looks at the next slice (:meth:`peek`) to
    predict its duration before deciding, and takes it (:meth:`take`) only when it
    issues it. Higher ``priority`` goes first among AI jobs.
    """

    __slots__ = (
        "_exhausted",
        "_it",
        "_next",
        "_on_refuse",
        "_src",
        "busy_ns",
        "error",
        "job_id",
        "priority",
        "slices_done",
        "slo",
        "tenant",
        "tokens",
    )

    _ids = itertools.count(1)

    def __init__(
        self,
        source: Iterable[Slice] | SliceSource,
        tenant: str = "default",
        priority: int = 0,
        slo: Slo | None = None,
    ) -> None:
        if not isinstance(tenant, str) or not tenant:
            raise FieldError("AiJob.tenant", f"must be a non-empty string, got {tenant!r}")
        self.priority = _check_int("AiJob.priority", priority)
        if slo is not None and not isinstance(slo, Slo):
            raise FieldError("AiJob.slo", f"must be a Slo or None, got {slo!r}")
        self._on_refuse = getattr(source, "refused", None)
        # A source with ``done`` may say "nothing now" (``None``) without ending the job.
        self._src: Any = source if hasattr(source, "done") else None
        if hasattr(source, "next_slice"):
            nxt = source.next_slice
            self._it: Iterator[Slice | None] = iter(nxt, _END) if self._src else iter(nxt, None)
        elif isinstance(source, Iterable):
            self._it = iter(source)
        else:
            raise FieldError(
                "AiJob.source", "must be an iterable of slices or have a next_slice() method"
            )
        self.tenant = tenant
        self.slo = slo
        self.job_id = next(AiJob._ids)
        self._next: Slice | None = None
        self._exhausted = False
        self.error: str | None = None
        self.busy_ns = 0
        self.tokens = 0
        self.slices_done = 0

    def peek(self) -> Slice | None:
        """The next slice, without taking it; ``None`` once the job is done.

        A source that raises, or yields something other than an AI slice, ends the
        job with :attr:`error` set: one failing job never stops the radio or the other
        jobs."""
        if self._next is None and not self._exhausted:
            try:
                s = next(self._it, None)
            except Exception as exc:
                self._fail(f"the job's source raised {type(exc).__name__}: {exc}")
                return None
            if s is None:
                if self._src is not None and not self._src.done:
                    return None  # nothing now; more later
                self._exhausted = True
                return None
            if type(s) is not Slice or s.kind is not SliceKind.AI:
                self._fail(f"the job's source yielded {s!r}, not an AI Slice")
                return None
            self._next = s
        return self._next

    def wrap_source(self, wrap: Callable[[Iterator[Any]], Iterator[Any]]) -> None:
        """Put ``wrap`` around the job's source: every slice asked for passes through it
        (fault injection, :mod:`airan.sched.faults`)."""
        self._it = wrap(self._it)

    def fail(self, reason: str) -> None:
        """End the job with :attr:`error` set (its slice failed on the device); the rest
        goes on."""
        self._next = None
        self._fail(reason)

    def _fail(self, reason: str) -> None:
        self._exhausted = True
        self.error = f"AiJob[{self.job_id}] (tenant {self.tenant}): {reason}"

    def refuse(self) -> bool:
        """Tell the source its next slice was refused (predicted over the largest AI
        slice). A source with a ``refused(slice)`` method re-plans (a smaller slice next
        time) and ``True`` is returned; otherwise the slice stays next, and ``False``."""
        if self._on_refuse is None or self._next is None:
            return False
        s, self._next = self._next, None
        try:
            self._on_refuse(s)
        except Exception as exc:  # like a failing source: the job ends, the rest goes on
            self._fail(f"the job's source raised {type(exc).__name__} in refused(): {exc}")
            return False
        return True

    def take(self) -> Slice:
        """Take the slice :meth:`peek` returned."""
        s = self._next
        if s is not None:
            self._next = None
            return s
        s = self.peek()
        if s is None:
            raise FieldError(f"AiJob[{self.job_id}]", "has no slice left to take")
        self._next = None
        return s

    @property
    def done(self) -> bool:
        return self._next is None and self._exhausted
