"""Transport-block channel coding of TS 38.212 §7.2 / §6.2 (and §5.2.2, §5.4.2, §5.5)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airan.backend import probe_cupy
from airan.core.errors import FieldError
from airan.ran.phy import ldpc
from airan.ran.phy.coding import (
    TbPlan,
    decode_tb,
    derate_match,
    encode_tb,
    plan_tb,
    select_base_graph,
)
from airan.ran.phy.crc import crc_attach


def awgn_llr(
    g: npt.NDArray[np.uint8], es_n0_db: float, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """BPSK per coded bit (0 -> +1), real AWGN of variance N0/2, LLR = 2 y / sigma^2."""
    sigma2 = 1.0 / (2.0 * 10.0 ** (es_n0_db / 10.0))
    y = 1.0 - 2.0 * g + np.sqrt(sigma2) * rng.standard_normal(g.shape)
    out: npt.NDArray[np.float32] = (2.0 * y / sigma2).astype(np.float32)
    return out


def reference_encode(bits: npt.NDArray[np.uint8], p: TbPlan) -> npt.NDArray[np.uint8]:
    """§5.2.2 + §5.3.2 + §5.4.2 + §5.5 written out bit by bit, as in the spec text."""
    b = crc_attach(bits, "24A" if p.tbs > 3824 else "16")
    out: list[int] = []
    per_cb = p.k_prime - p.cb_crc
    for r in range(p.c):
        cb = b[r * per_cb : (r + 1) * per_cb]
        if p.c > 1:
            cb = crc_attach(cb, "24B")
        c = np.concatenate([cb, np.zeros(p.filler, np.uint8)])
        d = ldpc.encode(c, p.base_graph, p.zc)
        null = np.zeros(p.n, bool)
        null[p.k_prime - 2 * p.zc : p.k - 2 * p.zc] = True  # <NULL> filler bits in d
        e_r = p.e[r]
        e: list[int] = []
        j = 0
        while len(e) < e_r:  # bit selection, §5.4.2.1
            pos = (p.k0 + j) % p.n_cb
            if not null[pos]:
                e.append(int(d[pos]))
            j += 1
        f = [0] * e_r
        for jj in range(e_r // p.qm):  # bit interleaving, §5.4.2.2
            for i in range(p.qm):
                f[i + jj * p.qm] = e[i * (e_r // p.qm) + jj]
        out += f  # code block concatenation, §5.5
    return np.asarray(out, dtype=np.uint8)


@pytest.mark.parametrize(
    ("tbs", "rate", "bg", "c", "k_prime", "zc", "tb_crc"),
    [
        (8424, 0.9, 1, 1, 8448, 384, 24),  # B = 8448 = Kcb: one code block
        (8456, 0.9, 1, 2, 4264, 208, 24),  # B = 8480 > 8448: two, B' = 8528
        (3816, 0.5, 2, 1, 3832, 384, 16),  # CRC16; B = 3832 <= 3840
        (3880, 0.2, 2, 2, 1976, 208, 24),  # B = 3904 > 3840: two, B' = 3952
        (176, 0.5, 2, 1, 192, 32, 16),  # B = 192: Kb = 6
        (184, 0.5, 2, 1, 200, 26, 16),  # B = 200 > 192: Kb = 8
        (600, 0.5, 2, 1, 616, 72, 16),  # 560 < B <= 640: Kb = 9
        (640, 0.5, 2, 1, 656, 72, 16),  # B > 640: Kb = 10
        (42016, 0.5, 1, 5, 8432, 384, 24),  # B = 42040: C = 5
    ],
)
def test_segmentation(
    tbs: int, rate: float, bg: int, c: int, k_prime: int, zc: int, tb_crc: int
) -> None:
    p = plan_tb(tbs, rate, 2, 1, 2 * (tbs + 2000))
    assert (p.base_graph, p.c, p.k_prime, p.zc, p.tb_crc) == (bg, c, k_prime, zc, tb_crc)
    assert p.cb_crc == (24 if c > 1 else 0)
    assert p.k == (22 if bg == 1 else 10) * zc
    assert p.filler == p.k - p.k_prime
    assert p.n == p.n_cb == (66 if bg == 1 else 50) * zc
    assert c * (p.k_prime - p.cb_crc) == tbs + tb_crc


def test_base_graph_selection() -> None:
    # §7.2.2: BG2 if A <= 292, or A <= 3824 and R <= 0.67, or R <= 0.25.
    assert select_base_graph(292, 0.9) == 2
    assert select_base_graph(293, 0.9) == 1
    assert select_base_graph(3824, 0.67) == 2
    assert select_base_graph(3824, 0.68) == 1
    assert select_base_graph(3825, 0.5) == 1
    assert select_base_graph(100000, 0.25) == 2


def test_rate_matching_lengths_and_k0() -> None:
    # G / (NL Qm) = 1101 symbols over C = 2: the first CB gets 550, the second 551.
    p = plan_tb(8456, 0.9, 4, 2, 8 * 1101)
    assert p.e == (8 * 550, 8 * 551)
    n = p.n  # BG1, Zc = 208: N = 66 Zc
    assert [p.with_rv(rv).k0 for rv in range(4)] == [0, 17 * 208, 33 * 208, 56 * 208]
    q = plan_tb(1000, 0.5, 2, 1, 2400, rv=3)  # BG2, Zc = 104
    assert q.k0 == 43 * 104 and q.n == 50 * 104
    lbrm = plan_tb(8456, 0.9, 4, 2, 8 * 1101, tbs_lbrm=8456)
    assert lbrm.n_cb == min(n, int(8456 / (2 * 2 / 3))) < n
    assert lbrm.with_rv(1).k0 == (17 * lbrm.n_cb // n) * 208


@pytest.mark.parametrize(
    ("tbs", "rate", "qm", "layers", "g_bits", "rv"),
    [
        (456, 0.5, 2, 1, 960, 0),  # BG2, one CB with filler
        (1000, 0.9, 4, 1, 1112, 1),  # BG1 at high rate
        (8456, 0.9, 6, 1, 9600, 2),  # BG1, two CBs, k0 maybe in filler region
        (3880, 0.2, 4, 2, 40000, 3),  # BG2, two CBs, E > Ncb - F: the buffer wraps around
        (24, 0.1, 1, 1, 400, 1),  # smallest TBS, pi/2-BPSK, heavy repetition
    ],
)
def test_encode_matches_bitwise_reference(
    tbs: int, rate: float, qm: int, layers: int, g_bits: int, rv: int
) -> None:
    p = plan_tb(tbs, rate, qm, layers, g_bits, rv)
    bits = np.random.default_rng(tbs).integers(0, 2, tbs, dtype=np.uint8)
    g = encode_tb(bits, p)
    assert g.shape == (g_bits,) and g.dtype == np.uint8
    np.testing.assert_array_equal(g, reference_encode(bits, p))


@settings(max_examples=25, deadline=None)
@given(
    tbs=st.sampled_from([24, 200, 1000, 3368, 8456]),
    qm=st.sampled_from([1, 2, 4, 6, 8]),
    rv=st.integers(0, 3),
    extra=st.integers(0, 3000),
)
def test_derate_of_noiseless_block_gives_the_codeword(
    tbs: int, qm: int, rv: int, extra: int
) -> None:
    g_bits = qm * (-(-(tbs + 24) * 5 // (4 * qm)) + extra)  # code rate at most 0.8
    p = plan_tb(tbs, 0.5, qm, 1, g_bits, rv)
    bits = np.random.default_rng(extra).integers(0, 2, tbs, dtype=np.uint8)
    llr = 1.0 - 2.0 * encode_tb(bits, p).astype(np.float32)
    soft = derate_match(llr, p)
    assert soft.shape == (p.c, p.n) and soft.dtype == np.float32
    # The codeword, from the CBs encoded directly.
    b = crc_attach(bits, "24A" if tbs > 3824 else "16")
    cbs = b.reshape(p.c, -1)
    if p.c > 1:
        cbs = crc_attach(cbs, "24B")
    d = ldpc.encode(
        np.concatenate([cbs, np.zeros((p.c, p.filler), np.uint8)], 1), p.base_graph, p.zc
    )
    filler = np.zeros(p.n, bool)
    filler[p.k_prime - 2 * p.zc : p.k - 2 * p.zc] = True
    assert (soft[:, filler] == ldpc.FILLER_LLR).all()
    sent = soft[:, ~filler] != 0
    signs = np.where(soft[:, ~filler] > 0, 0, 1)
    np.testing.assert_array_equal(signs[sent], d[:, ~filler][sent])
    # Each CB has min(E_r, Ncb - F) distinct positions; the total weight is E_r.
    valid = int((~filler[: p.n_cb]).sum())
    assert (sent.sum(axis=1) == np.minimum(np.asarray(p.e), valid)).all()
    np.testing.assert_allclose(np.abs(soft[:, ~filler]).sum(axis=1), p.e)
    assert not soft[:, p.n_cb :].any()
    if rv == 0:  # RV 0 sends the systematic bits first: self-decodable
        result = decode_tb(soft, p, soft=True)
        assert result.tb_crc_ok and np.array_equal(result.bits, bits)


@pytest.mark.parametrize(
    ("tbs", "rate", "qm", "g_bits", "es_n0_db"),
    [(1000, 0.5, 2, 2400, 2.0), (8456, 0.75, 4, 12000, 4.0), (3880, 0.2, 2, 20000, -2.0)],
)
def test_awgn_round_trip(tbs: int, rate: float, qm: int, g_bits: int, es_n0_db: float) -> None:
    rng = np.random.default_rng(tbs)
    p = plan_tb(tbs, rate, qm, 1, g_bits)
    bits = rng.integers(0, 2, tbs, dtype=np.uint8)
    g = encode_tb(bits, p)
    llr = awgn_llr(g, es_n0_db, rng)
    assert ((llr < 0) != g).any()  # the channel made errors
    res = decode_tb(llr, p)
    assert res.tb_crc_ok
    np.testing.assert_array_equal(res.bits, bits)
    assert res.cb_crc_ok.shape == (p.c,) and res.cb_crc_ok.all()
    assert 1 <= res.iterations <= 8


def test_garbage_fails_the_crcs() -> None:
    p = plan_tb(8456, 0.9, 2, 1, 9600)
    llr = np.random.default_rng(0).standard_normal(9600).astype(np.float32)
    res = decode_tb(llr, p, max_iterations=2)
    assert not res.tb_crc_ok and not res.cb_crc_ok.any()
    assert res.bits.shape == (8456,) and res.iterations == 2


def test_harq_combining_two_rvs_decodes_where_one_fails() -> None:
    rng = np.random.default_rng(7)
    p0 = plan_tb(1000, 0.9, 2, 1, 1112)  # BG1, R ~ 0.9
    p2 = p0.with_rv(2)
    alone = combined = 0
    for _ in range(4):
        bits = rng.integers(0, 2, 1000, dtype=np.uint8)
        l0 = awgn_llr(encode_tb(bits, p0), 1.5, rng)
        l2 = awgn_llr(encode_tb(bits, p2), 1.5, rng)
        alone += decode_tb(l0, p0).tb_crc_ok
        res = decode_tb(derate_match(l0, p0) + derate_match(l2, p2), p0, soft=True)
        combined += res.tb_crc_ok and bool(np.array_equal(res.bits, bits))
    assert alone == 0
    assert combined == 4


def test_bad_input() -> None:
    p = plan_tb(1000, 0.5, 2, 1, 2400)
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: plan_tb(1000, 0.5, 3, 1, 2400), "qm"),
        (lambda: plan_tb(1000, 0.5, 2, 1, 2400, rv=4), "rv"),
        (lambda: plan_tb(1000, 0.5, 2, 1, 2400, rv=-1), "rv"),
        (lambda: plan_tb(1000, 0.5, 2, 1, 1000), "g_bits"),  # code rate above 1
        (lambda: plan_tb(1000, 0.5, 2, 1, 2401), "g_bits"),  # not a multiple of Qm
        (lambda: plan_tb(1000, 0.5, 2, 1, 0), "g_bits"),
        (lambda: plan_tb(1000, 1.2, 2, 1, 2400), "code_rate"),
        (lambda: plan_tb(1000, 0.5, 2, 5, 2400), "layers"),
        (lambda: plan_tb(0, 0.5, 2, 1, 2400), "tbs"),
        (lambda: plan_tb(8449, 0.9, 2, 1, 20000), "tbs"),  # B' not divisible by C
        (lambda: plan_tb(1000.0, 0.5, 2, 1, 2400), "tbs"),  # type: ignore[arg-type]
        (lambda: encode_tb(np.zeros(999, np.uint8), p), "bits"),
        (lambda: derate_match(np.zeros(2399, np.float32), p), "llr"),
        (lambda: decode_tb(np.zeros(2401, np.float32), p), "llr"),
        (lambda: decode_tb(np.zeros((1, 10), np.float32), p, soft=True), "llr_or_soft"),
        (lambda: decode_tb(np.zeros(2400, np.float32), "plan"), "plan"),  # type: ignore[arg-type]
    ]
    for call, field in cases:
        with pytest.raises(FieldError) as e:
            call()
        assert e.value.field == field, (field, e.value)


@pytest.mark.gpu
def test_cupy_matches_numpy() -> None:
    if probe_cupy() is None:
        pytest.skip("no usable CUDA device")
    import cupy as cp

    rng = np.random.default_rng(11)
    p = plan_tb(8456, 0.75, 4, 1, 12000, rv=1)
    bits = rng.integers(0, 2, 8456, dtype=np.uint8)
    g = encode_tb(cp.asarray(bits), p)
    assert isinstance(g, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(g), encode_tb(bits, p))
    llr = awgn_llr(cp.asnumpy(g), 4.0, rng)
    soft = derate_match(cp.asarray(llr), p)
    np.testing.assert_allclose(cp.asnumpy(soft), derate_match(llr, p), rtol=1e-6)
    res = decode_tb(cp.asarray(llr), p)
    assert res.tb_crc_ok and bool(res.cb_crc_ok.all())
    np.testing.assert_array_equal(cp.asnumpy(res.bits), bits)
