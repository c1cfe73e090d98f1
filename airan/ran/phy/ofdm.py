"""OFDM baseband signal generation and reception for one slot (TS 38.211 §5.3.1, §4.2-§4.3).

The resource grid has ``N_grid·12`` subcarriers ``k = 0..K-1`` (lowest frequency first)
and 14 symbols (normal cyclic prefix). Subcarrier ``k`` sits at baseband frequency
``(k - K/2)·Δf`` (§5.3.1 with ``k0 = 0``, the grid centred on the carrier; NR uses the
DC subcarrier), i.e. FFT bin ``(k - K/2) mod N_FFT``. Sampling is at
``f_s = N_FFT·Δf``, ``Δf = 15·2^µ kHz`` (§4.2).

Cyclic prefix (§5.3.1, normal CP), in samples at ``f_s``::

    N_CP,l = 144·N_FFT/2048 + 16·2^µ·N_FFT/2048   for l = 0 or l = 7·2^µ (l counted in
                                                  the 0.5 ms half-subframe's symbols)
    N_CP,l = 144·N_FFT/2048                       otherwise

so with µ=0 symbols 0 and 7 of a slot have the long CP, with µ=1 symbol 0 of every slot,
and with µ≥2 symbol 0 of every 2^(µ-1)-th slot only (:func:`cp_lengths` takes the slot).

All symbols of all antennas are transformed by one batched (I)FFT with ``norm="ortho"``
(unit-power REs give per-bin unit power back; white time-domain noise of variance σ²
is white with variance σ² per RE). CP insertion and removal are single gathers through
index arrays precomputed per shape (:class:`OfdmPlan`). Upconversion and its phase
term (§5.4) are not modelled (baseband only).

Numerology (Δf, N_FFT, CP lengths in Tc) comes from :mod:`airan.ran.numerology`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from airan.backend import array_module
from airan.core.errors import FieldError
from airan.ran import numerology

SYMBOLS_PER_SLOT = numerology.SYMBOLS_PER_SLOT  #: normal cyclic prefix (Table 4.3.2-1)
SC_PER_PRB = numerology.SUBCARRIERS_PER_RB  #: N_sc^RB (§4.4.4.1)


def check_mu(mu: int) -> int:
    """``mu`` if it is a numerology of TS 38.211 Table 4.2-1 with normal CP (0-3)."""
    return numerology.check_mu(mu, "mu")


def scs_hz(mu: int) -> float:
    """Subcarrier spacing ``Δf = 2^µ·15 kHz`` (TS 38.211 §4.2)."""
    return 1e3 * numerology.scs_khz(mu)


def fft_size(n_prb: int) -> int:
    """The FFT size for ``n_prb`` PRBs (:func:`airan.ran.numerology.fft_size`: the
    smallest power of two ≥ 128 holding ``12·n_prb`` subcarriers)."""
    if isinstance(n_prb, bool) or not isinstance(n_prb, int | np.integer):
        raise FieldError("n_prb", f"must be an integer, got {n_prb!r}")
    return numerology.fft_size(int(n_prb))


def sample_rate_hz(mu: int, nfft: int) -> float:
    """``f_s = N_FFT·Δf`` (§5.3.1)."""
    return float(numerology.sample_rate_hz(mu, nfft))


def cp_lengths(mu: int, nfft: int, slot: int = 0) -> np.ndarray:
    """Normal-CP lengths in samples of the 14 symbols of slot ``slot`` (TS 38.211 §5.3.1).

    ``N_CP,l`` in Tc (:func:`airan.ran.numerology.cp_tc`) scaled by
    ``N_FFT / N_u = N_FFT·2^µ / (2048·κ)`` samples per Tc.
    """
    mu = check_mu(mu)
    if nfft < 128 or nfft & (nfft - 1):
        raise FieldError("nfft", f"must be a power of two ≥ 128, got {nfft}")
    if slot < 0:
        raise FieldError("slot", f"must be >= 0, got {slot}")
    first = (slot % numerology.slots_per_subframe(mu)) * SYMBOLS_PER_SLOT
    u = numerology.useful_symbol_tc(mu)
    tc = [numerology.cp_tc(mu, first + i) for i in range(SYMBOLS_PER_SLOT)]
    out = np.array([c * nfft // u for c in tc], dtype=np.int64)
    return out


@dataclass(frozen=True)
class OfdmPlan:
    """Index arrays for one slot shape: subcarriers → FFT bins, CP insertion and removal.

    Built once per (µ, N_grid, N_FFT, slot-CP pattern); the arrays live on ``xp``.
    """

    mu: int
    n_prb: int
    nfft: int
    slot: int = 0
    xp: ModuleType = field(default=np, repr=False)
    cp: np.ndarray = field(init=False, repr=False)
    bins: Any = field(init=False, repr=False)
    tx_index: Any = field(init=False, repr=False)
    rx_index: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_mu(self.mu)
        k = self.n_prb * SC_PER_PRB
        if k > self.nfft:
            raise FieldError("nfft", f"{self.nfft} bins cannot hold {k} subcarriers")
        cp = cp_lengths(self.mu, self.nfft, self.slot)
        n = self.nfft
        bins = (np.arange(k) - k // 2) % n
        starts = np.concatenate([[0], np.cumsum(cp + n)[:-1]])  # symbol starts incl. CP
        # TX: output sample j of symbol l takes IFFT sample (j - cp_l) mod N.
        tx = np.concatenate(
            [i * n + (np.arange(cp[i] + n) - cp[i]) % n for i in range(SYMBOLS_PER_SLOT)]
        )
        # RX: FFT window of symbol l starts right after its CP.
        rx = (starts + cp)[:, None] + np.arange(n)[None, :]
        xp = self.xp
        object.__setattr__(self, "cp", cp)
        object.__setattr__(self, "bins", xp.asarray(bins))
        object.__setattr__(self, "tx_index", xp.asarray(tx))
        object.__setattr__(self, "rx_index", xp.asarray(rx))

    @property
    def n_sc(self) -> int:
        """Subcarriers in the grid, ``K = 12·N_grid``."""
        return self.n_prb * SC_PER_PRB

    @property
    def samples_per_slot(self) -> int:
        """``14·N_FFT + Σ N_CP,l``."""
        return int(SYMBOLS_PER_SLOT * self.nfft + int(self.cp.sum()))

    @property
    def sample_rate_hz(self) -> float:
        """``N_FFT·Δf``."""
        return sample_rate_hz(self.mu, self.nfft)

    def modulate(self, grid: Any) -> Any:
        """Grid ``(..., 14, K)`` → time samples ``(..., samples_per_slot)``, complex64.

        One batched IFFT over every antenna and symbol, then CP insertion by one gather.
        """
        xp = array_module(grid)
        if grid.shape[-2:] != (SYMBOLS_PER_SLOT, self.n_sc):
            raise FieldError(
                "grid", f"must end in (14, {self.n_sc}), got shape {tuple(grid.shape)}"
            )
        lead = grid.shape[:-2]
        freq = xp.zeros((*lead, SYMBOLS_PER_SLOT, self.nfft), dtype=xp.complex64)
        freq[..., self.bins] = grid
        t = xp.fft.ifft(freq, axis=-1, norm="ortho").astype(xp.complex64)
        flat = t.reshape(*lead, SYMBOLS_PER_SLOT * self.nfft)
        return xp.take(flat, self.tx_index, axis=-1)

    def demodulate(self, samples: Any, out: Any = None) -> Any:
        """Time samples ``(..., samples_per_slot)`` → grid ``(..., 14, K)``, complex64.

        CP removal by one gather, one batched FFT, then the subcarrier bins are gathered
        (into ``out`` when given: a preallocated ``(..., 14, K)`` complex64 buffer).
        """
        xp = array_module(samples)
        if samples.shape[-1] != self.samples_per_slot:
            raise FieldError(
                "samples",
                f"must have {self.samples_per_slot} samples per slot, got {samples.shape[-1]}",
            )
        win = xp.take(samples, self.rx_index, axis=-1)  # (..., 14, N)
        spec = xp.fft.fft(win, axis=-1, norm="ortho")
        if spec.dtype != xp.complex64:
            spec = spec.astype(xp.complex64)
        if out is None:
            return xp.take(spec, self.bins, axis=-1)
        xp.take(spec, self.bins, axis=-1, out=out)
        return out
