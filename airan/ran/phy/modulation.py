"""Modulation mapper and soft demapper (TS 38.211 §5.1).

Mapping follows TS 38.211 §5.1.2-§5.1.7 exactly: π/2-BPSK and BPSK (``qm=1``), QPSK
(``qm=2``), 16QAM, 64QAM and 256QAM (``qm=4, 6, 8``), all with unit average power. The
square QAMs are Gray-coded per axis: the even bits ``b(0), b(2), ...`` choose the
in-phase level and the odd bits ``b(1), b(3), ...`` the quadrature level, each axis a
nested PAM ``(1-2c0)[2^(m-1) - (1-2c1)[2^(m-2) - ...]]`` (§5.1.4-§5.1.7).

Soft demapping gives one log-likelihood ratio per bit, positive when bit 0 is the more
likely (the convention of :mod:`airan.ran.phy.coding`), from the equalised symbol and
its per-symbol noise variance ``σ²`` (complex, ``E|n|² = σ²``):

* ``"maxlog"``: ``LLR = (min_{s: b=1} |y-s|² - min_{s: b=0} |y-s|²) / σ²``;
* ``"logmap"``: the exact ``ln Σ_{b=0} e^{-|y-s|²/σ²} - ln Σ_{b=1} e^{-|y-s|²/σ²}``.

Because the constellations are separable, both are computed per axis over the
``2^(qm/2)`` PAM levels: a ``(symbols, 2, levels)`` distance tensor is gathered into
``(symbols, 2, bits, 2, levels/2)`` (each bit's 0-half and 1-half) and reduced over the
last axis. No loop runs over symbols or bits.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any, Literal

import numpy as np

from airan.backend import array_module
from airan.core.errors import FieldError

#: Modulation orders (bits per symbol) accepted: BPSK/π/2-BPSK, QPSK, 16/64/256QAM.
QM_VALUES: tuple[int, ...] = (1, 2, 4, 6, 8)
#: Names used in reports, by modulation order.
QM_NAMES: dict[int, str] = {1: "BPSK", 2: "QPSK", 4: "16QAM", 6: "64QAM", 8: "256QAM"}

DemapMethod = Literal["maxlog", "logmap"]

_NORM: dict[int, float] = {
    2: 1.0 / np.sqrt(2.0),
    4: 1.0 / np.sqrt(10.0),
    6: 1.0 / np.sqrt(42.0),
    8: 1.0 / np.sqrt(170.0),
}


def check_qm(qm: int, field: str = "qm") -> int:
    """``qm`` if it is a supported modulation order, else :class:`FieldError` on ``field``."""
    if isinstance(qm, bool) or not isinstance(qm, int | np.integer) or int(qm) not in QM_VALUES:
        raise FieldError(field, f"modulation order must be one of {QM_VALUES}, got {qm!r}")
    return int(qm)


def pam_levels(qm: int) -> np.ndarray:
    """The per-axis amplitude levels of a square QAM (TS 38.211 §5.1.3-§5.1.7).

    Index ``j`` is the axis label read MSB first: ``j = Σ c_i 2^(m-1-i)`` with ``c_0`` the
    axis' first bit (``b(0)`` for I, ``b(1)`` for Q), ``m = qm/2``. Levels already carry
    the unit-power normalisation (``1/√2``, ``1/√10``, ``1/√42``, ``1/√170``).
    """
    qm = check_qm(qm)
    if qm == 1:
        raise FieldError("qm", "BPSK has no per-axis PAM levels")
    m = qm // 2
    labels = np.arange(1 << m)
    bits = (labels[:, None] >> (m - 1 - np.arange(m))[None, :]) & 1  # (L, m), c_0 first
    s = 1.0 - 2.0 * bits
    t = s[:, m - 1]
    for k in range(m - 2, -1, -1):  # nesting depth (≤ 3), not a loop over data
        t = s[:, k] * (float(1 << (m - 1 - k)) - t)
    return (t * _NORM[qm]).astype(np.float32)


def constellation(qm: int) -> np.ndarray:
    """All ``2^qm`` points, indexed by the label ``b(0)b(1)...b(qm-1)`` read MSB first.

    For ``qm=1`` this is BPSK (§5.1.2): ``(1-2b)(1+j)/√2``.
    """
    qm = check_qm(qm)
    labels = np.arange(1 << qm, dtype=np.int64)
    bits = ((labels[:, None] >> (qm - 1 - np.arange(qm))[None, :]) & 1).astype(np.uint8)
    return np.asarray(modulate(bits.reshape(-1), qm))


def modulate(bits: Any, qm: int, *, pi2: bool = False) -> Any:
    """Map bits to complex64 symbols (TS 38.211 §5.1.2-§5.1.7), on ``bits``' device.

    ``bits`` is a 1-D array of 0/1 whose length is a multiple of ``qm``. ``pi2=True`` with
    ``qm=1`` gives π/2-BPSK (§5.1.1): symbol ``i`` is rotated by ``e^{jπ(i mod 2)/2}``.
    """
    qm = check_qm(qm)
    xp = array_module(bits)
    if bits.ndim != 1:
        raise FieldError("bits", f"must be a 1-D array, got shape {bits.shape}")
    if bits.shape[0] % qm:
        raise FieldError("bits", f"length {bits.shape[0]} is not a multiple of qm={qm}")
    b = bits.reshape(-1, qm).astype(xp.float32)
    s = 1.0 - 2.0 * b  # (N, qm): the ±1 factors of §5.1
    if qm == 1:
        sym = (s[:, 0] * (1.0 + 1.0j) / np.sqrt(2.0)).astype(xp.complex64)
        if pi2:
            sym = sym * _on(xp, "pi2", 1)[xp.arange(sym.shape[0]) % 2]
        return sym.astype(xp.complex64)
    m = qm // 2
    si, sq = s[:, 0::2], s[:, 1::2]  # (N, m) each

    def axis(sa: Any) -> Any:
        t = sa[:, m - 1]
        for k in range(m - 2, -1, -1):  # nesting depth (≤ 3)
            t = sa[:, k] * (float(1 << (m - 1 - k)) - t)
        return t

    norm = np.float32(_NORM[qm])
    out = (axis(si) * norm + 1j * (axis(sq) * norm)).astype(xp.complex64)
    return out


def demodulate(
    symbols: Any,
    noise_var: Any,
    qm: int,
    *,
    method: DemapMethod = "maxlog",
    pi2: bool = False,
) -> Any:
    """Soft-demap symbols to float32 LLRs, positive ⇒ bit 0 (inverse of :func:`modulate`).

    ``symbols``: complex array of any shape ``S``; ``noise_var``: the complex noise
    variance ``σ²`` per symbol (scalar or broadcastable to ``S``), e.g. the post-MMSE
    variance from :mod:`airan.ran.phy.equalizer`. Returns shape ``S + (qm,)`` flattened
    to ``(prod(S)·qm,)`` in the order of :func:`modulate`'s input bits.
    """
    qm = check_qm(qm)
    if method not in ("maxlog", "logmap"):
        raise FieldError("method", f"must be 'maxlog' or 'logmap', got {method!r}")
    xp = array_module(symbols)
    y = symbols.reshape(-1).astype(xp.complex64)
    nv = xp.asarray(noise_var, dtype=xp.float32)
    nv = xp.broadcast_to(nv, symbols.shape).reshape(-1)
    inv = 1.0 / xp.maximum(nv, np.float32(1e-12))
    if qm == 1:
        n = y.shape[0]
        u = xp.full((n,), np.complex64((1.0 + 1.0j) / np.sqrt(2.0)), dtype=xp.complex64)
        if pi2:
            u = u * _on(xp, "pi2", 1)[xp.arange(n) % 2]
        # |y+u|² - |y-u|² = 4 Re(y·u*) for |u| = 1: exact for both methods (2 points).
        return (4.0 * xp.real(y * xp.conj(u)) * inv).astype(xp.float32)
    levels = _on(xp, "levels", qm)  # (L,)
    halves = _on(xp, "halves", qm)  # (m, 2, L/2)
    yy = xp.stack([xp.real(y), xp.imag(y)], axis=1)  # (N, 2)
    dist = (yy[:, :, None] - levels[None, None, :]) ** 2  # (N, 2, L)
    d = dist[:, :, halves]  # (N, 2, m, 2, L/2): levels whose bit k is 0 / 1
    if method == "maxlog":
        dm = d.min(axis=-1)
        llr = (dm[..., 1] - dm[..., 0]) * inv[:, None, None]  # (N, 2, m)
    else:
        e = -d * inv[:, None, None, None, None]
        mx = e.max(axis=-1)
        lse = mx + xp.log(xp.exp(e - mx[..., None]).sum(axis=-1))
        llr = lse[..., 0] - lse[..., 1]
    # (N, 2, m) -> (N, m, 2): b(2i) is I's i-th bit, b(2i+1) is Q's.
    return xp.ascontiguousarray(llr.transpose(0, 2, 1)).reshape(-1).astype(xp.float32)


_CONSTANTS: dict[tuple[str, str, int], Any] = {}


def _on(xp: ModuleType, name: str, qm: int) -> Any:
    """A small constant table on ``xp``'s device, uploaded once (no host copies per call,
    so that the demapper can be captured in a CUDA graph)."""
    key = (xp.__name__, name, qm)
    hit = _CONSTANTS.get(key)
    if hit is None:
        if name == "levels":
            host = pam_levels(qm)
        elif name == "halves":
            host = _bit_halves(qm)
        else:
            host = np.array([1.0, 1.0j], dtype=np.complex64)
        hit = _CONSTANTS[key] = xp.asarray(host)
    return hit


@functools.cache
def _bit_halves(qm: int) -> np.ndarray:
    """``[k, b]``: the per-axis level labels whose ``k``-th bit is ``b``: ``(m, 2, L/2)``."""
    m = qm // 2
    labels = np.arange(1 << m)
    bits = (labels[:, None] >> (m - 1 - np.arange(m))[None, :]) & 1
    return np.stack(
        [np.stack([np.flatnonzero(bits[:, k] == b) for b in (0, 1)]) for k in range(m)]
    ).astype(np.int64)


def hard_decision(llr: Any) -> Any:
    """Bits from LLRs (positive ⇒ 0), as uint8."""
    xp = array_module(llr)
    return (llr < 0).astype(xp.uint8)
