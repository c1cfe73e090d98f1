"""PDSCH transmit → channel → PUSCH receive, with real TB coding (TS 38.211 §6.3.1/§7.3.1,
TS 38.212 §6.2/§7.2)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pytest

from airan.core.errors import FieldError
from airan.ran.phy import coding, modulation
from airan.ran.phy.channel import TdlChannel, awgn
from airan.ran.phy.dmrs import PORT_DELTA, dmrs_symbols
from airan.ran.phy.pdsch import PdschTransmitter
from airan.ran.phy.pusch import CellConfig, PuschReceiver, PuschResult, SchGrant
from airan.ran.tables import transport_block_size

SEED = 314159


def grant(
    rnti: int, prb_start: int, n_prb: int, qm: int, rate: float, layers: int, add_pos: int = 1
) -> SchGrant:
    """A grant with the TS 38.214 §5.1.3.2 TBS for its allocation (no data on DM-RS symbols)."""
    n_dmrs = 12 * len(dmrs_symbols(0, 14, add_pos))
    tbs = transport_block_size(qm, rate * 1024, n_prb, 14, n_dmrs, 0, layers)
    return SchGrant(
        rnti=rnti, prb_start=prb_start, n_prb=n_prb, qm=qm, code_rate=rate, tbs=tbs,
        layers=layers, dmrs_add_pos=add_pos,
    )  # fmt: skip


def payloads(grants: Sequence[SchGrant], rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.integers(0, 2, g.tbs, dtype=np.uint8) for g in grants]


def uplink(
    tx: PdschTransmitter,
    grants: Sequence[SchGrant],
    bits: Sequence[np.ndarray],
    n_rx: int,
    snr_db: float,
    rng: np.random.Generator,
    slot: int = 0,
    delay_spread_ns: float = 100.0,
) -> np.ndarray:
    """Every UE transmits alone through its own TDL channel; the gNB receives the sum."""
    fs = tx.ofdm(slot).sample_rate_hz
    y = None
    for g, b in zip(grants, bits, strict=True):
        x = tx.transmit([g], [b], slot)[: g.layers]
        ch = TdlChannel.draw(
            rng, n_rx=n_rx, n_tx=g.layers, sample_rate_hz=fs, n_taps=4,
            delay_spread_ns=delay_spread_ns,
        )  # fmt: skip
        part = ch.propagate(x)
        y = part if y is None else y + part
    assert y is not None
    return np.asarray(awgn(y, snr_db, rng))


def test_multi_ue_uplink_chain_decodes_every_tb() -> None:
    """Four UEs with 1-4 layers, 8 rx antennas, multipath, 30 dB: all CRCs pass."""
    rng = np.random.default_rng(SEED)
    cell = CellConfig(mu=1, n_prb=52, n_id=17)
    grants = [
        grant(0x4601, 0, 8, 2, 0.5, 1, add_pos=0),
        grant(0x4602, 8, 16, 4, 0.6, 2, add_pos=1),
        grant(0x4603, 24, 12, 6, 0.55, 3, add_pos=2),
        grant(0x4604, 36, 16, 4, 0.5, 4, add_pos=1),
    ]
    bits = payloads(grants, rng)
    tx = PdschTransmitter(cell, 4)
    rx = PuschReceiver(cell, 8)
    y = uplink(tx, grants, bits, 8, 30.0, rng, slot=3)
    results = rx.receive(y, grants, slot=3)
    assert [r.rnti for r in results] == [g.rnti for g in grants]
    for r, b in zip(results, bits, strict=True):
        assert r.crc_ok, r
        np.testing.assert_array_equal(r.bits, b)
        assert 20.0 < r.snr_db < 45.0
        assert r.iterations >= 1
    # Wrong slot (different DM-RS sequence) or wrong RNTI (different scrambling): no CRC.
    assert not any(r.crc_ok for r in rx.receive(y, grants, slot=4))
    other = [SchGrant(**{**g.__dict__, "rnti": g.rnti + 1}) for g in grants[:1]]
    assert not rx.receive(y, other, slot=3)[0].crc_ok


def test_downlink_multi_port_signal_to_multi_antenna_receiver() -> None:
    """One 4-port PDSCH slot carrying three UEs, one channel, received with 6 antennas."""
    rng = np.random.default_rng(SEED + 1)
    cell = CellConfig(mu=0, n_prb=25, n_id=3)
    grants = [grant(10, 0, 6, 2, 0.4, 1), grant(11, 6, 9, 4, 0.5, 2), grant(12, 15, 10, 2, 0.5, 4)]
    bits = payloads(grants, rng)
    tx = PdschTransmitter(cell, 4)
    x = tx.transmit(grants, bits, slot=1)
    ch = TdlChannel.draw(rng, n_rx=6, n_tx=4, sample_rate_hz=tx.ofdm().sample_rate_hz, n_taps=3)
    results = PuschReceiver(cell, 6).receive(ch.apply(x, 28.0, rng), grants, slot=1)
    assert all(r.crc_ok for r in results)
    for r, b in zip(results, bits, strict=True):
        np.testing.assert_array_equal(r.bits, b)


def test_pdsch_resource_and_layer_mapping() -> None:
    """§7.3.1.3 layer mapping d(L·i+v) → port v, §7.3.1.5 frequency-first RE order around
    the DM-RS symbols, DM-RS on Δ-offset subcarriers, the other CDM group left empty."""
    cell = CellConfig(mu=1, n_prb=10)
    g = grant(7, 2, 5, 4, 0.5, 2, add_pos=1)
    tx = PdschTransmitter(cell, 2)
    plan = tx.plan([g])
    coded = tx.encode(plan, payloads([g], np.random.default_rng(1)))
    grid = tx.map_grid(plan, coded)
    d = modulation.modulate(coded[0], 4)
    data_syms = [s for s in range(14) if s not in (2, 11)]
    for v in range(2):
        got = grid[v][np.ix_(np.array(data_syms), np.arange(24, 84))].reshape(-1)
        np.testing.assert_array_equal(got, d[v::2])
        for s in (2, 11):
            row = grid[v, s, 24:84]
            assert np.all(row[PORT_DELTA[v] :: 2] != 0) and np.all(row[1 - PORT_DELTA[v] :: 2] == 0)
    outside = np.ones(120, bool)
    outside[24:84] = False
    assert np.all(grid[:, :, outside] == 0)
    # Scrambled coded bits = coded bits xor the §5.2.1 Gold sequence of c_init.
    ue = plan.ues[0]
    assert ue.c_init == 7 * 2**15 + cell.n_id
    raw = coding.encode_tb(payloads([g], np.random.default_rng(1))[0], ue.tb)
    from airan.ran.phy.scrambling import gold_sequence

    np.testing.assert_array_equal(coded[0], raw ^ gold_sequence(ue.c_init, ue.g_bits))


def test_receiver_stages_are_separable() -> None:
    rng = np.random.default_rng(SEED + 2)
    cell = CellConfig(mu=1, n_prb=24)
    grants = [grant(1, 0, 12, 2, 0.5, 1), grant(2, 12, 12, 4, 0.5, 2)]
    bits = payloads(grants, rng)
    tx = PdschTransmitter(cell, 2)
    rx = PuschReceiver(cell, 4)
    y = uplink(tx, grants, bits, 4, 25.0, rng)
    plan = rx.plan(grants)
    assert rx.plan(grants) is plan  # cached per grant set
    grid = rx.front_end(y)
    assert grid.shape == (4, 14, 288) and grid.dtype == np.complex64
    assert rx.front_end(y) is grid  # preallocated buffer
    soft = rx.equalise(grid, plan)
    assert [s.llr.shape for s in soft] == [(ue.g_bits,) for ue in plan.ues]
    assert all(s.llr.dtype == np.float32 for s in soft)
    assert soft[1].symbols.shape == (plan.ues[1].n_re, 2)
    results = rx.decode(soft, plan)
    assert all(r.crc_ok for r in results)


def run_bler(snr_db: float, trials: int, rng: np.random.Generator) -> float:
    cell = CellConfig(mu=1, n_prb=8)
    g = grant(1, 0, 8, 2, 0.3, 1)
    tx = PdschTransmitter(cell, 1)
    rx = PuschReceiver(cell, 2)
    fs = tx.ofdm().sample_rate_hz
    awgn_only = TdlChannel.draw(rng, n_rx=2, n_tx=1, sample_rate_hz=fs, n_taps=1, fading=False)
    fails = 0
    for _ in range(trials):
        b = payloads([g], rng)
        y = awgn_only.apply(tx.transmit([g], b), snr_db, rng)
        fails += not rx.receive(y, [g])[0].crc_ok
    return fails / trials


def test_coded_bler_waterfall() -> None:
    """QPSK R=0.3, 8 PRBs, 2 rx, AWGN: BLER goes from ~1 to ~0 within 6 dB."""
    rng = np.random.default_rng(SEED + 3)
    snrs = (-6.0, -4.0, -2.0, 0.0)
    bler = [run_bler(s, 30, rng) for s in snrs]
    assert bler[0] >= 0.9, bler
    assert bler[-1] <= 0.1, bler
    assert all(a >= b - 0.1 for a, b in itertools.pairwise(bler)), bler


def receive_harq(
    rx: PuschReceiver, y: np.ndarray, g: SchGrant, harq: dict[tuple[int, int], np.ndarray]
) -> PuschResult:
    return rx.decode(rx.equalise(rx.front_end(y), [g]), [g], harq=harq)[0]


def test_harq_soft_combining_recovers_what_single_transmissions_miss() -> None:
    rng = np.random.default_rng(SEED + 4)
    cell = CellConfig(mu=1, n_prb=8)
    g0 = grant(9, 0, 8, 2, 0.3, 1)
    g2 = SchGrant(**{**g0.__dict__, "rv": 2})
    tx = PdschTransmitter(cell, 1)
    rx = PuschReceiver(cell, 2, time_interp="average")
    fs = tx.ofdm().sample_rate_hz
    ch = TdlChannel.draw(rng, n_rx=2, n_tx=1, sample_rate_hz=fs, n_taps=1, fading=False)
    single = combined = 0
    trials = 12
    for _ in range(trials):
        b = payloads([g0], rng)
        harq: dict[tuple[int, int], np.ndarray] = {}
        first = receive_harq(rx, ch.apply(tx.transmit([g0], b), -5.0, rng), g0, harq)
        single += first.crc_ok
        second = receive_harq(rx, ch.apply(tx.transmit([g2], b), -5.0, rng), g2, harq)
        combined += second.crc_ok
        if second.crc_ok:
            np.testing.assert_array_equal(second.bits, b[0])
            assert harq == {}  # the buffer is released on success
        else:
            assert (9, 0) in harq
    assert single <= trials // 4
    assert combined >= trials * 3 // 4


def small(**kw: object) -> SchGrant:
    args: dict[str, object] = {"rnti": 1, "prb_start": 0, "n_prb": 4, "qm": 2}
    args.update(code_rate=0.5, tbs=100)
    args.update(kw)
    return SchGrant(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: small(qm=3), "grant.qm"),
        (lambda: small(layers=5), "grant.layers"),
        (lambda: small(code_rate=1.5), "grant.code_rate"),
        (lambda: small(rnti=70000), "grant.rnti"),
        (lambda: small(dmrs_add_pos=4), "grant.dmrs_add_pos"),
        (lambda: CellConfig(mu=5), "mu"),
        (lambda: CellConfig(n_prb=300), "cell.n_prb"),
        (lambda: PuschReceiver(CellConfig(), 9), "n_rx"),
        (lambda: PdschTransmitter(CellConfig(), 5), "n_ports"),
    ],
)
def test_bad_configuration_names_the_field(make: object, field: str) -> None:
    with pytest.raises(FieldError) as e:
        make()  # type: ignore[operator]
    assert e.value.field == field


def test_bad_grant_sets_name_the_field() -> None:
    cell = CellConfig(mu=1, n_prb=20)
    rx = PuschReceiver(cell, 2)
    tx = PdschTransmitter(cell, 2)
    ok = grant(1, 0, 4, 2, 0.5, 1)
    cases: list[tuple[object, list[SchGrant], str]] = [
        (rx, [grant(1, 0, 4, 2, 0.5, 4)], "grants[0].layers"),  # layers > rx antennas
        (tx, [ok, grant(2, 4, 4, 2, 0.5, 3)], "grants[1].layers"),  # layers > tx ports
        (rx, [grant(1, 18, 4, 2, 0.5, 1)], "grants[0].prb_start"),  # outside the grid
        (rx, [ok, grant(2, 3, 4, 2, 0.5, 1)], "grants[1].prb_start"),  # overlapping
        (rx, [small(n_prb=1, tbs=5000)], "grants[0].g_bits"),  # code rate above 1
        (rx, [small(n_symbols=2)], "grants[0].n_symbols"),  # too short for type A
    ]
    for who, grants, field in cases:
        with pytest.raises(FieldError) as e:
            who.plan(grants)  # type: ignore[attr-defined]
        assert e.value.field == field, (field, e.value)
    with pytest.raises(FieldError) as e:
        tx.encode([ok], [np.zeros(ok.tbs + 1, np.uint8)])
    assert e.value.field == "payloads[0]"
    with pytest.raises(FieldError) as e:
        rx.front_end(np.zeros((3, rx.samples_per_slot()), np.complex64))
    assert e.value.field == "samples"


@pytest.mark.gpu
def test_chain_on_cupy_matches_numpy() -> None:
    from airan.backend import probe_cupy

    if probe_cupy() is None:
        pytest.skip("no usable CUDA device")
    import cupy as cp

    rng = np.random.default_rng(SEED + 5)
    cell = CellConfig(mu=1, n_prb=52)
    grants = [grant(1, 0, 20, 4, 0.5, 2), grant(2, 20, 32, 6, 0.6, 4)]
    bits = payloads(grants, rng)
    y = uplink(PdschTransmitter(cell, 4), grants, bits, 8, 30.0, rng)
    ref = PuschReceiver(cell, 8)
    dev = PuschReceiver(cell, 8, xp=cp)
    soft_ref = ref.equalise(ref.front_end(y), grants)
    soft_dev = dev.equalise(dev.front_end(cp.asarray(y)), grants)
    for a, b in zip(soft_ref, soft_dev, strict=True):
        np.testing.assert_allclose(cp.asnumpy(b.llr), a.llr, rtol=1e-2, atol=0.5)
    results = dev.decode(soft_dev, grants)
    assert all(r.crc_ok for r in results)
    # The transmitter runs on the device too.
    x_dev = PdschTransmitter(cell, 4, xp=cp).transmit(grants, [cp.asarray(b) for b in bits])
    x_ref = PdschTransmitter(cell, 4).transmit(grants, bits)
    np.testing.assert_allclose(cp.asnumpy(x_dev), x_ref, atol=1e-5)
