"""Build and run a whole arbiter run: workload, executor, arbiter, AI job, report.

The CLI, the benchmarks and the tests all go through these two functions, so every
comparison runs the same workload the same way.
"""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np

from airan.ai.engine import CostModel, DecoderEngine
from airan.ai.model import ModelConfig, TransformerDecoder
from airan.backend import Backend, make_executor
from airan.core.errors import FieldError
from airan.core.policy import Policy
from airan.core.report import Percentiles, RunReport
from airan.core.slices import AiJob, RanTask
from airan.ran.config import RanConfig
from airan.sched.arbiter import Arbiter, Progress
from airan.sched.executors import SimExecutor
from airan.synthetic import SyntheticConfig, SyntheticWorkload, array_work_factory

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


def demo_model_config(backend: Backend) -> ModelConfig:
    """The built-in decoder's size for the demo: small on a CPU, larger on a GPU."""
    if backend.name == "cupy":
        return ModelConfig(
            vocab_size=8192, d_model=512, n_heads=8, n_layers=8, d_ff=2048, max_context=512
        )
    return ModelConfig(vocab_size=512, d_model=64, n_heads=4, n_layers=4, d_ff=128, max_context=256)


def chat_load(cfg: ModelConfig, seed: int) -> Iterator[tuple[list[int], int]]:
    """A closed-loop load: each finished request is replaced by a new one (a prompt of
    8 to 96 tokens, up to 64 new tokens), as in a busy chat service."""
    rng = np.random.default_rng(seed)
    for _ in itertools.count():
        n = int(rng.integers(8, min(96, cfg.max_context // 2)))
        yield rng.integers(0, cfg.vocab_size, n).tolist(), min(64, cfg.max_context - n)


def simulate(
    slots: int,
    policy: Policy,
    seed: int = 0,
    workload: SyntheticConfig | RanConfig | None = None,
    progress: ProgressFn | None = None,
) -> RunReport:
    """Run ``slots`` slots in virtual time: the synthetic workload, or with a
    :class:`RanConfig` the DU (MAC scheduling every slot, L1 durations from
    :func:`airan.ran.du.cost_model`); the AI tenant is the synthetic decoder."""
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise FieldError("slots", f"must be a positive integer, got {slots!r}")
    if isinstance(workload, RanConfig):
        from airan.ran.du import DuWorkload

        du = DuWorkload(workload, seed=seed)
        wl = SyntheticWorkload(None, seed=seed)
        ex = SimExecutor(wl.profile(), seed=seed, model=du.cost_model)
        slot_ns, describe = du.slot_ns, du.describe()
        radio: Iterator[RanTask] = du.radio_tasks(0, slots)
    else:
        wl = SyntheticWorkload(workload, seed=seed)
        ex = SimExecutor(wl.profile(), seed=seed)
        slot_ns, describe = wl.slot_ns, wl.describe()
        radio = wl.radio_tasks(0, slots)
    arb = Arbiter(ex, policy, progress=progress, queue_capacity=1 << 14)
    arb.add_job(AiJob(wl.decoder(arb.fits_ai_slice), tenant="synthetic-decoder"))
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
) -> RunReport:
    """Run a radio workload and an AI tenant for ``seconds`` of wall time on a real
    device. ``workload``: a :class:`RanConfig` runs the DU (MAC and the real L1
    kernels of :mod:`airan.ran.phy`); otherwise the synthetic workload. ``ai``: the
    built-in transformer decoder serving a closed-loop chat load (seeded weights), or
    the synthetic decoder. ``radio=False`` runs the AI alone (the reference for what
    co-scheduling costs it)."""
    if not 0 < seconds <= 86_400:
        raise FieldError("seconds", f"must be in (0, 86400], got {seconds!r}")
    if backend.name == "cupy":
        import cupy

        def sync() -> None:
            cupy.cuda.runtime.deviceSynchronize()
    else:

        def sync() -> None:
            return None

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
        cfg = demo_model_config(backend)
        model = TransformerDecoder.from_seed(cfg, seed, backend.xp)
        batch = 32 if backend.name == "cupy" else 8
        engine = DecoderEngine(
            model,
            CostModel.calibrate(model, sync, batch),
            now=executor.clock.now_ns,
            fits=arb.fits_ai_slice,
            max_batch=batch,
            seed=seed,
            tenant="llm",
            load=chat_load(cfg, seed),
        )
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
        report.ai.requests = len(engine.completed)
        if ttft:
            report.ai.ttft_ms = Percentiles(
                p50=ttft[len(ttft) // 2] / 1e6,
                p99=ttft[min(len(ttft) - 1, len(ttft) * 99 // 100)] / 1e6,
            )
    return report
