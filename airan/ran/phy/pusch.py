"""PUSCH receive chain for one slot and several UEs (TS 38.211 §6.3.1-§6.4.1, TS 38.212 §6.2).

The transmit side that this inverts (TS 38.211 §6.3.1, transform precoding disabled)::

    UL-SCH coding (TS 38.212 §6.2: CRC, LDPC, rate matching)      coding.encode_tb
    → scrambling c_init = n_RNTI·2^15 + n_ID (§6.3.1.1)          scrambling
    → modulation (§6.3.1.2, §5.1)                                 modulation
    → layer mapping x^(v)(i) = d(L·i + v) (§6.3.1.3, Table 7.3.1.3-1)
    → identity precoding: layer v on DM-RS port v (§6.3.1.5, W = I)
    → mapping to VRBs / PRBs, frequency first then time, DM-RS symbols excluded
      (§6.3.1.6, §6.3.1.7, non-interleaved)                       plus DM-RS (§6.4.1.1)
    → OFDM with CP (§5.3.1)                                       ofdm

The receiver runs as three **stages**, each a bounded piece of device work that a
scheduler can issue separately (and, on a GPU, capture as a CUDA graph: no host
synchronisation and no data-dependent shape inside the first two):

1. :meth:`PuschReceiver.front_end` — CP removal and one batched FFT for all antennas and
   symbols, into a preallocated grid;
2. :meth:`PuschReceiver.equalise` — per UE: DM-RS LS channel estimation and noise
   estimation (:mod:`chanest`), MMSE equalisation (:mod:`equalizer`), soft demapping and
   descrambling (sign flips by a precomputed sequence) → LLRs on the device;
3. :meth:`PuschReceiver.decode` — per UE: rate recovery, LDPC decoding, CB and TB CRC
   (:func:`airan.ran.phy.coding.decode_tb`), optional HARQ soft combining.

Everything shape-dependent (DM-RS values, index arrays, interpolation weights,
scrambling signs, TB plans) is computed once per grant set in :meth:`PuschReceiver.plan`
on the host and cached.

:class:`CellConfig` and :class:`SchGrant` are shared with :mod:`airan.ran.phy.pdsch`:
PDSCH (§7.3.1) has the same structure, and with codeword ``q = 0`` the same scrambling
seed and DM-RS (§7.3.1.1, §7.4.1.1), so a PDSCH transmitter's output is a valid PUSCH
(transform precoding off) for this receiver.
"""

from __future__ import annotations

import itertools
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from airan.core.errors import FieldError
from airan.ran.numerology import slots_per_subframe
from airan.ran.phy import coding
from airan.ran.phy.chanest import ChanEstPlan, TimeInterp, estimate
from airan.ran.phy.dmrs import MAX_PORTS, DmrsPattern, dmrs_pattern, dmrs_symbols
from airan.ran.phy.equalizer import MAX_RX, mmse
from airan.ran.phy.modulation import DemapMethod, check_qm, demodulate
from airan.ran.phy.ofdm import (
    SC_PER_PRB,
    SYMBOLS_PER_SLOT,
    OfdmPlan,
    check_mu,
    cp_lengths,
    fft_size,
)
from airan.ran.phy.scrambling import pusch_c_init, sign_sequence


@dataclass(frozen=True)
class CellConfig:
    """Cell-level physical-layer parameters shared by PUSCH and PDSCH.

    ``n_prb``: carrier grid size N_grid (the grid is taken to start at common RB 0);
    ``n_id``: N_ID^cell, the default data scrambling and DM-RS identity (§6.3.1.1,
    §6.4.1.1.1.1); ``dmrs_n_id``: N_ID^0 for the DM-RS when configured;
    ``dmrs_typea_pos``: dmrs-TypeA-Position l0 (2 or 3); ``nfft``: FFT size (default
    :func:`airan.ran.phy.ofdm.fft_size`).
    """

    mu: int = 1
    n_prb: int = 51
    n_id: int = 0
    dmrs_n_id: int | None = None
    dmrs_typea_pos: int = 2
    nfft: int | None = None

    def __post_init__(self) -> None:
        check_mu(self.mu)
        if (
            isinstance(self.n_prb, bool)
            or not isinstance(self.n_prb, int)
            or not (1 <= self.n_prb <= 275)
        ):
            raise FieldError("cell.n_prb", f"must be an integer in [1, 275], got {self.n_prb!r}")
        if not 0 <= self.n_id <= 1007:
            raise FieldError("cell.n_id", f"physical cell id must be in [0, 1007], got {self.n_id}")
        if self.dmrs_n_id is not None and not 0 <= self.dmrs_n_id <= 65535:
            raise FieldError("cell.dmrs_n_id", f"must be in [0, 65535], got {self.dmrs_n_id}")
        if self.dmrs_typea_pos not in (2, 3):
            raise FieldError("cell.dmrs_typea_pos", f"must be 2 or 3, got {self.dmrs_typea_pos}")
        nfft = fft_size(self.n_prb) if self.nfft is None else self.nfft
        if nfft < 128 or nfft & (nfft - 1) or nfft < SC_PER_PRB * self.n_prb:
            raise FieldError(
                "cell.nfft",
                f"must be a power of two ≥ 128 and ≥ {SC_PER_PRB * self.n_prb}, got {nfft}",
            )
        object.__setattr__(self, "nfft", nfft)

    @property
    def fft(self) -> int:
        """The FFT size in use."""
        assert self.nfft is not None
        return self.nfft

    @property
    def dmrs_id(self) -> int:
        """N_ID for the DM-RS sequence."""
        return self.n_id if self.dmrs_n_id is None else self.dmrs_n_id


@dataclass(frozen=True)
class SchGrant:
    """One UE's shared-channel allocation in a slot (PUSCH or PDSCH, mapping type A).

    PRBs ``prb_start .. prb_start+n_prb-1`` on symbols ``start_symbol ..
    start_symbol+n_symbols-1``; ``qm`` bits per symbol; ``code_rate`` R (MCS table
    R x 1024 / 1024); ``tbs`` the transport block size (TS 38.214 §5.1.3.2, e.g. from
    :func:`airan.ran.tables.transport_block_size`); ``layers`` 1-4 on DM-RS ports
    ``0..layers-1``; ``rv`` the redundancy version; ``n_id`` the data scrambling identity
    (default: the cell's); ``harq_id`` keys HARQ soft buffers.
    """

    rnti: int
    prb_start: int
    n_prb: int
    qm: int
    code_rate: float
    tbs: int
    layers: int = 1
    rv: int = 0
    start_symbol: int = 0
    n_symbols: int = SYMBOLS_PER_SLOT
    dmrs_add_pos: int = 1
    n_scid: int = 0
    n_id: int | None = None
    harq_id: int = 0

    def __post_init__(self) -> None:
        def need_int(name: str, lo: int, hi: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or not lo <= v <= hi:
                raise FieldError(f"grant.{name}", f"must be an integer in [{lo}, {hi}], got {v!r}")

        need_int("rnti", 0, 65535)
        need_int("prb_start", 0, 274)
        need_int("n_prb", 1, 275)
        check_qm(self.qm, "grant.qm")
        need_int("tbs", 1, 1_300_000)
        need_int("layers", 1, 8)
        if self.layers > MAX_PORTS:
            raise FieldError(
                "grant.layers",
                f"at most {MAX_PORTS} layers (one codeword, DM-RS type 1 single symbol),"
                f" got {self.layers}",
            )
        need_int("rv", 0, 3)
        need_int("start_symbol", 0, 13)
        need_int("n_symbols", 1, 14)
        need_int("dmrs_add_pos", 0, 3)
        need_int("n_scid", 0, 1)
        need_int("harq_id", 0, 31)
        if self.n_id is not None:
            need_int("n_id", 0, 1023)
        if isinstance(self.code_rate, bool) or not 0.0 < float(self.code_rate) < 1.0:
            raise FieldError("grant.code_rate", f"must be in (0, 1), got {self.code_rate!r}")


@dataclass(frozen=True)
class UePlan:
    """Everything precomputed for one grant in one slot (host-built, device-resident).

    ``n_re``: data REs per layer; ``g_bits`` = ``n_re·qm·layers`` (G of TS 38.212 §6.2.7);
    ``data_symbols``/``dmrs.symbols``: symbol indices; ``sc``: the allocation's first
    subcarrier; ``signs``: ``1-2c(i)`` for descrambling; ``tb``: the coding plan.
    """

    grant: SchGrant
    dmrs: DmrsPattern
    data_symbols: tuple[int, ...]
    n_re: int
    g_bits: int
    c_init: int
    tb: coding.TbPlan
    sc: int
    data_sym: Any = field(repr=False)
    signs: Any = field(repr=False)
    chanest: ChanEstPlan | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SlotPlan:
    """The per-slot plan of a grant set: one :class:`UePlan` per grant, in order."""

    slot: int
    ues: tuple[UePlan, ...]


def plan_ue(
    cell: CellConfig,
    grant: SchGrant,
    slot: int,
    xp: ModuleType,
    *,
    index: int = 0,
    time_interp: TimeInterp | None = None,
) -> UePlan:
    """Build the :class:`UePlan` of one grant (field errors name ``grants[index]``)."""
    where = f"grants[{index}]"
    if grant.prb_start + grant.n_prb > cell.n_prb:
        raise FieldError(
            f"{where}.prb_start",
            f"PRBs [{grant.prb_start}, {grant.prb_start + grant.n_prb}) are outside the grid"
            f" [0, {cell.n_prb})",
        )
    try:
        dsym = dmrs_symbols(
            grant.start_symbol, grant.n_symbols, grant.dmrs_add_pos, cell.dmrs_typea_pos
        )
    except FieldError as e:
        raise FieldError(f"{where}.{e.field.split('.')[-1]}", e.reason) from e
    data = tuple(
        s for s in range(grant.start_symbol, grant.start_symbol + grant.n_symbols) if s not in dsym
    )
    n_re = len(data) * SC_PER_PRB * grant.n_prb
    g_bits = n_re * grant.qm * grant.layers
    try:
        tb = coding.plan_tb(
            grant.tbs, float(grant.code_rate), grant.qm, grant.layers, g_bits, grant.rv
        )
    except FieldError as e:
        raise FieldError(f"{where}.{e.field}", e.reason) from e
    pat = dmrs_pattern(
        slot=slot,
        symbols=dsym,
        prb_start=grant.prb_start,
        n_prb=grant.n_prb,
        n_ports=grant.layers,
        n_id=cell.dmrs_id,
        n_prb_grid=cell.n_prb,
        n_scid=grant.n_scid,
    )
    c_init = pusch_c_init(grant.rnti, cell.n_id if grant.n_id is None else grant.n_id)
    ce = None
    if time_interp is not None:
        ce = ChanEstPlan(pattern=pat, data_symbols=data, time_interp=time_interp, xp=xp)
    return UePlan(
        grant=grant,
        dmrs=pat,
        data_symbols=data,
        n_re=n_re,
        g_bits=g_bits,
        c_init=c_init,
        tb=tb,
        sc=SC_PER_PRB * grant.prb_start,
        data_sym=xp.asarray(np.array(data, dtype=np.int64)),
        signs=xp.asarray(sign_sequence(c_init, g_bits)),
        chanest=ce,
    )


def check_grant_set(
    cell: CellConfig, grants: Sequence[SchGrant], max_layers: int, what: str
) -> None:
    """Relational checks: PRBs inside the grid, no two grants overlapping in PRBs,
    ``layers ≤ max_layers`` (``what`` names the limit: rx antennas or tx ports)."""
    if not grants:
        return
    for i, g in enumerate(grants):
        if not isinstance(g, SchGrant):
            raise FieldError(f"grants[{i}]", f"must be a SchGrant, got {type(g).__name__}")
        if g.prb_start + g.n_prb > cell.n_prb:
            raise FieldError(
                f"grants[{i}].prb_start",
                f"PRBs [{g.prb_start}, {g.prb_start + g.n_prb}) are outside the grid"
                f" [0, {cell.n_prb})",
            )
        if g.layers > max_layers:
            raise FieldError(
                f"grants[{i}].layers", f"{g.layers} layers exceed the {max_layers} {what}"
            )
    order = sorted(range(len(grants)), key=lambda i: grants[i].prb_start)
    for a, b in itertools.pairwise(order):
        if grants[a].prb_start + grants[a].n_prb > grants[b].prb_start:
            raise FieldError(
                f"grants[{b}].prb_start",
                f"PRBs overlap those of grants[{a}] (non-overlapping PRB ranges required)",
            )


@dataclass(frozen=True)
class UeSoft:
    """Output of :meth:`PuschReceiver.equalise` for one UE (all on the device).

    ``llr``: float32 ``(G,)`` descrambled LLRs (positive ⇒ 0); ``noise_var``: 0-d, the
    DM-RS noise variance estimate per RE and antenna; ``snr_db``: 0-d, the per-antenna,
    per-layer SNR estimate; ``symbols``: ``(n_re, layers)`` equalised layer symbols.
    """

    rnti: int
    llr: Any
    noise_var: Any
    snr_db: Any
    symbols: Any


@dataclass(frozen=True)
class PuschResult:
    """Decoding result of one UE's transport block."""

    rnti: int
    bits: Any
    crc_ok: bool
    cb_crc_ok: Any
    snr_db: float
    noise_var: float
    iterations: int


class PuschReceiver:
    """PUSCH receiver for one cell shape: numerology, grid, FFT size and ``n_rx`` antennas.

    ``xp``: ``numpy`` or ``cupy`` (all buffers and precomputed arrays live there);
    ``time_interp``/``demap``/``max_iterations`` select channel-estimation time
    interpolation, the demapper and the LDPC iteration cap.
    """

    def __init__(
        self,
        cell: CellConfig,
        n_rx: int,
        *,
        xp: ModuleType = np,
        time_interp: TimeInterp = "linear",
        demap: DemapMethod = "maxlog",
        max_iterations: int = 8,
    ) -> None:
        if isinstance(n_rx, bool) or not isinstance(n_rx, int) or not 1 <= n_rx <= MAX_RX:
            raise FieldError("n_rx", f"must be an integer in [1, {MAX_RX}], got {n_rx!r}")
        if time_interp not in ("linear", "average"):
            raise FieldError("time_interp", f"must be 'linear' or 'average', got {time_interp!r}")
        if demap not in ("maxlog", "logmap"):
            raise FieldError("demap", f"must be 'maxlog' or 'logmap', got {demap!r}")
        if not 1 <= max_iterations <= 100:
            raise FieldError("max_iterations", f"must be in [1, 100], got {max_iterations}")
        self.cell = cell
        self.n_rx = n_rx
        self.xp = xp
        self.time_interp: TimeInterp = time_interp
        self.demap: DemapMethod = demap
        self.max_iterations = max_iterations
        self._ofdm: dict[tuple[int, ...], OfdmPlan] = {}
        self._by_phase: dict[int, OfdmPlan] = {}
        self._grid = xp.zeros((n_rx, SYMBOLS_PER_SLOT, cell.n_prb * SC_PER_PRB), xp.complex64)
        self._cache: dict[tuple[tuple[SchGrant, ...], int], SlotPlan] = {}

    # -- shape ----------------------------------------------------------------------
    def ofdm(self, slot: int = 0) -> OfdmPlan:
        """The OFDM plan of ``slot``'s CP pattern (cached; 1 pattern for µ ≤ 1, 2 for µ ≥ 2)."""
        phase = slot % slots_per_subframe(self.cell.mu)  # the CP pattern repeats per subframe
        plan = self._by_phase.get(phase)
        if plan is None:
            key = tuple(int(c) for c in cp_lengths(self.cell.mu, self.cell.fft, slot))
            plan = self._ofdm.get(key)
            if plan is None:
                plan = OfdmPlan(self.cell.mu, self.cell.n_prb, self.cell.fft, slot, self.xp)
                self._ofdm[key] = plan
            self._by_phase[phase] = plan
        return plan

    def samples_per_slot(self, slot: int = 0) -> int:
        """Time samples per antenna in ``slot``."""
        return self.ofdm(slot).samples_per_slot

    # -- host planning -------------------------------------------------------------
    def plan(self, grants: Sequence[SchGrant], slot: int = 0) -> SlotPlan:
        """Validate the grants and precompute their per-UE constants (cached per set)."""
        key = (tuple(grants), int(slot))
        hit = self._cache.get(key)
        if hit is None:
            hit = self._plan_uncached(grants, slot)
            if len(self._cache) >= 64:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = hit
        return hit

    def _plan_uncached(self, grants: Sequence[SchGrant], slot: int) -> SlotPlan:
        check_grant_set(self.cell, grants, self.n_rx, "rx antennas")
        ues = tuple(
            plan_ue(self.cell, g, slot, self.xp, index=i, time_interp=self.time_interp)
            for i, g in enumerate(grants)
        )
        return SlotPlan(slot=int(slot), ues=ues)

    def _as_plan(self, grants: Sequence[SchGrant] | SlotPlan, slot: int) -> SlotPlan:
        return grants if isinstance(grants, SlotPlan) else self.plan(grants, slot)

    # -- stage 1 ---------------------------------------------------------------------
    def front_end(self, samples: Any, slot: int = 0) -> Any:
        """Stage 1 (TS 38.211 §5.3.1 inverted): ``(n_rx, samples_per_slot)`` → grid
        ``(n_rx, 14, K)``. Returns the receiver's preallocated grid buffer, overwritten by
        the next call."""
        if samples.ndim != 2 or samples.shape[0] != self.n_rx:
            raise FieldError(
                "samples", f"must be (n_rx={self.n_rx}, samples), got {tuple(samples.shape)}"
            )
        return self.ofdm(slot).demodulate(samples, out=self._grid)

    # -- stage 2 ---------------------------------------------------------------------
    def equalise(
        self, grid: Any, grants: Sequence[SchGrant] | SlotPlan, slot: int = 0
    ) -> list[UeSoft]:
        """Stage 2: per UE, channel/noise estimation, MMSE, soft demapping, descrambling.

        TS 38.211 §6.4.1.1 (DM-RS), §6.3.1.5-§6.3.1.3 inverted (precoding, layers),
        §5.1 (demapping), §6.3.1.1 (descrambling).
        """
        plan = self._as_plan(grants, slot)
        xp = self.xp
        if grid.shape != self._grid.shape:
            raise FieldError("grid", f"must have shape {self._grid.shape}, got {grid.shape}")
        out: list[UeSoft] = []
        for ue in plan.ues:  # a handful of UEs per slot
            g = ue.grant
            if ue.chanest is None:
                raise FieldError("grants", "a SlotPlan from this receiver's plan() is needed")
            est = estimate(grid, ue.chanest)
            y = grid[:, ue.data_sym, ue.sc : ue.sc + SC_PER_PRB * g.n_prb]  # (rx, t, k)
            y = y.transpose(1, 2, 0).reshape(-1, self.n_rx)
            eq = mmse(y, est.h, est.noise_var)
            llr = demodulate(eq.symbols, eq.noise_var, g.qm, method=self.demap)
            llr = (llr * ue.signs).astype(xp.float32)
            out.append(
                UeSoft(
                    rnti=g.rnti,
                    llr=llr,
                    noise_var=est.noise_var,
                    snr_db=est.snr_db,
                    symbols=eq.symbols,
                )
            )
        return out

    # -- stage 3 ---------------------------------------------------------------------
    def decode(
        self,
        soft: Sequence[UeSoft],
        grants: Sequence[SchGrant] | SlotPlan,
        slot: int = 0,
        *,
        harq: MutableMapping[tuple[int, int], Any] | None = None,
    ) -> list[PuschResult]:
        """Stage 3: UL-SCH decoding per UE (TS 38.212 §6.2 inverted: rate recovery, LDPC,
        CB/TB CRC).

        With ``harq`` (a mapping ``(rnti, harq_id) → soft buffer``), each transmission's
        soft buffers (:func:`coding.derate_match`) are added to the stored ones before
        decoding; the entry is dropped when the CRC passes and kept otherwise.
        """
        plan = self._as_plan(grants, slot)
        if len(soft) != len(plan.ues):
            raise FieldError("soft", f"expected {len(plan.ues)} UEs, got {len(soft)}")
        results: list[PuschResult] = []
        for s, ue in zip(soft, plan.ues, strict=True):
            key = (ue.grant.rnti, ue.grant.harq_id)
            if harq is None:
                res = coding.decode_tb(s.llr, ue.tb, max_iterations=self.max_iterations)
            else:
                buf = coding.derate_match(s.llr, ue.tb)
                prev = harq.get(key)
                if prev is not None and prev.shape == buf.shape:
                    buf = buf + prev
                res = coding.decode_tb(buf, ue.tb, max_iterations=self.max_iterations, soft=True)
                if res.tb_crc_ok:
                    harq.pop(key, None)
                else:
                    harq[key] = buf
            results.append(
                PuschResult(
                    rnti=s.rnti,
                    bits=res.bits,
                    crc_ok=bool(res.tb_crc_ok),
                    cb_crc_ok=res.cb_crc_ok,
                    snr_db=float(s.snr_db),
                    noise_var=float(s.noise_var),
                    iterations=res.iterations,
                )
            )
        return results

    def receive(self, samples: Any, grants: Sequence[SchGrant], slot: int = 0) -> list[PuschResult]:
        """All three stages for one slot."""
        plan = self.plan(grants, slot)
        grid = self.front_end(samples, slot)
        return self.decode(self.equalise(grid, plan), plan)
