"""Uncoded L1 signal processing: modulation, scrambling, OFDM, DM-RS, channel estimation,
MMSE equalisation and the test channel (TS 38.211 §5.1, §5.2.1, §5.3.1, §6.4.1.1)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airan.core.errors import FieldError
from airan.ran import numerology
from airan.ran.phy import chanest, dmrs, equalizer, modulation, ofdm, scrambling
from airan.ran.phy.channel import TdlChannel, awgn, noise_variance

RNG_SEED = 20240611


def rng(k: int = 0) -> np.random.Generator:
    return np.random.default_rng(RNG_SEED + k)


def random_bits(n: int, k: int = 0) -> np.ndarray:
    return rng(k).integers(0, 2, n, dtype=np.uint8)


# --- modulation (TS 38.211 §5.1) ---------------------------------------------------------


def spec_points(qm: int) -> np.ndarray:
    return np.asarray(_spec_points(qm))


def _spec_points(qm: int) -> object:
    """§5.1.3-§5.1.7 written out literally, for all labels b(0)..b(qm-1) (MSB first)."""
    labels = np.arange(1 << qm)
    b = (labels[:, None] >> (qm - 1 - np.arange(qm))[None, :]) & 1
    s = 1 - 2 * b.astype(float)
    if qm == 2:
        return (s[:, 0] + 1j * s[:, 1]) / math.sqrt(2)
    if qm == 4:
        return (s[:, 0] * (2 - s[:, 2]) + 1j * s[:, 1] * (2 - s[:, 3])) / math.sqrt(10)
    if qm == 6:
        i = s[:, 0] * (4 - s[:, 2] * (2 - s[:, 4]))
        q = s[:, 1] * (4 - s[:, 3] * (2 - s[:, 5]))
        return (i + 1j * q) / math.sqrt(42)
    i = s[:, 0] * (8 - s[:, 2] * (4 - s[:, 4] * (2 - s[:, 6])))
    q = s[:, 1] * (8 - s[:, 3] * (4 - s[:, 5] * (2 - s[:, 7])))
    return (i + 1j * q) / math.sqrt(170)


@pytest.mark.parametrize("qm", [2, 4, 6, 8])
def test_constellations_match_spec_and_have_unit_power(qm: int) -> None:
    pts = modulation.constellation(qm)
    np.testing.assert_allclose(pts, spec_points(qm), atol=1e-6)
    assert pts.dtype == np.complex64
    assert len(np.unique(np.round(pts, 5))) == 1 << qm
    assert abs(np.mean(np.abs(pts) ** 2) - 1.0) < 1e-6


@pytest.mark.parametrize("qm", [4, 6, 8])
def test_qam_is_gray_coded(qm: int) -> None:
    """Nearest neighbours (one level step on one axis) differ in exactly one bit."""
    pts = modulation.constellation(qm)
    step = 2.0 * float(np.min(np.abs(modulation.pam_levels(qm))))
    d = np.abs(pts[:, None] - pts[None, :])
    a, b = np.nonzero(np.abs(d - step) < 1e-4)
    assert a.size > 0
    assert all(bin(int(x) ^ int(y)).count("1") == 1 for x, y in zip(a, b, strict=True))


def test_bpsk_and_pi2_bpsk() -> None:
    bits = np.array([0, 1, 0, 1, 1, 0], dtype=np.uint8)
    plain = modulation.modulate(bits, 1)
    np.testing.assert_allclose(plain, (1 - 2.0 * bits) * (1 + 1j) / math.sqrt(2), atol=1e-6)
    rot = modulation.modulate(bits, 1, pi2=True)
    np.testing.assert_allclose(rot, plain * np.exp(1j * np.pi / 2 * (np.arange(6) % 2)), atol=1e-6)
    for pi2, sym in ((False, plain), (True, rot)):
        llr = modulation.demodulate(sym * 0.3, 0.1, 1, pi2=pi2)
        np.testing.assert_array_equal(modulation.hard_decision(llr), bits)


def q_function(x: float) -> float:
    return 0.5 * math.erfc(x / math.sqrt(2.0))


@pytest.mark.parametrize("es_n0_db", [2.0, 5.0, 8.0])
def test_uncoded_qpsk_ber_matches_theory(es_n0_db: float) -> None:
    """Gray QPSK over AWGN: Pb = Q(√(2·Eb/N0)) = Q(√(Es/N0)), Es = 2 Eb."""
    n_bits = 600_000
    bits = random_bits(n_bits, 1)
    sym = modulation.modulate(bits, 2)
    y = awgn(sym, es_n0_db, rng(2))
    llr = modulation.demodulate(y, noise_variance(es_n0_db), 2)
    ber = float(np.mean(modulation.hard_decision(llr) != bits))
    theory = q_function(math.sqrt(10 ** (es_n0_db / 10)))
    assert abs(ber - theory) / theory < 0.10, (ber, theory)


@pytest.mark.parametrize("qm", [2, 4, 6, 8])
@pytest.mark.parametrize("method", ["maxlog", "logmap"])
def test_noiseless_llr_signs_give_zero_errors(qm: int, method: modulation.DemapMethod) -> None:
    bits = random_bits(qm * 5000, qm)
    sym = modulation.modulate(bits, qm)
    llr = modulation.demodulate(sym, 1e-3, qm, method=method)
    assert llr.dtype == np.float32 and llr.shape == bits.shape
    np.testing.assert_array_equal(modulation.hard_decision(llr), bits)
    assert np.all(np.abs(llr) > 0)


def brute_force_llr(y: complex, nv: float, qm: int, method: str) -> np.ndarray:
    pts = spec_points(qm)
    labels = np.arange(1 << qm)
    m = -(np.abs(y - pts) ** 2) / nv
    out = []
    for k in range(qm):
        bit = (labels >> (qm - 1 - k)) & 1
        if method == "maxlog":
            out.append(m[bit == 0].max() - m[bit == 1].max())
        else:
            out.append(np.logaddexp.reduce(m[bit == 0]) - np.logaddexp.reduce(m[bit == 1]))
    return np.array(out)


@settings(max_examples=60, deadline=None)
@given(
    qm=st.sampled_from([2, 4, 6, 8]),
    re=st.floats(-1.6, 1.6),
    im=st.floats(-1.6, 1.6),
    nv=st.floats(0.01, 2.0),
    method=st.sampled_from(["maxlog", "logmap"]),
)
def test_llr_equals_brute_force_over_the_constellation(
    qm: int, re: float, im: float, nv: float, method: modulation.DemapMethod
) -> None:
    y = np.array([re + 1j * im], dtype=np.complex64)
    got = modulation.demodulate(y, nv, qm, method=method)
    want = brute_force_llr(complex(y[0]), nv, qm, method)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 * max(1.0, 1.0 / nv))


def test_per_symbol_noise_variance_scales_llrs() -> None:
    sym = modulation.modulate(random_bits(8 * 4), 4)
    nv = np.array([0.1, 0.2, 0.4, 0.8, 0.1, 0.2, 0.4, 0.8], dtype=np.float32)
    llr = modulation.demodulate(sym, nv, 4).reshape(8, 4)
    ref = modulation.demodulate(sym, 0.1, 4).reshape(8, 4)
    np.testing.assert_allclose(llr, ref * (0.1 / nv)[:, None], rtol=1e-5)


def test_modulation_rejects_bad_input() -> None:
    with pytest.raises(FieldError) as e:
        modulation.modulate(np.zeros(6, np.uint8), 3)
    assert e.value.field == "qm"
    with pytest.raises(FieldError) as e:
        modulation.modulate(np.zeros(7, np.uint8), 2)
    assert e.value.field == "bits"
    with pytest.raises(FieldError) as e:
        modulation.demodulate(np.zeros(4, np.complex64), 1.0, 10)
    assert e.value.field == "qm"
    with pytest.raises(FieldError) as e:
        modulation.demodulate(np.zeros(4, np.complex64), 1.0, 2, method="exact")  # type: ignore[arg-type]
    assert e.value.field == "method"


# --- scrambling (TS 38.211 §5.2.1, §6.3.1.1, §7.3.1.1) ------------------------------------


def gold_reference(c_init: int, n: int) -> np.ndarray:
    """Bit-serial §5.2.1, straight from the text."""
    total = n + 1600 + 31
    x1 = [1] + [0] * 30
    x2 = [(c_init >> i) & 1 for i in range(31)]
    for i in range(total - 31):
        x1.append((x1[i + 3] + x1[i]) % 2)
        x2.append((x2[i + 3] + x2[i + 2] + x2[i + 1] + x2[i]) % 2)
    return np.array([(x1[i + 1600] + x2[i + 1600]) % 2 for i in range(n)], dtype=np.uint8)


@pytest.mark.parametrize("c_init", [0, 1, 0x1234567, (1 << 31) - 1])
def test_gold_sequence_matches_bit_serial_definition(c_init: int) -> None:
    for n in (1, 31, 59, 1000, 3001):
        np.testing.assert_array_equal(
            scrambling.gold_sequence(c_init, n), gold_reference(c_init, n)
        )


def test_c_init_formulas_and_round_trip() -> None:
    assert scrambling.pusch_c_init(0x4601, 17) == 0x4601 * 2**15 + 17
    assert scrambling.pdsch_c_init(0x4601, 17, q=1) == 0x4601 * 2**15 + 2**14 + 17
    c = scrambling.pusch_c_init(100, 5)
    bits = random_bits(5000, 3)
    sc = scrambling.scramble_bits(bits, c)
    assert 0.4 < np.mean(sc != bits) < 0.6
    np.testing.assert_array_equal(scrambling.scramble_bits(sc, c), bits)
    llr = (1.0 - 2.0 * sc.astype(np.float32)) * 3.0  # LLRs of the scrambled bits
    np.testing.assert_array_equal(modulation.hard_decision(scrambling.descramble_llr(llr, c)), bits)
    with pytest.raises(FieldError) as e:
        scrambling.pusch_c_init(70000, 0)
    assert e.value.field == "rnti"
    with pytest.raises(FieldError) as e:
        scrambling.gold_sequence(-1, 10)
    assert e.value.field == "c_init"


# --- OFDM (TS 38.211 §5.3.1) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("mu", "n_prb", "slot"), [(0, 25, 0), (1, 51, 1), (2, 24, 0), (2, 24, 1), (3, 32, 0)]
)
def test_ofdm_round_trip_and_slot_length(mu: int, n_prb: int, slot: int) -> None:
    nfft = ofdm.fft_size(n_prb)
    plan = ofdm.OfdmPlan(mu, n_prb, nfft, slot)
    g = rng(4).standard_normal((3, 14, 12 * n_prb)) + 1j * rng(5).standard_normal(
        (3, 14, 12 * n_prb)
    )
    grid = (g / math.sqrt(2)).astype(np.complex64)
    x = plan.modulate(grid)
    # Samples per slot = the slot's duration in Tc at f_s = N_FFT·Δf.
    tc_per_sample = numerology.useful_symbol_tc(mu) // nfft
    assert x.shape == (3, numerology.slot_length_tc(mu, slot % (1 << mu)) // tc_per_sample)
    back = plan.demodulate(x)
    np.testing.assert_allclose(back, grid, atol=1e-4)
    # Each symbol's CP repeats the end of its useful part; ortho scaling keeps RE power.
    start = 0
    for cp in plan.cp:
        sym = x[:, start : start + cp + nfft]
        np.testing.assert_allclose(sym[:, :cp], sym[:, -cp:], atol=1e-6)
        start += cp + nfft
    assert abs(np.mean(np.abs(x) ** 2) * nfft / (12 * n_prb) - 1.0) < 0.05


def test_cp_lengths_follow_38_211() -> None:
    # µ=0, N_FFT=2048: 160 on symbols 0 and 7, else 144 (the LTE-like pattern).
    assert ofdm.cp_lengths(0, 2048).tolist() == [160] + [144] * 6 + [160] + [144] * 6
    assert ofdm.cp_lengths(1, 4096).tolist() == [352] + [288] * 13
    # µ=2: only the first slot of each half subframe has the long CP.
    assert ofdm.cp_lengths(2, 1024, 0)[0] > ofdm.cp_lengths(2, 1024, 1)[0]
    assert ofdm.cp_lengths(2, 1024, 2)[0] == ofdm.cp_lengths(2, 1024, 0)[0]
    assert ofdm.sample_rate_hz(1, 4096) == 122.88e6


def test_subcarrier_maps_to_its_frequency() -> None:
    """Subcarrier k sits at (k - K/2)·Δf: its time signal is that complex exponential."""
    plan = ofdm.OfdmPlan(1, 4, 128)
    grid = np.zeros((14, 48), np.complex64)
    grid[:, 30] = 1.0
    x = plan.modulate(grid)
    n0 = int(plan.cp[0])
    useful = x[n0 : n0 + 128]
    t = np.arange(128)
    np.testing.assert_allclose(
        useful, np.exp(2j * np.pi * (30 - 24) * t / 128) / math.sqrt(128), atol=1e-6
    )


# --- DM-RS (TS 38.211 §6.4.1.1 / §7.4.1.1) -------------------------------------------------


def test_dmrs_positions_type_a() -> None:
    assert dmrs.dmrs_symbols(0, 14, 0) == (2,)
    assert dmrs.dmrs_symbols(0, 14, 1) == (2, 11)
    assert dmrs.dmrs_symbols(0, 14, 2) == (2, 7, 11)
    assert dmrs.dmrs_symbols(0, 14, 3) == (2, 5, 8, 11)
    assert dmrs.dmrs_symbols(0, 14, 1, typea_pos=3) == (3, 11)
    assert dmrs.dmrs_symbols(0, 10, 2) == (2, 6, 9)
    for l_d in range(8, 15):  # agrees with the numerology module's table
        for add in range(4):
            assert dmrs.dmrs_symbols(0, l_d, add) == numerology.dmrs_symbols_type_a(l_d, add)
    with pytest.raises(FieldError) as e:
        dmrs.dmrs_symbols(0, 14, 4)
    assert e.value.field == "dmrs_add_pos"


def test_dmrs_sequence_is_gold_qpsk() -> None:
    c_init = dmrs.dmrs_c_init(3, 2, 41)
    assert c_init == (2**17 * (14 * 3 + 2 + 1) * (2 * 41 + 1) + 2 * 41) % 2**31
    r = dmrs.dmrs_sequence(3, 2, 41, 10)
    c = gold_reference(c_init, 120).astype(float)
    np.testing.assert_allclose(
        r, ((1 - 2 * c[0::2]) + 1j * (1 - 2 * c[1::2])) / math.sqrt(2), atol=1e-6
    )


def port_grids(pat: dmrs.DmrsPattern) -> np.ndarray:
    """(ports, n_dmrs, 12n) per-port DM-RS REs of the allocation."""
    out = np.zeros((pat.n_ports, len(pat.symbols), 12 * pat.n_prb), np.complex64)
    for p in range(pat.n_ports):
        out[p][:, pat.subcarriers(p) - 12 * pat.prb_start] = pat.values[p]
    return out


def test_dmrs_ports_are_orthogonal_per_prb() -> None:
    pat = dmrs.dmrs_pattern(
        slot=5, symbols=(2, 11), prb_start=3, n_prb=4, n_ports=4, n_id=7, n_prb_grid=10
    )
    g = port_grids(pat).reshape(4, 2, 4, 12)  # (port, symbol, PRB, subcarrier)
    # Within every PRB and symbol, ports are orthogonal (CDM by FD-OCC, FDM across groups).
    gram = np.einsum("psbk,qsbk->sbpq", g, np.conj(g))
    eye = np.broadcast_to(np.eye(4) * 12.0, gram.shape)  # 6 REs at |β r|² = 2
    np.testing.assert_allclose(gram, eye, atol=1e-5)
    # Group 0 (ports 0, 1) on even subcarriers, group 1 on odd ones (Δ = 0, 1).
    assert np.all(g[:2, ..., 1::2] == 0) and np.all(g[2:, ..., 0::2] == 0)


# --- channel, channel estimation, MMSE ----------------------------------------------------


def grid_setup(
    layers: int, n_rx: int, n_prb: int = 8, add_pos: int = 1, k: int = 0, ds_ns: float = 150.0
) -> tuple[dmrs.DmrsPattern, tuple[int, ...], np.ndarray, np.ndarray, ofdm.OfdmPlan, TdlChannel]:
    """One allocation's transmitted grid: DM-RS plus random QPSK data on every port."""
    grid_prb = n_prb + 2
    syms = dmrs.dmrs_symbols(0, 14, add_pos)
    pat = dmrs.dmrs_pattern(
        slot=1, symbols=syms, prb_start=1, n_prb=n_prb, n_ports=layers, n_id=3, n_prb_grid=grid_prb
    )
    data_syms = tuple(s for s in range(14) if s not in syms)
    tx = np.zeros((layers, 14, 12 * grid_prb), np.complex64)
    bits = random_bits(2 * layers * len(data_syms) * 12 * n_prb, k)
    x = modulation.modulate(bits, 2).reshape(layers, len(data_syms), 12 * n_prb)
    tx[:, list(data_syms), 12 : 12 + 12 * n_prb] = x
    for p in range(layers):
        tx[p][np.ix_(np.array(syms), pat.subcarriers(p))] = pat.values[p]
    plan = ofdm.OfdmPlan(1, grid_prb, ofdm.fft_size(grid_prb))
    ch = TdlChannel.draw(
        rng(k + 100),
        n_rx=n_rx,
        n_tx=layers,
        sample_rate_hz=plan.sample_rate_hz,
        n_taps=4,
        delay_spread_ns=ds_ns,
    )
    return pat, data_syms, tx, x, plan, ch


@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_channel_estimation_mse_falls_with_snr(layers: int) -> None:
    pat, data_syms, tx, _, plan, ch = grid_setup(layers, 4, k=layers)
    h_true = ch.freq_response(plan.bins, plan.nfft)[:, :, 12:-12]  # (rx, L, 12n)
    want = np.broadcast_to(
        h_true.transpose(2, 0, 1)[None], (len(data_syms), *h_true.transpose(2, 0, 1).shape)
    )
    want = want.reshape(-1, 4, layers)
    cplan = chanest.ChanEstPlan(pat, data_syms, "linear", np)
    clean = ch.apply_grid(tx, plan.bins, plan.nfft)
    mse = []
    for i, snr in enumerate((0.0, 10.0, 20.0, 30.0)):
        est = chanest.estimate(awgn(clean, snr, rng(200 + i)), cplan)
        assert est.h.shape == want.shape
        mse.append(float(np.mean(np.abs(est.h - want) ** 2)))
    assert all(a > 1.5 * b for a, b in itertools.pairwise(mse)), mse
    assert mse[-1] < 0.01, mse


@pytest.mark.parametrize(("layers", "add_pos", "method"), [
    (1, 1, "empty_cdm_group"), (2, 0, "empty_cdm_group"), (3, 1, "unused_occ"),
    (4, 2, "time_residual"), (4, 0, "freq_residual"),
])  # fmt: skip
def test_noise_and_snr_estimates(layers: int, add_pos: int, method: str) -> None:
    """In a flat channel each noise estimator is unbiased (within sampling error)."""
    pat, data_syms, tx, _, plan, _ = grid_setup(layers, 4, n_prb=24, add_pos=add_pos, k=7)
    flat = TdlChannel(
        taps=np.exp(2j * np.pi * rng(9).random((4, layers, 1))).astype(np.complex64),
        delays=np.zeros(1, np.int64),
        sample_rate_hz=plan.sample_rate_hz,
    )
    cplan = chanest.ChanEstPlan(pat, data_syms, "average", np)
    assert cplan.noise_method == method
    for snr in (0.0, 15.0):
        est = chanest.estimate(awgn(flat.apply_grid(tx, plan.bins, plan.nfft), snr, rng(11)), cplan)
        assert abs(float(est.noise_var) / noise_variance(snr) - 1.0) < 0.2
        assert abs(float(est.snr_db) - snr) < 1.0


def test_channel_time_and_frequency_domains_agree() -> None:
    """Convolution in time = per-subcarrier response when the delays fit in the CP."""
    plan = ofdm.OfdmPlan(1, 10, 256)
    ch = TdlChannel.draw(
        rng(12), n_rx=3, n_tx=2, sample_rate_hz=plan.sample_rate_hz, n_taps=5, delay_spread_ns=200
    )
    assert 0 < ch.max_delay < plan.cp.min()
    g = (rng(13).standard_normal((2, 14, 120)) + 1j * rng(14).standard_normal((2, 14, 120))).astype(
        np.complex64
    )
    via_time = plan.demodulate(ch.propagate(plan.modulate(g)))
    np.testing.assert_allclose(via_time, ch.apply_grid(g, plan.bins, plan.nfft), atol=2e-4)
    # Power: unit average per (rx, tx) link over many draws.
    taps = np.stack(
        [TdlChannel.draw(rng(50 + i), n_rx=2, n_tx=2, sample_rate_hz=1e7).taps for i in range(200)]
    )
    assert abs(np.mean(np.sum(np.abs(taps) ** 2, axis=-1)) - 1.0) < 0.1


def test_mmse_matches_the_closed_form() -> None:
    r = rng(15)
    n, rx, layers = 50, 6, 3
    h = (r.standard_normal((n, rx, layers)) + 1j * r.standard_normal((n, rx, layers))).astype(
        np.complex64
    )
    y = (r.standard_normal((n, rx)) + 1j * r.standard_normal((n, rx))).astype(np.complex64)
    s2 = 0.3
    eq = equalizer.mmse(y, h, s2)
    for i in range(n):  # reference, per RE
        hi = h[i].astype(np.complex128)
        a = hi.conj().T @ hi + s2 * np.eye(layers)
        w = np.linalg.solve(a, hi.conj().T)
        g = np.real(np.diag(w @ hi))
        np.testing.assert_allclose(eq.symbols[i], (w @ y[i]) / g, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(eq.noise_var[i], (1 - g) / g, rtol=1e-3, atol=1e-5)
    a = np.einsum("nrl,nrm->nlm", h.conj(), h) + np.eye(3)
    np.testing.assert_allclose(equalizer.inverse_hpd(a), np.linalg.inv(a), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("layers", "n_rx"), [(1, 1), (1, 2), (2, 2), (2, 4), (3, 4), (3, 8), (4, 4), (4, 8)]
)
def test_mmse_recovers_symbols_over_multipath(layers: int, n_rx: int) -> None:
    """Estimated channel, 35 dB: the error is within a small factor of the post-MMSE
    variance, the median EVM is better than -20 dB, and with spare antennas (diversity
    ≥ 2) 16QAM bits come back with a BER below 1e-3."""
    pat, data_syms, tx, _, plan, ch = grid_setup(layers, n_rx, k=20 + layers * n_rx, ds_ns=50.0)
    x = modulation.modulate(random_bits(4 * layers * len(data_syms) * 96, 3), 4).reshape(
        layers, len(data_syms), 96
    )
    tx[:, list(data_syms), 12:108] = x
    rxg = awgn(ch.apply_grid(tx, plan.bins, plan.nfft), 35.0, rng(21))
    est = chanest.estimate(rxg, chanest.ChanEstPlan(pat, data_syms, "linear", np))
    y = rxg[:, list(data_syms), 12:108].transpose(1, 2, 0).reshape(-1, n_rx)
    eq = equalizer.mmse(y, est.h, est.noise_var)
    sent = x.transpose(1, 2, 0).reshape(-1, layers)
    err = np.abs(eq.symbols - sent) ** 2
    # Channel-estimation error (LS, σ²/4 per pair) adds to what the MMSE predicts.
    assert 0.5 < np.mean(err) / np.mean(eq.noise_var) < 4.0
    assert 10 * np.log10(1.0 / np.median(err)) > 20.0  # median EVM better than -20 dB
    if n_rx > layers:
        bits_hat = modulation.hard_decision(modulation.demodulate(eq.symbols, eq.noise_var, 4))
        bits = modulation.hard_decision(modulation.demodulate(sent, 0.01, 4))
        assert np.mean(bits_hat != bits) < 1e-3


def test_mimo_shape_errors() -> None:
    h = np.zeros((10, 2, 3), np.complex64)
    with pytest.raises(FieldError) as e:
        equalizer.mmse(np.zeros((10, 2), np.complex64), h, 0.1)
    assert e.value.field == "layers"
    with pytest.raises(FieldError) as e:
        equalizer.check_mimo(9, 1)
    assert e.value.field == "n_rx"
    with pytest.raises(FieldError) as e:
        equalizer.check_mimo(8, 5)
    assert e.value.field == "layers"
    with pytest.raises(FieldError) as e:
        dmrs.dmrs_pattern(
            slot=0, symbols=(2,), prb_start=8, n_prb=4, n_ports=1, n_id=0, n_prb_grid=10
        )
    assert e.value.field == "prb"
    with pytest.raises(FieldError) as e:
        TdlChannel.draw(rng(), n_rx=2, n_tx=1, sample_rate_hz=1e6, delay_spread_ns=-1.0)
    assert e.value.field == "delay_spread_ns"


# --- GPU ---------------------------------------------------------------------------------


@pytest.mark.gpu
def test_signal_kernels_on_cupy_match_numpy() -> None:
    from airan.backend import probe_cupy

    if probe_cupy() is None:
        pytest.skip("no usable CUDA device")
    import cupy as cp

    bits = random_bits(8 * 3000, 30)
    sym = modulation.modulate(bits, 8)
    sym_d = modulation.modulate(cp.asarray(bits), 8)
    np.testing.assert_allclose(cp.asnumpy(sym_d), sym, atol=1e-6)
    y = awgn(sym, 20.0, rng(31))
    llr = modulation.demodulate(y, 0.01, 8)
    np.testing.assert_allclose(
        cp.asnumpy(modulation.demodulate(cp.asarray(y), 0.01, 8)), llr, rtol=1e-4, atol=1e-2
    )
    pat, data_syms, tx, _, plan, ch = grid_setup(4, 8, k=32)
    rxg = awgn(ch.apply_grid(tx, plan.bins, plan.nfft), 30.0, rng(33))
    est = chanest.estimate(rxg, chanest.ChanEstPlan(pat, data_syms, "linear", np))
    est_d = chanest.estimate(cp.asarray(rxg), chanest.ChanEstPlan(pat, data_syms, "linear", cp))
    np.testing.assert_allclose(cp.asnumpy(est_d.h), est.h, atol=1e-4)
    gplan = ofdm.OfdmPlan(1, plan.n_prb, plan.nfft, xp=cp)
    np.testing.assert_allclose(
        cp.asnumpy(gplan.demodulate(gplan.modulate(cp.asarray(tx)))), tx, atol=1e-4
    )
