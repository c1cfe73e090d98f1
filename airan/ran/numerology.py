"""NR numerology, frame timing and carrier sizes (3GPP TS 38.211 §4, §5.3.1; TS 38.101).

* Subcarrier spacing ``15·2^µ`` kHz, µ = 0..3 (TS 38.211 §4.2, Table 4.2-1, normal CP).
* Frames of 10 ms, subframes of 1 ms, ``2^µ`` slots per subframe of 14 OFDM symbols
  (TS 38.211 §4.3.1-4.3.2, Table 4.3.2-1).
* OFDM symbol timing (TS 38.211 §5.3.1): in units of the basic time unit
  ``Tc = 1/(480 kHz·4096)`` and ``κ = 64``, the useful part lasts ``2048·κ·2^-µ`` Tc and the
  normal cyclic prefix ``144·κ·2^-µ`` Tc, plus ``16·κ`` Tc for the symbols ``l = 0`` and
  ``l = 7·2^µ`` of each subframe, i.e. the first symbol of every half subframe (0.5 ms).
  Slots therefore differ in length by 16·κ Tc when µ ≥ 2; every 0.5 ms boundary is exact.
* ``N_RB`` of the maximum transmission bandwidth configuration: TS 38.101-1 Table 5.3.2-1
  (FR1, 15/30/60 kHz, 5..100 MHz) and TS 38.101-2 Table 5.3.2-1 (FR2, 60/120 kHz).
* System frame number 0..1023 (TS 38.211 §4.3.1) and slot arithmetic (:class:`SlotId`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, overload

from airan.core.errors import FieldError

MU_VALUES: tuple[int, ...] = (0, 1, 2, 3)
SYMBOLS_PER_SLOT = 14  # normal CP, TS 38.211 Table 4.3.2-1
SUBFRAMES_PER_FRAME = 10
SFN_PERIOD = 1024  # TS 38.211 §4.3.1: SFN 0..1023
SUBCARRIERS_PER_RB = 12  # TS 38.211 §4.4.4.1
TC_PER_SECOND = 480_000 * 4096  # 1/Tc, TS 38.211 §4.1
KAPPA = 64  # Ts/Tc, TS 38.211 §4.1
FRAME_NS = 10_000_000
SUBFRAME_NS = 1_000_000

FrequencyRange = Literal["FR1", "FR2"]

# TS 38.101-1 Table 5.3.2-1 (FR1): channel bandwidth MHz -> N_RB, per SCS (kHz).
_NRB_FR1: dict[int, dict[int, int]] = {
    15: {5: 25, 10: 52, 15: 79, 20: 106, 25: 133, 30: 160, 35: 188, 40: 216, 45: 242, 50: 270},
    30: {
        5: 11, 10: 24, 15: 38, 20: 51, 25: 65, 30: 78, 35: 92, 40: 106, 45: 119, 50: 133,
        60: 162, 70: 189, 80: 217, 90: 245, 100: 273,
    },
    60: {
        10: 11, 15: 18, 20: 24, 25: 31, 30: 38, 35: 44, 40: 51, 45: 58, 50: 65, 60: 79,
        70: 93, 80: 107, 90: 121, 100: 135,
    },
}  # fmt: skip
# TS 38.101-2 Table 5.3.2-1 (FR2-1): channel bandwidth MHz -> N_RB, per SCS (kHz).
_NRB_FR2: dict[int, dict[int, int]] = {
    60: {50: 66, 100: 132, 200: 264},
    120: {50: 32, 100: 66, 200: 132, 400: 264},
}


def check_mu(mu: int, field: str = "numerology") -> int:
    """Return ``mu`` if it is a numerology of TS 38.211 Table 4.2-1 (0..3, normal CP)."""
    if isinstance(mu, bool) or not isinstance(mu, int) or mu not in MU_VALUES:
        raise FieldError(field, f"numerology µ must be one of 0, 1, 2, 3 (got {mu!r})")
    return mu


def scs_khz(mu: int) -> int:
    """Subcarrier spacing Δf = 15·2^µ kHz (TS 38.211 §4.2)."""
    return 15 << check_mu(mu)


def slots_per_subframe(mu: int) -> int:
    """N_slot^subframe,µ = 2^µ (TS 38.211 Table 4.3.2-1)."""
    return 1 << check_mu(mu)


def slots_per_frame(mu: int) -> int:
    """N_slot^frame,µ = 10·2^µ (TS 38.211 Table 4.3.2-1)."""
    return SUBFRAMES_PER_FRAME << check_mu(mu)


def slot_duration_ns(mu: int) -> int:
    """Nominal slot length, 1 ms / 2^µ, in ns (exact for µ ≤ 1; the mean for µ ≥ 2)."""
    return SUBFRAME_NS >> check_mu(mu)


def useful_symbol_tc(mu: int) -> int:
    """N_u^µ = 2048·κ·2^-µ, in units of Tc (TS 38.211 §5.3.1)."""
    return (2048 * KAPPA) >> check_mu(mu)


def cp_tc(mu: int, symbol_in_subframe: int) -> int:
    """Normal cyclic prefix N_CP,l^µ in Tc for symbol ``l`` of a subframe (TS 38.211 §5.3.1).

    ``144·κ·2^-µ + 16·κ`` for ``l = 0`` and ``l = 7·2^µ``, ``144·κ·2^-µ`` otherwise.
    """
    n = SYMBOLS_PER_SLOT * slots_per_subframe(mu)
    if not 0 <= symbol_in_subframe < n:
        raise FieldError("symbol", f"symbol of the subframe must be in 0..{n - 1}")
    base = (144 * KAPPA) >> mu
    return base + 16 * KAPPA if symbol_in_subframe % (7 << mu) == 0 else base


def tc_to_ns(tc: int) -> float:
    """Convert a duration in Tc to ns (Tc = 1/1.96608 GHz ≈ 0.5086 ns)."""
    return tc * 1e9 / TC_PER_SECOND


def symbol_duration_ns(mu: int, symbol_in_subframe: int) -> float:
    """Duration of OFDM symbol ``l`` of a subframe, cyclic prefix included, in ns."""
    return tc_to_ns(useful_symbol_tc(mu) + cp_tc(mu, symbol_in_subframe))


def cp_duration_ns(mu: int, symbol_in_subframe: int) -> float:
    """Duration of the cyclic prefix of symbol ``l`` of a subframe, in ns."""
    return tc_to_ns(cp_tc(mu, symbol_in_subframe))


def slot_length_tc(mu: int, slot_in_subframe: int) -> int:
    """Length of slot ``slot_in_subframe`` (0..2^µ-1) in Tc, cyclic prefixes included."""
    if not 0 <= slot_in_subframe < slots_per_subframe(mu):
        raise FieldError("slot", f"slot of the subframe must be in 0..{slots_per_subframe(mu) - 1}")
    first = slot_in_subframe * SYMBOLS_PER_SLOT
    return sum(useful_symbol_tc(mu) + cp_tc(mu, first + k) for k in range(SYMBOLS_PER_SLOT))


@functools.cache
def _slot_offsets_tc(mu: int) -> tuple[int, ...]:
    """Start of each slot of a subframe, in Tc from the subframe start (2^µ + 1 entries)."""
    out = [0]
    for s in range(slots_per_subframe(mu)):
        out.append(out[-1] + slot_length_tc(mu, s))
    return tuple(out)


def slot_start_ns(mu: int, slot_index: int, epoch_ns: int = 0) -> int:
    """Start of the slot with absolute index ``slot_index`` (slots since the epoch), in ns.

    Exact per TS 38.211 §5.3.1 (the longer first CP of each half subframe included), then
    rounded to the nearest ns. ``slot_index`` is not wrapped: pass a monotonic count.
    """
    if slot_index < 0:
        raise FieldError("slot_index", "must be >= 0")
    per_sf = slots_per_subframe(mu)
    subframe, s = divmod(slot_index, per_sf)
    tc = _slot_offsets_tc(mu)[s]
    return (
        epoch_ns
        + subframe * SUBFRAME_NS
        + (tc * 1_000_000_000 + TC_PER_SECOND // 2) // (TC_PER_SECOND)
    )


def bandwidths_mhz(mu: int, fr: FrequencyRange | None = None) -> tuple[int, ...]:
    """The channel bandwidths (MHz) of the N_RB table for numerology ``mu``."""
    return tuple(sorted(_table(mu, fr)))


def _default_fr(mu: int) -> FrequencyRange:
    return "FR2" if check_mu(mu) == 3 else "FR1"


def _table(mu: int, fr: FrequencyRange | None) -> dict[int, int]:
    fr = fr or _default_fr(mu)
    if fr not in ("FR1", "FR2"):
        raise FieldError("fr", f"frequency range must be 'FR1' or 'FR2' (got {fr!r})")
    table = _NRB_FR1 if fr == "FR1" else _NRB_FR2
    scs = scs_khz(mu)
    if scs not in table:
        raise FieldError("numerology", f"{scs} kHz subcarrier spacing is not defined in {fr}")
    return table[scs]


def n_rb(
    mu: int, bandwidth_mhz: int, fr: FrequencyRange | None = None, field: str = "bandwidth_mhz"
) -> int:
    """N_RB of the maximum transmission bandwidth configuration.

    TS 38.101-1 Table 5.3.2-1 (FR1: 15, 30, 60 kHz) and TS 38.101-2 Table 5.3.2-1 (FR2:
    60, 120 kHz). ``fr`` defaults to FR1 for µ ≤ 2 and FR2 for µ = 3. A (µ, bandwidth)
    pair outside the table raises :class:`FieldError` naming ``field``.
    """
    table = _table(mu, fr)
    if bandwidth_mhz not in table:
        raise FieldError(
            field,
            f"{bandwidth_mhz} MHz is not a channel bandwidth for {scs_khz(mu)} kHz subcarrier "
            f"spacing in {fr or _default_fr(mu)} (one of {', '.join(map(str, sorted(table)))})",
        )
    return table[bandwidth_mhz]


def fft_size(n_prb: int) -> int:
    """Smallest power-of-two FFT (at least 128) holding ``12·n_prb`` subcarriers.

    This gives the usual sampling rates, e.g. 106 PRB at 15 kHz or 51 PRB at 30 kHz:
    2048 / 1024 points, 30.72 Msps; 273 PRB at 30 kHz: 4096 points, 122.88 Msps.
    """
    if n_prb < 1 or n_prb > 275:
        raise FieldError("n_prb", "must be in 1..275")
    n = 128
    while n < SUBCARRIERS_PER_RB * n_prb:
        n *= 2
    return n


def sample_rate_hz(mu: int, n_fft: int) -> int:
    """Sampling rate of an ``n_fft``-point OFDM modulator: n_fft·Δf."""
    return n_fft * scs_khz(mu) * 1000


def dmrs_symbols_type_a(duration: int, additional_position: int, l0: int = 2) -> tuple[int, ...]:
    """DM-RS symbol indices in the slot, mapping type A, single-symbol DM-RS, for an
    allocation from symbol 0 (TS 38.211 Table 7.4.1.1.2-3 / 6.4.1.1.3-3).

    ``duration`` is l_d, the symbols from the slot start to the end of the allocation
    (8..14 here, the MAC's allocations), ``l0`` the dmrs-TypeA-Position (2 or 3),
    ``additional_position`` 0..3. The table is the L1's (:func:`airan.ran.phy.dmrs.dmrs_symbols`).
    """
    from airan.ran.phy.dmrs import dmrs_symbols

    if duration not in range(8, 15):
        raise FieldError("duration", "type A DM-RS positions are tabulated here for 8..14 symbols")
    if additional_position not in (0, 1, 2, 3):
        raise FieldError("dmrs_additional_position", "must be 0, 1, 2 or 3")
    if l0 not in (2, 3):
        raise FieldError("l0", "dmrs-TypeA-Position must be 2 or 3")
    return dmrs_symbols(0, duration, additional_position, l0)


@functools.total_ordering
@dataclass(frozen=True, slots=True)
class SlotId:
    """A slot: system frame number (0..1023) and slot of the frame, for numerology ``mu``.

    ``slot + n`` and ``slot - n`` move by ``n`` slots and wrap at 1024 frames
    (TS 38.211 §4.3.1). ``a - b`` of two slots is the signed shortest distance in slots,
    modulo the SFN period (serial-number arithmetic): correct across the wrap as long as
    the two are less than half an SFN period apart (5.12 s). Ordering (``<``) compares
    :attr:`index` within one SFN period and does not see the wrap; use ``a - b`` to
    compare slots that may straddle it.
    """

    sfn: int
    slot: int
    mu: int = 1

    def __post_init__(self) -> None:
        check_mu(self.mu, "SlotId.mu")
        if isinstance(self.sfn, bool) or not isinstance(self.sfn, int):
            raise FieldError("SlotId.sfn", f"must be an int (got {self.sfn!r})")
        if not 0 <= self.sfn < SFN_PERIOD:
            raise FieldError("SlotId.sfn", f"must be in 0..{SFN_PERIOD - 1} (got {self.sfn})")
        spf = slots_per_frame(self.mu)
        if isinstance(self.slot, bool) or not isinstance(self.slot, int):
            raise FieldError("SlotId.slot", f"must be an int (got {self.slot!r})")
        if not 0 <= self.slot < spf:
            raise FieldError(
                "SlotId.slot", f"must be in 0..{spf - 1} for numerology {self.mu} (got {self.slot})"
            )

    @staticmethod
    def period(mu: int) -> int:
        """Slots in one SFN period (1024 frames)."""
        return SFN_PERIOD * slots_per_frame(mu)

    @classmethod
    def from_index(cls, index: int, mu: int = 1) -> SlotId:
        """The slot with absolute index ``index``, wrapped at 1024 frames."""
        sfn, slot = divmod(index % cls.period(mu), slots_per_frame(mu))
        return cls(sfn, slot, mu)

    @property
    def index(self) -> int:
        """Absolute slot index within the SFN period: ``sfn·slots_per_frame + slot``."""
        return self.sfn * slots_per_frame(self.mu) + self.slot

    @property
    def subframe(self) -> int:
        """Subframe of the frame (0..9)."""
        return self.slot >> self.mu

    def start_ns(self, epoch_ns: int = 0, periods: int = 0) -> int:
        """Start of this slot in ns: ``epoch_ns`` is the start of SFN 0 slot 0 and
        ``periods`` the number of complete SFN periods (10.24 s) since then."""
        return slot_start_ns(self.mu, periods * self.period(self.mu) + self.index, epoch_ns)

    def __add__(self, n: int) -> SlotId:
        if isinstance(n, bool) or not isinstance(n, int):
            return NotImplemented
        return SlotId.from_index(self.index + n, self.mu)

    __radd__ = __add__

    @overload
    def __sub__(self, other: SlotId) -> int: ...
    @overload
    def __sub__(self, other: int) -> SlotId: ...
    def __sub__(self, other: SlotId | int) -> SlotId | int:
        if isinstance(other, SlotId):
            self._same_mu(other)
            period = self.period(self.mu)
            d = (self.index - other.index) % period
            return d - period if d >= period // 2 else d
        if isinstance(other, int) and not isinstance(other, bool):
            return SlotId.from_index(self.index - other, self.mu)
        return NotImplemented

    def distance(self, other: SlotId) -> int:
        """Signed slots from ``other`` to ``self`` (``self - other``), wrap-aware."""
        return self - other

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, SlotId):
            return NotImplemented
        self._same_mu(other)
        return self.index < other.index

    def _same_mu(self, other: SlotId) -> None:
        if other.mu != self.mu:
            raise FieldError("SlotId.mu", f"cannot mix numerologies {self.mu} and {other.mu}")

    def __str__(self) -> str:
        return f"{self.sfn}.{self.slot}"
