"""The L2 MAC of the simulated DU: traffic, channel, CQI, PF scheduling, HARQ, slice quotas, KPM.

Pure logic (NumPy on the CPU, no I/O). One :class:`Mac` is one cell's MAC. Every slot,
:meth:`Mac.schedule` returns the downlink (PDSCH) and uplink (PUSCH) grants the L1 and the
FAPI layer turn into work; :meth:`Mac.on_ul_crc` takes the L1's CRC.indication.

What it models, and the clauses:

* **Traffic** per UE and direction: full buffer, Poisson packet arrivals, or bursty on/off
  (:class:`~airan.ran.config.TrafficConfig`). The UL buffer is known exactly (ideal BSR).
* **Channel**: per UE a mean SNR drawn uniformly from ``snr_db_range`` (seeded), times a
  time-correlated Rayleigh power gain ``|h|²``: ``h`` follows a Gauss-Markov process
  ``h ← rho·h + √(1-rho²)·w``, ``w ~ CN(0, 1)``, with ``rho = J0(2π·f_D·T_slot)`` (Jakes'
  autocorrelation at a one-slot lag) or ``fading_coefficient``. The same channel is used
  for DL and UL (TDD reciprocity); the SNR is the post-equalisation SNR per layer.
* **CQI** (TS 38.214 §5.2.2.1, tables 5.2.2.1-2/-3): every ``cqi_period_slots`` (staggered
  per UE) each UE reports the highest CQI whose 10 %-BLER SNR is at most its current SNR
  (:func:`airan.ran.tables.cqi_from_snr`); the UL link estimate is refreshed at the same
  period (SRS) and by the SNR the L1 reports with each CRC.
* **MCS** (TS 38.214 §5.1.3.1): the highest MCS of the configured table whose spectral
  efficiency does not exceed the last CQI's; TBS by TS 38.214 §5.1.3.2
  (:func:`airan.ran.tables.tbs_array`), with ``N_DMRS = 12`` REs per DM-RS symbol
  (type 1, two CDM groups without data) and the type A DM-RS positions of TS 38.211
  Table 7.4.1.1.2-3.
* **Scheduling**: proportional fair per slot and direction. Retransmissions first (same
  TBS, PRB count and MCS, next RV), then new transmissions: UEs ranked by
  ``r_i / R̄_i`` (``r_i`` the spectral efficiency of their MCS times layers, ``R̄_i`` an
  exponential average of the bits they were served, time constant ``pf_window_slots``);
  the ``max_ues_per_slot`` best share the PRBs left by water-filling (equal shares, a UE
  never gets more than it needs to empty its buffer). Each UE gets one contiguous PRB
  range (resource allocation type 1, TS 38.214 §5.1.2.2.2).
* **HARQ** (TS 38.321 §5.3.2, §5.4.2; TS 38.214 §5.1.2.1): up to 16 processes per UE and
  direction, new data indicator toggled per new TB, redundancy versions 0, 2, 3, 1, at
  most ``max_harq_tx`` (≤ 4) transmissions, then the TB is dropped and counted. DL
  ACK/NACK arrives K1 slots after the PDSCH; the UL CRC ``ul_deadline_slots`` slots after
  the PUSCH slot ends, from the L1 (:meth:`Mac.on_ul_crc`) or from the link abstraction.
* **Link abstraction** (:func:`link_ok`): BLER is a logistic curve in SNR, 10 % at the
  MCS's threshold of :func:`airan.ran.tables.snr_for_bler10_db`, slope
  ``BLER_SLOPE_PER_DB``; each retransmission adds a combining gain of ``10·log10(n_tx)``.
* **Slice quotas** (TS 28.541 §4.3.36, O-RAN E2SM-RC style 2 action 6): per slot, a
  slice's remaining dedicated PRBs are withheld from every other slice (they stay idle if
  the slice has no data), a slice with data is first served up to its minimum, and no
  slice exceeds its maximum. Quotas are counts of PRBs (``⌊ratio·N_RB/100⌋``), not
  positions. UEs of a slice without a quota share what is left.
* **KPM** (TS 28.552 §5.1.1.2, §5.1.1.3): cumulative raw counters (:class:`MacCounters`)
  and :func:`period_kpm` turning two snapshots into the period's ``DRB.UEThpDl``,
  ``DRB.UEThpUl`` (kbit/s), ``RRU.PrbTotDl``, ``RRU.PrbTotUl`` (%), ``RRU.PrbUsedDl``,
  ``RRU.PrbUsedUl``, ``RRU.PrbAvailDl``, ``RRU.PrbAvailUl`` (PRBs per slot), per cell,
  per UE and per S-NSSAI.

Threads: :meth:`Mac.schedule`, :meth:`Mac.on_ul_crc` and the KPM reads belong to the L2
loop's thread. :meth:`Mac.set_slice_quotas` may be called from any thread: it validates the
whole set, then replaces one immutable :class:`QuotaPlan` (a single reference assignment);
a slot uses the plan it read at its start.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from airan.core.errors import FieldError
from airan.core.rrm import SliceQuota, Snssai, check_quotas
from airan.ran.config import RanConfig
from airan.ran.numerology import SlotId, dmrs_symbols_type_a
from airan.ran.tables import (
    cqi_from_snr,
    cqi_thresholds_db,
    mcs_from_cqi,
    mcs_table,
    snr_for_bler10_db,
    tbs_array,
)

Direction = Literal["dl", "ul"]
DIRECTIONS: tuple[Direction, Direction] = ("dl", "ul")
RV_SEQUENCE: tuple[int, ...] = (0, 2, 3, 1)  # TS 38.214 §5.1.2.1 / TS 38.321 §5.3.2.1
RNTI_BASE = 0x4601  # first C-RNTI handed out (any value in 1..0xFFEF would do)
BLER_SLOPE_PER_DB = 2.0
UL_CRC_GRACE_SLOTS = 4
DMRS_RE_PER_SYMBOL = 12  # DM-RS type 1, two CDM groups without data

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

# -- grants ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grant:
    """One PDSCH or PUSCH allocation of a slot (the content of a DCI 1_1 / 0_1).

    ``code_rate`` is the target code rate Rx1024 of the MCS; ``tbs`` in bits; ``ndi`` the
    new data indicator bit of the HARQ process; ``retx`` the retransmission number
    (0: initial transmission); ``rv`` the redundancy version (0, 2, 3, 1 in turn).
    """

    direction: Direction
    ue: int
    rnti: int
    snssai: Snssai
    prb_start: int
    n_prb: int
    start_symbol: int
    n_symbols: int
    dmrs_symbols: tuple[int, ...]
    mcs: int
    mcs_table: int
    qm: int
    code_rate: float
    layers: int
    tbs: int
    harq_id: int
    rv: int
    ndi: int
    retx: int

    @property
    def spectral_efficiency(self) -> float:
        """Q_m·R per layer, bit/s/Hz."""
        return self.qm * self.code_rate / 1024.0


@dataclass(frozen=True, slots=True)
class SlotDecision:
    """The MAC's decision for one slot: the DL and UL grants, PRB ranges disjoint per
    direction."""

    slot: SlotId
    dl: tuple[Grant, ...]
    ul: tuple[Grant, ...]

    def grants(self, direction: Direction) -> tuple[Grant, ...]:
        return self.dl if direction == "dl" else self.ul


# -- link abstraction -----------------------------------------------------------------------


def bler(
    qm: npt.ArrayLike, code_rate: npt.ArrayLike, snr_db: npt.ArrayLike, retx: npt.ArrayLike = 0
) -> FloatArray:
    """Block error rate of a TB at MCS (Q_m, Rx1024) and SNR (dB), transmission ``retx + 1``.

    ``1 / (1 + 9·exp(s·(SNR + 10·log10(retx+1) - SNR_10)))``: 10 % at ``SNR_10`` (the SNR
    at which the MCS's spectral efficiency meets 10 % BLER, see
    :func:`airan.ran.tables.snr_for_bler10_db`), slope ``s = BLER_SLOPE_PER_DB``.
    """
    se = np.asarray(qm, dtype=np.float64) * np.asarray(code_rate, dtype=np.float64) / 1024.0
    eff = np.asarray(snr_db, dtype=np.float64) + 10.0 * np.log10(
        np.asarray(retx, dtype=np.float64) + 1.0
    )
    x = BLER_SLOPE_PER_DB * (eff - snr_for_bler10_db(se)) + math.log(9.0)
    return np.asarray(1.0 / (1.0 + np.exp(np.clip(x, -50.0, 50.0))), dtype=np.float64)


def link_ok(grant: Grant, snr_db: float, rng: np.random.Generator) -> bool:
    """Whether ``grant``'s TB is decoded at ``snr_db``: a draw against :func:`bler`."""
    return bool(rng.random() >= float(bler(grant.qm, grant.code_rate, snr_db, grant.retx)))


def bessel_j0(x: float) -> float:
    """J0(x) = (1/π)∫_0^π cos(x·sin θ) dθ (composite Simpson, 512 panels)."""
    theta = np.linspace(0.0, math.pi, 1025)
    f = np.cos(x * np.sin(theta))
    w = np.ones_like(theta)
    w[1:-1:2] = 4.0
    w[2:-1:2] = 2.0
    return float((f * w).sum() * (theta[1] - theta[0]) / 3.0 / math.pi)


def fading_rho(config: RanConfig) -> float:
    """Gauss-Markov coefficient per slot: ``fading_coefficient`` or J0(2π·f_D·T_slot),
    clipped to [0, 1]."""
    if config.fading_coefficient is not None:
        return float(config.fading_coefficient)
    x = 2.0 * math.pi * config.doppler_hz * config.slot_ns * 1e-9
    return min(1.0, max(0.0, bessel_j0(x)))


# -- slice quotas -----------------------------------------------------------------------------

SliceKey = tuple[int, int | None]


def _key(s: Snssai) -> SliceKey:
    return (s.sst, s.sd)


@dataclass(frozen=True)
class QuotaPlan:
    """An immutable set of slice quotas and their PRB counts for one carrier.

    ``prbs[key] = (dedicated, minimum, maximum)`` PRBs, ``⌊ratio·n_prb/100⌋`` each.
    """

    quotas: tuple[SliceQuota, ...]
    n_prb: int
    prbs: Mapping[SliceKey, tuple[int, int, int]]

    @classmethod
    def build(cls, quotas: tuple[SliceQuota, ...], n_prb: int) -> QuotaPlan:
        prbs = {
            _key(q.snssai): (
                q.dedicated_ratio * n_prb // 100,
                q.min_ratio * n_prb // 100,
                q.max_ratio * n_prb // 100,
            )
            for q in quotas
        }
        return cls(quotas, n_prb, prbs)


# -- HARQ -------------------------------------------------------------------------------------

_FREE, _WAIT, _RETX = 0, 1, 2


@dataclass(slots=True)
class _Harq:
    state: int = _FREE
    ndi: int = 0
    ntx: int = 0
    seq: int = 0  # bumped per transmission: stale feedback is ignored
    tbs: int = 0
    payload: float = 0.0
    last_piece: bool = False
    n_prb: int = 0
    mcs: int = 0
    tx_index: int = 0  # absolute slot of the latest transmission
    tx_slot: SlotId | None = None
    outcome: bool | None = None
    order: int = 0


# -- counters and KPM -------------------------------------------------------------------------

_COUNTERS = (
    "vol_bits", "thp_slots", "delivered_bits", "prb_used", "tb_new", "tb_retx", "acks",
    "nacks", "drops", "dropped_bits", "crc_timeouts",
)  # fmt: skip


@dataclass(frozen=True)
class DirCounters:
    """Cumulative counters of one direction, per UE (arrays indexed by UE).

    ``vol_bits``/``thp_slots``: ThpVol and ThpTime of TS 28.552 §5.1.1.3 (bits acknowledged
    and slots with data buffered, both excluding the slot, and the data, that emptied the
    buffer). ``delivered_bits``: all acknowledged payload. ``prb_used``: PRB·slots
    allocated (new and retransmissions). ``tb_new``/``tb_retx``: transmissions;
    ``acks``/``nacks``: HARQ outcomes; ``drops``/``dropped_bits``: TBs abandoned after the
    last transmission; ``crc_timeouts``: UL CRCs the L1 never reported. ``prb_avail``:
    PRB·slots of the carrier.
    """

    vol_bits: FloatArray
    thp_slots: IntArray
    delivered_bits: FloatArray
    prb_used: IntArray
    tb_new: IntArray
    tb_retx: IntArray
    acks: IntArray
    nacks: IntArray
    drops: IntArray
    dropped_bits: FloatArray
    crc_timeouts: IntArray
    prb_avail: int


@dataclass(frozen=True)
class MacCounters:
    """A snapshot of the MAC's cumulative counters (read-only arrays)."""

    slots: int
    slot_s: float
    n_prb: int
    rnti: tuple[int, ...]
    slices: tuple[str, ...]
    dl: DirCounters
    ul: DirCounters

    def direction(self, d: Direction) -> DirCounters:
        return self.dl if d == "dl" else self.ul


def _delta(before: MacCounters | None, after: MacCounters) -> tuple[int, DirCounters, DirCounters]:
    if before is None:
        return after.slots, after.dl, after.ul
    if before.rnti != after.rnti or before.slot_s != after.slot_s:
        raise FieldError("before", "snapshots of different MACs")
    if after.slots < before.slots:
        raise FieldError("before", "taken after 'after'")
    out = []
    for d in DIRECTIONS:
        a, b = after.direction(d), before.direction(d)
        kw: dict[str, Any] = {n: getattr(a, n) - getattr(b, n) for n in _COUNTERS}
        out.append(DirCounters(**kw, prb_avail=a.prb_avail - b.prb_avail))
    return after.slots - before.slots, out[0], out[1]


def _metrics(
    slots: int, slot_s: float, dl: DirCounters, ul: DirCounters, mask: npt.NDArray[np.bool_]
) -> dict[str, float]:
    m: dict[str, float] = {}
    for name, c in (("Dl", dl), ("Ul", ul)):
        t = float(c.thp_slots[mask].sum()) * slot_s
        used = float(c.prb_used[mask].sum())
        acks, nacks = float(c.acks[mask].sum()), float(c.nacks[mask].sum())
        m[f"DRB.UEThp{name}"] = float(c.vol_bits[mask].sum()) / t / 1000.0 if t > 0 else 0.0
        m[f"RRU.PrbTot{name}"] = 100.0 * used / c.prb_avail if c.prb_avail else 0.0
        m[f"RRU.PrbUsed{name}"] = used / slots if slots else 0.0
        m[f"RRU.PrbAvail{name}"] = c.prb_avail / slots if slots else 0.0
        m[f"airan.mac.bits{name}"] = float(c.delivered_bits[mask].sum())
        m[f"airan.mac.tbNew{name}"] = float(c.tb_new[mask].sum())
        m[f"airan.mac.tbRetx{name}"] = float(c.tb_retx[mask].sum())
        m[f"airan.mac.harqDrops{name}"] = float(c.drops[mask].sum())
        m[f"airan.mac.bler{name}"] = nacks / (acks + nacks) if acks + nacks else 0.0
    m["airan.mac.crcTimeoutsUl"] = float(ul.crc_timeouts[mask].sum())
    m["airan.mac.slots"] = float(slots)
    return m


def period_kpm(before: MacCounters | None, after: MacCounters) -> dict[str, float]:
    """The cell's KPM over the period between two snapshots (``before=None``: since start).

    TS 28.552 names: ``DRB.UEThpDl``/``DRB.UEThpUl`` (§5.1.1.3.1/3: ΣThpVol / ΣThpTime over
    the UEs, kbit/s), ``RRU.PrbTotDl``/``RRU.PrbTotUl`` (§5.1.1.2.1/2: PRB usage, %),
    ``RRU.PrbUsedDl``/``RRU.PrbUsedUl`` (§5.1.1.2.5/6: PRBs used per slot, mean),
    ``RRU.PrbAvailDl``/``RRU.PrbAvailUl`` (§5.1.1.2.7/8: PRBs available per slot). Plus the
    node's own ``airan.mac.*`` counts (bits delivered, TBs, HARQ drops, BLER).
    """
    slots, dl, ul = _delta(before, after)
    return _metrics(slots, after.slot_s, dl, ul, np.ones(len(after.rnti), dtype=bool))


def period_kpm_per_ue(
    before: MacCounters | None, after: MacCounters
) -> dict[int, dict[str, float]]:
    """:func:`period_kpm` per UE, keyed by C-RNTI (``RRU.Prb*`` are that UE's PRBs)."""
    slots, dl, ul = _delta(before, after)
    n = len(after.rnti)
    return {
        r: _metrics(slots, after.slot_s, dl, ul, np.arange(n) == i)
        for i, r in enumerate(after.rnti)
    }


def period_kpm_per_slice(
    before: MacCounters | None, after: MacCounters
) -> dict[str, dict[str, float]]:
    """:func:`period_kpm` per S-NSSAI (the ``.SNSSAI`` sub-counters of TS 28.552), keyed by
    ``str(snssai)`` ("1", "1-00000a", ...)."""
    slots, dl, ul = _delta(before, after)
    sl = np.array(after.slices)
    return {s: _metrics(slots, after.slot_s, dl, ul, sl == s) for s in sorted(set(after.slices))}


@dataclass
class _Dir:
    """Mutable per-direction state."""

    buffer: FloatArray
    counters: dict[str, npt.NDArray[Any]]
    harq: list[list[_Harq]]
    free: IntArray
    avg: FloatArray
    lut: IntArray  # TBS by [mcs, n_prb]
    start_symbol: int
    n_symbols: int
    dmrs: tuple[int, ...]
    retx: dict[tuple[int, int], int] = field(default_factory=dict)
    prb_avail: int = 0
    lut_sorted: bool = False  # every row of lut non-decreasing
    full_buffer: bool = False  # every buffer is (and stays) inf
    lut_rows: list[list[int]] = field(default_factory=list)  # lut.tolist()


# -- the MAC ----------------------------------------------------------------------------------


class Mac:
    """One cell's L2 MAC (see the module docstring for the model).

    ``seed`` (with ``cell``) makes every draw deterministic. ``ul_crc_from_l1``: the UL
    outcome comes only from :meth:`on_ul_crc` (a CRC not reported within
    ``ul_deadline_slots + slot_ahead + UL_CRC_GRACE_SLOTS`` slots of the PUSCH counts as a
    failure); otherwise the MAC decides it with :func:`link_ok`.
    """

    def __init__(
        self, config: RanConfig, seed: int, *, cell: int = 0, ul_crc_from_l1: bool = False
    ) -> None:
        if not isinstance(config, RanConfig):
            raise FieldError("config", "must be a RanConfig (use RanConfig.parse)")
        if not 0 <= cell < config.cells:
            raise FieldError("cell", f"must be in 0..{config.cells - 1}")
        self.config = config
        self.cell = cell
        self.ul_crc_from_l1 = ul_crc_from_l1
        self.n_prb = config.n_prb
        self.mu = config.numerology
        self.n_ue = n = config.ues
        self.rntis: tuple[int, ...] = tuple(RNTI_BASE + i for i in range(n))
        self._ue_of = {r: i for i, r in enumerate(self.rntis)}
        self.ue_snssai: tuple[Snssai, ...] = config.ue_snssai()
        self._ue_key = [_key(s) for s in self.ue_snssai]
        ss = np.random.SeedSequence([seed, cell])
        self._rng_chan, self._rng_traffic, self._rng_link = (
            np.random.Generator(np.random.PCG64(s)) for s in ss.spawn(3)
        )
        lo, hi = config.snr_db_range
        self.mean_snr_db: FloatArray = self._rng_chan.uniform(lo, hi, n)
        self._rho = fading_rho(config)
        self._h = (self._rng_chan.standard_normal(n) + 1j * self._rng_chan.standard_normal(n)) / (
            math.sqrt(2.0)
        )
        self._cqi_offset = np.arange(n, dtype=np.int64) % config.cqi_period_slots
        self._on = self._rng_traffic.random(n) < config.traffic.on_ms / (
            config.traffic.on_ms + config.traffic.off_ms
        )
        self._table = config.mcs_table
        rows = mcs_table(self._table)
        self._se = np.array([(e.qm * e.rate_x1024 / 1024.0) if e.rate_x1024 else 0.0 for e in rows])
        self._mcs_info: list[tuple[int, float]] = [(e.qm, float(e.rate_x1024 or 0.0)) for e in rows]
        # the terms of bler(): snr_for_bler10_db(Q_m·R/1024) per MCS, 10·log10(retx + 1)
        se = (
            np.array([float(e.qm) for e in rows])
            * np.array([float(e.rate_x1024 or 0.0) for e in rows])
            / 1024.0
        )
        self._snr10_by_mcs: FloatArray = snr_for_bler10_db(se)
        self._retx_gain_db: FloatArray = 10.0 * np.log10(np.arange(4, dtype=np.float64) + 1.0)
        self._mcs_by_cqi: IntArray = mcs_from_cqi(np.arange(16, dtype=np.int64), self._table)
        # the thresholds of mcs_from_snr
        self._mcs_thr = snr_for_bler10_db(
            np.array([e.efficiency for e in rows if e.efficiency is not None])
        )
        self._dirs = {d: self._make_dir(d) for d in DIRECTIONS}
        snr = self._snr = self.snr_db
        self._cqi_thr = cqi_thresholds_db(self._table)
        self.cqi: IntArray = cqi_from_snr(snr, self._table)
        self.ul_snr_est: FloatArray = snr.copy()
        self._plan = QuotaPlan.build(config.slice_quotas, self.n_prb)
        self._heap: list[tuple[int, int, int, int, int]] = []  # (due, seq, dir, ue, pid)
        self._seq = 0
        self._order = 0
        self._abs: int | None = None
        self._last: SlotId | None = None
        self._slots = 0
        self._plan_groups: tuple[QuotaPlan, list[SliceKey | None], list[SliceKey | None]] | None = (
            None
        )

    def _make_dir(self, d: Direction) -> _Dir:
        c = self.config
        n, p = self.n_ue, c.harq_processes
        start, nsym = (c.dl_start_symbol, c.dl_symbols) if d == "dl" else (
            c.ul_start_symbol, c.ul_symbols)  # fmt: skip
        dmrs = dmrs_symbols_type_a(start + nsym, c.dmrs_additional_position, 3 if start == 3 else 2)
        rows = mcs_table(c.mcs_table)
        qm = np.array([e.qm for e in rows], dtype=np.float64)[:, None]
        rate = np.array([e.rate_x1024 or 0.0 for e in rows])[:, None]
        lut = tbs_array(
            qm, rate, np.arange(self.n_prb + 1)[None, :], nsym, DMRS_RE_PER_SYMBOL * len(dmrs),
            c.x_overhead, c.layers,
        )  # fmt: skip
        full = c.traffic.kind == "full_buffer"
        counters: dict[str, npt.NDArray[Any]] = {
            k: np.zeros(n, dtype=np.float64 if k.endswith("bits") else np.int64) for k in _COUNTERS
        }
        return _Dir(
            buffer=np.full(n, np.inf if full else 0.0),
            counters=counters,
            harq=[[_Harq() for _ in range(p)] for _ in range(n)],
            free=np.full(n, p, dtype=np.int64),
            avg=np.ones(n),
            lut=lut,
            start_symbol=start,
            n_symbols=nsym,
            dmrs=dmrs,
            lut_sorted=bool(np.all(np.diff(lut, axis=1) >= 0)),
            full_buffer=full,
            lut_rows=lut.tolist(),
        )

    # -- public state ------------------------------------------------------------------
    @property
    def snr_db(self) -> FloatArray:
        """Current SNR (dB) of each UE: mean plus Rayleigh fading."""
        if not self.config.fading:
            return self.mean_snr_db.copy()
        g = np.maximum(np.abs(self._h) ** 2, 1e-9)
        return np.asarray(self.mean_snr_db + 10.0 * np.log10(g), dtype=np.float64)

    @property
    def slice_quotas(self) -> tuple[SliceQuota, ...]:
        """The slice quotas in force."""
        return self._plan.quotas

    @property
    def quota_plan(self) -> QuotaPlan:
        return self._plan

    def buffer_bits(self, direction: Direction) -> FloatArray:
        """Bits waiting per UE (``inf`` for full buffer)."""
        return self._dirs[direction].buffer.copy()

    def ue_of(self, rnti: int) -> int:
        """The UE index of a C-RNTI."""
        if rnti not in self._ue_of:
            raise FieldError("rnti", f"no UE with C-RNTI {rnti:#x} in this cell")
        return self._ue_of[rnti]

    def set_slice_quotas(self, quotas: Iterable[SliceQuota | Mapping[str, Any]]) -> None:
        """Validate the whole set (each quota, then :func:`check_quotas`) and apply it at once.

        Raises :class:`FieldError` and changes nothing when any of it is invalid. Safe to
        call from another thread: the new plan replaces the old by one reference swap and
        applies from the next slot scheduled.
        """
        items: list[SliceQuota] = []
        for i, q in enumerate(quotas):
            if isinstance(q, SliceQuota):
                items.append(q)
            elif isinstance(q, Mapping):
                items.append(SliceQuota.parse(q, where=f"slice_quotas[{i}]"))
            else:
                raise FieldError(f"slice_quotas[{i}]", "must be a SliceQuota or a mapping")
        plan = QuotaPlan.build(check_quotas(items, "slice_quotas"), self.n_prb)
        self._plan = plan

    # -- the slot loop -----------------------------------------------------------------
    def schedule(self, slot: SlotId) -> SlotDecision:
        """Schedule ``slot``: returns its DL and UL grants. Slots must be given in order
        (gaps allowed: the channel and traffic advance over the skipped slots)."""
        if not isinstance(slot, SlotId):
            raise FieldError("slot", "must be a SlotId")
        if slot.mu != self.mu:
            raise FieldError("slot.mu", f"numerology {slot.mu} != the cell's {self.mu}")
        if self._abs is None or self._last is None:
            a, k = slot.index, 1
        else:
            k = slot - self._last
            if k <= 0:
                raise FieldError(
                    "slot", f"{slot} is not after the last scheduled slot {self._last}"
                )
            a = self._abs + k
        prev = a - k
        self._advance(k, prev, a)
        self._abs, self._last = a, slot
        self._slots += 1
        self._process_feedback(a)
        plan = self._plan  # read once: a concurrent set_slice_quotas applies next slot
        dl = self._schedule_dir("dl", a, slot, plan)
        ul = self._schedule_dir("ul", a, slot, plan)
        return SlotDecision(slot, dl, ul)

    def _advance(self, k: int, prev: int, a: int) -> None:
        c = self.config
        n = self.n_ue
        if c.fading:
            rk = self._rho**k
            w = (self._rng_chan.standard_normal(n) + 1j * self._rng_chan.standard_normal(n)) / (
                math.sqrt(2.0)
            )
            self._h = rk * self._h + math.sqrt(max(0.0, 1.0 - rk * rk)) * w
        snr = self._snr = self.snr_db
        # CQI / SRS reports due in (prev, a]
        p = c.cqi_period_slots
        last_report = a - ((a + self._cqi_offset) % p)
        due = last_report > prev
        if due.any():
            cqi = np.asarray(
                np.searchsorted(self._cqi_thr, snr, side="right") - 1, dtype=np.int64
            )  # = cqi_from_snr(snr, self._table), thresholds computed once
            self.cqi = np.where(due, cqi, self.cqi)
            self.ul_snr_est = np.where(due, snr, self.ul_snr_est)
        self._arrivals(k)

    def _arrivals(self, k: int) -> None:
        t = self.config.traffic
        if t.kind == "full_buffer":
            return
        slot_s = self.config.slot_ns * 1e-9
        bits = t.packet_bytes * 8
        rng = self._rng_traffic
        rates: tuple[tuple[Direction, float], ...] = (
            ("dl", t.dl_rate_mbps), ("ul", t.ul_rate_mbps)
        )  # fmt: skip
        if t.kind == "poisson":
            for d, rate in rates:
                lam = rate * 1e6 * slot_s / bits  # packets per slot
                self._dirs[d].buffer += rng.poisson(lam * k, self.n_ue) * bits
        else:
            p_off = 1.0 - math.exp(-slot_s * 1e3 / t.on_ms)
            p_on = 1.0 - math.exp(-slot_s * 1e3 / t.off_ms)
            for _ in range(k):
                u = rng.random(self.n_ue)
                self._on = np.where(self._on, u >= p_off, u < p_on)
                for d, rate in rates:
                    lam = rate * 1e6 * slot_s / bits
                    self._dirs[d].buffer += rng.poisson(lam, self.n_ue) * bits * self._on

    def _process_feedback(self, a: int) -> None:
        heap = self._heap
        if not heap or heap[0][0] > a:
            return
        pop = heapq.heappop
        dirs = (self._dirs["dl"], self._dirs["ul"])
        max_tx = self.config.max_harq_tx
        while heap and heap[0][0] <= a:
            _, seq, di, ue, pid = pop(heap)
            st = dirs[di]
            h = st.harq[ue][pid]
            if h.state != _WAIT or h.seq != seq:
                continue  # already resolved (CRC.indication came first)
            c = st.counters
            ok = h.outcome
            if ok is None:  # the L1 never reported this UL CRC
                c["crc_timeouts"][ue] += 1
                ok = False
            # as _feedback
            if ok:
                c["acks"][ue] += 1
                c["delivered_bits"][ue] += h.payload
                if not h.last_piece:
                    c["vol_bits"][ue] += h.payload
                h.state = _FREE
                st.free[ue] += 1
                continue
            c["nacks"][ue] += 1
            if h.ntx >= max_tx:
                c["drops"][ue] += 1
                c["dropped_bits"][ue] += h.payload
                h.state = _FREE
                st.free[ue] += 1
                continue
            h.state = _RETX
            self._order += 1
            h.order = self._order
            st.retx[(ue, pid)] = self._order

    def _feedback(self, d: Direction, ue: int, pid: int, ok: bool) -> None:
        st = self._dirs[d]
        h = st.harq[ue][pid]
        c = st.counters
        if ok:
            c["acks"][ue] += 1
            c["delivered_bits"][ue] += h.payload
            if not h.last_piece:
                c["vol_bits"][ue] += h.payload
            h.state = _FREE
            st.free[ue] += 1
            return
        c["nacks"][ue] += 1
        if h.ntx >= self.config.max_harq_tx:
            c["drops"][ue] += 1
            c["dropped_bits"][ue] += h.payload
            h.state = _FREE
            st.free[ue] += 1
            return
        h.state = _RETX
        self._order += 1
        h.order = self._order
        st.retx[(ue, pid)] = self._order

    def on_ul_crc(
        self, slot: SlotId, rnti: int, harq_id: int, ok: bool, snr_db: float | None = None
    ) -> bool:
        """CRC.indication from the L1 for the PUSCH of ``slot``: apply the outcome to UL
        HARQ process ``harq_id`` of ``rnti`` and, when given, take ``snr_db`` as the UL
        link estimate. Returns False (and changes nothing) when that process is not
        waiting for the CRC of that slot (late or duplicate indication)."""
        ue = self.ue_of(rnti)
        if not 0 <= harq_id < self.config.harq_processes:
            raise FieldError("harq_id", f"must be in 0..{self.config.harq_processes - 1}")
        if snr_db is not None:
            if not math.isfinite(snr_db):
                raise FieldError("snr_db", "must be finite")
            self.ul_snr_est[ue] = snr_db
        h = self._dirs["ul"].harq[ue][harq_id]
        if h.state != _WAIT or h.tx_slot != slot:
            return False
        self._feedback("ul", ue, harq_id, bool(ok))
        return True

    # -- allocation --------------------------------------------------------------------
    def _groups(self, plan: QuotaPlan) -> tuple[list[SliceKey | None], list[SliceKey | None]]:
        """Per UE its quota group (its S-NSSAI if the plan has a quota for it, else None),
        and all groups (quota slices in S-NSSAI order, then None); cached per plan."""
        cached = self._plan_groups
        if cached is not None and cached[0] is plan:
            return cached[1], cached[2]
        gk = [k if k in plan.prbs else None for k in self._ue_key]
        quota_keys: list[SliceKey] = sorted(plan.prbs, key=lambda k: (k[0], k[1] or -1))
        groups: list[SliceKey | None] = [*quota_keys, None]
        self._plan_groups = (plan, gk, groups)
        return gk, groups

    def _mcs_of(self, d: Direction) -> IntArray:
        """The MCS of each UE for direction ``d``: :func:`mcs_from_cqi` of the CQI (DL) or
        :func:`mcs_from_snr` of the UL estimate, by lookup in tables made once (elementwise
        the same result)."""
        if d == "dl":
            cqi = self.cqi
            if cqi.dtype == np.int64 and cqi.ndim == 1 and cqi.min() >= 0 and cqi.max() <= 15:
                return self._mcs_by_cqi[cqi]
            return mcs_from_cqi(cqi, self._table)  # raises on a CQI out of range
        return np.asarray(
            np.searchsorted(self._mcs_thr, self.ul_snr_est, side="right") - 1, dtype=np.int64
        )

    def _schedule_dir(
        self, d: Direction, a: int, slot: SlotId, plan: QuotaPlan
    ) -> tuple[Grant, ...]:
        c = self.config
        st = self._dirs[d]
        n_rb = self.n_prb
        prbs = plan.prbs
        gk, groups = self._groups(plan)
        ded = {g: prbs[g][0] if g is not None else 0 for g in groups}
        mins = {g: prbs[g][1] if g is not None else 0 for g in groups}
        maxs = {g: prbs[g][2] if g is not None else n_rb for g in groups}
        reserving = [g for g in groups if ded[g]]
        used = dict.fromkeys(groups, 0)
        free = n_rb
        max_ues = c.max_ues_per_slot
        harq = st.harq

        def room(g: SliceKey | None) -> int:
            """PRBs group g may still take: its max, and other slices' unused dedicated PRBs
            withheld."""
            r = maxs[g] - used[g]
            f = free
            if reserving:
                for t in reserving:
                    if t != g:
                        x = ded[t] - used[t]
                        if x > 0:
                            f -= x
            if f < r:
                r = f
            return r if r > 0 else 0

        allocs: list[tuple[int, int, int | None]] = []  # (ue, n_prb, retx pid or None)
        taken: set[int] = set()
        # 1. retransmissions, oldest NACK first, same PRB count
        if st.retx:
            for (ue, pid), _ in sorted(st.retx.items(), key=lambda kv: kv[1]):
                if len(taken) >= max_ues:
                    break
                if ue in taken:
                    continue
                n = harq[ue][pid].n_prb
                g = gk[ue]
                if n <= room(g):
                    allocs.append((ue, n, pid))
                    taken.add(ue)
                    used[g] += n
                    free -= n
        # 2. new transmissions, proportional fair
        mcs = self._mcs_of(d)
        buf = st.buffer
        ok = (buf > 0) & (st.free > 0) & (mcs >= 0)
        if taken:
            ok[list(taken)] = False
        give: dict[int, int] = {}
        rank: dict[int, int] = {}
        slots_left = max_ues - len(taken)
        if free > 0 and slots_left > 0 and ok.any():
            metric = self._se[np.maximum(mcs, 0)] * c.layers / np.maximum(st.avg, 1e-9)
            idx = np.flatnonzero(ok)
            order: list[int] = idx[np.lexsort((idx, -metric[idx]))].tolist()
            rank = {u: i for i, u in enumerate(order)}
            # PRBs that empty each candidate's buffer at its MCS (all of them for full
            # buffer): searchsorted(row, buf, "left") on a non-decreasing row
            if st.full_buffer:  # buffers stay inf: every row of lut is < inf
                need = dict.fromkeys(order, n_rb)
            elif st.lut_sorted:
                nv = (st.lut[mcs[idx]] < buf[idx, None]).sum(axis=1)
                need = dict(zip(idx.tolist(), np.minimum(nv, n_rb).tolist(), strict=True))
            else:
                need = {
                    u: min(n_rb, int(np.searchsorted(st.lut[int(mcs[u])], buf[u], side="left")))
                    for u in order
                }

            def fill(cands: list[int], budget: int) -> None:
                """Water-fill ``budget`` PRBs over the best candidates (equal shares, each
                capped by its need and its slice's room)."""
                nonlocal free, slots_left
                if give:
                    cset = set(cands)
                    active = [u for u in give if u in cset]
                else:
                    active = []
                for u in cands:
                    if slots_left <= 0:
                        break
                    if u not in give and room(gk[u]) > 0:
                        give[u] = 0
                        active.append(u)
                        slots_left -= 1
                active.sort(key=rank.__getitem__)
                while budget > 0 and active:
                    share = budget // len(active)
                    if share < 1:
                        share = 1
                    progressed = False
                    nxt = []
                    for u in active:
                        if budget <= 0:
                            break
                        g = gk[u]
                        gu = give[u]
                        nu = need[u]
                        r = nu - gu
                        if share < r:
                            r = share
                        rm = room(g)
                        if rm < r:
                            r = rm
                        if budget < r:
                            r = budget
                        if r > 0:
                            gu += r
                            give[u] = gu
                            used[g] += r
                            free -= r
                            budget -= r
                            progressed = True
                            rm = room(g)
                        if nu > gu and rm > 0:
                            nxt.append(u)
                    if not progressed:
                        break
                    active = nxt

            # 2a. slices with data below their minimum first (TS 28.541 rRMPolicyMinRatio)
            for g in groups:
                short = mins[g] - used[g]
                if g is not None and short > 0:
                    cands = [u for u in order if gk[u] == g]
                    if cands:
                        fill(cands, min(short, room(g)))
            # 2b. what is left, by PF metric
            fill(order, free)
            give = {u: v for u, v in give.items() if v > 0}
        # 3. lay out contiguous ranges and build the grants
        grants: list[Grant] = []
        cursor = 0
        cnt = st.counters
        slot_prb = cnt["prb_used"]
        tb_new = cnt["tb_new"]
        tb_retx = cnt["tb_retx"]
        active_before = buf > 0
        emptied = np.zeros(self.n_ue, dtype=bool)
        served = np.zeros(self.n_ue)
        new_allocs: list[tuple[int, int, int | None]] = [
            (u, v, None) for u, v in sorted(give.items(), key=lambda kv: rank[kv[0]])
        ]
        sent: list[tuple[int, int, _Harq]] = []
        mcs_info = self._mcs_info
        rntis, snssai = self.rntis, self.ue_snssai
        table, layers = self._table, c.layers
        start_symbol, n_symbols, dmrs = st.start_symbol, st.n_symbols, st.dmrs
        retx_map = st.retx
        for ue, n, retx_pid in allocs + new_allocs:
            if retx_pid is None:
                pid = self._new_tb(st, ue, n, int(mcs[ue]))
                h = harq[ue][pid]
                served[ue] = h.payload
                emptied[ue] = h.last_piece
                tb_new[ue] += 1
            else:
                pid = retx_pid
                del retx_map[(ue, pid)]
                tb_retx[ue] += 1
                h = harq[ue][pid]
            ntx = h.ntx = h.ntx + 1
            self._seq += 1
            h.seq = self._seq
            h.state = _WAIT
            h.tx_index = a
            h.tx_slot = slot
            qm, code_rate = mcs_info[h.mcs]
            grant = Grant(
                d, ue, rntis[ue], snssai[ue], cursor, n, start_symbol, n_symbols, dmrs, h.mcs,
                table, qm, code_rate, layers, h.tbs, pid, RV_SEQUENCE[(ntx - 1) % 4], h.ndi,
                ntx - 1,
            )  # fmt: skip
            cursor += n
            slot_prb[ue] += n
            grants.append(grant)
            sent.append((ue, pid, h))
        cnt["thp_slots"] += (active_before & ~emptied).astype(np.int64)
        self._await(d, a, sent)
        st.prb_avail += n_rb
        st.avg += (served - st.avg) / c.pf_window_slots
        return tuple(grants)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _new_tb(self, st: _Dir, ue: int, n: int, mcs: int) -> int:
        procs = st.harq[ue]
        for pid, h in enumerate(procs):  # noqa: B007
            if h.state == _FREE:
                break
        else:
            raise RuntimeError("no free HARQ process")
        st.free[ue] -= 1
        h.ndi ^= 1
        h.ntx = 0
        h.n_prb = n
        h.mcs = mcs
        h.tbs = tbs = st.lut_rows[mcs][n]
        have = float(st.buffer[ue])
        h.payload = payload = float(min(tbs, have))
        left = have - payload
        st.buffer[ue] = left
        h.last_piece = left <= 0
        h.outcome = None
        return pid

    def _await(self, d: Direction, a: int, sent: list[tuple[int, int, _Harq]]) -> None:
        """Decide (link abstraction, one vectorised draw) or await each TB's outcome.

        The draw is against :func:`bler`, computed here from per-MCS and per-retransmission
        tables of its terms (the same elementwise operations on the same values)."""
        if not sent:
            return
        c = self.config
        snr10 = self._snr10_by_mcs[[h.mcs for _, _, h in sent]]
        gain = self._retx_gain_db[[h.ntx - 1 for _, _, h in sent]]
        eff = self._snr[[ue for ue, _, _ in sent]] + gain
        x = BLER_SLOPE_PER_DB * (eff - snr10) + math.log(9.0)
        p = 1.0 / (1.0 + np.exp(np.clip(x, -50.0, 50.0)))
        ok = self._rng_link.random(len(sent)) >= p
        if d == "dl":
            due, decide = a + c.k1_slots, True
        elif not self.ul_crc_from_l1:
            due, decide = a + c.ul_deadline_slots + 1, True
        else:
            due = a + c.ul_deadline_slots + 1 + c.slot_ahead + UL_CRC_GRACE_SLOTS
            decide = False
        di = 0 if d == "dl" else 1
        heap = self._heap
        push = heapq.heappush
        for (ue, pid, h), o in zip(sent, ok.tolist(), strict=True):
            h.outcome = bool(o) if decide else None
            push(heap, (due, h.seq, di, ue, pid))

    # -- KPM -----------------------------------------------------------------------------
    def counters(self) -> MacCounters:
        """A snapshot of the cumulative counters (copies; read-only arrays)."""

        def snap(d: Direction) -> DirCounters:
            st = self._dirs[d]
            arrays = {}
            for k in _COUNTERS:
                v = st.counters[k].copy()
                v.setflags(write=False)
                arrays[k] = v
            return DirCounters(**arrays, prb_avail=st.prb_avail)

        return MacCounters(
            slots=self._slots,
            slot_s=self.config.slot_ns * 1e-9,
            n_prb=self.n_prb,
            rnti=self.rntis,
            slices=tuple(str(s) for s in self.ue_snssai),
            dl=snap("dl"),
            ul=snap("ul"),
        )

    def kpm(self) -> dict[str, float]:
        """The cell's KPM since the start (:func:`period_kpm` of one snapshot)."""
        return period_kpm(None, self.counters())

    def kpm_per_ue(self) -> dict[int, dict[str, float]]:
        """KPM per UE since the start, keyed by C-RNTI."""
        return period_kpm_per_ue(None, self.counters())

    def kpm_per_slice(self) -> dict[str, dict[str, float]]:
        """KPM per S-NSSAI since the start, keyed by ``str(snssai)``."""
        return period_kpm_per_slice(None, self.counters())
