"""5G NR LDPC codes: base graphs, lifting, encoding and layered min-sum decoding.

TS 38.212 §5.3.2 (LDPC coding) and §5.2.2 (lifting sizes, Table 5.3.2-1).

* Base graphs BG1 (46 x 68, 22 systematic columns) and BG2 (42 x 52, 10 systematic
  columns), with the shift coefficients V_ij of Tables 5.3.2-2 and 5.3.2-3 for the eight
  lifting-size sets iLS = 0..7, are loaded from ``data/ldpc_bg.npz`` (made by
  ``scripts/make_ldpc_tables.py``). The lifted matrix H replaces entry (i, j) by the
  identity cyclically shifted right by P_ij = V_ij mod Zc: row r of the block has its one
  in column (r + P_ij) mod Zc, so check (i, r) sums the bits c[j Zc + (r + P_ij) mod Zc].
* :func:`encode` is systematic for every Zc: the first four parity blocks follow from the
  double-diagonal core (rows 0..3; the sum of those rows isolates the first parity block),
  the extension parity blocks from rows 4.. (identity-diagonal). The first 2 Zc
  systematic bits are punctured (§5.3.2: d_{k-2Zc} = c_k), so ``N = 66 Zc`` (BG1) or
  ``50 Zc`` (BG2).
* :func:`decode` is a layered normalised min-sum decoder. LLRs follow the convention
  ``L = log P(bit = 0) / P(bit = 1)``: positive means 0. A layer is one base-graph row
  (Zc checks), processed in row order; it is vectorised over the Zc rows of the layer
  and over a batch of code blocks (leading dimensions); Python loops run over iterations
  and the layers of the base graph only, consecutive layers that share no column being
  processed by the same array operations (which is exactly processing them in turn).
  Decoding stops early once the syndrome is zero for every code block of the batch.

All index tables are built once per (base graph, Zc) with NumPy, cached, and converted
once per array module (NumPy or CuPy) of the input. The decoder's gather index of each
layer is one flat array over (edge slot, code block, check), cached per (base graph, Zc,
rows decoded, batch size).
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass
from importlib import resources
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from airan.backend import array_module
from airan.core.errors import FieldError

IntArray = npt.NDArray[np.int64]

#: Lifting-size sets of TS 38.212 Table 5.3.2-1: set iLS holds Zc = a * 2^j <= 384.
LIFTING_SETS: tuple[tuple[int, ...], ...] = tuple(
    tuple(a << j for j in range(9) if a << j <= 384) for a in (2, 3, 5, 7, 9, 11, 13, 15)
)
#: All 51 lifting sizes Zc, ascending.
LIFTING_SIZES: tuple[int, ...] = tuple(sorted(z for s in LIFTING_SETS for z in s))
#: (rows, columns, systematic columns) of BG1 and BG2 (§5.3.2).
BG_DIMS: dict[int, tuple[int, int, int]] = {1: (46, 68, 22), 2: (42, 52, 10)}
#: LLR given to bits known to be zero (filler bits, §5.2.2): "certainly 0".
FILLER_LLR = 1.0e4


def lifting_set(zc: int) -> int:
    """The set index iLS of Table 5.3.2-1 that holds ``zc``."""
    for i, s in enumerate(LIFTING_SETS):
        if zc in s:
            return i
    raise FieldError("ldpc.zc", f"{zc} is not a lifting size of TS 38.212 Table 5.3.2-1")


def _check_bg(base_graph: int) -> tuple[int, int, int]:
    if base_graph not in BG_DIMS:
        raise FieldError("ldpc.base_graph", f"must be 1 or 2; got {base_graph!r}")
    return BG_DIMS[base_graph]


@functools.cache
def base_graph_table(base_graph: int) -> tuple[IntArray, IntArray, IntArray]:
    """``(row, col, shift)`` of the non-zero entries of BG1/BG2 (Tables 5.3.2-2/3).

    ``row`` and ``col`` have one entry per non-zero element (row-major order); ``shift``
    has shape (entries, 8): V_ij for iLS = 0..7.
    """
    _check_bg(base_graph)
    ref = resources.files("airan.ran.phy") / "data" / "ldpc_bg.npz"
    with resources.as_file(ref) as path, np.load(path) as data:
        name = f"bg{base_graph}"
        return (
            data[f"{name}_row"].astype(np.int64),
            data[f"{name}_col"].astype(np.int64),
            data[f"{name}_shift"].astype(np.int64),
        )


def base_matrix(base_graph: int, zc: int) -> IntArray:
    """The base matrix for ``zc``: P_ij = V_ij mod Zc where H_BG is 1, else -1 (§5.3.2)."""
    mb, nb, _ = _check_bg(base_graph)
    ils = lifting_set(zc)
    row, col, shift = base_graph_table(base_graph)
    m = np.full((mb, nb), -1, dtype=np.int64)
    m[row, col] = shift[:, ils] % zc
    return m


def code_dims(base_graph: int, zc: int) -> tuple[int, int]:
    """``(K, N)``: systematic bits K = 22 Zc / 10 Zc and punctured length N = 66 Zc / 50 Zc."""
    _, nb, kb = _check_bg(base_graph)
    lifting_set(zc)
    return kb * zc, (nb - 2) * zc


@dataclass(frozen=True)
class _Tables:
    """Index tables of one (base graph, Zc), as NumPy arrays (see :func:`_tables`)."""

    zc: int
    k: int
    n_full: int
    core_idx: IntArray  # (4, d, Zc) systematic edges of rows 0..3, pad -> n_full
    p0_idx: IntArray  # (Zc,) p_0[k] = sum(lambda)[p0_idx[k]]
    steps: tuple[tuple[int, IntArray, IntArray], ...]  # (column, row gather, unroll)
    ext_idx: IntArray  # (mb-4, d, Zc) edges of rows 4.. except their extension column
    ext_start: int  # first extension-parity bit
    row_idx: tuple[IntArray, ...]  # per base-graph row: (deg, Zc) indices of its edges


def _gather_rows(m: IntArray, rows: list[int], keep: list[list[int]], zc: int) -> IntArray:
    """Padded gather indices (len(rows), d, Zc) of the edges ``keep[i]`` of each row."""
    pad = m.shape[1] * zc
    deg = max(len(k) for k in keep)
    out = np.full((len(rows), deg, zc), pad, dtype=np.int64)
    r = np.arange(zc)
    for a, (i, cols) in enumerate(zip(rows, keep, strict=True)):
        if cols:
            c = np.asarray(cols)
            out[a, : len(cols)] = c[:, None] * zc + (r[None, :] + m[i, c][:, None]) % zc
    return out


@functools.cache
def _tables(base_graph: int, zc: int) -> _Tables:
    mb, nb, kb = _check_bg(base_graph)
    m = base_matrix(base_graph, zc)
    r = np.arange(zc)
    n_full = nb * zc
    core_cols = list(range(kb, kb + 4))
    # Rows 0..3 hold only systematic and core parity columns; rows 4.. add exactly their
    # own extension column kb+i, with shift 0 (identity): §5.3.2's BG structure.
    if (m[:4, kb + 4 :] >= 0).any():
        raise AssertionError("core rows reach into extension columns")
    for i in range(4, mb):
        ext = np.nonzero(m[i, kb + 4 :] >= 0)[0]
        if list(ext) != [i - 4] or m[i, kb + i] != 0:
            raise AssertionError(f"row {i} is not identity-diagonal in its extension part")
    # Summing rows 0..3 cancels every core parity block seen an even number of times with
    # the same shift; exactly one block of column kb must survive.
    survivors: dict[int, list[int]] = {}
    for j in core_cols:
        shifts = m[:4, j][m[:4, j] >= 0]
        vals, counts = np.unique(shifts, return_counts=True)
        survivors[j] = [int(v) for v, c in zip(vals, counts, strict=True) if c % 2]
    if len(survivors[kb]) != 1:
        raise AssertionError("the core of the base graph is not double-diagonal")
    if any(survivors[j] for j in core_cols[1:]):
        raise AssertionError("core parity columns 1..3 do not cancel in the row sum")
    x = survivors[kb][0]
    core_keep = [[j for j in range(kb) if m[i, j] >= 0] for i in range(4)]
    core_idx = _gather_rows(m, [0, 1, 2, 3], core_keep, zc)
    p0_idx = (r - x) % zc
    # Then solve the other core blocks one at a time from a row where one is unknown.
    known = {kb}
    steps: list[tuple[int, IntArray, IntArray]] = []
    while len(known) < 4:
        for i in range(4):
            cols = [j for j in core_cols if m[i, j] >= 0]
            unknown = [j for j in cols if j not in known]
            if len(unknown) == 1:
                u = unknown[0]
                keep = [j for j in range(kb + 4) if m[i, j] >= 0 and j != u]
                steps.append((u, _gather_rows(m, [i], [keep], zc)[0], (r - m[i, u]) % zc))
                known.add(u)
                break
        else:
            raise AssertionError("the core parity cannot be solved row by row")
    ext_rows = list(range(4, mb))
    ext_keep = [[j for j in range(kb + 4) if m[i, j] >= 0] for i in ext_rows]
    ext_idx = _gather_rows(m, ext_rows, ext_keep, zc)
    row_idx = tuple(
        _gather_rows(m, [i], [[int(j) for j in np.nonzero(m[i] >= 0)[0]]], zc)[0] for i in range(mb)
    )
    return _Tables(
        zc=zc,
        k=kb * zc,
        n_full=n_full,
        core_idx=core_idx,
        p0_idx=p0_idx,
        steps=tuple(steps),
        ext_idx=ext_idx,
        ext_start=(kb + 4) * zc,
        row_idx=row_idx,
    )


@functools.cache
def _xp_tables(base_graph: int, zc: int, xp: ModuleType) -> _Tables:
    t = _tables(base_graph, zc)
    if xp is np:
        return t
    return _Tables(
        zc=t.zc,
        k=t.k,
        n_full=t.n_full,
        core_idx=xp.asarray(t.core_idx),
        p0_idx=xp.asarray(t.p0_idx),
        steps=tuple((u, xp.asarray(g), xp.asarray(p)) for u, g, p in t.steps),
        ext_idx=xp.asarray(t.ext_idx),
        ext_start=t.ext_start,
        row_idx=t.row_idx,  # used only to build schedules (NumPy)
    )


def encode(bits: Any, base_graph: int, zc: int, *, puncture: bool = True) -> Any:
    """LDPC-encode systematic blocks, TS 38.212 §5.3.2.

    ``bits``: uint8 (..., K) with K = 22 Zc (BG1) or 10 Zc (BG2), filler bits given as 0.
    Returns uint8 (..., N) with N = 66 Zc / 50 Zc, the punctured output d_k = c_{k+2Zc}
    for the systematic part followed by the parity bits w; with ``puncture=False`` the
    whole codeword (c, w) of 68 Zc / 52 Zc bits, for which H (c, w)^T = 0.
    """
    xp = array_module(bits)
    k, _ = code_dims(base_graph, zc)
    if bits.ndim < 1 or bits.shape[-1] != k:
        raise FieldError("ldpc.bits", f"must have shape (..., {k}) for BG{base_graph} Zc={zc}")
    t = _xp_tables(base_graph, zc, xp)
    lead = bits.shape[:-1]
    c = bits.reshape(-1, k)
    b = c.shape[0]
    cw = xp.zeros((b, t.n_full + 1), dtype=xp.uint8)  # last element: the zero pad
    cw[:, :k] = c & 1
    lam = cw[:, t.core_idx].sum(axis=(1, 2), dtype=xp.int32) & 1  # sum of lambda_0..3
    cw[:, k : k + zc] = lam[:, t.p0_idx]
    for u, gather, unroll in t.steps:
        rhs = cw[:, gather].sum(axis=1, dtype=xp.int32) & 1
        cw[:, u * zc : (u + 1) * zc] = rhs[:, unroll]
    ext = cw[:, t.ext_idx].sum(axis=2, dtype=xp.int32) & 1  # (b, mb-4, Zc)
    cw[:, t.ext_start : t.n_full] = ext.reshape(b, -1)
    out = cw[:, 2 * zc if puncture else 0 : t.n_full]
    return out.reshape(*lead, out.shape[-1])


@dataclass(frozen=True)
class _Schedule:
    """Flat gather indices of the decoder and of the syndrome for one (BG, Zc).

    ``groups``: ``(first row, rows, degree, index)`` per run of consecutive base-graph
    rows that share no column. Decoding such a run at once is exactly decoding its rows
    one after another (no row reads what another one writes), so the layered schedule
    row 0, 1, 2, ... is kept; BG1 has 32 runs of 46 rows, BG2 28 of 42. ``index`` (rows
    x degree x Zc, row-major) lists each row's edges, a row shorter than the run padded
    with the position ``n_full`` (held at +inf by the decoder: never a minimum, never
    negative; a hard 0). The first ``k`` rows of a run are the first ``k * degree * Zc``
    entries. ``checks``: ``(degree, rows, index)`` per degree, the rows ascending, so the
    rows below any bound are a prefix; ``row0``: the index of row 0's edges.
    """

    n_full: int
    zc: int
    groups: tuple[tuple[int, int, int, Any], ...]
    checks: tuple[tuple[int, tuple[int, ...], Any], ...]
    row0: Any


@functools.cache
def _schedule(base_graph: int, zc: int, xp: ModuleType) -> _Schedule:
    if xp is not np:
        s = _schedule(base_graph, zc, np)
        return _Schedule(
            s.n_full,
            s.zc,
            tuple((f, g, d, xp.asarray(i)) for f, g, d, i in s.groups),
            tuple((d, r, xp.asarray(i)) for d, r, i in s.checks),
            xp.asarray(s.row0),
        )
    t = _tables(base_graph, zc)
    h = base_matrix(base_graph, zc) >= 0
    runs: list[list[int]] = []
    for i in range(h.shape[0]):
        if runs and not (h[runs[-1]] & h[i]).any():
            runs[-1].append(i)
        else:
            runs.append([i])
    groups = []
    for run in runs:
        deg = max(t.row_idx[i].shape[0] for i in run)
        idx = np.full((len(run), deg, zc), t.n_full, dtype=np.intp)
        for a, i in enumerate(run):
            idx[a, : t.row_idx[i].shape[0]] = t.row_idx[i]
        groups.append((run[0], len(run), deg, idx.reshape(-1)))
    degs = [t.row_idx[i].shape[0] for i in range(h.shape[0])]
    checks = []
    for deg in sorted(set(degs)):
        members = tuple(i for i in range(h.shape[0]) if degs[i] == deg)
        idx = np.stack([t.row_idx[i] for i in members]).astype(np.intp).reshape(-1)
        checks.append((deg, members, idx))
    row0 = t.row_idx[0].astype(np.intp).reshape(-1)
    return _Schedule(t.n_full, zc, tuple(groups), tuple(checks), row0)


@functools.lru_cache(maxsize=256)
def _layer_index(
    base_graph: int, zc: int, rows: int, batch: int, xp: ModuleType
) -> tuple[tuple[int, int, Any], ...]:
    """``(degree, M, index)`` per run of the first ``rows`` rows, for ``batch`` blocks.

    The decoder holds a run as a (degree, M) array, M = batch x rows of the run x Zc:
    edge slot first, so the reductions over the edges of each check run over the leading
    axis and the per-check values broadcast along it. ``index`` (degree x M,) points
    into the batch's APPs laid end to end, ``n_full + 1`` per block.
    """
    s = _schedule(base_graph, zc, np)
    offsets = np.arange(batch, dtype=np.intp)[None, :, None, None] * (s.n_full + 1)
    out = []
    for first, g, d, idx in s.groups:
        g = min(g, rows - first)
        if g <= 0:
            break
        edge_major = idx[: g * d * zc].reshape(g, d, zc).transpose(1, 0, 2)[:, None]
        flat = (edge_major + offsets).reshape(-1)  # (d, batch, g, Zc)
        out.append((d, batch * g * zc, flat if xp is np else xp.asarray(flat)))
    return tuple(out)


def warm_tables(xp: ModuleType) -> None:
    """Build the encoding and decoding tables of every (base graph, Zc) now (about a
    fifth of a second on a CPU), so that the first code block of each lifting size in
    a real-time run does not pay for them."""
    for bg in (1, 2):
        for zc in LIFTING_SIZES:
            _xp_tables(bg, zc, xp)
            _schedule(bg, zc, xp)


def syndrome_ok(codeword: Any, base_graph: int, zc: int) -> Any:
    """Whether H c^T = 0 for each full codeword (..., 68 Zc / 52 Zc): bool (...), §5.3.2."""
    xp = array_module(codeword)
    t = _xp_tables(base_graph, zc, xp)
    if codeword.ndim < 1 or codeword.shape[-1] != t.n_full:
        raise FieldError("ldpc.codeword", f"must have shape (..., {t.n_full})")
    lead = codeword.shape[:-1]
    cw = (codeword.reshape(-1, t.n_full) & 1).astype(bool)
    hard = xp.concatenate([cw, xp.zeros((cw.shape[0], 1), dtype=bool)], 1)
    sched = _schedule(base_graph, zc, xp)
    return _syndrome_zero(hard, sched, BG_DIMS[base_graph][0], xp).reshape(lead)


def _syndrome_zero(hard: Any, sched: _Schedule, rows: int, xp: ModuleType) -> Any:
    """bool (b,): the checks of rows 0..rows-1 hold for the hard decisions ``hard``
    (bool (b, n_full + 1), the last entry False): one gather and sum per row degree."""
    b, zc = hard.shape[0], sched.zc
    parts = [(d, bisect.bisect_left(r, rows), i) for d, r, i in sched.checks]
    syn = xp.empty((b, sum(n for _, n, _ in parts), zc), dtype=xp.uint8)
    first = 0
    for d, n, idx in parts:
        if n:
            bits = xp.take(hard, idx[: n * d * zc], axis=1).reshape(b, n, d, zc)
            bits.sum(axis=2, dtype=xp.uint8, out=syn[:, first : first + n])
            first += n
    return ~(syn & 1).any(axis=(1, 2))


@dataclass(frozen=True)
class LdpcDecodeResult:
    """What :func:`decode` found.

    ``bits``: uint8 (..., K), the hard decisions on the systematic bits c_0..c_{K-1}
    (including the punctured first 2 Zc and any filler); ``syndrome_ok``: bool (...),
    H c^T = 0 for the decided codeword; ``iterations``: iterations run (the batch stops
    together, at the first iteration after which every block's syndrome is zero).
    """

    bits: Any
    syndrome_ok: Any
    iterations: int


def decode(
    llr: Any,
    base_graph: int,
    zc: int,
    *,
    max_iterations: int = 8,
    alpha: float = 0.75,
    filler: int = 0,
) -> LdpcDecodeResult:
    """Layered normalised min-sum decoding of 5G LDPC code blocks (TS 38.212 §5.3.2).

    ``llr``: float (..., N) for the punctured output d (N = 66 Zc / 50 Zc; the 2 Zc
    punctured bits get LLR 0) or (..., N + 2 Zc) for the whole codeword; positive means
    bit 0. ``filler`` bits (the last ``filler`` systematic bits c_{K-F}..c_{K-1}, known
    zeros, §5.2.2) are forced to a large positive LLR. Check-to-variable messages are the
    minimum of the other incoming magnitudes scaled by ``alpha``, with the product of their
    signs. Decoding stops after ``max_iterations`` or once every block's syndrome is zero.
    Only the rows up to the last extension-parity block with a non-zero LLR are decoded
    (and checked): the others cannot inform the systematic bits (a high-rate rate-matched
    block sends few parity bits), which makes high code rates proportionally cheaper.

    Per layer: one gather of the APPs, a dozen in-place array operations on preallocated
    (degree, batch x rows x Zc) buffers (min and second min on the bit patterns, the sign
    product as a product of +-1), one scatter; the syndrome is checked once per iteration
    on the hard decisions (row 0 first: a failing row 0 skips the full check). Every
    value is the one the plain row-by-row min-sum computes, bit for bit (up to the sign
    of zeros, which no decision reads).
    """
    xp = array_module(llr)
    k, n = code_dims(base_graph, zc)
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int):
        raise FieldError("ldpc.max_iterations", "must be an int")
    if max_iterations < 1:
        raise FieldError("ldpc.max_iterations", f"must be at least 1; got {max_iterations}")
    if not 0.0 < alpha <= 1.0:
        raise FieldError("ldpc.alpha", f"must be in (0, 1]; got {alpha}")
    if not 0 <= filler < k - 2 * zc:
        raise FieldError("ldpc.filler", f"must be in [0, {k - 2 * zc}); got {filler}")
    t = _xp_tables(base_graph, zc, xp)
    if llr.ndim < 1 or llr.shape[-1] not in (n, t.n_full):
        raise FieldError(
            "ldpc.llr", f"must have shape (..., {n}) or (..., {t.n_full}); got {llr.shape}"
        )
    lead = llr.shape[:-1]
    x = llr.reshape(-1, llr.shape[-1]).astype(xp.float32, copy=False)
    b = x.shape[0]
    n_full = t.n_full
    # Last entry: the padding position of the index tables, +inf (see _Schedule).
    app = xp.zeros((b, n_full + 1), dtype=xp.float32)
    app[:, n_full] = xp.inf
    app[:, n_full - x.shape[1] : n_full] = x
    if filler:
        app[:, k - filler : k] = FILLER_LLR
    # Rows 4.. each own one extension-parity block seen by no other row: a row whose
    # block got no channel value (rate matching never sent it) can tell the others
    # nothing, so decoding runs on the rows up to the last received extension block.
    mb, _, kb = BG_DIMS[base_graph]
    seen = (app[:, :n_full] != 0).reshape(b, -1, zc).any(axis=(0, 2))
    last = int(seen.nonzero()[0].max()) if bool(seen.any()) else 0
    rows = min(mb, max(4, last - kb + 1))
    sched = _schedule(base_graph, zc, xp)
    layers = _layer_index(base_graph, zc, rows, b, xp)
    flat_app = app.reshape(-1)
    # Per group: check-to-variable messages (degree, M), and work buffers by shape.
    msgs = [xp.zeros((d, m), dtype=xp.float32) for d, m, _ in layers]
    bufs: dict[tuple[int, int], tuple[Any, ...]] = {}
    for d, m, _ in layers:
        if (d, m) not in bufs:
            mag = xp.empty((d, m), dtype=xp.float32)  # magnitudes
            signs = xp.empty((d, m), dtype=xp.float32)  # own signs, +-1
            at_min = xp.empty((d, m), dtype=xp.int32)  # -1 at the minimum, else 0
            mins = xp.empty((2, m), dtype=xp.float32)  # min, second min
            mins_u = mins.view(xp.uint32)
            bufs[d, m] = (
                mag,
                mag.view(xp.uint32),
                signs,
                signs.view(xp.uint32),
                at_min,
                at_min.view(xp.uint32),
                xp.empty((d, m), dtype=xp.uint32),  # own sign bits
                mins,
                mins[0:1],
                mins[1:2],
                mins_u[0:1],
                mins_u[1:2],
                xp.empty((1, m), dtype=xp.int32),  # minus the edges at the minimum
            )
    a = xp.float32(alpha)
    u32 = xp.uint32
    sign_bit, one_bits, one = u32(0x80000000), u32(0x3F800000), u32(1)  # 0x3F800000: 1.0
    subtract, add, multiply, copyto = xp.subtract, xp.add, xp.multiply, xp.copyto
    bitwise_and, bitwise_or, bitwise_xor = xp.bitwise_and, xp.bitwise_or, xp.bitwise_xor
    right_shift = xp.right_shift
    iterations = 0
    ok = xp.zeros((b,), dtype=bool)
    for it in range(max_iterations):
        iterations += 1
        for gi, (d, m, idx) in enumerate(layers):
            (mag, mag_u, signs, signs_u, at_min, at_min_u, own, mins, m1, m2, m1_u, m2_u, count) = (
                bufs[d, m]
            )
            tv = flat_app[idx].reshape(d, m)
            # Signs are read off the sign bit, so a -0.0 counts as negative (where the
            # test "< 0" says not): harmless, as a zero magnitude is the minimum, so the
            # other edges get magnitude 0 whatever its sign, and its own message carries
            # the product of the others' signs only (its own sign enters twice).
            tv_u = tv.view(u32)
            subtract(tv, msgs[gi], out=tv)  # variable-to-check messages
            xp.abs(tv, out=mag)
            mag.min(axis=0, keepdims=True, out=m1)
            # Non-negative floats order as their bit patterns, read unsigned. At the
            # minimum mag - (m1 + 1) wraps around to 2^32 - 1, elsewhere it is below
            # 2^31: its sign, spread by an arithmetic shift, marks the minimum.
            subtract(mag_u, m1_u + one, out=at_min_u)
            right_shift(at_min, 31, out=at_min)
            at_min.sum(axis=0, keepdims=True, dtype=xp.int32, out=count)
            # All bits set at the minimum: the unsigned minimum is the second minimum.
            bitwise_or(mag_u, at_min_u, out=mag_u)
            mag_u.min(axis=0, keepdims=True, out=m2_u)
            # Two edges at the minimum: each sees the other, so both get m1 too.
            copyto(m2, m1, where=count < -1)
            bitwise_and(tv_u, sign_bit, out=own)
            bitwise_or(own, one_bits, out=signs_u)  # +-1.0
            # Both magnitudes times alpha times the product of all the signs...
            multiply(mins, signs.prod(axis=0, keepdims=True) * a, out=mins)
            # ... the minimum over the other edges: m2 at the minimum, else m1 ...
            r_bits = bitwise_and(at_min_u, m1_u ^ m2_u)
            bitwise_xor(r_bits, m1_u, out=r_bits)
            bitwise_xor(r_bits, own, out=r_bits)  # ... times the own sign: the others'
            r_new = r_bits.view(xp.float32)
            msgs[gi] = r_new
            add(tv, r_new, out=tv)
            flat_app[idx] = tv.reshape(-1)
        if it < max_iterations - 1:  # Row 0 first: a cheap way to see a non-zero syndrome.
            row0 = xp.take(app, sched.row0, axis=1).reshape(b, -1, zc) < 0
            if bool((row0.sum(axis=1, dtype=xp.uint8) & 1).any()):
                continue
        ok = _syndrome_zero(app < 0, sched, rows, xp)
        if bool(ok.all()):
            break
    bits = (app[:, :k] < 0).astype(xp.uint8)
    return LdpcDecodeResult(
        bits=bits.reshape(*lead, k), syndrome_ok=ok.reshape(lead), iterations=iterations
    )
