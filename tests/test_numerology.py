"""Numerology, frame timing, carrier sizes and slot arithmetic (TS 38.211 §4, §5.3.1; TS 38.101)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airan.core.errors import FieldError
from airan.ran import numerology as nr
from airan.ran.numerology import SlotId


# TS 38.211 Table 4.3.2-1 (normal CP): µ -> (symbols/slot, slots/frame, slots/subframe)
@pytest.mark.parametrize(
    ("mu", "scs", "per_frame", "per_subframe", "slot_ns"),
    [(0, 15, 10, 1, 1_000_000), (1, 30, 20, 2, 500_000), (2, 60, 40, 4, 250_000),
     (3, 120, 80, 8, 125_000)],
)  # fmt: skip
def test_numerology_table(
    mu: int, scs: int, per_frame: int, per_subframe: int, slot_ns: int
) -> None:
    assert nr.scs_khz(mu) == scs
    assert nr.slots_per_frame(mu) == per_frame
    assert nr.slots_per_subframe(mu) == per_subframe
    assert nr.slot_duration_ns(mu) == slot_ns
    assert nr.SYMBOLS_PER_SLOT == 14


@pytest.mark.parametrize("mu", [-1, 4, 1.0, True])
def test_bad_numerology(mu: object) -> None:
    with pytest.raises(FieldError) as e:
        nr.scs_khz(mu)  # type: ignore[arg-type]
    assert e.value.field == "numerology"


def test_cp_lengths_mu0() -> None:
    # TS 38.211 §5.3.1, µ=0: N_u = 2048κ = 131072 Tc (66.67 µs); CP 144κ = 9216 Tc (4.69 µs),
    # 160κ = 10240 Tc (5.21 µs) for l = 0 and l = 7.
    assert nr.useful_symbol_tc(0) == 131072
    assert nr.cp_tc(0, 0) == nr.cp_tc(0, 7) == 10240
    assert all(nr.cp_tc(0, k) == 9216 for k in (1, 2, 6, 8, 13))
    assert nr.cp_duration_ns(0, 1) == pytest.approx(4687.5)
    assert nr.cp_duration_ns(0, 0) == pytest.approx(5208.33, abs=0.01)
    assert nr.symbol_duration_ns(0, 3) == pytest.approx(66666.67 + 4687.5, abs=0.01)


@pytest.mark.parametrize("mu", [0, 1, 2, 3])
def test_long_cp_every_half_millisecond(mu: int) -> None:
    n = 14 << mu
    long = [k for k in range(n) if nr.cp_tc(mu, k) > nr.cp_tc(mu, 1)]
    assert long == [0, 7 << mu]  # the first symbol of each half subframe
    assert nr.cp_tc(mu, 0) - nr.cp_tc(mu, 1) == 16 * 64
    # a subframe is exactly 1 ms and each half exactly 0.5 ms
    lengths = [nr.slot_length_tc(mu, s) for s in range(1 << mu)]
    assert sum(lengths) == nr.TC_PER_SECOND // 1000
    assert sum(lengths[: max(1, (1 << mu) // 2)]) == nr.TC_PER_SECOND // (1000 if mu == 0 else 2000)


def test_slot_lengths_differ_from_mu2() -> None:
    # µ=2: slots 0 and 2 hold the long CP; 14·(32768+2304) + 1024 = 492032 Tc vs 491008 Tc
    assert [nr.slot_length_tc(2, s) for s in range(4)] == [492032, 491008, 492032, 491008]
    assert nr.slot_start_ns(2, 1) == 250260  # 492032 Tc = 250260.4 ns
    assert nr.slot_start_ns(2, 2) == 500_000
    assert nr.slot_start_ns(2, 4, epoch_ns=7) == 1_000_007


@pytest.mark.parametrize("mu", [0, 1])
def test_slot_start_is_nominal_for_mu_le_1(mu: int) -> None:
    for i in (0, 1, 2, 3, 19, 20, 12345):
        assert nr.slot_start_ns(mu, i) == i * nr.slot_duration_ns(mu)


# TS 38.101-1 Table 5.3.2-1 (FR1) and TS 38.101-2 Table 5.3.2-1 (FR2, 120 kHz), spot values
@pytest.mark.parametrize(
    ("mu", "bw", "nrb"),
    [(0, 5, 25), (0, 10, 52), (0, 20, 106), (0, 35, 188), (0, 45, 242), (0, 50, 270),
     (1, 5, 11), (1, 20, 51), (1, 40, 106), (1, 60, 162), (1, 100, 273),
     (2, 10, 11), (2, 20, 24), (2, 50, 65), (2, 100, 135),
     (3, 50, 32), (3, 100, 66), (3, 200, 132), (3, 400, 264)],
)  # fmt: skip
def test_n_rb(mu: int, bw: int, nrb: int) -> None:
    assert nr.n_rb(mu, bw) == nrb


def test_fr2_60khz() -> None:
    assert nr.n_rb(2, 50, "FR2") == 66
    assert nr.n_rb(2, 50) == 65  # FR1 by default


@pytest.mark.parametrize("mu", [0, 1, 2, 3])
def test_n_rb_occupies_most_of_the_channel(mu: int) -> None:
    for bw in nr.bandwidths_mhz(mu):
        occupied_khz = nr.n_rb(mu, bw) * 12 * nr.scs_khz(mu)
        assert 0.75 * bw * 1000 < occupied_khz < bw * 1000


@pytest.mark.parametrize(("mu", "bw"), [(0, 60), (0, 100), (2, 5), (1, 12), (3, 20), (3, 10)])
def test_bandwidth_not_in_table(mu: int, bw: int) -> None:
    with pytest.raises(FieldError) as e:
        nr.n_rb(mu, bw)
    assert e.value.field == "bandwidth_mhz"
    assert f"{bw} MHz" in e.value.reason


@pytest.mark.parametrize(
    ("mu", "nrb", "nfft", "rate"),
    [(0, 106, 2048, 30_720_000), (1, 51, 1024, 30_720_000), (1, 273, 4096, 122_880_000),
     (0, 25, 512, 7_680_000), (2, 24, 512, 30_720_000), (3, 66, 1024, 122_880_000)],
)  # fmt: skip
def test_fft_size(mu: int, nrb: int, nfft: int, rate: int) -> None:
    assert nr.fft_size(nrb) == nfft
    assert nr.sample_rate_hz(mu, nfft) == rate


def test_dmrs_positions() -> None:
    # TS 38.211 Table 7.4.1.1.2-3, type A, l0 = 2
    assert nr.dmrs_symbols_type_a(14, 0) == (2,)
    assert nr.dmrs_symbols_type_a(14, 1) == (2, 11)
    assert nr.dmrs_symbols_type_a(14, 2) == (2, 7, 11)
    assert nr.dmrs_symbols_type_a(14, 3) == (2, 5, 8, 11)
    assert nr.dmrs_symbols_type_a(12, 1) == (2, 9)
    assert nr.dmrs_symbols_type_a(8, 1, l0=3) == (3, 7)
    with pytest.raises(FieldError):
        nr.dmrs_symbols_type_a(5, 1)


# -- slot arithmetic -------------------------------------------------------------------


def test_slot_id_basics() -> None:
    s = SlotId(5, 3)
    assert s.index == 5 * 20 + 3
    assert s + 17 == SlotId(6, 0)
    assert s - 4 == SlotId(4, 19)
    assert SlotId(6, 0) - s == 17
    assert s - SlotId(6, 0) == -17
    assert SlotId(5, 3) < SlotId(5, 4) < SlotId(6, 0)
    assert sorted([SlotId(2, 1), SlotId(0, 9), SlotId(2, 0)]) == [
        SlotId(0, 9), SlotId(2, 0), SlotId(2, 1)
    ]  # fmt: skip
    assert s.subframe == 1
    assert str(s) == "5.3"


def test_slot_id_wraps_at_1024_frames() -> None:
    last = SlotId(1023, 19)
    assert last + 1 == SlotId(0, 0)
    assert SlotId(0, 0) - last == 1  # across the wrap
    assert SlotId(0, 0) - 1 == last
    assert SlotId.period(1) == 20480
    assert SlotId.from_index(20480 + 21) == SlotId(1, 1)


@pytest.mark.parametrize(
    ("kw", "field"),
    [({"sfn": 1024, "slot": 0}, "SlotId.sfn"), ({"sfn": -1, "slot": 0}, "SlotId.sfn"),
     ({"sfn": 0, "slot": 20}, "SlotId.slot"), ({"sfn": 0, "slot": 10, "mu": 0}, "SlotId.slot"),
     ({"sfn": 0, "slot": 0, "mu": 4}, "SlotId.mu")],
)  # fmt: skip
def test_slot_id_invalid(kw: dict[str, int], field: str) -> None:
    with pytest.raises(FieldError) as e:
        SlotId(**kw)
    assert e.value.field == field


def test_slot_id_mixed_numerology_refused() -> None:
    with pytest.raises(FieldError):
        _ = SlotId(0, 0, mu=0) - SlotId(0, 0, mu=1)


def test_slot_start_ns() -> None:
    assert SlotId(0, 0).start_ns() == 0
    assert SlotId(1, 0).start_ns() == 10_000_000
    assert SlotId(1, 3).start_ns(epoch_ns=5) == 10_000_000 + 1_500_000 + 5
    assert SlotId(0, 0).start_ns(periods=1) == 10_240_000_000
    assert SlotId(0, 1, mu=2).start_ns() == 250260


mus = st.sampled_from([0, 1, 2, 3])


@st.composite
def slots(draw: st.DrawFn) -> SlotId:
    mu = draw(mus)
    return SlotId(draw(st.integers(0, 1023)), draw(st.integers(0, (10 << mu) - 1)), mu)


@given(slots(), st.integers(-(10**7), 10**7))
def test_add_then_subtract(s: SlotId, n: int) -> None:
    t = s + n
    assert 0 <= t.sfn < 1024
    assert t.index == (s.index + n) % SlotId.period(s.mu)
    assert t - n == s
    # the signed difference is n modulo the SFN period, in [-P/2, P/2)
    p = SlotId.period(s.mu)
    d = t - s
    assert -p // 2 <= d < p // 2
    assert (d - n) % p == 0


@given(slots(), st.integers(0, 5119))
def test_difference_is_exact_for_close_slots(s: SlotId, n: int) -> None:
    # anything less than half an SFN period apart (5120 slots at µ=0) is measured exactly
    assert (s + n) - s == n
    assert s - (s + n) == -n
    assert (s + n).start_ns(periods=(s.index + n) // SlotId.period(s.mu)) - s.start_ns() == (
        nr.slot_start_ns(s.mu, s.index + n) - nr.slot_start_ns(s.mu, s.index)
    )
