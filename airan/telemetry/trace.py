"""Execution traces of the arbiter in the Chrome / Perfetto trace-event JSON format.

A :class:`Recorder` attached to an :class:`~airan.sched.arbiter.Arbiter`
(``arbiter.recorder = Recorder(...)`` before :meth:`~airan.sched.arbiter.Arbiter.run`)
keeps, in a bounded ring, what the device ran and why:

* every radio slice (start, end, its task, slot, cell and deadline),
* every AI slice (tenant, operation, the budget it was admitted with, tokens),
* every arbiter decision (a radio slice issued in EDF order, an AI slice admitted into
  the slack, a late task dropped, a policy applied, a stop requested),
* every deadline miss.

:func:`write_trace` turns one or more recorders into the JSON object format of the
Trace Event Format (Google, "Trace Event Format", the ``traceEvents`` array with
``X`` complete events, ``i`` instant events and ``M`` metadata events), which the
Perfetto UI (https://ui.perfetto.dev) and ``chrome://tracing`` open directly. Each run
is one process in the trace (a benchmark puts its four policies side by side), with a
radio track, an arbiter track, one track per AI tenant and a slot-boundary track.

Recording costs one tuple append per slice and per decision; the ring keeps the last
``max_events`` of them (the ``otherData`` block of the trace says how many were
dropped), so a node may record for days in bounded memory.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airan.core.errors import FieldError
from airan.outputs import atomic_writer

#: events a command-line run keeps (``--trace``): about 200 MB of JSON at most
TRACE_EVENTS = 2_000_000

# Record tags (the first item of each record tuple).
_RADIO, _AI, _MISS, _DECISION, _MARK = range(5)

# Track ids inside a run's process.
_TID_SLOTS = 1
_TID_RADIO = 2
_TID_ARBITER = 3
_TID_AI0 = 10


@dataclass(frozen=True, slots=True)
class SliceRecord:
    """One slice the device ran, in ns on the executor's clock."""

    stream: str  # "radio" or "ai"
    start_ns: int
    end_ns: int
    op: str
    tenant: str  # the AI tenant, or the radio task's name ("pusch", "pdsch", "ul", ...)
    task_id: int = 0
    slot: int = 0
    cell: int = 0
    deadline_ns: int = 0  # radio only
    budget_ns: int = 0  # AI only: prediction plus guard it was admitted with


@dataclass(frozen=True, slots=True)
class MissRecord:
    """A radio task that ended after its deadline (or was dropped as late)."""

    t_ns: int
    task_id: int
    name: str
    slot: int
    cell: int
    deadline_ns: int
    dropped: bool
    fault_id: int = 0  # the detected fault blamed for it (airan.core.faults); 0: none


class Recorder:
    """A bounded ring of what the arbiter ran and decided (see the module docstring).

    ``slot_ns``: the slot length, to mark slot boundaries (slot 0 starts at
    ``first_slot_ns`` on the executor's clock; by default at the run's start).
    The arbiter's loop appends; :meth:`snapshot` and :func:`write_trace` may be called
    from another thread while it runs.
    """

    def __init__(
        self,
        max_events: int = 1_000_000,
        *,
        slot_ns: int | None = None,
        first_slot_ns: int | None = None,
        label: str = "airan",
    ) -> None:
        if isinstance(max_events, bool) or not isinstance(max_events, int):
            raise FieldError("max_events", f"must be an integer, got {max_events!r}")
        if not 1_000 <= max_events <= 50_000_000:
            raise FieldError("max_events", f"must be in [1000, 50000000], got {max_events}")
        if slot_ns is not None and (
            isinstance(slot_ns, bool) or not isinstance(slot_ns, int) or slot_ns <= 0
        ):
            raise FieldError("slot_ns", f"must be a positive integer, got {slot_ns!r}")
        self.max_events = max_events
        self.slot_ns = slot_ns
        self.first_slot_ns = first_slot_ns
        self.label = label
        self.t0_ns = 0
        self.policy = ""
        self.recorded = 0
        self._ring: deque[tuple[Any, ...]] = deque(maxlen=max_events)
        self._lock = threading.Lock()

    # -- called by the arbiter (hot path: keep these cheap) ---------------------------
    def begin(self, t0_ns: int, policy: str) -> None:
        """A run starts at ``t0_ns`` (the executor's clock) under ``policy``."""
        with self._lock:
            self.t0_ns = t0_ns
            self.policy = policy
            if self.first_slot_ns is None:
                self.first_slot_ns = t0_ns

    def radio(
        self, start: int, end: int, op: str, name: str, task_id: int, slot: int, cell: int,
        deadline: int,
    ) -> None:  # fmt: skip
        self.recorded += 1
        self._ring.append((_RADIO, start, end, op, name, task_id, slot, cell, deadline))

    def ai(self, start: int, end: int, op: str, tenant: str, budget: int, tokens: int) -> None:
        self.recorded += 1
        self._ring.append((_AI, start, end, op, tenant, budget, tokens))

    def miss(
        self,
        t: int,
        task_id: int,
        name: str,
        slot: int,
        cell: int,
        deadline: int,
        dropped: bool,
        fault_id: int = 0,
    ) -> None:
        self.recorded += 1
        self._ring.append((_MISS, t, task_id, name, slot, cell, deadline, dropped, fault_id))

    def decision(self, t: int, what: str, detail: dict[str, Any]) -> None:
        self.recorded += 1
        self._ring.append((_DECISION, t, what, detail))

    def mark(self, t: int, what: str, detail: dict[str, Any] | None = None) -> None:
        self.recorded += 1
        self._ring.append((_MARK, t, what, detail or {}))

    # -- reading -------------------------------------------------------------------------
    @property
    def dropped_events(self) -> int:
        """Events recorded but no longer in the ring (the oldest go first)."""
        return max(0, self.recorded - len(self._ring))

    def _records(self) -> list[tuple[Any, ...]]:
        # deque iteration while another thread appends may raise; copy under retry
        for _ in range(100):
            try:
                return list(self._ring)
            except RuntimeError:
                continue
        return []

    def slices(self) -> list[SliceRecord]:
        """The recorded slices, in completion order."""
        out: list[SliceRecord] = []
        for r in self._records():
            if r[0] == _RADIO:
                _, s, e, op, name, tid, slot, cell, dl = r
                out.append(SliceRecord("radio", s, e, op, name, tid, slot, cell, deadline_ns=dl))
            elif r[0] == _AI:
                _, s, e, op, tenant, budget, _tok = r
                out.append(SliceRecord("ai", s, e, op, tenant, budget_ns=budget))
        return out

    def misses(self) -> list[MissRecord]:
        return [MissRecord(*r[1:]) for r in self._records() if r[0] == _MISS]

    # -- trace events --------------------------------------------------------------------
    def trace_events(self, pid: int = 1) -> Iterator[dict[str, Any]]:
        """This run's events in the Trace Event Format, times in µs from its start."""
        t0 = self.t0_ns
        records = self._records()

        def us(t: int) -> float:
            return round((t - t0) / 1000.0, 3)

        yield _meta(pid, 0, "process_name", f"{self.label} (policy {self.policy})")
        yield {"ph": "M", "pid": pid, "name": "process_sort_index", "args": {"sort_index": pid}}
        for tid, name in (
            (_TID_SLOTS, "slots"),
            (_TID_RADIO, "radio"),
            (_TID_ARBITER, "arbiter decisions"),
        ):
            yield _meta(pid, tid, "thread_name", name)
            yield _sort(pid, tid)
        tenants: dict[str, int] = {}
        slot_ns = self.slot_ns
        first = self.first_slot_ns if self.first_slot_ns is not None else t0
        busy_slots: set[int] = set()  # slots in which a slice started: marked below
        for r in records:
            if slot_ns and r[0] in (_RADIO, _AI):
                busy_slots.add((r[1] - first) // slot_ns)
            tag = r[0]
            if tag == _RADIO:
                _, s, e, op, name, tid, slot, cell, dl = r
                yield {
                    "ph": "X",
                    "pid": pid,
                    "tid": _TID_RADIO,
                    "name": f"{name}.{op}",
                    "cat": "radio",
                    "ts": us(s),
                    "dur": round((e - s) / 1000.0, 3),
                    "args": {
                        "task": tid,
                        "slot": slot,
                        "cell": cell,
                        "deadline_us": us(dl),
                        "slack_us": round((dl - e) / 1000.0, 3),
                    },
                }
            elif tag == _AI:
                _, s, e, op, tenant, budget, tokens = r
                if tenant not in tenants:
                    tenants[tenant] = ttid = _TID_AI0 + len(tenants)
                    yield _meta(pid, ttid, "thread_name", f"AI: {tenant}")
                    yield _sort(pid, ttid)
                yield {
                    "ph": "X",
                    "pid": pid,
                    "tid": tenants[tenant],
                    "name": op,
                    "cat": "ai",
                    "ts": us(s),
                    "dur": round((e - s) / 1000.0, 3),
                    "args": {
                        "budget_us": round(budget / 1000.0, 3),
                        "overran": e - s > budget,
                        "tokens": tokens,
                    },
                }
            elif tag == _MISS:
                _, t, tid, name, slot, cell, dl, dropped, fault_id = r
                yield {
                    "ph": "i",
                    "s": "p",
                    "pid": pid,
                    "tid": _TID_RADIO,
                    "name": f"MISS {name} slot {slot} cell {cell}"
                    + (" (dropped)" if dropped else ""),
                    "cat": "miss",
                    "ts": us(t),
                    "args": {
                        "task": tid,
                        "deadline_us": us(dl),
                        "late_us": round((t - dl) / 1000.0, 3),
                        "fault": fault_id or None,
                    },
                }
            elif tag in (_DECISION, _MARK):
                _, t, what, detail = r
                yield {
                    "ph": "i",
                    "s": "t" if tag == _DECISION else "p",
                    "pid": pid,
                    "tid": _TID_ARBITER,
                    "name": what,
                    "cat": "decision" if tag == _DECISION else "control",
                    "ts": us(t),
                    "args": detail,
                }
        if slot_ns:
            # the start and the end of every slot in which a slice started
            edges = sorted({n for b in busy_slots for n in (b, b + 1) if n >= 0})
            for n in edges:
                yield {
                    "ph": "i",
                    "s": "t",
                    "pid": pid,
                    "tid": _TID_SLOTS,
                    "name": f"slot {n}",
                    "cat": "slot",
                    "ts": us(first + n * slot_ns),
                }


def _meta(pid: int, tid: int, name: str, value: str) -> dict[str, Any]:
    return {"ph": "M", "pid": pid, "tid": tid, "name": name, "args": {"name": value}}


def _sort(pid: int, tid: int) -> dict[str, Any]:
    return {
        "ph": "M",
        "pid": pid,
        "tid": tid,
        "name": "thread_sort_index",
        "args": {"sort_index": tid},
    }


def write_trace(
    path: Path | str, recorders: Sequence[Recorder], metadata: dict[str, Any] | None = None
) -> int:
    """Write ``recorders`` (one process each) to ``path`` as a Trace Event Format JSON
    object, atomically (a temp file, then ``os.replace``); return the event count."""
    if not recorders:
        raise FieldError("recorders", "give at least one Recorder")
    path = Path(path)
    other: dict[str, Any] = dict(metadata or {})
    other["runs"] = [
        {
            "pid": i + 1,
            "label": r.label,
            "policy": r.policy,
            "recorded": r.recorded,
            "dropped_events": r.dropped_events,
            "slot_us": r.slot_ns / 1000.0 if r.slot_ns else None,
        }
        for i, r in enumerate(recorders)
    ]
    n = 0
    with atomic_writer(path) as f:
        f.write('{"displayTimeUnit": "ms", "otherData": ')
        f.write(json.dumps(other, default=str))
        f.write(', "traceEvents": [\n')
        first = True
        for i, r in enumerate(recorders):
            for ev in r.trace_events(pid=i + 1):
                if not first:
                    f.write(",\n")
                f.write(json.dumps(ev, separators=(",", ":"), default=str))
                first = False
                n += 1
        f.write("\n]}\n")
    return n


def load_trace(path: Path | str) -> list[dict[str, Any]]:
    """The ``traceEvents`` of a trace file written by :func:`write_trace`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    events = data.get("traceEvents") if isinstance(data, dict) else None
    if not isinstance(events, list):
        raise FieldError(str(path), "is not a trace-event JSON object (no traceEvents list)")
    return events


def tracks(events: Iterable[dict[str, Any]]) -> dict[tuple[int, int], str]:
    """``(pid, tid) -> track name`` from the metadata events of a trace."""
    return {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
