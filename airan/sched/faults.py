"""Fault injection on a real or simulated device (the adapter of :mod:`airan.core.faults`).

A :class:`FaultInjector` holds a :class:`~airan.core.faults.FaultPlan` and plants each
fault where it would really happen:

* ``radio_overrun`` / ``ai_hang``: the slice's work is stretched
  (:class:`~airan.sched.executors.InjectedWork`): a host wait on the CPU, a kernel that
  waits on the GPU's global timer on the slice's own stream, the duration itself on a
  simulated device. The arbiter sees only a slice that took long.
* ``executor_error``: the slice's work raises (:class:`InjectedFault` on the CPU, a
  ``CUDARuntimeError`` (``cudaErrorLaunchFailure``) on a GPU); a simulated device
  reports the slice as failed.
* ``ai_raise``: the AI job's source raises when asked for its next slice.
* ``l2_silence``: the in-process L2 (:class:`~airan.ran.du.DuWorkload`) schedules
  nothing and sends no slot request for ``duration_ms``.

``l2_flood`` needs an L2 that sends messages: it is injected at the FAPI L1 (ZMQ) by
the tests (``tests/test_faults.py``), not by this class.

Install it with :meth:`airan.sched.arbiter.Arbiter.install_faults` (and
:meth:`airan.ran.du.DuWorkload.install_faults` for the L2). Every occurrence fired is in
:attr:`FaultInjector.schedule` (``injections``) and in the run report
(``faults.injected``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from airan.core.errors import FieldError
from airan.core.faults import FaultKind, FaultPlan, FaultSchedule
from airan.core.slices import AiJob, Slice
from airan.sched.executors import Executor, InjectedWork, host_spin


class InjectedFault(RuntimeError):
    """The exception an injected fault raises on the CPU (and in an AI job)."""


_SPIN_SRC = r"""
extern "C" __global__ void airan_spin(unsigned long long ns) {
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while (t - t0 < ns);
}
"""

#: cudaErrorLaunchFailure: what a kernel that faults on the device reports
CUDA_ERROR_LAUNCH_FAILURE = 719


def _device_tools(backend: str) -> tuple[Callable[[int], None] | None, Callable[[str], Exception]]:
    """How to stretch a slice and which error to raise, on this executor's device."""
    if backend != "cupy":
        return (host_spin if backend == "numpy" else None), InjectedFault
    import cupy as cp
    import numpy as np

    kernel = cp.RawKernel(_SPIN_SRC, "airan_spin")

    def gpu_spin(ns: int) -> None:  # on the current stream: the slice's own
        kernel((1,), (1,), (np.uint64(ns),))

    def cuda_error(_what: str) -> Exception:
        return cp.cuda.runtime.CUDARuntimeError(CUDA_ERROR_LAUNCH_FAILURE)  # type: ignore[no-any-return]

    return gpu_spin, cuda_error


class FaultInjector:
    """Plants the faults of ``plan`` into the slices an arbiter issues on ``executor``."""

    def __init__(self, plan: FaultPlan, executor: Executor) -> None:
        if not isinstance(plan, FaultPlan):
            raise FieldError(
                "plan", f"must be a FaultPlan (FaultPlan.parse checks a dict), got {plan!r}"
            )
        self.plan = plan
        self.schedule = FaultSchedule(plan)
        self.clock = executor.clock
        self._spin, self._error = _device_tools(executor.backend)
        self._raise = self.schedule.wants(FaultKind.AI_RAISE)
        self._silent_until = 0

    def start(self, t0_ns: int) -> None:
        """A run starts at ``t0_ns`` on the executor's clock: the plan's times count from it."""
        self.schedule.start(t0_ns)
        self._silent_until = 0

    def _wrap(self, s: Slice, target_ns: int = 0, error: Exception | None = None) -> Slice:
        work = InjectedWork(s.work, target_ns=target_ns, error=error, spin=self._spin)
        return replace(s, work=work)

    def radio_slice(self, s: Slice, now_ns: int, predicted_ns: int, what: str) -> Slice:
        """``s``, or ``s`` with the fault due now planted in it."""
        sched = self.schedule
        inj = sched.take(FaultKind.EXECUTOR_ERROR, now_ns, target="radio", what=what)
        if inj is not None:
            return self._wrap(s, error=self._error(what))
        inj = sched.take(FaultKind.RADIO_OVERRUN, now_ns, what=what)
        if inj is not None:
            factor = sched.spec(inj).factor
            return self._wrap(s, target_ns=round(factor * max(predicted_ns, 1)))
        return s

    def ai_slice(self, s: Slice, now_ns: int, tenant: str, what: str) -> Slice:
        sched = self.schedule
        inj = sched.take(FaultKind.EXECUTOR_ERROR, now_ns, target="ai", what=what)
        if inj is not None:
            return self._wrap(s, error=self._error(what))
        inj = sched.take(FaultKind.AI_HANG, now_ns, tenant=tenant, what=what)
        if inj is not None:
            return self._wrap(s, target_ns=round(sched.spec(inj).hang_ms * 1e6))
        return s

    def attach(self, job: AiJob) -> None:
        """Make ``job`` raise when an ``ai_raise`` fault for its tenant is due."""
        if not self._raise:
            return
        sched, clock, tenant = self.schedule, self.clock, job.tenant
        what = f"job {job.job_id} (tenant {tenant})"

        def raising(it: Iterator[Any]) -> Iterator[Any]:
            for item in it:
                if sched.take(FaultKind.AI_RAISE, clock.now_ns(), tenant=tenant, what=what):
                    raise InjectedFault(f"injected ai_raise in {what}")
                yield item

        job.wrap_source(raising)

    def l2_silent(self, now_ns: int) -> bool:
        """Whether the in-process L2 is silent at ``now_ns`` (executor clock)."""
        sched = self.schedule
        if sched.wants(FaultKind.L2_SILENCE):
            inj = sched.take(FaultKind.L2_SILENCE, now_ns, what="the L2")
            if inj is not None:
                end = sched.t0_ns + inj.fired_ns + round(sched.spec(inj).duration_ms * 1e6)
                self._silent_until = max(self._silent_until, end)
        return now_ns < self._silent_until
