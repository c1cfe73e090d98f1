"""Configuration of the simulated DU's cell, users, traffic and channel (:class:`RanConfig`).

Validated by pydantic; :meth:`RanConfig.parse` raises :class:`~airan.core.errors.FieldError`
naming the offending field (``ran.bandwidth_mhz``, ``ran.layers``, ...). The numerology and
channel bandwidth are checked against TS 38.101-1/-2 Table 5.3.2-1, the slice quotas with
:func:`airan.core.rrm.check_quotas` (TS 28.541 §4.3.36).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from airan.core.errors import FieldError
from airan.core.policy import CheckedModel
from airan.core.rrm import SliceQuota, Snssai, check_quotas
from airan.ran.numerology import SYMBOLS_PER_SLOT, n_rb, slot_duration_ns

TrafficKind = Literal["full_buffer", "poisson", "on_off"]


class TrafficConfig(CheckedModel):
    """Offered traffic per UE and direction.

    ``full_buffer``: always data to send. ``poisson``: packets of ``packet_bytes`` arrive
    as a Poisson process with mean rate ``dl_rate_mbps`` / ``ul_rate_mbps``. ``on_off``:
    bursty; each UE alternates exponentially distributed on periods (mean ``on_ms``),
    with Poisson arrivals at the given rate, and silent off periods (mean ``off_ms``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    _where: ClassVar[str] = "traffic"

    kind: TrafficKind = "full_buffer"
    dl_rate_mbps: float = Field(20.0, ge=0.0, le=10_000.0, description="Mean DL load per UE.")
    ul_rate_mbps: float = Field(5.0, ge=0.0, le=10_000.0, description="Mean UL load per UE.")
    packet_bytes: int = Field(1500, ge=1, le=65_535, description="Size of one packet.")
    on_ms: float = Field(100.0, gt=0.0, le=1e6, description="Mean on period (on_off).")
    off_ms: float = Field(100.0, gt=0.0, le=1e6, description="Mean off period (on_off).")


class RanConfig(CheckedModel):
    """One cell of the simulated DU: numerology, carrier, antennas, users, timing, traffic,
    channel and slices. Fields are validated in order, so later checks can rely on
    earlier fields (``layers`` ≤ ``antennas``, ``bandwidth_mhz`` for ``numerology``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _where: ClassVar[str] = "ran"

    numerology: int = Field(1, ge=0, le=3, description="µ of TS 38.211 §4.2 (SCS 15·2^µ kHz).")
    bandwidth_mhz: int = Field(
        20, description="Channel bandwidth; with µ it must be in TS 38.101 Table 5.3.2-1."
    )
    antennas: int = Field(4, ge=1, le=8, description="gNB receive antennas.")
    layers: int = Field(2, ge=1, le=4, description="MIMO layers per UE (<= antennas).")
    ues: int = Field(8, ge=1, le=256, description="Connected UEs of the cell.")
    cells: int = Field(1, ge=1, le=16, description="Cells of the DU (one Mac per cell).")
    slot_ahead: int = Field(3, ge=1, le=8, description="SLOT.indication lead, in slots.")
    ul_deadline_slots: int = Field(
        2,
        ge=1,
        le=32,
        description="K: UL decoded and CRC known K slots after the slot ends (at most 32, "
        "the largest PUSCH scheduling offset K2 of TS 38.214 §6.1.2.1).",
    )
    dl_advance_us: float = Field(
        100.0, ge=0.0, le=10_000.0, description="Fronthaul advance of DL before air time."
    )
    k1_slots: int = Field(
        2, ge=1, le=15, description="PDSCH-to-HARQ-feedback timing K1 (TS 38.213 §9.2.3)."
    )
    harq_processes: int = Field(16, ge=1, le=16, description="HARQ processes per UE and direction.")
    max_harq_tx: int = Field(4, ge=1, le=4, description="Transmissions of a TB at most.")
    mcs_table: Literal[1, 2] = Field(
        1, description="MCS/CQI table pair: 1 = 64QAM (5.1.3.1-1), 2 = 256QAM (5.1.3.1-2)."
    )
    cqi_period_slots: int = Field(10, ge=1, le=320, description="CQI / SRS report period.")
    dl_start_symbol: int = Field(2, ge=0, le=3, description="First PDSCH symbol (type A).")
    dl_symbols: int = Field(12, ge=1, le=14, description="PDSCH symbols.")
    ul_start_symbol: int = Field(0, ge=0, le=3, description="First PUSCH symbol (type A).")
    ul_symbols: int = Field(14, ge=1, le=14, description="PUSCH symbols.")
    dmrs_additional_position: int = Field(1, ge=0, le=3, description="dmrs-AdditionalPosition.")
    x_overhead: Literal[0, 6, 12, 18] = Field(0, description="xOverhead, REs per PRB.")
    max_ues_per_slot: int = Field(8, ge=1, le=64, description="UEs per slot and direction.")
    pf_window_slots: float = Field(
        100.0, ge=1.0, le=1e6, description="Time constant of the PF average throughput."
    )
    traffic: TrafficConfig = Field(default_factory=TrafficConfig)
    snr_db_range: tuple[float, float] = Field(
        (5.0, 25.0), description="Mean SNR of each UE, drawn uniformly from [low, high] dB."
    )
    fading: bool = Field(True, description="Rayleigh block fading on top of the mean SNR.")
    doppler_hz: float = Field(
        10.0, ge=0.0, le=5000.0, description="Max Doppler shift; rho = J0(2π·f_D·T_slot)."
    )
    fading_coefficient: float | None = Field(
        None, ge=0.0, le=1.0, description="Gauss-Markov rho per slot; overrides doppler_hz."
    )
    slice_quotas: tuple[SliceQuota, ...] = Field(
        (), description="PRB quotas per S-NSSAI (TS 28.541 §4.3.36)."
    )
    ue_slices: tuple[int, ...] | None = Field(
        None,
        description="For each UE, the index in slice_quotas of its slice. None: UEs are "
        "spread round-robin over slice_quotas (all in S-NSSAI 1 when there are none).",
    )

    @field_validator("bandwidth_mhz")
    @classmethod
    def _bandwidth_in_table(cls, v: int, info: ValidationInfo) -> int:
        mu = info.data.get("numerology")
        if mu is not None:
            try:
                n_rb(mu, v)
            except FieldError as exc:
                raise ValueError(exc.reason) from None
        return v

    @field_validator("layers")
    @classmethod
    def _layers_le_antennas(cls, v: int, info: ValidationInfo) -> int:
        ant = info.data.get("antennas")
        if ant is not None and v > ant:
            raise ValueError(f"layers ({v}) must be <= antennas ({ant})")
        return v

    @field_validator("dl_symbols", "ul_symbols")
    @classmethod
    def _fits_slot(cls, v: int, info: ValidationInfo) -> int:
        start = info.data.get("dl_start_symbol" if info.field_name == "dl_symbols" else
                              "ul_start_symbol")  # fmt: skip
        if start is not None and not 8 <= start + v <= SYMBOLS_PER_SLOT:
            raise ValueError(
                f"start symbol ({start}) + symbols ({v}) must be in 8..{SYMBOLS_PER_SLOT} "
                "(type A allocation, DM-RS of TS 38.211 Table 7.4.1.1.2-3)"
            )
        return v

    @field_validator("dmrs_additional_position")
    @classmethod
    def _dmrs_position(cls, v: int, info: ValidationInfo) -> int:
        starts = (info.data.get("dl_start_symbol"), info.data.get("ul_start_symbol"))
        if v == 3 and 3 in starts:
            raise ValueError(
                "3 is allowed only with dmrs-TypeA-Position 2 (TS 38.211 §6.4.1.1.3): "
                "a start symbol of 3 needs position 3"
            )
        return v

    @field_validator("snr_db_range")
    @classmethod
    def _snr_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not -20.0 <= lo <= hi <= 50.0:
            raise ValueError(f"need -20 <= low <= high <= 50 dB (got {v})")
        return v

    @field_validator("slice_quotas")
    @classmethod
    def _quotas(cls, v: tuple[SliceQuota, ...]) -> tuple[SliceQuota, ...]:
        try:
            return check_quotas(v, "slice_quotas")
        except FieldError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("ue_slices")
    @classmethod
    def _ue_slices(cls, v: tuple[int, ...] | None, info: ValidationInfo) -> tuple[int, ...] | None:
        if v is None:
            return v
        ues = info.data.get("ues")
        quotas = info.data.get("slice_quotas")
        if ues is not None and len(v) != ues:
            raise ValueError(f"must give one slice per UE ({ues}), got {len(v)}")
        if quotas is not None:
            bad = [i for i in v if not 0 <= i < len(quotas)]
            if bad:
                raise ValueError(
                    f"slice indices {bad} are not in slice_quotas (0..{len(quotas) - 1})"
                )
        return v

    # -- derived values ----------------------------------------------------------------
    @property
    def n_prb(self) -> int:
        """N_RB of the carrier (TS 38.101-1/-2 Table 5.3.2-1)."""
        return n_rb(self.numerology, self.bandwidth_mhz)

    @property
    def slot_ns(self) -> int:
        """Nominal slot duration in ns (1 ms / 2^µ)."""
        return slot_duration_ns(self.numerology)

    def ue_snssai(self) -> tuple[Snssai, ...]:
        """The S-NSSAI of each UE."""
        if not self.slice_quotas:
            return tuple(Snssai(sst=1) for _ in range(self.ues))
        idx = self.ue_slices or tuple(i % len(self.slice_quotas) for i in range(self.ues))
        return tuple(self.slice_quotas[i].snssai for i in idx)
