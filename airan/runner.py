"""Build and run a whole arbiter run: workload, executor, arbiter, AI job, report.

The CLI, the benchmarks and the tests all go through these two functions, so every
comparison runs the same workload the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from airan.backend import Backend, make_executor
from airan.core.errors import FieldError
from airan.core.policy import Policy
from airan.core.report import RunReport
from airan.core.slices import AiJob
from airan.sched.arbiter import Arbiter, Progress
from airan.sched.executors import SimExecutor
from airan.synthetic import SyntheticConfig, SyntheticWorkload, array_work_factory

ProgressFn = Callable[[Progress], None]


def simulate(
    slots: int,
    policy: Policy,
    seed: int = 0,
    workload: SyntheticConfig | None = None,
    progress: ProgressFn | None = None,
) -> RunReport:
    """Run ``slots`` slots of the synthetic workload in virtual time."""
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise FieldError("slots", f"must be a positive integer, got {slots!r}")
    wl = SyntheticWorkload(workload, seed=seed)
    arb = Arbiter(SimExecutor(wl.profile(), seed=seed), policy, progress=progress)
    arb.add_job(AiJob(wl.decoder(arb.fits_ai_slice), tenant="synthetic-decoder"))
    t0 = time.perf_counter()
    arb.run(wl.radio_tasks(0, slots), slots * wl.slot_ns)
    wall = time.perf_counter() - t0
    return arb.report(seed=seed, slots=slots, workload=wl.describe(), wall_time_s=wall)


def run_on_device(
    backend: Backend,
    seconds: float,
    policy: Policy,
    seed: int = 0,
    workload: SyntheticConfig | None = None,
    progress: ProgressFn | None = None,
) -> RunReport:
    """Run the synthetic workload for ``seconds`` of wall time on a real device."""
    if not 0 < seconds <= 86_400:
        raise FieldError("seconds", f"must be in (0, 86400], got {seconds!r}")
    if backend.name == "cupy":
        import cupy

        def sync() -> None:
            cupy.cuda.runtime.deviceSynchronize()
    else:

        def sync() -> None:
            return None

    wl = SyntheticWorkload(workload, seed=seed, work=array_work_factory(backend.xp, sync))
    executor = make_executor(backend)
    arb = Arbiter(executor, policy, progress=progress)
    arb.add_job(AiJob(wl.decoder(arb.fits_ai_slice), tenant="synthetic-decoder"))
    slots = max(1, int(seconds * 1e9 // wl.slot_ns))
    # Leave a few slots for the loop to settle before the first release.
    start = executor.clock.now_ns() + 2 * wl.slot_ns
    t0 = time.perf_counter()
    try:
        arb.run(wl.radio_tasks(start, slots), start - executor.clock.now_ns() + slots * wl.slot_ns)
    finally:
        executor.close()
    wall = time.perf_counter() - t0
    return arb.report(seed=seed, slots=slots, workload=wl.describe(), wall_time_s=wall)
