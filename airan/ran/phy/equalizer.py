"""Linear MMSE MIMO equalisation, batched over resource elements (TS 38.211 §6.3.1.3-§6.3.1.5
/ §7.3.1.3-§7.3.1.4 inverted: layer symbols from the received REs).

Per RE ``y = H x + n`` with ``H`` of shape ``(rx, L)`` (``L ≤ 4`` layers, ``rx ≤ 8``
antennas), unit-power layer symbols and white noise of variance ``σ²`` per antenna::

    A = Hᴴ H + σ² I,   x̃ = A⁻¹ Hᴴ y,   g_l = [A⁻¹ Hᴴ H]_ll = 1 - σ² [A⁻¹]_ll

The MMSE output is biased (``E[x̃_l | x_l] = g_l x_l``), so it is scaled to
``x̂_l = x̃_l / g_l`` whose residual interference-plus-noise has variance
``(1 - g_l)/g_l`` = 1/SINR_l: the per-RE, per-layer variance the soft demapper needs.
All REs are one batch of ``L x L`` Hermitian systems (closed forms for one and two
layers, batched Gauss-Jordan elimination for three and four: :func:`inverse_hpd`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from airan.backend import array_module
from airan.core.errors import FieldError

MAX_LAYERS = 4
MAX_RX = 8


@dataclass(frozen=True)
class Equalised:
    """``symbols``: ``(n_re, L)`` complex64 unbiased layer symbols; ``noise_var``:
    ``(n_re, L)`` float32 post-equalisation noise-plus-interference variance."""

    symbols: Any
    noise_var: Any


def check_mimo(rx: int, layers: int) -> None:
    """FieldError unless ``1 ≤ layers ≤ min(4, rx)`` and ``1 ≤ rx ≤ 8``."""
    if not 1 <= rx <= MAX_RX:
        raise FieldError("n_rx", f"must be in [1, {MAX_RX}], got {rx}")
    if not 1 <= layers <= MAX_LAYERS:
        raise FieldError("layers", f"must be in [1, {MAX_LAYERS}], got {layers}")
    if layers > rx:
        raise FieldError("layers", f"{layers} layers cannot be separated by {rx} rx antennas")


def mmse(y: Any, h: Any, noise_var: Any) -> Equalised:
    """MMSE-equalise ``y`` ``(n_re, rx)`` through ``h`` ``(n_re, rx, L)`` with noise ``σ²``.

    ``noise_var`` is a scalar (or 0-d device array) or per-RE ``(n_re,)``.
    """
    xp = array_module(h)
    if h.ndim != 3 or y.ndim != 2 or y.shape != h.shape[:2]:
        raise FieldError(
            "h", f"expected y (n_re, rx) and h (n_re, rx, L); got {y.shape} and {h.shape}"
        )
    n_re, rx, layers = h.shape
    check_mimo(rx, layers)
    s2 = xp.asarray(noise_var, dtype=xp.float32)
    s2 = xp.maximum(s2, np.float32(1e-10))
    s2_re = xp.broadcast_to(s2, (n_re,)) if s2.ndim else s2
    hh = xp.conj(h).transpose(0, 2, 1)  # (n, L, rx)
    b = xp.matmul(hh, y[:, :, None])[:, :, 0]  # Hᴴ y, (n, L)
    if layers == 1:
        a = xp.sum(xp.abs(h[:, :, 0]) ** 2, axis=1)  # ‖h‖²
        g = a / (a + s2_re)
        x = b[:, 0] / xp.maximum(a, np.float32(1e-20))  # x̃/g = Hᴴy/‖h‖² (matched filter)
        nv = (1.0 - g) / xp.maximum(g, np.float32(1e-12))
        return Equalised(
            symbols=x[:, None].astype(xp.complex64), noise_var=nv[:, None].astype(xp.float32)
        )
    gram = xp.matmul(hh, h)  # (n, L, L)
    eye = xp.eye(layers, dtype=xp.float32)
    a_mat = gram + (s2_re[:, None, None] if s2.ndim else s2) * eye
    inv = inverse_hpd(a_mat)
    x_tilde = xp.matmul(inv, b[:, :, None])[:, :, 0]
    diag = xp.real(xp.diagonal(inv, axis1=1, axis2=2))  # (n, L)
    g = 1.0 - (s2_re[:, None] if s2.ndim else s2) * diag
    g = xp.clip(g, np.float32(1e-6), np.float32(1.0 - 1e-7))
    x_hat = x_tilde / g
    nv = (1.0 - g) / g
    return Equalised(symbols=x_hat.astype(xp.complex64), noise_var=nv.astype(xp.float32))


def inverse_hpd(a: Any) -> Any:
    """Inverse of a batch ``(n, L, L)`` of Hermitian positive-definite matrices.

    Closed form for ``L = 2``; Gauss-Jordan elimination without pivoting (safe for HPD
    matrices, whose pivots stay positive) for larger ``L``, vectorised over the batch with
    ``L`` elimination steps. Elementwise kernels only: no host synchronisation, unlike a
    LAPACK/cuBLAS batched inverse that checks its info array on the host.
    """
    xp = array_module(a)
    layers = a.shape[1]
    if layers == 1:
        return 1.0 / a
    if layers == 2:
        a00, a01, a10, a11 = a[:, 0, 0], a[:, 0, 1], a[:, 1, 0], a[:, 1, 1]
        det = a00 * a11 - a01 * a10
        adj = xp.stack([xp.stack([a11, -a01], axis=-1), xp.stack([-a10, a00], axis=-1)], axis=-2)
        return adj / det[:, None, None]
    # Batch last, so that every step is a contiguous elementwise pass over the REs.
    n = a.shape[0]
    aug = xp.zeros((layers, 2 * layers, n), dtype=a.dtype)
    aug[:, :layers, :] = a.transpose(1, 2, 0)
    aug[xp.arange(layers), layers + xp.arange(layers), :] = 1.0
    others = (1.0 - xp.eye(layers, dtype=xp.float32))[:, :, None]  # (k, row, 1)
    for k in range(layers):  # L ≤ 4 elimination steps, each over the whole batch
        row = aug[k] / aug[k, k]  # (2L, n)
        aug -= (aug[:, k, :] * others[k])[:, None, :] * row[None, :, :]
        aug[k] = row
    return aug[:, layers:, :].transpose(2, 0, 1)
