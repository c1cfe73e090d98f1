"""The DU's slot work as radio tasks for the arbiter.

Every slot the MAC (one :class:`~airan.ran.mac.Mac` per cell) schedules the slot that
lies ``slot_ahead - 1`` slots ahead; the L1 work of each slot becomes two
:class:`~airan.core.slices.RanTask` per cell, with the timing of TS 38.211 §4.3
(slot ``n`` starts at ``t(n)``, lasting ``T = 1 ms / 2^µ``):

* **downlink** (PDSCH transmit, TS 38.211 §7.3.1): released at ``t(n) - (slot_ahead -
  1)·T`` (the L2's requests for slot ``n``, asked for by the SLOT.indication sent
  ``slot_ahead`` slots ahead, are in), due at ``t(n) - dl_advance_us`` (the samples
  must be on the fronthaul before the air time);
* **uplink** (PUSCH receive, TS 38.211 §6.3.1, TS 38.212 §6.2): released at ``t(n+1)``
  (the slot's last samples are in), due ``K = ul_deadline_slots`` slots later
  (decoded, CRC known). Its slices: front end (CP removal, FFT), equalisation
  (channel and noise estimation, MMSE, demapping), decoding (LDPC, CRC).

Two ways to run the L1:

* on a **real device** (:class:`L1Work`), every slice runs the real kernels of
  :mod:`airan.ran.phy` on NumPy or CuPy. Downlink encodes and modulates the live
  MAC's grants. Uplink replays *test vectors*: received slots recorded at start-up
  from this same MAC's grants, each UE through its own multipath channel at its SNR,
  as NVIDIA's cuBB test MAC replays its TVs; the CRCs of those decodes are counted
  (``airan.L1CrcOkRatio``), while the live MAC decides its HARQ outcomes with its link
  model (:func:`airan.ran.mac.link_ok`), since the replayed samples are not its UEs'.
* on a **simulated device** (``cost_model``), durations are drawn from
  a stated cost model of the same slices and shapes (no kernels run).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from airan.core.errors import FieldError
from airan.core.rrm import SliceQuota, check_quotas
from airan.core.slices import RanTask, Slice, SliceKey, SliceKind
from airan.ran.config import RanConfig
from airan.ran.mac import (
    Grant,
    Mac,
    MacCounters,
    SlotDecision,
    period_kpm,
    period_kpm_per_ue,
)
from airan.ran.numerology import SlotId
from airan.sched.executors import DurationDist

if TYPE_CHECKING:
    from airan.ran.l1 import L1Work
    from airan.sched.faults import FaultInjector

#: the standard KPM names the DU reports at node level (TS 28.552 §5.1.1)
DU_NODE_MEASUREMENTS: tuple[str, ...] = (
    "DRB.UEThpDl",
    "DRB.UEThpUl",
    "RRU.PrbTotDl",
    "RRU.PrbTotUl",
    "RRU.PrbUsedDl",
    "RRU.PrbUsedUl",
    "airan.L1CrcOkRatio",
)
#: per UE
DU_UE_MEASUREMENTS: tuple[str, ...] = (
    "DRB.UEThpDl",
    "DRB.UEThpUl",
    "RRU.PrbUsedDl",
    "RRU.PrbUsedUl",
)


def _bucket(x: float, step: int) -> int:
    """Round ``x`` up to a multiple of ``step`` (few estimator keys, same cost class)."""
    return max(step, -(-int(x) // step) * step)


def _kbits(bits: int) -> int:
    """Coded kbits, rounded up to a power of two."""
    return 1 << max(0, math.ceil(math.log2(max(bits, 1) / 1000.0)))


def ul_shapes(config: RanConfig, ul: Sequence[Grant]) -> list[tuple[str, dict[str, int]]]:
    """The uplink slices of a slot and their shape features."""
    prbs = sum(g.n_prb for g in ul)
    layers = max((g.layers for g in ul), default=1)
    bits = sum(g.tbs for g in ul)
    ant = config.antennas
    return [
        ("pusch.front_end", {"ant": ant, "prb": config.n_prb}),
        ("pusch.equalise", {"ant": ant, "layers": layers, "prb": _bucket(prbs, 16)}),
        ("pusch.decode", {"kbits": _kbits(bits)}),
    ]


def dl_shape(config: RanConfig, dl: Sequence[Grant]) -> tuple[str, dict[str, int]]:
    bits = sum(g.tbs for g in dl)
    prbs = sum(g.n_prb for g in dl)
    return ("pdsch.tx", {"kbits": _kbits(bits), "layers": config.layers, "prb": _bucket(prbs, 16)})


Bound = Callable[[str, dict[str, int]], int]


def ul_task(
    config: RanConfig,
    start_ns: int,
    slot: int,
    cell: int,
    grants: Sequence[Any],
    works: Sequence[Callable[[], object] | None],
    bound: Bound,
) -> RanTask:
    """The uplink task of ``slot`` (slot 0 starts at ``start_ns``): released when the
    slot's last samples are in, ``t(slot + 1)``, due ``ul_deadline_slots`` later
    (TS 38.211 §4.3). ``grants`` have ``n_prb``, ``layers`` and ``tbs``; ``works`` are
    the three stages' work (``None`` on a simulated device); ``bound(op, shape)`` each
    slice's declared bound."""
    T = config.slot_ns
    release = start_ns + (slot + 1) * T
    slices = tuple(
        Slice.make(SliceKind.RAN, op, bound(op, f), f, w)
        for (op, f), w in zip(ul_shapes(config, grants), works, strict=True)
    )
    deadline = release + config.ul_deadline_slots * T
    return RanTask(release, deadline, slices, name="pusch", slot=slot, cell=cell)


def dl_task(
    config: RanConfig,
    start_ns: int,
    slot: int,
    cell: int,
    grants: Sequence[Any],
    work: Callable[[], object] | None,
    bound: Bound,
) -> RanTask:
    """The downlink task of ``slot``: released ``slot_ahead - 1`` slots before its air
    time (the L2's requests are in), due at air time minus ``dl_advance_us``."""
    T = config.slot_ns
    release = start_ns + (slot - config.slot_ahead + 1) * T
    air = start_ns + slot * T
    deadline = max(release + 1, air - round(config.dl_advance_us * 1000))
    op, f = dl_shape(config, grants)
    s = Slice.make(SliceKind.RAN, op, bound(op, f), f, work)
    return RanTask(release, deadline, (s,), name="pdsch", slot=slot, cell=cell)


def model_bound(op: str, shape: dict[str, int]) -> int:
    """A slice's declared bound on a simulated device: the cost model's worst case."""
    return cost_model((op, tuple(sorted(shape.items())))).max_ns


def cost_model(key: SliceKey) -> DurationDist:
    """A stated cost model of the L1 slices on a GPU-class device (not a measurement):
    front end ∝ PRBs·antennas, equalisation ∝ PRBs·antennas·layers², decoding and
    encoding ∝ bits; heavy-tailed, clipped at 1.5 times the mean plus 20 µs."""
    op, shape = key
    f = dict(shape)
    if op == "pusch.front_end":
        mean_us = 4.0 + 0.03 * f["prb"] * f["ant"]
    elif op == "pusch.equalise":
        mean_us = 6.0 + 0.004 * f["prb"] * f["ant"] * f["layers"] ** 2
    elif op == "pusch.decode":
        mean_us = 8.0 + 0.25 * f["kbits"]
    elif op == "pdsch.tx":
        mean_us = 6.0 + 0.1 * f["kbits"] + 0.01 * f["prb"] * f["layers"]
    else:
        raise KeyError(key)
    mean = mean_us * 1000.0
    return DurationDist(mean_ns=mean, max_ns=int(mean * 1.5 + 20_000))


@dataclass(frozen=True, slots=True)
class DuCounters:
    """The DU's cumulative counters at one instant (per cell MAC, L1 CRCs, FAPI)."""

    macs: tuple[MacCounters, ...]
    l1_crc_ok: int
    l1_crc_total: int
    fapi: dict[str, int] = field(default_factory=dict)


def du_period_figures(
    a: DuCounters, b: DuCounters
) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """The DU's KPM figures over the period from ``a`` to ``b``: node level (the mean
    over cells of each cell's figure) and per UE (keyed ``cell·1000 + RNTI``)."""
    node: dict[str, float] = {}
    ues: dict[int, dict[str, float]] = {}
    cells = list(zip(a.macs, b.macs, strict=True))
    for cell, (ca, cb) in enumerate(cells):
        for name, value in period_kpm(ca, cb).items():
            node[name] = node.get(name, 0.0) + value / len(cells)
        for rnti, figures in period_kpm_per_ue(ca, cb).items():
            ues[cell * 1000 + int(rnti)] = {
                k: v for k, v in figures.items() if k in DU_UE_MEASUREMENTS
            }
    n = b.l1_crc_total - a.l1_crc_total
    node["airan.L1CrcOkRatio"] = (b.l1_crc_ok - a.l1_crc_ok) / n if n > 0 else 1.0
    return node, ues


class DuWorkload:
    """A DU of ``config.cells`` cells: MAC scheduling and the L1 work of every slot."""

    NODE_MEASUREMENTS: ClassVar[tuple[str, ...]] = DU_NODE_MEASUREMENTS
    UE_MEASUREMENTS: ClassVar[tuple[str, ...]] = DU_UE_MEASUREMENTS

    def __init__(
        self,
        config: RanConfig,
        seed: int = 0,
        l1: Sequence[L1Work] | None = None,
        bound: Bound | None = None,
    ) -> None:
        """``l1``: the real L1 work of each cell (else the slices carry no work, for a
        simulated device); ``bound``: without ``l1``, each slice's bound (the
        estimator's first prediction), by default from :func:`cost_model`."""
        self.config = config
        self.seed = seed
        self._bound: Bound = bound if bound is not None else model_bound
        self.macs = tuple(Mac(config, seed + 7919 * c, cell=c) for c in range(config.cells))
        self.slot_ns = config.slot_ns
        self.l1 = tuple(l1) if l1 is not None else None
        if self.l1 is not None and len(self.l1) != config.cells:
            raise FieldError(
                "l1", f"one L1Work per cell: {config.cells} expected, got {len(self.l1)}"
            )
        self._rng = np.random.default_rng(seed)
        self._last_schedule_ns: int | None = None
        self._faults: FaultInjector | None = None
        self.l1_crc_ok = 0
        self.l1_crc_total = 0

    # -- control -------------------------------------------------------------------
    def set_slice_quotas(self, quotas: Sequence[SliceQuota]) -> None:
        """Apply slice PRB quotas (E2SM-RC style 2 action 6) to every cell, all or
        nothing: the whole set is validated before any cell changes."""
        qs = check_quotas(quotas)
        for mac in self.macs:
            mac.set_slice_quotas(qs)

    def install_faults(self, injector: FaultInjector) -> None:
        """Let ``injector`` silence the L2 (``l2_silence``): in a silent stretch the MAC
        schedules nothing and sends no slot request, so no radio work is released and the
        node's O1 monitor raises ``l2Silence``."""
        self._faults = injector

    # -- measurements --------------------------------------------------------------
    def counters(self) -> DuCounters:
        return DuCounters(
            macs=tuple(m.counters() for m in self.macs),
            l1_crc_ok=self.l1_crc_ok,
            l1_crc_total=self.l1_crc_total,
        )

    def last_l2_message_ns(self) -> int | None:
        """perf_counter_ns of the L2's last slot request (here: the last MAC decision)."""
        return self._last_schedule_ns

    # -- the simulated device: durations from the cost model --------------------------
    cost_model = staticmethod(cost_model)

    def describe(self) -> dict[str, Any]:
        return {"workload": "du", "ran": self.config.model_dump(mode="json"), "synthetic": False}

    # -- slot work -------------------------------------------------------------------
    def radio_tasks(self, start_ns: int, slots: int) -> Iterator[RanTask]:
        """The radio tasks of ``slots`` slots, slot 0 starting at ``start_ns``, in release
        order. The MAC schedules each slot ``slot_ahead - 1`` slots before it starts."""
        lead = self.config.slot_ahead - 1
        mu = self.config.numerology
        pending: dict[int, list[SlotDecision]] = {}
        for m in range(slots + 1):
            for cell, dec in enumerate(pending.pop(m - 1, ())):  # slot m-1 has ended
                if dec.ul:
                    yield self._ul_task(start_ns, m - 1, cell, dec)
            s = m + lead
            if s >= slots or m == slots:
                continue
            faults = self._faults
            if faults is not None and faults.l2_silent(start_ns + m * self.slot_ns):
                continue  # the L2 says nothing about slot s
            decisions = [mac.schedule(SlotId.from_index(s, mu)) for mac in self.macs]
            self._last_schedule_ns = time.perf_counter_ns()
            pending[s] = decisions
            for cell, dec in enumerate(decisions):
                if dec.dl:
                    yield self._dl_task(start_ns, s, cell, dec)

    def _ul_task(self, start_ns: int, n: int, cell: int, dec: SlotDecision) -> RanTask:
        if self.l1 is None:
            return ul_task(self.config, start_ns, n, cell, dec.ul, (None,) * 3, self._bound)
        l1 = self.l1[cell]
        works = l1.ul_work(n, self._count_crc)
        return ul_task(self.config, start_ns, n, cell, dec.ul, works, l1.bound)

    def _dl_task(self, start_ns: int, n: int, cell: int, dec: SlotDecision) -> RanTask:
        if self.l1 is None:
            return dl_task(self.config, start_ns, n, cell, dec.dl, None, self._bound)
        l1 = self.l1[cell]
        return dl_task(self.config, start_ns, n, cell, dec.dl, l1.dl_work(dec), l1.bound)

    def _count_crc(self, ok: int, total: int) -> None:
        self.l1_crc_ok += ok
        self.l1_crc_total += total
