"""The arbiter: radio work in EDF order, AI only in the radio's slack.

One loop drives every executor (simulated, CPU, CUDA). At each event (a radio task
announced or released, a slice completed, a timer) the loop asks the strategy chosen
by ``Policy.name`` what to issue next:

``airan``
    Radio first, always: at each slice boundary, while radio work is released and
    unfinished, the radio slice of the earliest deadline is issued (EDF at slice
    boundaries; nothing is queued behind a running slice). AI is issued only when no
    radio work is pending or running, at most one AI slice at a time, and
    only if the slice's predicted high-quantile duration plus ``guard_us``
    (a) is at most ``max_ai_slice_us`` and (b) fits in the slack of the radio work
    already announced (slot indications arrive ``lookahead_us`` ahead), and the AI
    share cap allows it.
``exclusive``
    Radio alone (the latency reference).
``fifo``
    No arbitration: radio slices and up to ``fifo_depth`` AI slices go to one device
    queue in the order they come (what naive sharing does).
``tdm``
    A static time split: radio work starts only in the first ``tdm_radio_share`` of
    each ``tdm_period_us`` frame, AI only in the rest and only if it ends in time.

The guarantee (``docs/guarantee.md``; tested in ``tests/test_guarantee.py``): with
``airan``, if the radio task set is EDF-feasible with a blocking term of
``B = max(max_ai_slice, largest radio slice)`` and every admitted AI slice ends within
its budget (prediction plus guard), no radio deadline is missed, whatever the AI load.
The proof is the classic EDF processor-demand argument with one blocking: AI never
starts while radio work is pending and nothing is queued behind a running slice, so
in any busy period of radio work with deadlines up to ``d`` at most one other slice
(started before the period) runs.

Late radio work is worthless to the air interface (a slot not ready at its air time
is lost), so the EDF strategies drop a task whose deadline has passed before its next
slice starts; it counts as a miss (``ran.dropped``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from airan.core.errors import FieldError
from airan.core.estimator import Estimator
from airan.core.faults import FaultKind, FaultRecord
from airan.core.policy import Policy, TenantPolicy
from airan.core.report import (
    AiSection,
    ArbiterSection,
    FaultSection,
    LatencyStats,
    Percentiles,
    RanSection,
    Reservoir,
    RunReport,
    TenantUsage,
    latency_cdf_us,
)
from airan.core.slices import AiJob, RanTask, Slice
from airan.sched.executors import NEVER, Completion, Executor, Failed, Stream
from airan.sched.queue import DeadlineQueue, QueueFullError

if TYPE_CHECKING:
    from airan.sched.faults import FaultInjector
    from airan.telemetry.trace import Recorder

_DECISION_SAMPLE_MASK = 7  # time one decision in 8

#: slack of finished radio tasks is counted in buckets of this width (ns) ...
SLACK_BUCKET_NS = 10_000
#: ... up to this many buckets (the last one holds all larger slacks)
SLACK_BUCKETS = 1000
#: latency and decision-time samples kept per run (a uniform reservoir beyond this)
SAMPLES_KEPT = 1 << 18
#: detected faults kept (the oldest go first; counts by kind are kept whole)
FAULTS_KEPT = 256


def _when(item: RanTask | int | None) -> int:
    """When a radio item needs the loop: a task's release, a pause's time, or never."""
    if item is None:
        return NEVER
    return item if type(item) is int else item.release_ns  # type: ignore[union-attr]


class ControlTimeoutError(FieldError):
    """A change the arbiter's loop did not take in time; it was withdrawn, nothing
    applied."""


class ControlTicket:
    """A policy change handed to a running arbiter from another thread.

    The caller (an E2 control, an O1 set) gets the ticket back at once and may
    :meth:`wait` for the loop to apply it. ``requested_ns`` and ``applied_ns`` are
    ``time.perf_counter_ns`` readings: their difference is the control-to-effect
    latency. ``error`` is set (and nothing applied) if the policy was refused.
    """

    __slots__ = ("_done", "_lock", "applied_ns", "cancelled", "error", "policy", "requested_ns")

    def __init__(self, policy: Policy | None) -> None:
        self.policy = policy  # None: a stop request
        self.requested_ns = time.perf_counter_ns()
        self.applied_ns = -1
        self.error: FieldError | None = None
        self.cancelled = False
        self._done = threading.Event()
        self._lock = threading.Lock()

    def cancel(self) -> bool:
        """Withdraw a change the loop has not applied yet (e.g. after a timeout): True if
        withdrawn (it will never apply), False if it was applied or refused already."""
        with self._lock:
            if self._done.is_set():
                return False
            self.cancelled = True
            self._done.set()
            return True

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until applied or refused; ``False`` on timeout."""
        return self._done.wait(timeout_s)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def _finish(self, error: FieldError | None) -> None:
        self.error = error
        self.applied_ns = time.perf_counter_ns()
        self._done.set()


@dataclass(frozen=True, slots=True)
class Counters:
    """The arbiter's cumulative counters at one instant (read from any thread).

    Two snapshots give the figures of the period between them (E2 KPM reports,
    O1 measurement events): see :func:`period_figures`.
    """

    t_ns: int  # perf_counter_ns of the snapshot
    elapsed_ns: int  # run time so far
    tasks: int
    misses: int
    radio_busy_ns: int
    ai_busy_ns: int
    ai_slices: int
    ai_tokens: int
    tenant_busy_ns: dict[str, int]
    slack_hist: tuple[int, ...]


def period_figures(a: Counters, b: Counters, slack_quantile: float = 0.01) -> dict[str, float]:
    """Co-scheduling figures over the period from snapshot ``a`` to ``b``.

    ``deadline_met_ratio`` (1.0 when no task ended), ``radio_busy``, ``ai_busy`` and
    ``harvest_ratio`` (AI busy over the time the radio left idle) are ratios of the
    period; ``radio_slack_low_us`` is the ``slack_quantile`` of finished tasks' slack
    (deadline minus completion; 0 for a miss) at 10 µs resolution, ``-1`` when no task
    finished; ``ai_tokens_per_s`` is over the period; ``tenant.<name>.busy`` is each
    tenant's share of the period.
    """
    span = max(b.elapsed_ns - a.elapsed_ns, 1)
    tasks = b.tasks - a.tasks
    misses = b.misses - a.misses
    radio = b.radio_busy_ns - a.radio_busy_ns
    ai = b.ai_busy_ns - a.ai_busy_ns
    hist = [y - x for x, y in zip(a.slack_hist, b.slack_hist, strict=True)]
    total = sum(hist)
    low = -1.0
    if total:
        rank = max(1, int(total * slack_quantile + 0.999999))
        seen = 0
        for i, n in enumerate(hist):
            seen += n
            if seen >= rank:
                low = i * SLACK_BUCKET_NS / 1000.0
                break
    out = {
        "deadline_met_ratio": (tasks - misses) / tasks if tasks > 0 else 1.0,
        "radio_busy": radio / span,
        "ai_busy": ai / span,
        "harvest_ratio": min(1.0, ai / max(span - radio, 1)),
        "radio_slack_low_us": low,
        "ai_tokens_per_s": (b.ai_tokens - a.ai_tokens) / (span / 1e9),
        "radio_tasks": float(tasks),
        "radio_misses": float(misses),
    }
    for name, busy in b.tenant_busy_ns.items():
        out[f"tenant.{name}.busy"] = (busy - a.tenant_busy_ns.get(name, 0)) / span
    return out


@dataclass(slots=True)
class Progress:
    """A snapshot handed to the progress callback while a run goes on."""

    now_ns: int
    duration_ns: int
    ran_tasks: int
    ran_misses: int
    ai_slices: int
    ai_tokens: int


class Strategy:
    """How the device is shared: one subclass per ``Policy.name``.

    The arbiter calls :meth:`on_release` when a radio task is released,
    :meth:`on_radio_progress` / :meth:`on_radio_finished` when one of its slices
    completes, and :meth:`dispatch` at every event; ``dispatch`` issues what the
    strategy allows now and returns the next time it wants to be called even if
    nothing else happens (or ``NEVER``).
    """

    name: ClassVar[str]

    def __init__(self, arb: Arbiter) -> None:
        self.arb = arb

    def on_release(self, task: RanTask) -> None:
        self.arb.ready.push(task.deadline_ns, task.task_id, self.arb.remaining_cost(task))

    def on_radio_progress(self, task: RanTask, remaining_ns: int) -> None:
        self.arb.ready.update_cost(task.task_id, remaining_ns)

    def on_radio_finished(self, task: RanTask) -> None:
        self.arb.ready.remove(task.task_id)

    def dispatch(self, now: int) -> int:
        raise NotImplementedError


class ExclusiveStrategy(Strategy):
    """The radio alone: EDF, AI never runs."""

    name = "exclusive"

    def dispatch(self, now: int) -> int:
        arb = self.arb
        if arb.radio_inflight == 0 and arb.ready:
            arb.issue_edf(now)
        return NEVER


class AiranStrategy(Strategy):
    """Radio first in EDF order; AI in the slack, one bounded slice at a time."""

    name = "airan"

    def dispatch(self, now: int) -> int:
        arb = self.arb
        # Nothing is issued while a slice runs: a slice queued behind a running one is
        # committed, and a radio task released meanwhile with an earlier deadline would
        # be blocked twice (by the AI slice, then by the queued one). At each slice
        # boundary the earliest deadline goes first.
        if arb.radio_inflight or arb.ai_inflight:
            return NEVER
        if arb.ready and arb.issue_edf(now):
            return NEVER
        if not arb.ai_open:
            return NEVER
        if now < arb.shed_until:  # a fault was detected: AI is shed first
            return arb.shed_until
        pick = arb.pick_ai(now)
        if pick is None:
            return arb.ai_wake
        job, budget = pick
        # Announced radio work must keep its slack (the ready queue is empty here).
        if budget > arb.known.slack(now):
            return NEVER
        if arb.share_cap < 1.0:
            wait_until = arb.share_gate(now, budget)
            if wait_until > now:
                return wait_until
        arb.issue_ai(job, budget)
        return NEVER


class FifoStrategy(Strategy):
    """No arbitration: everything goes to one device queue in arrival order."""

    name = "fifo"

    def on_release(self, task: RanTask) -> None:
        self.arb.issue_radio(task, Stream.SHARED)

    def on_radio_progress(self, task: RanTask, remaining_ns: int) -> None:
        self.arb.issue_radio(task, Stream.SHARED)

    def on_radio_finished(self, task: RanTask) -> None:
        pass

    def dispatch(self, now: int) -> int:
        arb = self.arb
        if not arb.ai_open:
            return NEVER
        depth = arb.policy.fifo_depth
        guard = arb.guard_ns
        while arb.ai_inflight < depth:
            for job in arb.jobs:
                if arb.tenants[job.tenant].paused:
                    continue
                s = job.peek()
                if s is not None:
                    arb.issue_ai(job, arb.estimator.predict(s) + guard, Stream.SHARED)
                    break
            else:
                break
        return NEVER


class TdmStrategy(Strategy):
    """A static split of every frame: radio window first, then the AI window."""

    name = "tdm"

    def dispatch(self, now: int) -> int:
        arb = self.arb
        period = arb.tdm_period_ns
        frame = now - now % period
        radio_end = frame + arb.tdm_radio_ns
        if now < radio_end:
            if arb.radio_inflight == 0 and arb.ready:
                arb.issue_edf(now)
            return radio_end
        frame_end = frame + period
        if arb.radio_inflight or arb.ai_inflight or not arb.ai_open:
            return frame_end
        pick = arb.pick_ai(now)
        if pick is not None and now + pick[1] <= frame_end:
            arb.issue_ai(*pick)
        return frame_end


class TenantState:
    """What the arbiter tracks per AI tenant: its policy, fair-share clock and quota."""

    __slots__ = ("bucket", "burst", "paused", "rate", "served_ns", "t_last", "throttled", "weight")

    def __init__(self, tp: TenantPolicy, window_ns: int) -> None:
        self.served_ns = 0.0  # device time used, for weighted fair queueing
        self.bucket = 0.0  # quota tokens, in ns of device time; starts empty
        self.t_last = 0
        self.throttled = 0
        self.apply(tp, window_ns)

    def apply(self, tp: TenantPolicy, window_ns: int, now: int = 0) -> None:
        old_weight = getattr(self, "weight", tp.weight)
        if tp.weight != old_weight:  # keep its place in the fair order: same served/weight
            self.served_ns = self.served_ns / old_weight * tp.weight
        self.weight = tp.weight
        self.paused = tp.paused
        rate = 0.0 if tp.quota_us_per_s is None else tp.quota_us_per_s / 1e6
        if rate != getattr(self, "rate", None):  # a new quota starts from an empty bucket
            self.bucket = 0.0
            self.t_last = now
        self.rate = rate
        self.burst = self.rate * window_ns
        self.bucket = min(self.bucket, self.burst)

    def quota_wait(self, now: int, need_ns: int) -> int:
        """``now`` if the quota allows ``need_ns`` more, else when it will."""
        rate = self.rate
        if rate == 0.0:
            return now
        self.bucket = min(self.burst, self.bucket + rate * (now - self.t_last))
        self.t_last = now
        if self.bucket >= need_ns:
            return now
        return now + int((need_ns - self.bucket) / rate) + 1


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (AiranStrategy, ExclusiveStrategy, FifoStrategy, TdmStrategy)
}


class Arbiter:
    """Shares one executor between radio tasks and AI jobs under a :class:`Policy`."""

    def __init__(
        self,
        executor: Executor,
        policy: Policy | None = None,
        estimator: Estimator | None = None,
        *,
        queue_capacity: int = 4096,
        progress: Callable[[Progress], None] | None = None,
        progress_every_s: float = 0.2,
    ) -> None:
        if isinstance(queue_capacity, bool) or not isinstance(queue_capacity, int):
            raise FieldError("queue_capacity", f"must be an integer, got {queue_capacity!r}")
        if not 1 <= queue_capacity <= 1 << 24:
            raise FieldError("queue_capacity", f"must be in [1, 2**24], got {queue_capacity}")
        if not isinstance(progress_every_s, int | float) or not 0.001 <= progress_every_s <= 3600:
            raise FieldError(
                "progress_every_s", f"must be in [0.001, 3600] seconds, got {progress_every_s!r}"
            )
        self.executor = executor
        self.estimator = estimator if estimator is not None else Estimator()
        #: released, unfinished radio tasks (EDF order)
        self.ready = DeadlineQueue(queue_capacity)
        #: announced radio tasks not yet released: whose slack AI must respect
        self.known = DeadlineQueue(queue_capacity)
        self.tasks: dict[int, RanTask] = {}
        self.jobs: list[AiJob] = []
        self.tenants: dict[str, TenantState] = {}
        self.ai_wake = NEVER
        self.next_release = NEVER  # the earliest release of radio work not yet released
        self.radio_inflight = 0
        self.ai_inflight = 0
        self.ai_open = True
        self._running = False
        self._t_start = 0
        self._stopping = False
        #: policy changes from other threads, applied by the loop at its next decision
        self._mailbox: deque[ControlTicket] = deque()
        self._control_lock = threading.Lock()
        self._share_t = 0
        self._progress = progress
        self._progress_every_ns = int(progress_every_s * 1e9)
        #: what the device ran and why, for a trace (``airan.telemetry.trace``); or None
        self.recorder: Recorder | None = None
        #: planted faults (tests, ``airan serve``): :meth:`install_faults`; or None
        self.injector: FaultInjector | None = None
        #: the slice issued last and not yet complete: (perf_counter_ns at issue, its
        #: prediction or budget in ns, its RanTask or AiJob), or None (the watchdog's view)
        self.inflight: tuple[int, int, RanTask | AiJob] | None = None
        #: the fault detected in the current busy period of radio work, or None
        self._taint: FaultRecord | None = None
        self.set_policy(policy if policy is not None else Policy())
        self._reset_counters()

    # -- configuration -------------------------------------------------------------
    def set_policy(self, policy: Policy) -> None:
        """Switch to ``policy``; takes effect at the next decision.

        The knobs may change at any time (E2 control, O1). The strategy
        (``policy.name``) may not change while a run is in progress: each strategy
        keeps its own view of the radio work in flight.
        """
        if not isinstance(policy, Policy):
            raise FieldError("policy", f"must be a Policy, got {policy!r}")
        old = getattr(self, "policy", None)
        if old is not None and old.name != policy.name and self._running:
            raise FieldError(
                "policy.name",
                f"cannot change the strategy from {old.name!r} to {policy.name!r} "
                "while a run is in progress (the knobs can change)",
            )
        if policy.tenants:
            orphans = sorted({j.tenant for j in self.jobs if not j.done} - set(policy.tenants))
            if orphans:
                raise FieldError(
                    "policy.tenants",
                    f"jobs of tenant(s) {', '.join(orphans)} exist: a policy must declare them",
                )
        self.policy = policy
        self.guard_ns = policy.ns("guard_us")
        self.max_ai_slice_ns = policy.ns("max_ai_slice_us")
        self.lookahead_ns = policy.ns("lookahead_us")
        self.tdm_period_ns = policy.ns("tdm_period_us")
        self.tdm_radio_ns = round(self.tdm_period_ns * policy.tdm_radio_share)
        self.share_cap = policy.ai_share_cap
        self._share_window_ns = policy.ns("share_window_us")
        self.overrun_factor = policy.overrun_factor
        self.shed_hold_ns = policy.ns("shed_hold_us")
        # The token bucket keeps what it holds across knob changes, within its new size.
        self._share_budget = min(
            getattr(self, "_share_budget", 0.0), self.share_cap * self._share_window_ns
        )
        if old is None or old.name != policy.name:
            self.strategy: Strategy = STRATEGIES[policy.name](self)
        now = self.executor.clock.now_ns()
        resumed = []
        for name, ts in self.tenants.items():
            was_paused = ts.paused
            ts.apply(policy.tenants.get(name, TenantPolicy()), self._share_window_ns, now)
            if was_paused and not ts.paused:
                resumed.append(name)
        for name, tp in policy.tenants.items():
            if name not in self.tenants:
                self.tenants[name] = TenantState(tp, self._share_window_ns)
        for name in resumed:
            self._level(name)

    def request_policy(self, policy: Policy) -> ControlTicket:
        """Hand ``policy`` to the arbiter from any thread; see :class:`ControlTicket`.

        While a run is in progress the loop applies it before its next decision (at
        most one wait for the next release or completion later); otherwise it is
        applied at once. A refused policy sets ``ticket.error`` and changes nothing.
        """
        ticket = ControlTicket(policy)
        if not isinstance(policy, Policy):
            ticket._finish(FieldError("policy", f"must be a Policy, got {policy!r}"))
            return ticket
        with self._control_lock:
            self._mailbox.append(ticket)
            if not self._running:
                self._drain_mailbox()
        return ticket

    @property
    def running(self) -> bool:
        """Whether a :meth:`run` is in progress."""
        return self._running

    def request_stop(self) -> None:
        """Ask a running loop (from any thread) to end its run now: nothing new is
        released, the radio work released so far finishes, then :meth:`run` returns."""
        with self._control_lock:
            if self._running:
                self._mailbox.append(ControlTicket(None))

    def _drain_mailbox(self) -> None:
        box = self._mailbox
        while box:
            ticket = box.popleft()
            with ticket._lock:
                if ticket.cancelled:
                    continue
                rec = self.recorder
                if ticket.policy is None:
                    self._stopping = True
                    ticket._finish(None)
                    if rec is not None:
                        rec.mark(self.executor.clock.now_ns(), "stop requested")
                    continue
                try:
                    self.set_policy(ticket.policy)
                except FieldError as exc:
                    ticket._finish(exc)
                    if rec is not None:
                        rec.mark(
                            self.executor.clock.now_ns(),
                            "policy refused",
                            {"field": exc.field, "reason": exc.reason},
                        )
                else:
                    ticket._finish(None)
                    if rec is not None:
                        rec.mark(
                            self.executor.clock.now_ns(),
                            "policy applied",
                            ticket.policy.model_dump(mode="json", exclude={"tenants"}),
                        )

    def counters(self) -> Counters:
        """A snapshot of the cumulative counters (safe to call from another thread)."""
        tenant_busy: dict[str, int] = {}
        for job in list(self.jobs):
            tenant_busy[job.tenant] = tenant_busy.get(job.tenant, 0) + job.busy_ns
        elapsed = self.executor.clock.now_ns() - self._t_start if self._running else self.elapsed_ns
        return Counters(
            t_ns=time.perf_counter_ns(),
            elapsed_ns=max(elapsed, 0),
            tasks=self.tasks_ended,
            misses=self.misses,
            radio_busy_ns=self.radio_busy_ns,
            ai_busy_ns=self.ai_busy_ns,
            ai_slices=self.ai_slices,
            ai_tokens=self.ai_tokens,
            tenant_busy_ns=tenant_busy,
            slack_hist=tuple(self.slack_hist),
        )

    def add_job(self, job: AiJob) -> None:
        """Give the arbiter an AI job; higher priority classes are served first.

        With tenants declared in the policy, the job's tenant must be one of them."""
        if not isinstance(job, AiJob):
            raise FieldError("job", f"must be an AiJob, got {job!r}")
        if self.policy.tenants and job.tenant not in self.policy.tenants:
            raise FieldError(
                "AiJob.tenant",
                f"unknown tenant {job.tenant!r}; the policy declares "
                f"{', '.join(sorted(self.policy.tenants))}",
            )
        ts = self.tenants.get(job.tenant)
        if ts is None:
            ts = self.tenants[job.tenant] = TenantState(TenantPolicy(), self._share_window_ns)
        if not any(j.tenant == job.tenant and not j.done for j in self.jobs):
            self._level(job.tenant)
        if self.injector is not None:
            self.injector.attach(job)
        self.jobs.append(job)
        self.jobs.sort(key=lambda j: -j.priority)

    def install_faults(self, injector: FaultInjector) -> None:
        """Plant the faults of ``injector`` (:mod:`airan.sched.faults`) in this arbiter's
        slices and jobs, from the next run on. Not while a run is in progress."""
        if self._running:
            raise FieldError("faults", "cannot be installed while a run is in progress")
        self.injector = injector
        for job in self.jobs:
            injector.attach(job)

    def fits_ai_slice(self, s: Slice) -> bool:
        """Whether ``s`` (predicted, plus the guard) fits in the largest AI slice.

        AI sources call this to size their next slice (layers, batch, tokens)."""
        return self.estimator.predict(s) + self.guard_ns <= self.max_ai_slice_ns

    def _level(self, name: str) -> None:
        """A tenant that starts (or resumes) wanting device time banks no credit for the
        time it did not: its served time per weight is raised to the least among the
        tenants competing now (not paused, with unfinished jobs)."""
        ts = self.tenants[name]
        competing = [
            t.served_ns / t.weight
            for other, t in self.tenants.items()
            if other != name
            and not t.paused
            and any(j.tenant == other and not j.done for j in self.jobs)
        ]
        if competing:
            ts.served_ns = max(ts.served_ns, min(competing) * ts.weight)

    # -- helpers the strategies use --------------------------------------------------
    def remaining_cost(self, task: RanTask) -> int:
        """Predicted time the task's unfinished slices still need."""
        predict = self.estimator.predict
        total = 0
        for s in task.slices[task.next_index :]:
            total += predict(s)
        return total

    def issue_radio(self, task: RanTask, stream: Stream = Stream.RADIO) -> None:
        self.radio_inflight += 1
        s = task.slices[task.next_index]
        predicted = self.estimator.predict(s)
        if self.injector is not None:
            s = self.injector.radio_slice(
                s, self.executor.clock.now_ns(), predicted,
                f"{task.name}.{s.op} slot {task.slot} cell {task.cell}",
            )  # fmt: skip
        self.inflight = (time.perf_counter_ns(), predicted, task)
        rec = self.recorder
        if rec is not None:
            now = self.executor.clock.now_ns()
            rec.decision(
                now,
                "radio: EDF" if stream is Stream.RADIO else "radio: queued",
                {
                    "task": task.task_id,
                    "op": f"{task.name}.{s.op}",
                    "slot": task.slot,
                    "cell": task.cell,
                    "deadline_in_us": (task.deadline_ns - now) / 1000.0,
                    "predicted_us": predicted / 1000.0,
                },
            )
        self.executor.submit(s, stream, task)

    def issue_edf(self, now: int) -> bool:
        """Issue the next slice of the earliest-deadline released task; drop late ones."""
        ready = self.ready
        while ready:
            deadline, tid, _ = ready.peek()
            task = self.tasks[tid]
            if now < deadline:
                self.issue_radio(task)
                return True
            ready.pop()
            del self.tasks[tid]
            self._count_lost(task, now)
        self._check_busy_period_end()
        return False

    def _count_lost(self, task: RanTask, t: int) -> None:
        """Count a radio task that will never complete (dropped as late, or its slice
        failed): a miss, blamed on the fault of the busy period if any."""
        fid = self._blame()
        if self.recorder is not None:
            self.recorder.miss(
                t, task.task_id, task.name, task.slot, task.cell, task.deadline_ns, True, fid
            )
        self.slack_hist[0] += 1
        self.misses += 1
        self.dropped += 1
        self.tasks_ended += 1

    def _check_busy_period_end(self) -> None:
        """The radio is idle (nothing released pending, nothing on the device): the busy
        period ends, and with it the blame of its fault."""
        if self._taint is not None and not self.radio_inflight and not self.ready:
            self._taint = None

    def pick_ai(self, now: int) -> tuple[AiJob, int] | None:
        """The AI job to serve next, with its slice's budget (prediction plus guard).

        Among the jobs of the highest priority class that have a slice fitting the
        largest AI slice, whose tenant is not paused and within its quota, the one whose
        tenant has used the least device time per unit of weight (weighted fair
        queueing). Jobs whose next slice does not fit are passed over (counted in
        ``ai.refused_oversize``). When none can go, :attr:`ai_wake` says when a quota
        will allow one."""
        guard = self.guard_ns
        tenants = self.tenants
        best: AiJob | None = None
        best_key = 0.0
        best_budget = 0
        wake = NEVER
        for job in self.jobs:
            if best is not None and job.priority < best.priority:
                break
            ts = tenants[job.tenant]
            if ts.paused:
                continue
            budget = self._fitting_budget(job, guard, now)
            if budget is None:
                continue
            key = ts.served_ns / ts.weight
            if best is not None and key >= best_key:
                continue
            if ts.rate:
                allowed = ts.quota_wait(now, budget)
                if allowed > now:
                    ts.throttled += 1
                    wake = min(wake, allowed)
                    continue
            best, best_key, best_budget = job, key, budget
        self.ai_wake = wake
        return None if best is None else (best, best_budget)

    def _fitting_budget(self, job: AiJob, guard: int, now: int) -> int | None:
        """The budget (prediction plus guard) of the job's next slice if it fits the
        largest AI slice, else ``None``. A refused slice is counted and reported to the
        estimator; a kind due for a probe runs as one if that is safe (:meth:`_probe_ok`);
        a source that can re-plan offers smaller slices (a few tries per decision)."""
        for _ in range(6):
            s = job.peek()
            if s is None:
                return None
            budget = self.estimator.predict(s) + guard
            if budget <= self.max_ai_slice_ns:
                return budget
            self.refused_oversize += 1
            if self.estimator.refused(s) and self._probe_ok(now, budget):
                self.probes += 1
                return budget
            if not job.refuse():
                return None
        return None

    def _probe_ok(self, now: int, budget: int) -> bool:
        """Whether a slice over the largest AI slice may run now as a probe: no radio
        work is released or running, and it ends (by its pessimistic prediction) before
        the next announced release and within the lookahead, so no radio task, announced
        or not, can be released while it runs."""
        return (
            self.radio_inflight == 0
            and not self.ready
            and now + budget <= self.next_release
            and budget <= self.lookahead_ns
        )

    def issue_ai(self, job: AiJob, budget_ns: int, stream: Stream = Stream.AI) -> None:
        s = job.take()
        if self.injector is not None:
            s = self.injector.ai_slice(
                s, self.executor.clock.now_ns(), job.tenant, f"{s.op} (tenant {job.tenant})"
            )
        self.inflight = (time.perf_counter_ns(), budget_ns, job)
        self.ai_inflight += 1
        rec = self.recorder
        if rec is not None:
            now = self.executor.clock.now_ns()
            rec.decision(
                now,
                f"AI: admit {job.tenant}" if stream is Stream.AI else f"AI: queue {job.tenant}",
                {
                    "op": s.op,
                    "budget_us": budget_ns / 1000.0,
                    "radio_slack_us": self.known.slack(now) / 1000.0 if self.known else None,
                },
            )
        self.executor.submit(s, stream, (job, s, budget_ns))

    def share_gate(self, now: int, need_ns: int) -> int:
        """Token bucket of the AI share cap: when ``need_ns`` of AI time is allowed.

        The bucket fills at ``ai_share_cap`` ns per ns, holds at most
        ``ai_share_cap * share_window_us`` and starts empty, and each AI slice takes its
        actual duration out of it: over any interval T, AI gets at most
        ``cap * (T + window)`` plus one slice."""
        cap = self.share_cap
        if cap <= 0.0:
            return NEVER
        full = cap * self._share_window_ns
        self._share_budget = min(full, self._share_budget + cap * (now - self._share_t))
        self._share_t = now
        if self._share_budget >= need_ns:
            return now
        return now + int((need_ns - self._share_budget) / cap) + 1

    # -- the loop ----------------------------------------------------------------------
    def _reset_counters(self) -> None:
        self.tasks_ended = 0
        self.misses = 0
        self.dropped = 0
        self.radio_busy_ns = 0
        self.ai_busy_ns = 0
        self.ai_slices = 0
        self.ai_tokens = 0
        self.overruns = 0
        self.refused_oversize = 0
        self.probes = 0
        self.decisions = 0
        self.latencies = Reservoir(SAMPLES_KEPT, seed=1)
        self.slack_hist = [0] * SLACK_BUCKETS
        self.fault_log: deque[FaultRecord] = deque(maxlen=FAULTS_KEPT)
        self.faults_detected: Counter[str] = Counter()
        self.faults_total = 0
        self.misses_blamed = 0
        self.shed_ns = 0
        self.shed_until = 0
        self._taint = None
        for job in getattr(self, "jobs", ()):
            job.busy_ns = job.tokens = job.slices_done = 0
        for ts in getattr(self, "tenants", {}).values():
            ts.served_ns = 0.0
            ts.bucket = 0.0
            ts.throttled = 0
        self.decision_ns = Reservoir(SAMPLES_KEPT, seed=2)
        self.elapsed_ns = 0

    def _announce(self, task: RanTask) -> None:
        if not isinstance(task, RanTask):
            raise FieldError("radio", f"must yield RanTask objects, got {task!r}")
        if task.task_id in self.tasks:
            raise FieldError("RanTask.task_id", f"{task.task_id} is already in use")
        if task.next_index or task.completed_ns >= 0:
            raise FieldError(
                "RanTask", f"task {task.task_id} has already run: make new tasks for each run"
            )
        try:
            self.known.push(task.deadline_ns, task.task_id, self.remaining_cost(task))
        except QueueFullError:
            raise FieldError(
                "queue_capacity",
                f"{self.known.capacity} radio tasks are already announced: raise "
                "Arbiter(queue_capacity=...) or shorten policy.lookahead_us",
            ) from None
        self.tasks[task.task_id] = task

    def _release(self, task: RanTask) -> None:
        self.known.remove(task.task_id)
        self.strategy.on_release(task)

    # -- faults ----------------------------------------------------------------------------
    def _fault(self, kind: FaultKind, t: int, detail: str) -> FaultRecord:
        """Record a detected fault, shed AI for ``shed_hold_us`` and blame the misses of
        this busy period on it (``airan.core.faults``)."""
        self.faults_total += 1
        f = FaultRecord(self.faults_total, kind, t, detail)
        self.fault_log.append(f)
        self.faults_detected[kind.value] += 1
        self._taint = f
        until = t + self.shed_hold_ns
        if until > self.shed_until:
            self.shed_ns += until - max(self.shed_until, t)
            self.shed_until = until
        if self.recorder is not None:
            self.recorder.mark(
                t, f"FAULT {f.fault_id}: {kind.value}", {"detail": detail, "shed_until_us":
                (until - self._t_start) / 1000.0},
            )  # fmt: skip
        return f

    def _blame(self) -> int:
        """Count one radio miss against the fault of the current busy period; its id (0:
        none)."""
        f = self._taint
        if f is None:
            return 0
        f.misses += 1
        self.misses_blamed += 1
        return f.fault_id

    def stalled(self, now_perf_ns: int) -> tuple[FaultKind, str] | None:
        """The slice on the device if it has run past ``overrun_factor`` times its
        prediction (radio) or budget (AI) and 1 ms: its fault kind and what it is; else
        ``None``. The watchdog's question, safe to ask from any thread while the loop
        waits on a hung slice."""
        cur = self.inflight
        if cur is None:
            return None
        t0, budget, tag = cur
        ran = now_perf_ns - t0
        if ran <= self.overrun_factor * max(budget, 1) or ran <= 1_000_000:
            return None
        if isinstance(tag, AiJob):
            kind, what = FaultKind.AI_HANG, f"AI tenant {tag.tenant}"
        else:
            kind, what = FaultKind.RADIO_OVERRUN, f"radio {tag.name} slot {tag.slot}"
        return kind, f"{what} has run {ran / 1e6:.1f} ms (predicted {budget / 1e3:.0f} us)"

    def _complete(self, c: Completion) -> None:
        tag, _stream, start, end = c
        dur = end - start
        self.inflight = None
        failed: Failed | None = None
        if type(tag) is Failed:
            failed, tag = tag, tag.tag
        if type(tag) is not tuple:
            task: RanTask = tag  # type: ignore[assignment]
            self.radio_inflight -= 1
            self.radio_busy_ns += dur
            rec = self.recorder
            s = task.slices[task.next_index]
            if rec is not None:
                rec.radio(
                    start, end, s.op, task.name, task.task_id,
                    task.slot, task.cell, task.deadline_ns,
                )  # fmt: skip
            if failed is not None:
                self._radio_failed(task, failed, end)
                return
            predicted = self.estimator.predict(s)
            if dur > self.overrun_factor * predicted:
                self._fault(
                    FaultKind.RADIO_OVERRUN,
                    end,
                    f"{task.name}.{s.op} slot {task.slot} cell {task.cell} ran "
                    f"{dur / 1e3:.0f} us, {dur / max(predicted, 1):.1f}x its prediction "
                    f"({predicted / 1e3:.0f} us)",
                )
            self.estimator.record(s, dur)
            task.next_index += 1
            if task.next_index < len(task.slices):
                self.strategy.on_radio_progress(task, self.remaining_cost(task))
                return
            task.completed_ns = end
            self.latencies.add(end - task.release_ns)
            slack = task.deadline_ns - end
            if slack < 0:
                self.misses += 1
                self.slack_hist[0] += 1
                fid = self._blame()
                if rec is not None:
                    rec.miss(
                        end, task.task_id, task.name, task.slot, task.cell, task.deadline_ns,
                        False, fid,
                    )  # fmt: skip
            else:
                self.slack_hist[min(slack // SLACK_BUCKET_NS, SLACK_BUCKETS - 1)] += 1
            self.tasks_ended += 1
            del self.tasks[task.task_id]
            self.strategy.on_radio_finished(task)
            self._check_busy_period_end()
        else:
            job, s, budget = tag
            self.ai_inflight -= 1
            if self.recorder is not None:
                self.recorder.ai(start, end, s.op, job.tenant, budget, s.tokens)
            if failed is not None:
                self._ai_failed(job, s, failed, start, end)
                return
            if dur > self.overrun_factor * budget:
                self._fault(
                    FaultKind.AI_HANG,
                    end,
                    f"AI slice {s.op} of tenant {job.tenant} ran {dur / 1e3:.0f} us, "
                    f"{dur / max(budget, 1):.1f}x its budget ({budget / 1e3:.0f} us)",
                )
                self._check_busy_period_end()  # no radio work waited on it
            self.ai_busy_ns += dur
            self.ai_slices += 1
            self.ai_tokens += s.tokens
            if budget > self.max_ai_slice_ns and dur + self.guard_ns <= self.max_ai_slice_ns:
                self.estimator.forget(s)  # a probe that fits: learn the kind anew
            self.estimator.record(s, dur)
            job.busy_ns += dur
            job.tokens += s.tokens
            job.slices_done += 1
            ts = self.tenants[job.tenant]
            ts.served_ns += dur
            if ts.rate:
                ts.bucket -= dur
            if dur > budget:
                self.overruns += 1
            if self.share_cap < 1.0:
                self._share_budget -= dur

    def _radio_failed(self, task: RanTask, failed: Failed, end: int) -> None:
        """The executor failed one of the task's slices: the task's output is lost (a
        miss, blamed on the executor error); the next radio work goes on."""
        err = failed.error
        self._fault(
            FaultKind.EXECUTOR_ERROR,
            end,
            f"{task.name}.{task.slices[task.next_index].op} slot {task.slot} cell "
            f"{task.cell}: {type(err).__name__}: {err}",
        )
        task.completed_ns = end
        self._count_lost(task, end)
        del self.tasks[task.task_id]
        self.strategy.on_radio_finished(task)
        self._check_busy_period_end()

    def _ai_failed(self, job: AiJob, s: Slice, failed: Failed, start: int, end: int) -> None:
        """The executor failed an AI slice: its job ends (isolated, reported in
        ``ai.failed_jobs``), AI is shed, the radio goes on."""
        err = failed.error
        self.ai_busy_ns += end - start
        self._fault(
            FaultKind.EXECUTOR_ERROR,
            end,
            f"AI slice {s.op} of tenant {job.tenant}: {type(err).__name__}: {err}",
        )
        job.fail(f"its slice {s.op} failed on the device: {type(err).__name__}: {err}")
        self._check_busy_period_end()

    def run(self, radio: Iterable[RanTask | int], duration_ns: int) -> None:
        """Run radio tasks (in release order, times on the executor's clock) and the AI
        jobs for ``duration_ns``, then finish the radio work released so far.

        A source whose work depends on input still to come (slot requests from an L2
        over FAPI) may yield a time instead of a task: "ask me again at this time". The
        loop pulls the next item once its clock reaches it, and until then takes it as
        the earliest time new radio work may be released.

        Tasks released at or after the end are not run. Counters accumulate in the
        arbiter; :meth:`report` turns them into a :class:`RunReport`.
        """
        if (
            isinstance(duration_ns, bool)
            or not isinstance(duration_ns, int)
            or not 0 < duration_ns < NEVER // 4
        ):
            raise FieldError("duration_ns", f"must be a positive integer, got {duration_ns!r}")
        self._reset_counters()
        self.tasks.clear()
        self.ready.clear()
        self.known.clear()
        self.radio_inflight = self.ai_inflight = 0
        with self._control_lock:
            self._running = True
            self._stopping = False
        try:
            self._run(radio, duration_ns)
        finally:
            with self._control_lock:
                self._running = False
                self._drain_mailbox()

    def _run(self, radio: Iterable[RanTask | int], duration_ns: int) -> None:
        ex = self.executor
        clock = ex.clock
        t_start = clock.now_ns()
        self._t_start = t_start
        if self.recorder is not None:
            self.recorder.begin(t_start, self.policy.name)
        if self.injector is not None:
            self.injector.start(t_start)
        end = t_start + duration_ns
        it: Iterator[RanTask | int] = iter(radio)
        nxt: RanTask | int | None = next(it, None)
        last_release = t_start
        announced: deque[RanTask] = deque()
        done: list[Completion] = []
        tasks = self.tasks
        perf = time.perf_counter_ns
        next_progress = perf() + self._progress_every_ns
        self.ai_open = True
        self._share_t = t_start
        self._share_budget = 0.0
        for ts in self.tenants.values():
            ts.t_last = t_start
        now_ns = clock.now_ns
        decisions = 0
        poll = ex.poll
        wait = ex.wait
        complete = self._complete
        mailbox = self._mailbox
        while True:
            if mailbox:
                with self._control_lock:
                    self._drain_mailbox()
                if self._stopping:
                    end = min(end, now_ns())
            now = now_ns()
            horizon = now + self.lookahead_ns
            while nxt is not None:
                if type(nxt) is int:  # "ask again at nxt"
                    if nxt >= end:
                        nxt = None
                    elif nxt <= now:
                        nxt = next(it, None)
                        continue
                    break
                assert isinstance(nxt, RanTask)
                if nxt.release_ns > horizon and nxt.release_ns < end:
                    break
                if nxt.release_ns >= end:
                    nxt = None
                    break
                if nxt.release_ns < last_release:
                    if last_release == t_start:
                        raise FieldError(
                            "RanTask.release_ns",
                            f"{nxt.release_ns} is before the run's start ({t_start}) on the "
                            "executor's clock",
                        )
                    raise FieldError(
                        "RanTask.release_ns",
                        f"tasks must come in release order: {nxt.release_ns} after {last_release}",
                    )
                last_release = nxt.release_ns
                self._announce(nxt)
                announced.append(nxt)
                nxt = next(it, None)
            while announced and announced[0].release_ns <= now:
                self._release(announced.popleft())
            poll(done)
            if done:
                for c in done:
                    complete(c)
                done.clear()
            if now >= end:
                self.ai_open = False
                if nxt is None and not tasks:
                    break
            if announced:
                self.next_release = announced[0].release_ns
            else:
                self.next_release = _when(nxt)
            decisions += 1
            if decisions & _DECISION_SAMPLE_MASK:
                wake = self.strategy.dispatch(now)
            else:
                t0 = perf()
                wake = self.strategy.dispatch(now)
                t1 = perf()
                self.decision_ns.add(t1 - t0)
                if self._progress is not None and t1 >= next_progress:
                    next_progress = t1 + self._progress_every_ns
                    self._progress(self._snapshot(now - t_start, duration_ns))
            if now >= end and nxt is None and not tasks:
                break  # the strategy dropped the last late tasks
            # Wake for releases only: announcing work changes no decision by itself
            # (it can only shrink the slack that the next AI admission checks).
            if announced and announced[0].release_ns < wake:
                wake = announced[0].release_ns
            if nxt is not None and _when(nxt) < wake:
                wake = _when(nxt)
            if now < end < wake:
                wake = end
            wait(wake)
        self.decisions = decisions
        # Let what is still in flight finish, so that every issued slice is accounted.
        while True:
            poll(done)
            for c in done:
                complete(c)
            done.clear()
            if not ex.busy():
                break
            wait(NEVER)
        # a stop cuts the run short: ``end`` then is when it was asked for
        self.elapsed_ns = max(clock.now_ns() - t_start, end - t_start)
        if self._progress is not None:
            self._progress(self._snapshot(self.elapsed_ns, duration_ns))

    def _snapshot(self, now: int, duration_ns: int) -> Progress:
        return Progress(
            now, duration_ns, self.tasks_ended, self.misses, self.ai_slices, self.ai_tokens
        )

    def report(
        self,
        *,
        seed: int | None,
        slots: int,
        workload: dict[str, object] | None = None,
        wall_time_s: float = 0.0,
    ) -> RunReport:
        """The :class:`RunReport` of the last :meth:`run`."""
        elapsed = max(self.elapsed_ns, 1)
        idle = max(elapsed - self.radio_busy_ns, 1)
        tenants: dict[str, TenantUsage] = {}
        for name, ts in self.tenants.items():
            tenants[name] = TenantUsage(weight=ts.weight, throttled=ts.throttled)
        for job in self.jobs:
            u = tenants[job.tenant]
            u.slices += job.slices_done
            u.busy_us += job.busy_ns / 1000.0
            u.tokens += job.tokens
        n = len(self.decision_ns)
        decision = Percentiles()
        if n:  # a partial sort: a long run holds up to a million samples
            i50, i99 = n // 2, min(n - 1, int(n * 0.99))
            dec = np.partition(self.decision_ns.array(), (i50, i99))
            decision = Percentiles(p50=float(dec[i50]) / 1000.0, p99=float(dec[i99]) / 1000.0)
        ended = self.tasks_ended
        return RunReport(
            backend=self.executor.backend,
            device=self.executor.device,
            policy=self.policy.model_dump(),
            seed=seed,
            duration_s=elapsed / 1e9,
            slots=slots,
            workload=dict(workload or {}),
            wall_time_s=wall_time_s,
            ran=RanSection(
                tasks=ended,
                misses=self.misses,
                dropped=self.dropped,
                deadline_met_ratio=(ended - self.misses) / ended if ended else 1.0,
                busy_ratio=self.radio_busy_ns / elapsed,
                latency_us=LatencyStats.from_ns(self.latencies),
                latency_cdf_us=latency_cdf_us(self.latencies),
            ),
            ai=AiSection(
                slices=self.ai_slices,
                busy_ratio=self.ai_busy_ns / elapsed,
                harvest_ratio=min(1.0, self.ai_busy_ns / idle),
                tokens=self.ai_tokens,
                tokens_per_s=self.ai_tokens / (elapsed / 1e9),
                refused_oversize=self.refused_oversize,
                overruns=self.overruns,
                probes=self.probes,
                failed_jobs=[j.error for j in self.jobs if j.error is not None],
                tenants=tenants,
            ),
            arbiter=ArbiterSection(decisions=self.decisions, decision_us=decision),
            faults=self.fault_section(),
        )

    def fault_section(self) -> FaultSection:
        """The faults detected so far in this run (or the last), and those injected."""
        t0 = self._t_start
        inj = self.injector
        return FaultSection(
            detected=dict(self.faults_detected),
            misses_blamed=self.misses_blamed,
            misses_unexplained=self.misses - self.misses_blamed,
            shed_us=self.shed_ns / 1000.0,
            records=[f.as_dict(t0) for f in tuple(self.fault_log)],
            injected=[] if inj is None else [j.as_dict() for j in inj.schedule.fired()],
        )
