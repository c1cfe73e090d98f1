"""Build and run a whole arbiter run: workload, executor, arbiter, AI job, report.

The CLI, the benchmarks and the tests all go through these two functions, so every
comparison runs the same workload the same way.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from airan.ai.engine import CostModel, DecoderEngine
from airan.ai.model import ModelConfig, TransformerDecoder
from airan.backend import Backend, device_sync, make_executor
from airan.core.errors import FieldError
from airan.core.policy import Policy
from airan.core.profile import (
    CapacityBounds,
    DeviceProfile,
    capacity_bounds,
    profile_bound,
    profile_model,
)
from airan.core.report import Percentiles, RunReport
from airan.core.slices import AiJob, RanTask, SliceKey
from airan.ran.config import RanConfig
from airan.sched.arbiter import Arbiter, Progress
from airan.sched.executors import SimExecutor
from airan.synthetic import SyntheticConfig, SyntheticWorkload, array_work_factory
from airan.telemetry.trace import Recorder

ProgressFn = Callable[[Progress], None]
AiKind = Literal["transformer", "synthetic"]


def device_defaults(gpu: bool) -> tuple[dict[str, object], float]:
    """The demo's policy knobs and slot length (µs) for a device, unless given.

    A CPU is host and device at once and one transformer layer takes 0.04 to 0.3 ms
    there: 1 ms slots (numerology 0), 0.5 ms AI slices (the radio stays feasible with
    that blocking) and announced work one slot ahead. A GPU keeps the policy defaults
    and 0.5 ms slots (numerology 1)."""
    if gpu:
        return {}, 500.0
    return {"max_ai_slice_us": 500.0, "lookahead_us": 1000.0}, 1000.0


def bench_defaults(gpu: bool) -> tuple[str, dict[str, object], dict[str, object]]:
    """What ``airan bench`` runs when the user gives nothing: (radio workload, its
    settings, policy knobs).

    On a GPU: the DU with the demo's cell and policy. On a CPU: the synthetic radio
    workload (1 ms slots, 40 % mean load with bursts to 60 %, downlink due 3 slots and
    uplink 4 slots after release) and AI slices of at most 1 ms: margins for a shared
    virtual CPU, whose speed varies by a third from minute to minute. The NumPy L1 is not
    used there: one LDPC decode of a failing transport block is a single 6-7 ms slice
    on this class of CPU (``docs/l1-benchmark.md``), longer than the downlink's budget,
    so the DU's task set is not schedulable on a CPU by any policy and a comparison of
    policies would only show that (``--workload du`` runs it anyway)."""
    if gpu:
        return "du", ran_defaults(True), device_defaults(True)[0]
    return (
        "synthetic",
        {
            "slot_us": 1000.0,
            "radio_load": 0.4,
            "burst_load": 0.6,
            "dl_deadline_slots": 3.0,
            "ul_deadline_slots": 4.0,
        },
        {"max_ai_slice_us": 1000.0, "lookahead_us": 1000.0},
    )


def ran_defaults(gpu: bool) -> dict[str, object]:
    """The demo's cell when the user gives none: what the device can process in time.

    A GPU gets one 100 MHz µ=1 cell with 4 receive antennas, 2 layers and 16 UEs. A
    CPU (NumPy) decodes LDPC far slower (``docs/l1-benchmark.md``: no cell of the
    ladder meets µ=1 timing there, a slot's uplink decode alone takes 1-5 ms): one
    5 MHz µ=0 cell (1 ms slots) with 2 antennas, one layer and 2 UEs with light
    Poisson traffic (0.1 / 0.05 Mbit/s), one UE per slot, and the longest budgets
    the config allows (slot indications 8 slots ahead, uplink decoded within 8
    slots), so that the largest slice (a multi-ms LDPC decode) fits the shortest
    deadline. Even so, the radio alone misses a few tasks per 10,000 slots on a
    shared 2-vCPU VM (``docs/benchmarks.md``)."""
    if gpu:
        return {"numerology": 1, "bandwidth_mhz": 100, "antennas": 4, "layers": 2, "ues": 16}
    return {
        "numerology": 0,
        "bandwidth_mhz": 5,
        "antennas": 2,
        "layers": 1,
        "ues": 2,
        "max_ues_per_slot": 1,
        "slot_ahead": 8,
        "ul_deadline_slots": 8,
        "traffic": {
            "kind": "poisson",
            "dl_rate_mbps": 0.1,
            "ul_rate_mbps": 0.05,
            "packet_bytes": 500,
        },
    }


#: the built-in decoder's size on a CPU (the demo's, and a grid site's)
CPU_MODEL = ModelConfig(
    vocab_size=512, d_model=64, n_heads=4, n_layers=4, d_ff=128, max_context=256
)
#: ... and on a GPU
GPU_MODEL = ModelConfig(
    vocab_size=8192, d_model=512, n_heads=8, n_layers=8, d_ff=2048, max_context=512
)


def demo_model_config(backend: Backend) -> ModelConfig:
    """The built-in decoder's size for the demo: small on a CPU, larger on a GPU."""
    return GPU_MODEL if backend.name == "cupy" else CPU_MODEL


def demo_engine(
    backend: Backend,
    arb: Arbiter,
    sync: Callable[[], None],
    seed: int,
    tenant: str,
    max_batch: int | None = None,
) -> DecoderEngine:
    """The built-in transformer decoder (:func:`demo_model_config`, seeded weights)
    serving :func:`chat_load` under ``arb``, calibrated on ``backend``."""
    cfg = demo_model_config(backend)
    model = TransformerDecoder.from_seed(cfg, seed, backend.xp)
    batch = max_batch or (32 if backend.name == "cupy" else 8)
    return DecoderEngine(
        model,
        CostModel.calibrate(model, sync, batch),
        now=arb.executor.clock.now_ns,
        fits=arb.fits_ai_slice,
        max_batch=batch,
        seed=seed,
        tenant=tenant,
        load=chat_load(cfg, seed),
    )


def chat_load(cfg: ModelConfig, seed: int) -> Iterator[tuple[list[int], int]]:
    """A closed-loop load: each finished request is replaced by a new one (a prompt of
    8 to 96 tokens, up to 64 new tokens), as in a busy chat service."""
    rng = np.random.default_rng(seed)
    for _ in itertools.count():
        n = int(rng.integers(8, min(96, cfg.max_context // 2)))
        yield rng.integers(0, cfg.vocab_size, n).tolist(), min(64, cfg.max_context - n)


def _attach(arb: Arbiter, recorder: Recorder | None, slot_ns: int, first_slot_ns: int) -> None:
    """Record ``arb``'s run into ``recorder`` (slot 0 starting at ``first_slot_ns``)."""
    if recorder is not None:
        recorder.slot_ns = slot_ns
        recorder.first_slot_ns = first_slot_ns
        arb.recorder = recorder


def simulate(
    slots: int,
    policy: Policy,
    seed: int = 0,
    workload: SyntheticConfig | RanConfig | None = None,
    progress: ProgressFn | None = None,
    recorder: Recorder | None = None,
    profile: DeviceProfile | None = None,
) -> RunReport:
    """Run ``slots`` slots in virtual time: the synthetic workload, or with a
    :class:`RanConfig` the DU (MAC scheduling every slot, L1 durations from
    :func:`airan.ran.du.cost_model`, or with ``profile`` the durations measured on a
    device by ``airan profile``); the AI tenant is the synthetic decoder."""
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise FieldError("slots", f"must be a positive integer, got {slots!r}")
    if isinstance(workload, RanConfig):
        from airan.ran.du import DuWorkload

        if profile is not None:
            du = DuWorkload(workload, seed=seed, bound=profile_bound(profile))
            model: Callable[[SliceKey], Any] = profile_model(profile)
        else:
            du = DuWorkload(workload, seed=seed)
            model = du.cost_model
        wl = SyntheticWorkload(None, seed=seed)
        ex = SimExecutor(wl.profile(), seed=seed, model=model)
        slot_ns, describe = du.slot_ns, du.describe()
        radio: Iterator[RanTask] = du.radio_tasks(0, slots)
    else:
        if profile is not None:
            raise FieldError("profile", "replays a DU profile: give the cell (a RanConfig)")
        wl = SyntheticWorkload(workload, seed=seed)
        ex = SimExecutor(wl.profile(), seed=seed)
        slot_ns, describe = wl.slot_ns, wl.describe()
        radio = wl.radio_tasks(0, slots)
    arb = Arbiter(ex, policy, progress=progress, queue_capacity=1 << 14)
    arb.add_job(AiJob(wl.decoder(arb.fits_ai_slice), tenant="synthetic-decoder"))
    _attach(arb, recorder, slot_ns, 0)
    t0 = time.perf_counter()
    arb.run(radio, slots * slot_ns)
    wall = time.perf_counter() - t0
    return arb.report(seed=seed, slots=slots, workload=describe, wall_time_s=wall)


def run_on_device(
    backend: Backend,
    seconds: float,
    policy: Policy,
    seed: int = 0,
    workload: SyntheticConfig | RanConfig | None = None,
    progress: ProgressFn | None = None,
    ai: AiKind = "transformer",
    radio: bool = True,
    recorder: Recorder | None = None,
) -> RunReport:
    """Run a radio workload and an AI tenant for ``seconds`` of wall time on a real
    device. ``workload``: a :class:`RanConfig` runs the DU (MAC and the real L1
    kernels of :mod:`airan.ran.phy`); otherwise the synthetic workload. ``ai``: the
    built-in transformer decoder serving a closed-loop chat load (seeded weights), or
    the synthetic decoder. ``radio=False`` runs the AI alone (the reference for what
    co-scheduling costs it). ``recorder``: record the run for a trace
    (:mod:`airan.telemetry.trace`)."""
    if not 0 < seconds <= 86_400:
        raise FieldError("seconds", f"must be in (0, 86400], got {seconds!r}")
    sync = device_sync(backend)
    du = None
    if isinstance(workload, RanConfig):
        from airan.ran.fapi_du import FapiDu
        from airan.ran.l1 import L1Work

        l1 = [
            L1Work(workload, backend.xp, seed=seed, cell=c, sync=sync)
            for c in range(workload.cells)
        ]
        du = FapiDu(workload, seed, l1)  # the MACs in child processes, FAPI over ZMQ
        wl = SyntheticWorkload(None, seed=seed, work=array_work_factory(backend.xp, sync))
    else:
        wl = SyntheticWorkload(workload, seed=seed, work=array_work_factory(backend.xp, sync))
    slot_ns = du.slot_ns if du is not None else wl.slot_ns
    executor = make_executor(backend)
    arb = Arbiter(executor, policy, progress=progress)
    engine: DecoderEngine | None = None
    if ai == "transformer":
        engine = demo_engine(backend, arb, sync, seed, "llm")
        arb.add_job(AiJob(engine, tenant="llm"))
    else:
        arb.add_job(AiJob(wl.decoder(arb.fits_ai_slice), tenant="synthetic-decoder"))
    slots = max(1, int(seconds * 1e9 // slot_ns))
    # What set-up allocated (model weights, test vectors, tables) stays: keep it out of
    # the garbage collector's full passes, which would otherwise stall the loop for ms.
    gc.collect()
    gc.freeze()
    # Leave a few slots for the loop to settle before the first release.
    start = executor.clock.now_ns() + 2 * slot_ns
    _attach(arb, recorder, slot_ns, start)
    t0 = time.perf_counter()
    try:
        tasks: Iterator[RanTask | int] = iter(())
        if radio and du is not None:
            tasks = du.radio_tasks(start, slots)
        elif radio:
            tasks = wl.radio_tasks(start, slots)
        arb.run(tasks, start - executor.clock.now_ns() + slots * slot_ns)
    finally:
        executor.close()
        if du is not None:
            du.close()
    wall = time.perf_counter() - t0
    describe = du.describe() if du is not None else wl.describe()
    report = arb.report(seed=seed, slots=slots, workload=describe, wall_time_s=wall)
    if du is not None:
        report.workload["l1_crc_ok"] = du.l1_crc_ok
        report.workload["l1_crc_total"] = du.l1_crc_total
        report.workload["fapi"] = du.counters()
    report.workload["ai"] = ai
    if engine is not None:
        report.workload["model"] = engine.cfg.model_dump()
        ttft = sorted(engine.ttft_ns())
        report.ai.requests = engine.completed_total
        if ttft:
            report.ai.ttft_ms = Percentiles(
                p50=ttft[len(ttft) // 2] / 1e6,
                p99=ttft[min(len(ttft) - 1, len(ttft) * 99 // 100)] / 1e6,
            )
    return report


@dataclass(frozen=True, slots=True)
class CellsRun:
    """One virtual-time run of ``cells`` cells beside a saturating AI tenant."""

    cells: int
    tasks: int
    misses: int
    radio_busy: float
    ai_busy: float
    harvest: float


@dataclass(frozen=True, slots=True)
class CapacityPlan:
    """How many cells like the profiled one fit on its device with zero misses
    (``fit``; 0 if not even one), and the AI capacity left beside them."""

    device: str
    slots: int
    runs: tuple[CellsRun, ...]
    fit: int
    ai_device_ms_per_s: float
    ai_tokens_per_s: float
    bounds: CapacityBounds

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "slots": self.slots,
            "fit": self.fit,
            "ai_device_ms_per_s": self.ai_device_ms_per_s,
            "ai_tokens_per_s": self.ai_tokens_per_s,
            "runs": [dataclasses.asdict(r) for r in self.runs],
            "bounds": dataclasses.asdict(self.bounds),
        }


def min_deadline_us(ran: RanConfig) -> float:
    """The shortest relative deadline of the DU's tasks (release to due), µs."""
    slot_us = ran.slot_ns / 1000.0
    dl = (ran.slot_ahead - 1) * slot_us - ran.dl_advance_us
    return max(1e-3, min(dl if ran.slot_ahead > 1 else slot_us, ran.ul_deadline_slots * slot_us))


def plan_capacity(
    profile: DeviceProfile,
    ran: RanConfig,
    slots: int,
    policy: Policy,
    seed: int = 0,
    max_cells: int = 16,
    progress: Callable[[CellsRun], None] | None = None,
) -> CapacityPlan:
    """Add cells like ``ran`` (each with the durations of ``profile``) one at a time,
    beside a saturating AI tenant under ``policy``, in virtual time for ``slots`` slots
    each, until one misses a deadline: the most cells that missed none, and the AI
    device time and tokens per second left beside them (tokens at the profile's
    measured tokens per device second). Checked against :func:`capacity_bounds`."""
    if not 1 <= max_cells <= 16:
        raise FieldError("max_cells", f"must be in [1, 16], got {max_cells!r}")
    runs: list[CellsRun] = []
    fit = 0
    ai_busy = 1.0
    for n in range(1, max_cells + 1):
        rep = simulate(slots, policy, seed, ran.model_copy(update={"cells": n}), profile=profile)
        run = CellsRun(
            n,
            rep.ran.tasks,
            rep.ran.misses,
            rep.ran.busy_ratio,
            rep.ai.busy_ratio,
            rep.ai.harvest_ratio,
        )
        runs.append(run)
        if progress is not None:
            progress(run)
        if run.misses:
            break
        fit, ai_busy = n, run.ai_busy
    bounds = capacity_bounds(
        profile, ran.slot_ns / 1000.0, min_deadline_us(ran), policy.max_ai_slice_us, max_cells
    )
    return CapacityPlan(
        device=profile.device,
        slots=slots,
        runs=tuple(runs),
        fit=fit,
        ai_device_ms_per_s=ai_busy * 1000.0,
        ai_tokens_per_s=ai_busy * profile.ai_tokens_per_device_s,
        bounds=bounds,
    )
