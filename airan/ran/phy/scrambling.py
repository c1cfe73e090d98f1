"""Pseudo-random (Gold) sequence and bit scrambling (TS 38.211 §5.2.1, §6.3.1.1, §7.3.1.1).

The length-31 Gold sequence of §5.2.1::

    c(n) = (x1(n + Nc) + x2(n + Nc)) mod 2,  Nc = 1600
    x1(n + 31) = (x1(n + 3) + x1(n)) mod 2,                    x1(0) = 1, x1(1..30) = 0
    x2(n + 31) = (x2(n + 3) + x2(n + 2) + x2(n + 1) + x2(n)) mod 2,  Σ x2(i) 2^i = c_init

is generated without a bit-serial loop: over GF(2) a recurrence with characteristic
polynomial ``p(x)`` also satisfies the one of ``p(x)^(2^k) = p(x^(2^k))``, i.e.
``s(n + 31·2^k) = Σ_t s(n + t·2^k)``, so each step extends the known prefix by a whole
vectorised block (the prefix grows by ~45 % per step: ~25 steps for a million bits).
Sequences are generated on the host (NumPy) and cached by ``(c_init, length)``; they
are per-grant constants that a receiver uploads once per slot plan.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from airan.backend import array_module
from airan.core.errors import FieldError

NC = 1600  #: the sequence offset Nc of TS 38.211 §5.2.1
_X1_TAPS = (0, 3)
_X2_TAPS = (0, 1, 2, 3)
_MAX_LEN = 1 << 26


def _extend(init: np.ndarray, taps: tuple[int, ...], length: int) -> np.ndarray:
    """The first ``length`` terms of the LFSR sequence ``s(n+31) = Σ_{t∈taps} s(n+t)``."""
    s = np.zeros(max(length, 31), dtype=np.uint8)
    s[:31] = init
    known = 31
    while known < length:
        step = 1
        while 31 * step * 2 <= known:
            step *= 2
        # s(m) = Σ_t s(m - 31·step + t·step) for m in [known, known + (31-max t)·step).
        stop = min(length, known + (31 - max(taps)) * step)
        base = known - 31 * step
        block = np.zeros(stop - known, dtype=np.uint8)
        for t in taps:  # 2 or 4 taps
            block ^= s[base + t * step : base + t * step + (stop - known)]
        s[known:stop] = block
        known = stop
    return s[:length]


@functools.lru_cache(maxsize=8)
def _x1(length: int) -> np.ndarray:
    init = np.zeros(31, dtype=np.uint8)
    init[0] = 1
    out = _extend(init, _X1_TAPS, length)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=256)
def _gold_cached(c_init: int, length: int) -> np.ndarray:
    # Round the x1 length up to a power of two so that one cached x1 serves many lengths.
    x1 = _x1(1 << max(12, (length + NC - 1).bit_length()))
    init = ((c_init >> np.arange(31)) & 1).astype(np.uint8)
    x2 = _extend(init, _X2_TAPS, length + NC)
    c: np.ndarray = x1[NC : NC + length] ^ x2[NC : NC + length]
    c.setflags(write=False)
    return c


def gold_sequence(c_init: int, length: int) -> np.ndarray:
    """``c(0..length-1)`` of TS 38.211 §5.2.1 as a read-only uint8 NumPy array (cached)."""
    if isinstance(c_init, bool) or not isinstance(c_init, int | np.integer):
        raise FieldError("c_init", f"must be an integer, got {c_init!r}")
    if not 0 <= int(c_init) < (1 << 31):
        raise FieldError("c_init", f"must be in [0, 2^31), got {c_init}")
    if not 0 <= int(length) <= _MAX_LEN:
        raise FieldError("length", f"must be in [0, {_MAX_LEN}], got {length}")
    return _gold_cached(int(c_init), int(length))


def _check_id(field: str, value: int, hi: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or not (0 <= int(value) <= hi)
    ):
        raise FieldError(field, f"must be an integer in [0, {hi}], got {value!r}")
    return int(value)


def pusch_c_init(rnti: int, n_id: int) -> int:
    """PUSCH data scrambling seed ``c_init = n_RNTI·2^15 + n_ID`` (TS 38.211 §6.3.1.1)."""
    return (_check_id("rnti", rnti, 65535) << 15) + _check_id("n_id", n_id, 1023)


def pdsch_c_init(rnti: int, n_id: int, q: int = 0) -> int:
    """PDSCH seed ``c_init = n_RNTI·2^15 + q·2^14 + n_ID`` for codeword ``q`` (§7.3.1.1)."""
    return (
        (_check_id("rnti", rnti, 65535) << 15)
        + (_check_id("q", q, 1) << 14)
        + _check_id("n_id", n_id, 1023)
    )


def scramble_bits(bits: Any, c_init: int) -> Any:
    """``b̃(i) = (b(i) + c(i)) mod 2`` (§6.3.1.1 / §7.3.1.1) on ``bits``' device; uint8."""
    xp = array_module(bits)
    c = xp.asarray(gold_sequence(c_init, int(bits.shape[0])))
    return (bits.astype(xp.uint8) ^ c).astype(xp.uint8)


def descramble_llr(llr: Any, c_init: int) -> Any:
    """Undo scrambling on LLRs: flip the sign where ``c(i) = 1`` (positive ⇒ bit 0)."""
    xp = array_module(llr)
    c = xp.asarray(gold_sequence(c_init, int(llr.shape[0])))
    return (llr * (1.0 - 2.0 * c.astype(xp.float32))).astype(xp.float32)


def sign_sequence(c_init: int, length: int) -> np.ndarray:
    """``1 - 2c(i)`` as float32: multiply LLRs by it to descramble (precomputable)."""
    return (1.0 - 2.0 * gold_sequence(c_init, length).astype(np.float32)).astype(np.float32)
