"""Faults: what the arbiter detects, records and blames misses on; and fault plans,
the faults a test or an ``airan serve`` run injects on purpose.

Detected faults (:class:`FaultRecord`) come from measurement only, never from the
plan: the arbiter compares what the device did with what it predicted, so an injected
fault and a real one take the same path (``docs/reliability.md``).

* ``radio_overrun``: a radio slice ran longer than ``Policy.overrun_factor`` times its
  predicted high quantile.
* ``ai_hang``: an AI slice ran longer than ``overrun_factor`` times its budget
  (prediction plus guard). A GPU kernel cannot be preempted (see the architecture's
  facts), so the hang is seen when it ends; the watchdog of :mod:`airan.node` reports
  it while it lasts.
* ``executor_error``: the executor failed a slice (a CUDA error on a GPU, an exception
  on the CPU). The radio task it belonged to is lost (a miss); an AI slice's job ends.
* ``ai_raise``: an AI job's own code raised; the job ends (``ai.failed_jobs``), the rest
  goes on.

``l2_silence`` and ``l2_flood`` are the L2's faults: the node's O1 monitor raises
``l2Silence`` and the FAPI L1 bounds what a flood can cost per slot
(:mod:`airan.ran.fapi`); they cause no arbiter record.

Response (the ``airan`` policy): AI is shed first. No AI slice starts for
``Policy.shed_hold_us`` after a radio overrun, an AI hang or an executor error, and an
alarm is raised through O1 (3GPP TS 28.532 §11.2 fault supervision: ``radioFault``,
``aiFault``, ``executorFault``). Blame follows EDF's busy-period argument: a radio
deadline can only be missed inside a busy period (radio work pending without a break),
so a miss is blamed on the last fault detected in its busy period, or on none.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from airan.core.policy import TENANT_NAME, CheckedModel


class FaultKind(StrEnum):
    RADIO_OVERRUN = "radio_overrun"
    AI_HANG = "ai_hang"
    AI_RAISE = "ai_raise"
    EXECUTOR_ERROR = "executor_error"
    L2_SILENCE = "l2_silence"
    L2_FLOOD = "l2_flood"


#: the alarm source (O1 raises ``<source>Fault``) of each fault the arbiter records
ALARM_SOURCE: dict[FaultKind, str] = {
    FaultKind.RADIO_OVERRUN: "radio",
    FaultKind.AI_HANG: "ai",
    FaultKind.AI_RAISE: "ai",
    FaultKind.EXECUTOR_ERROR: "executor",
}


@dataclass(slots=True)
class FaultRecord:
    """One detected fault: ``fault_id`` (1, 2, ... per run), its kind, when it was seen
    (``t_ns``, executor clock, the end of the faulty slice), what it was and the radio
    misses blamed on it."""

    fault_id: int
    kind: FaultKind
    t_ns: int
    detail: str
    misses: int = 0

    def as_dict(self, t0_ns: int = 0) -> dict[str, object]:
        return {
            "fault_id": self.fault_id,
            "kind": str(self.kind),
            "t_us": (self.t_ns - t0_ns) / 1000.0,
            "detail": self.detail,
            "misses": self.misses,
        }


# -- fault plans ------------------------------------------------------------------------

#: which options each injected kind takes (besides kind, at_s, every_s, count)
_OPTIONS: dict[FaultKind, frozenset[str]] = {
    FaultKind.RADIO_OVERRUN: frozenset({"factor"}),
    FaultKind.AI_HANG: frozenset({"hang_ms", "tenant"}),
    FaultKind.AI_RAISE: frozenset({"tenant"}),
    FaultKind.EXECUTOR_ERROR: frozenset({"target"}),
    FaultKind.L2_SILENCE: frozenset({"duration_ms"}),
    FaultKind.L2_FLOOD: frozenset({"messages"}),
}
_COMMON = frozenset({"kind", "at_s", "every_s", "count"})


class FaultSpec(CheckedModel):
    """One fault to inject, ``count`` times: at ``at_s`` seconds after the run starts,
    then every ``every_s`` seconds. It fires on the first slice (or slot) that it can
    hit at or after its time.

    * ``radio_overrun``: the radio slice runs ``factor`` times its predicted duration.
    * ``ai_hang``: the AI slice (of ``tenant``, or any) runs ``hang_ms``.
    * ``ai_raise``: the AI job (of ``tenant``, or any) raises when asked for its next
      slice.
    * ``executor_error``: the executor fails the next ``target`` slice (``radio`` or
      ``ai``): a ``CUDARuntimeError`` on a GPU, an exception on the CPU.
    * ``l2_silence``: the L2 sends nothing for ``duration_ms``.
    * ``l2_flood``: the L2 sends ``messages`` extra (duplicate) slot requests at once.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    _where: ClassVar[str] = "faults"

    kind: FaultKind
    at_s: float = Field(0.0, ge=0.0, le=365 * 86_400.0)
    every_s: float | None = Field(None, ge=0.001, le=86_400.0)
    count: int = Field(1, ge=1, le=1_000_000)
    factor: float = Field(5.0, gt=1.0, le=1000.0)
    hang_ms: float = Field(20.0, gt=0.0, le=60_000.0)
    tenant: str | None = Field(None, pattern=f"^{TENANT_NAME}$")
    target: Literal["radio", "ai"] = "radio"
    duration_ms: float = Field(500.0, gt=0.0, le=3_600_000.0)
    messages: int = Field(10_000, ge=1, le=10_000_000)

    @model_validator(mode="after")
    def _options_fit_kind(self) -> FaultSpec:
        extra = sorted(self.model_fields_set - _COMMON - _OPTIONS[self.kind])
        if extra:
            allowed = ", ".join(sorted(_OPTIONS[self.kind])) or "none"
            raise ValueError(
                f"{', '.join(extra)} does not apply to a {self.kind} fault (its options: {allowed})"
            )
        if self.count > 1 and self.every_s is None:
            raise ValueError(f"count {self.count} needs every_s (the period between them)")
        return self

    def times_ns(self) -> list[int]:
        """When each occurrence is due, ns after the run's start."""
        every = self.every_s or 0.0
        return [round((self.at_s + k * every) * 1e9) for k in range(self.count)]


class FaultPlan(CheckedModel):
    """The faults to inject in one run (tests, ``airan serve``'s ``[[faults]]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _where: ClassVar[str] = "fault_plan"

    faults: list[FaultSpec] = Field(default_factory=list, max_length=64)


@dataclass(slots=True)
class Injection:
    """One occurrence of a planned fault, as it was injected: the plan entry
    (``spec``, its index), the occurrence, when it was due and when it fired
    (run-relative ns; ``fired_ns`` is -1 until it fires) and on what."""

    spec_index: int
    occurrence: int
    kind: FaultKind
    due_ns: int
    fired_ns: int = -1
    target: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "spec": self.spec_index,
            "occurrence": self.occurrence,
            "kind": str(self.kind),
            "due_us": self.due_ns / 1000.0,
            "fired_us": self.fired_ns / 1000.0 if self.fired_ns >= 0 else None,
            "target": self.target,
        }


class FaultSchedule:
    """When each planned fault is due, and which have fired (pure logic).

    Times are run-relative (ns since :meth:`start`). :meth:`take` hands out the earliest
    due occurrence of a kind that matches, once."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self.injections = [
            Injection(i, k, spec.kind, t)
            for i, spec in enumerate(plan.faults)
            for k, t in enumerate(spec.times_ns())
        ]
        self._pending: dict[FaultKind, list[Injection]] = {}
        self.start(0)

    def start(self, t0_ns: int) -> None:
        """A new run begins at ``t0_ns`` (clock of the caller); every fault is due again."""
        self.t0_ns = t0_ns
        self._pending = {}
        for inj in self.injections:
            inj.fired_ns = -1
            inj.target = ""
            self._pending.setdefault(inj.kind, []).append(inj)
        for lst in self._pending.values():
            lst.sort(key=lambda j: j.due_ns)

    def wants(self, kind: FaultKind) -> bool:
        """Whether any occurrence of ``kind`` has not fired yet."""
        return bool(self._pending.get(kind))

    def take(
        self,
        kind: FaultKind,
        now_ns: int,
        *,
        tenant: str | None = None,
        target: str = "radio",
        what: str = "",
    ) -> Injection | None:
        """The earliest due, unfired occurrence of ``kind`` that applies (its spec names
        no tenant or ``tenant``; an executor error, ``target``), marked fired at
        ``now_ns`` on ``what``; else ``None``."""
        lst = self._pending.get(kind)
        if not lst:
            return None
        t = now_ns - self.t0_ns
        for idx, inj in enumerate(lst):
            if inj.due_ns > t:
                return None
            spec = self.plan.faults[inj.spec_index]
            if spec.tenant is not None and spec.tenant != tenant:
                continue
            if kind is FaultKind.EXECUTOR_ERROR and spec.target != target:
                continue
            del lst[idx]
            inj.fired_ns = t
            inj.target = what
            return inj
        return None

    def spec(self, inj: Injection) -> FaultSpec:
        return self.plan.faults[inj.spec_index]

    def fired(self) -> list[Injection]:
        return [j for j in self.injections if j.fired_ns >= 0]
