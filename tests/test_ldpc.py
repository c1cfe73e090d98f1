"""LDPC base graphs, encoding and decoding of TS 38.212 §5.3.2."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airan.backend import probe_cupy
from airan.core.errors import FieldError
from airan.ran.phy import ldpc
from airan.ran.phy.ldpc import (
    FILLER_LLR,
    LIFTING_SETS,
    LIFTING_SIZES,
    base_graph_table,
    base_matrix,
    code_dims,
    decode,
    encode,
    lifting_set,
    syndrome_ok,
)

CASES = [(1, 2), (1, 15), (1, 64), (1, 384), (2, 2), (2, 13), (2, 52), (2, 384)]


def reference_syndrome(cw: npt.NDArray[np.uint8], bg: int, zc: int) -> npt.NDArray[np.uint8]:
    """H c^T by the definition: block (i, j) is the identity shifted right by P_ij."""
    m = base_matrix(bg, zc)
    syn = np.zeros((*cw.shape[:-1], m.shape[0], zc), dtype=np.uint8)
    for i, j in zip(*np.nonzero(m >= 0), strict=True):
        # row r of block (i, j) has its one in column (r + P_ij) mod Zc
        syn[..., i, :] ^= np.roll(cw[..., j * zc : (j + 1) * zc], -m[i, j], axis=-1)
    return syn


def awgn_llr(
    d: npt.NDArray[np.uint8], es_n0_db: float, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """BPSK (0 -> +1) over real AWGN with noise variance N0/2; LLR = 2 y / sigma^2."""
    sigma2 = 1.0 / (2.0 * 10.0 ** (es_n0_db / 10.0))
    y = 1.0 - 2.0 * d + np.sqrt(sigma2) * rng.standard_normal(d.shape)
    out: npt.NDArray[np.float32] = (2.0 * y / sigma2).astype(np.float32)
    return out


def test_base_graph_dimensions_and_counts() -> None:
    for bg, (rows, cols, entries) in ((1, (46, 68, 316)), (2, (42, 52, 197))):
        r, c, s = base_graph_table(bg)
        assert len(r) == len(c) == entries
        assert s.shape == (entries, 8)
        assert (int(r.max()) + 1, int(c.max()) + 1) == (rows, cols)
        assert len(set(zip(r.tolist(), c.tolist(), strict=True))) == entries
        assert s.min() >= 0 and s.max() < 384


@pytest.mark.parametrize(
    ("bg", "i", "j", "shifts"),
    [
        # TS 38.212 Table 5.3.2-2 (BG1), V_ij for iLS = 0..7
        (1, 0, 0, (250, 307, 73, 223, 211, 294, 0, 135)),
        (1, 0, 1, (69, 19, 15, 16, 198, 118, 0, 227)),
        (1, 1, 22, (0, 0, 0, 0, 0, 0, 105, 0)),
        (1, 45, 1, (149, 135, 101, 184, 168, 82, 181, 177)),
        (1, 45, 67, (0, 0, 0, 0, 0, 0, 0, 0)),
        # Table 5.3.2-3 (BG2)
        (2, 0, 0, (9, 174, 0, 72, 3, 156, 143, 145)),
        (2, 0, 10, (0, 0, 0, 1, 0, 0, 0, 1)),
        (2, 41, 1, (129, 147, 0, 120, 48, 132, 191, 53)),
    ],
)
def test_entries_quoted_from_the_spec(bg: int, i: int, j: int, shifts: tuple[int, ...]) -> None:
    r, c, s = base_graph_table(bg)
    (hit,) = np.nonzero((r == i) & (c == j))[0]
    assert tuple(s[hit].tolist()) == shifts


def test_lifting_sizes() -> None:
    # Table 5.3.2-1: 51 sizes Zc = a 2^j, a in {2,3,5,7,9,11,13,15}, Zc <= 384.
    assert len(LIFTING_SIZES) == 51
    assert LIFTING_SETS[0] == (2, 4, 8, 16, 32, 64, 128, 256)
    assert LIFTING_SETS[7] == (15, 30, 60, 120, 240)
    assert (lifting_set(384), lifting_set(208), lifting_set(15)) == (1, 6, 7)
    m = base_matrix(1, 208)
    assert m[1, 22] == 105 and m[0, 0] == 0  # V mod Zc: 0 mod 208
    assert base_matrix(1, 15)[0, 0] == 135 % 15
    with pytest.raises(FieldError) as e:
        lifting_set(17)
    assert e.value.field == "ldpc.zc"


@pytest.mark.parametrize(("bg", "zc"), CASES)
def test_encoder_output_satisfies_parity_checks(bg: int, zc: int) -> None:
    k, n = code_dims(bg, zc)
    c = np.random.default_rng(zc).integers(0, 2, (3, k), dtype=np.uint8)
    cw = encode(c, bg, zc, puncture=False)
    assert cw.shape == (3, n + 2 * zc) and cw.dtype == np.uint8
    np.testing.assert_array_equal(cw[:, :k], c)  # systematic
    assert not reference_syndrome(cw, bg, zc).any()
    assert syndrome_ok(cw, bg, zc).all()
    d = encode(c, bg, zc)  # punctured: the first 2 Zc systematic bits are not sent
    np.testing.assert_array_equal(d, cw[:, 2 * zc :])
    bad = cw.copy()
    bad[1, 5 * zc + 1] ^= 1
    np.testing.assert_array_equal(syndrome_ok(bad, bg, zc), [True, False, True])


@settings(max_examples=20, deadline=None)
@given(bg=st.sampled_from([1, 2]), zc=st.sampled_from([3, 10, 36, 104]), seed=st.integers(0, 99))
def test_encoding_is_linear(bg: int, zc: int, seed: int) -> None:
    k, _ = code_dims(bg, zc)
    a, b = np.random.default_rng(seed).integers(0, 2, (2, k), dtype=np.uint8)
    np.testing.assert_array_equal(encode(a ^ b, bg, zc), encode(a, bg, zc) ^ encode(b, bg, zc))


@pytest.mark.parametrize(("bg", "zc"), [(1, 15), (1, 384), (2, 13), (2, 384), (1, 104)])
def test_decode_at_high_snr_is_error_free(bg: int, zc: int) -> None:
    rng = np.random.default_rng(bg * 1000 + zc)
    k, _ = code_dims(bg, zc)
    c = rng.integers(0, 2, (4, k), dtype=np.uint8)
    llr = awgn_llr(encode(c, bg, zc), 1.0, rng)  # rate ~1/3 (BG1) or 1/5 (BG2)
    assert (llr < 0).any(axis=0).sum() > 0  # some hard decisions are wrong before decoding
    res = decode(llr, bg, zc, max_iterations=10)
    np.testing.assert_array_equal(res.bits, c)
    assert res.syndrome_ok.all()
    assert 1 <= res.iterations < 10


def test_early_termination_and_iteration_cap() -> None:
    rng = np.random.default_rng(3)
    k, _ = code_dims(2, 16)
    c = rng.integers(0, 2, (2, k), dtype=np.uint8)
    d = encode(c, 2, 16)
    clean = decode(8.0 * (1.0 - 2.0 * d.astype(np.float32)), 2, 16, max_iterations=50)
    assert clean.iterations == 1 and clean.syndrome_ok.all()
    noisy = decode(rng.standard_normal(d.shape).astype(np.float32), 2, 16, max_iterations=3)
    assert noisy.iterations == 3 and not noisy.syndrome_ok.any()


def test_filler_bits_are_known_zeros() -> None:
    bg, zc, filler = 2, 20, 37
    k, _ = code_dims(bg, zc)
    rng = np.random.default_rng(4)
    c = rng.integers(0, 2, (3, k), dtype=np.uint8)
    c[:, k - filler :] = 0
    llr = awgn_llr(encode(c, bg, zc), 3.0, rng)
    llr[:, k - filler - 2 * zc : k - 2 * zc] = -50.0  # misleading channel values
    res = decode(llr, bg, zc, filler=filler)
    np.testing.assert_array_equal(res.bits, c)
    blind = decode(llr, bg, zc)  # without the filler knowledge the decoder is misled
    assert not np.array_equal(blind.bits, c)


def test_block_error_rate_falls_with_snr() -> None:
    # BG2, Zc = 16: K = 160, N = 800; BPSK over AWGN, 150 code blocks per point.
    bg, zc, blocks = 2, 16, 150
    rng = np.random.default_rng(2024)
    k, _ = code_dims(bg, zc)
    bler = []
    for es_n0_db in (-9.0, -7.5, -6.0, -4.5):
        c = rng.integers(0, 2, (blocks, k), dtype=np.uint8)
        res = decode(awgn_llr(encode(c, bg, zc), es_n0_db, rng), bg, zc, max_iterations=20)
        bler.append(float((res.bits != c).any(axis=1).mean()))
        # A block whose syndrome checks is (almost surely) the transmitted one.
        assert ((res.bits == c).all(axis=1) | ~res.syndrome_ok).all()
    assert bler[0] >= 0.9
    assert bler[-1] <= 0.02
    assert all(a >= b for a, b in itertools.pairwise(bler))


def test_bad_input() -> None:
    k, n = code_dims(1, 8)
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: encode(np.zeros(k + 1, np.uint8), 1, 8), "ldpc.bits"),
        (lambda: encode(np.zeros(k, np.uint8), 3, 8), "ldpc.base_graph"),
        (lambda: encode(np.zeros(k, np.uint8), 1, 17), "ldpc.zc"),
        (lambda: decode(np.zeros(n - 1, np.float32), 1, 8), "ldpc.llr"),
        (lambda: decode(np.zeros(n, np.float32), 1, 8, max_iterations=0), "ldpc.max_iterations"),
        (lambda: decode(np.zeros(n, np.float32), 1, 8, alpha=1.5), "ldpc.alpha"),
        (lambda: decode(np.zeros(n, np.float32), 1, 8, filler=k), "ldpc.filler"),
        (lambda: syndrome_ok(np.zeros(n, np.uint8), 1, 8), "ldpc.codeword"),
    ]
    for call, field in cases:
        with pytest.raises(FieldError) as e:
            call()
        assert e.value.field == field


def reference_decode(
    llr: npt.NDArray[np.float32], bg: int, zc: int, max_iterations: int, alpha: float, filler: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_], int]:
    """Layered normalised min-sum by the book: one base-graph row at a time, in order.

    The decoder's former straightforward implementation (bits, syndrome, iterations):
    ``decode`` computes the same thing with precomputed flat indices, bit tricks and
    runs of orthogonal rows, and must agree with it bit for bit.
    """
    m = base_matrix(bg, zc)
    mb, nb = m.shape
    kb, r = nb - mb, np.arange(zc)
    k, n_full = kb * zc, nb * zc
    edges = [
        np.stack([j * zc + (r + m[i, j]) % zc for j in np.nonzero(m[i] >= 0)[0]]) for i in range(mb)
    ]
    x = llr.reshape(-1, llr.shape[-1]).astype(np.float32)
    b = x.shape[0]
    app = np.zeros((b, n_full), np.float32)
    app[:, n_full - x.shape[1] :] = x
    if filler:
        app[:, k - filler : k] = FILLER_LLR
    seen = (app != 0).reshape(b, -1, zc).any(axis=(0, 2))
    rows = min(mb, max(4, int(seen.nonzero()[0].max()) - kb + 1)) if seen.any() else 4
    msgs = [np.zeros((b, *edges[i].shape), np.float32) for i in range(rows)]
    a = np.float32(alpha)
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        for i in range(rows):
            tv = app[:, edges[i]] - msgs[i]
            mag = np.abs(tv)
            m1 = mag.min(axis=1, keepdims=True)
            is_min = mag == m1
            m2 = np.where(is_min, np.float32(np.inf), mag).min(axis=1, keepdims=True)
            m2 = np.where(is_min.sum(axis=1, keepdims=True) > 1, m1, m2)
            neg = tv < 0
            odd = neg.sum(axis=1, keepdims=True) % 2 == 1
            out = np.where(is_min, m2, m1) * a
            msgs[i] = np.where(neg ^ odd, -out, out)
            app[:, edges[i]] = tv + msgs[i]
        hard = (app < 0).astype(np.uint8)
        bad = np.stack([(hard[:, edges[i]].sum(axis=1) % 2).any(axis=1) for i in range(rows)])
        ok: npt.NDArray[np.bool_] = np.logical_not(bad.any(axis=0))
        if ok.all():
            break
    return (app[:, :k] < 0).astype(np.uint8), ok, iterations


@settings(max_examples=40, deadline=None)
@given(
    bg=st.sampled_from([1, 2]),
    zc=st.sampled_from([2, 5, 13, 36]),
    blocks=st.integers(1, 3),
    es_n0_db=st.floats(-3.0, 4.0),
    sent=st.floats(0.3, 1.0),
    quantise=st.booleans(),
    whole=st.booleans(),
    alpha=st.sampled_from([0.75, 0.625, 1.0]),
    max_iterations=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_decode_matches_the_row_by_row_reference(
    bg: int,
    zc: int,
    blocks: int,
    es_n0_db: float,
    sent: float,
    quantise: bool,
    whole: bool,
    alpha: float,
    max_iterations: int,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    k, n = code_dims(bg, zc)
    filler = int(rng.integers(0, k - 2 * zc)) if seed % 3 == 0 else 0
    c = rng.integers(0, 2, (blocks, k), dtype=np.uint8)
    c[:, k - filler :] = 0
    llr = awgn_llr(encode(c, bg, zc), es_n0_db, rng)
    llr[:, max(k - 2 * zc, round(sent * n)) :] = 0.0  # rate matching sent a prefix
    if quantise:  # coarse LLRs: ties at the minimum, zeros, and -0.0
        llr = np.round(llr / 4.0).astype(np.float32)
        llr[llr == 0] = np.float32(-0.0)
    if whole:
        llr = np.concatenate([np.zeros((blocks, 2 * zc), np.float32), llr], axis=1)
    bits, ok, iterations = reference_decode(llr, bg, zc, max_iterations, alpha, filler)
    res = decode(llr, bg, zc, max_iterations=max_iterations, alpha=alpha, filler=filler)
    np.testing.assert_array_equal(res.bits, bits)
    np.testing.assert_array_equal(res.syndrome_ok, ok)
    assert res.iterations == iterations


@pytest.mark.parametrize("bg", [1, 2])
def test_schedule_runs_are_consecutive_orthogonal_rows(bg: int) -> None:
    h = base_matrix(bg, 384) >= 0
    sched = ldpc._schedule(bg, 384, np)
    rows = [first + a for first, g, _, _ in sched.groups for a in range(g)]
    assert rows == list(range(h.shape[0]))  # every row once, in order
    for first, g, d, idx in sched.groups:
        assert d == h[first : first + g].sum(axis=1).max()
        assert not (h[first : first + g].sum(axis=0) > 1).any()  # no shared column
        real = idx[idx < sched.n_full]
        assert len(set(real.tolist())) == real.size == h[first : first + g].sum() * 384
    assert len(sched.groups) == {1: 32, 2: 28}[bg]


@pytest.mark.gpu
def test_cupy_matches_numpy() -> None:
    if probe_cupy() is None:
        pytest.skip("no usable CUDA device")
    import cupy as cp

    rng = np.random.default_rng(8)
    for bg, zc in ((1, 384), (2, 52)):
        k, _ = code_dims(bg, zc)
        c = rng.integers(0, 2, (5, k), dtype=np.uint8)
        d = encode(cp.asarray(c), bg, zc)
        assert isinstance(d, cp.ndarray)
        np.testing.assert_array_equal(cp.asnumpy(d), encode(c, bg, zc))
        llr = awgn_llr(cp.asnumpy(d), 0.0, rng)
        got = decode(cp.asarray(llr), bg, zc, max_iterations=6)
        want = decode(llr, bg, zc, max_iterations=6)
        assert got.iterations == want.iterations
        assert (cp.asnumpy(got.bits) != want.bits).mean() < 1e-3
        np.testing.assert_array_equal(cp.asnumpy(got.bits), c)
