"""Cyclic redundancy checks of 5G NR (TS 38.212 §5.1), vectorised over a batch of blocks.

Bits are ``uint8`` arrays of 0/1 with shape ``(..., n)``; bit ``a_0`` (index 0) is the
coefficient of the highest power of D, as in §5.1. The parity bits ``p_0..p_{L-1}`` make
``a_0 D^{A+L-1} + ... + a_{A-1} D^L + p_0 D^{L-1} + ... + p_{L-1}`` divisible by the
generator polynomial; there is no initial value and no inversion.

The CRC is linear over GF(2), so the parity of an ``n``-bit block is ``bits @ M mod 2``
with an ``(n, L)`` matrix ``M`` whose row ``k`` is ``D^{n-1-k+L} mod g(D)``. ``M`` is built
once per (polynomial, n) by repeated squaring of the companion matrix, cached, and
applied as one matrix product over the whole batch on NumPy or CuPy.

>>> import numpy as np
>>> a = np.array([1, 0, 1, 1, 0, 0, 1, 0], dtype=np.uint8)
>>> block = crc_attach(a, "24A")
>>> block.shape, bool(crc_check(block, "24A"))
((32,), True)
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from airan.backend import array_module
from airan.core.errors import FieldError

CrcName = Literal["24A", "24B", "24C", "16", "11", "6"]

#: Generator polynomials of TS 38.212 §5.1, as (length L, the powers of D present below
#: D^L). gCRC24A(D) = D^24+D^23+D^18+D^17+D^14+D^11+D^10+D^7+D^6+D^5+D^4+D^3+D+1, ...
POLYNOMIALS: dict[str, tuple[int, tuple[int, ...]]] = {
    "24A": (24, (23, 18, 17, 14, 11, 10, 7, 6, 5, 4, 3, 1, 0)),
    "24B": (24, (23, 6, 5, 1, 0)),
    "24C": (24, (23, 21, 20, 17, 15, 13, 12, 8, 4, 2, 1, 0)),
    "16": (16, (12, 5, 0)),
    "11": (11, (10, 9, 5, 0)),
    "6": (6, (5, 0)),
}


def crc_length(poly: str) -> int:
    """The number of parity bits L of ``poly`` (24, 16, 11 or 6), TS 38.212 §5.1."""
    return _poly(poly)[0]


def generator_int(poly: str) -> int:
    """The generator polynomial as an integer, bit t = coefficient of D^t (D^L included)."""
    length, powers = _poly(poly)
    return (1 << length) | sum(1 << p for p in powers)


def _poly(poly: str) -> tuple[int, tuple[int, ...]]:
    try:
        return POLYNOMIALS[poly]
    except KeyError:
        raise FieldError(
            "crc.poly", f"must be one of {', '.join(POLYNOMIALS)}; got {poly!r}"
        ) from None


_POWERS: dict[str, npt.NDArray[np.float32]] = {}
#: messages longer than this are split into chunks whose parities are combined
_CHUNK = 1 << 14


def _companion(poly: str) -> npt.NDArray[np.float32]:
    """Multiplication by D modulo g(D) on row vectors (column t = coefficient of D^t)."""
    length, powers = _poly(poly)
    t = np.zeros((length, length), dtype=np.float32)
    t[np.arange(length - 1), np.arange(1, length)] = 1  # D^t -> D^{t+1}, t < L-1
    t[length - 1, list(powers)] = 1  # D^{L-1} -> D^L = sum of the lower powers
    return t


@functools.cache
def _chunk_shifts(poly: str, k: int) -> npt.NDArray[np.float32]:
    """``(k, L, L)``: multiplication by D^{C(k-1-j)} mod g for chunk j, in the parity's
    column order (column i = coefficient of D^{L-1-i})."""
    step = _companion(poly)
    for _ in range(_CHUNK.bit_length() - 1):  # T^C by squaring
        step = np.remainder(step @ step, 2.0)
    length = step.shape[0]
    mats = np.empty((k, length, length), dtype=np.float32)
    cur = np.eye(length, dtype=np.float32)
    for j in range(k - 1, -1, -1):
        mats[j] = cur[::-1, ::-1]  # natural -> reversed column order on both sides
        cur = np.remainder(cur @ step, 2.0)
    return mats


def _powers(poly: str, n: int) -> npt.NDArray[np.float32]:
    """At least ``n`` rows: row m = D^{L+m} mod g(D), column i = coefficient of
    D^{L-1-i}. Grown by doubling (row block m..2m-1 = rows 0..m-1 times D^m) and kept,
    so a new message length costs a slice, not a rebuild."""
    have = _POWERS.get(poly)
    if have is not None and have.shape[0] >= n:
        return have
    length, powers = _poly(poly)
    t = _companion(poly)  # float32 products are exact here: sums of at most L ones
    target = max(1 << 14, 1 << (n - 1).bit_length())  # a power of two: few regrowths
    rem = np.zeros((target, length), dtype=np.float32)
    rem[0, list(powers)] = 1  # D^L mod g
    tp = t
    s = 1
    while s < target:  # rows s..2s-1 from rows 0..s-1 and T^s
        m = min(s, target - s)
        np.remainder(rem[:m] @ tp, 2.0, out=rem[s : s + m])
        tp = np.remainder(tp @ tp, 2.0)
        s += m
    out = np.ascontiguousarray(rem[:, ::-1])
    _POWERS[poly] = out
    return out


def _parity_matrix_np(poly: str, n: int) -> npt.NDArray[np.float32]:
    """``(n, L)`` matrix over GF(2): row k = D^{n-1-k+L} mod g(D), column i = p_i
    (a reversed view of the shared table of powers)."""
    return _powers(poly, n)[n - 1 :: -1] if n > 0 else _powers(poly, 1)[:0]


def _parity_matrix(poly: str, n: int, xp: ModuleType) -> Any:
    m = _parity_matrix_np(poly, n)
    return m if xp is np else _to_xp(poly, n, xp)


@functools.cache
def _to_xp(poly: str, n: int, xp: ModuleType) -> Any:
    return xp.asarray(_parity_matrix_np(poly, n))


def _check_bits(bits: Any, name: str) -> None:
    if bits.ndim < 1:
        raise FieldError(name, "must have at least one dimension (..., n)")


def crc_parity(bits: Any, poly: str) -> Any:
    """The L parity bits of each block of ``bits`` (shape (..., A) -> (..., L)), §5.1."""
    xp = array_module(bits)
    _check_bits(bits, "crc.bits")
    n = bits.shape[-1]
    length = crc_length(poly)
    if n == 0:
        return xp.zeros((*bits.shape[:-1], length), dtype=xp.uint8)
    if n <= _CHUNK:
        m = _parity_matrix(poly, n, xp)
        s = bits.astype(xp.float32) @ m  # exact: sums of at most n < 2^24 ones
        return (s.astype(xp.int64) & 1).astype(xp.uint8)
    # Long blocks: leading zeros leave the remainder unchanged, so pad to k chunks of C
    # bits, take each chunk's parity, and shift it by D^{C(k-1-j)} mod g before summing.
    k = -(-n // _CHUNK)
    a = bits.astype(xp.float32)
    pad = k * _CHUNK - n
    if pad:
        a = xp.concatenate([xp.zeros((*a.shape[:-1], pad), xp.float32), a], axis=-1)
    a = a.reshape(*a.shape[:-1], k, _CHUNK)
    part = xp.remainder(a @ _parity_matrix(poly, _CHUNK, xp), 2.0)  # (..., k, L)
    shifts = _chunk_shifts(poly, k)
    u = shifts if xp is np else xp.asarray(shifts)
    s = xp.einsum("...kl,klm->...m", part, u)
    return (s.astype(xp.int64) & 1).astype(xp.uint8)


def crc_attach(bits: Any, poly: str) -> Any:
    """``bits`` with their CRC appended: (..., A) -> (..., A + L), TS 38.212 §5.1."""
    xp = array_module(bits)
    return xp.concatenate([bits.astype(xp.uint8), crc_parity(bits, poly)], axis=-1)


def crc_check(block: Any, poly: str) -> Any:
    """Whether each block (..., A + L) carries a correct CRC: bool array of shape (...)."""
    xp = array_module(block)
    _check_bits(block, "crc.block")
    length = crc_length(poly)
    if block.shape[-1] < length:
        raise FieldError(
            "crc.block", f"has {block.shape[-1]} bits, fewer than the {length} CRC bits"
        )
    parity = crc_parity(block[..., : block.shape[-1] - length], poly)
    return xp.all(parity == block[..., block.shape[-1] - length :], axis=-1)
