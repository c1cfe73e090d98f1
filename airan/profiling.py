"""Measure a :class:`~airan.core.profile.DeviceProfile` on a real device (``airan profile``).

The radio side runs the DU's slot work for one cell of the given configuration
(the MAC's decisions, the real L1 kernels of :mod:`airan.ran.phy`) slice after slice,
with nothing else on the device and no deadlines, timing each slice (synchronised on
a GPU): the durations of the device itself, not of a schedule. The AI side runs the
AI tenant alone under the arbiter and counts tokens per second of device time.
"""

from __future__ import annotations

import datetime as dt
import gc
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from airan.backend import Backend, device_sync
from airan.core.errors import FieldError
from airan.core.policy import Policy
from airan.core.profile import PROFILE_P, DeviceProfile, SliceProfile
from airan.ran.config import RanConfig

#: slots whose slices are not kept (tables, caches and the allocator settle first)
WARMUP_SLOTS = 20


def measure_profile(
    backend: Backend,
    ran: RanConfig,
    slots: int,
    seed: int = 0,
    *,
    ai: str = "transformer",
    ai_seconds: float = 3.0,
    command: str = "",
    progress: Callable[[float], None] | None = None,
) -> DeviceProfile:
    """Run ``slots`` slots of one cell of ``ran`` on ``backend`` and the AI tenant
    alone for ``ai_seconds``; the measured profile."""
    from airan.ran.du import DuWorkload
    from airan.ran.l1 import L1Work
    from airan.runner import run_on_device

    if isinstance(slots, bool) or not isinstance(slots, int) or slots < WARMUP_SLOTS + 10:
        raise FieldError("slots", f"must be an integer >= {WARMUP_SLOTS + 10}, got {slots!r}")
    if not 0 < ai_seconds <= 3600:
        raise FieldError("ai_seconds", f"must be in (0, 3600], got {ai_seconds!r}")
    cell = ran.model_copy(update={"cells": 1})
    sync = device_sync(backend)
    l1 = L1Work(cell, backend.xp, seed=seed, cell=0, sync=sync)
    du = DuWorkload(cell, seed=seed, l1=[l1])
    durations: dict[tuple[str, tuple[tuple[str, int], ...]], list[int]] = defaultdict(list)
    slot_work = np.zeros(slots, dtype=np.int64)
    gc.collect()
    perf = time.perf_counter_ns
    for task in du.radio_tasks(0, slots):
        for s in task.slices:
            t0 = perf()
            if s.work is not None:
                s.work()
            sync()
            d = perf() - t0
            if task.slot >= WARMUP_SLOTS:
                durations[s.key].append(d)
                slot_work[task.slot] += d
        if progress is not None:
            progress(min(1.0, (task.slot + 1) / slots))
    if not durations:
        raise FieldError("ran.traffic", "the cell scheduled no work in the measured slots")
    slices = [
        SliceProfile.measure(op, dict(shape), ds) for (op, shape), ds in sorted(durations.items())
    ]
    work = slot_work[WARMUP_SLOTS:] / 1000.0
    quantiles = np.quantile(work, PROFILE_P)
    # AI alone: tokens per second of device time
    rep = run_on_device(
        backend,
        ai_seconds,
        Policy(name="airan", max_ai_slice_us=100_000.0),
        seed,
        None,
        ai=ai,  # type: ignore[arg-type]
        radio=False,
    )
    busy_s = rep.ai.busy_ratio * rep.duration_s
    return DeviceProfile(
        device=backend.device,
        backend=backend.name,
        measured_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        command=command,
        ran=cell.model_dump(mode="json"),
        slots=slots - WARMUP_SLOTS,
        slot_work_us=[round(float(v), 3) for v in quantiles],
        slices=slices,
        ai_tokens_per_device_s=rep.ai.tokens / busy_s if busy_s > 0 else 0.0,
        ai_tenant=ai,
    )
