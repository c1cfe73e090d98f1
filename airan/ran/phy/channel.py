"""A seeded test channel: tapped-delay-line Rayleigh multipath and AWGN.

Not a 3GPP TR 38.901 model: a simple TDL of ``n_taps`` taps at delays
``τ_i = i·Δτ`` (rounded to whole samples at the slot's sample rate) with an exponential
power delay profile ``P_i ∝ exp(-τ_i/τ_rms)``, normalised to unit total power, each tap a
complex Gaussian (Rayleigh) gain drawn independently per (rx antenna, tx port) and held
for the slot (block fading, no Doppler). ``delay_spread_ns = 0`` (or one tap) gives flat
Rayleigh fading; ``fading=False`` with one tap gives an identity/AWGN channel.

It is applied to time samples by FFT-based linear convolution (one batched FFT over all
ports, an ``einsum`` over tx ports per frequency, one IFFT), or to a frequency-domain
grid by multiplying with its per-subcarrier response (:meth:`TdlChannel.freq_response`,
exact when the largest delay fits in the cyclic prefix).

SNR convention: ``snr_db`` is ``Es/N0`` per RE per receive antenna for one unit-power
transmit port through a unit-average-power channel, i.e. with ``ortho`` (I)FFTs the
complex noise variance per time sample (and per RE) is ``10^(-snr_db/10)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from airan.backend import array_module
from airan.core.errors import FieldError


def noise_variance(snr_db: float) -> float:
    """Complex noise variance per RE for a unit-power RE: ``10^(-snr_db/10)``."""
    return float(10.0 ** (-float(snr_db) / 10.0))


def awgn(x: Any, snr_db: float, rng: np.random.Generator) -> Any:
    """``x`` plus circular complex Gaussian noise of variance ``10^(-snr_db/10)``.

    Noise is drawn on the host with ``rng`` (reproducible) and moved to ``x``'s device.
    """
    xp = array_module(x)
    s = np.sqrt(noise_variance(snr_db) / 2.0)
    n = (
        rng.standard_normal(x.shape, dtype=np.float32)
        + 1j * rng.standard_normal(x.shape, dtype=np.float32)
    ) * np.float32(s)
    return (x + xp.asarray(n.astype(np.complex64))).astype(xp.complex64)


@dataclass(frozen=True)
class TdlChannel:
    """One block-fading TDL channel realisation from ``n_tx`` ports to ``n_rx`` antennas.

    ``taps``: ``(n_rx, n_tx, n_taps)`` complex64 gains; ``delays``: integer sample delays.
    Build with :meth:`draw`.
    """

    taps: np.ndarray
    delays: np.ndarray
    sample_rate_hz: float
    _dense: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        dense = np.zeros((*self.taps.shape[:2], int(self.delays.max()) + 1), np.complex64)
        for i, d in enumerate(self.delays.tolist()):  # a few taps
            dense[:, :, d] += self.taps[:, :, i]
        object.__setattr__(self, "_dense", dense)

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        *,
        n_rx: int,
        n_tx: int,
        sample_rate_hz: float,
        n_taps: int = 4,
        delay_spread_ns: float = 300.0,
        fading: bool = True,
    ) -> TdlChannel:
        """Draw a realisation: ``n_taps`` taps spaced by ``delay_spread_ns`` (τ_rms too)."""
        if not 1 <= n_rx <= 64:
            raise FieldError("n_rx", f"must be in [1, 64], got {n_rx}")
        if not 1 <= n_tx <= 64:
            raise FieldError("n_tx", f"must be in [1, 64], got {n_tx}")
        if not 1 <= n_taps <= 64:
            raise FieldError("n_taps", f"must be in [1, 64], got {n_taps}")
        if not delay_spread_ns >= 0.0:
            raise FieldError("delay_spread_ns", f"must be >= 0, got {delay_spread_ns}")
        if sample_rate_hz <= 0:
            raise FieldError("sample_rate_hz", f"must be > 0, got {sample_rate_hz}")
        tau = np.arange(n_taps) * delay_spread_ns * 1e-9
        p = np.exp(-tau / (delay_spread_ns * 1e-9)) if delay_spread_ns > 0 else np.ones(n_taps)
        p = p / p.sum()
        delays = np.rint(tau * sample_rate_hz).astype(np.int64)
        if fading:
            g = (
                rng.standard_normal((n_rx, n_tx, n_taps))
                + 1j * rng.standard_normal((n_rx, n_tx, n_taps))
            ) / np.sqrt(2.0)
        else:
            if n_taps != 1:
                raise FieldError("fading", "fading=False needs n_taps=1 (a flat, fixed channel)")
            g = np.ones((n_rx, n_tx, 1))
        taps = (g * np.sqrt(p)[None, None, :]).astype(np.complex64)
        return cls(taps=taps, delays=delays, sample_rate_hz=float(sample_rate_hz))

    @property
    def n_rx(self) -> int:
        """Receive antennas."""
        return int(self.taps.shape[0])

    @property
    def n_tx(self) -> int:
        """Transmit ports."""
        return int(self.taps.shape[1])

    @property
    def max_delay(self) -> int:
        """Largest tap delay, in samples."""
        return int(self.delays.max())

    def freq_response(self, bins: Any, nfft: int) -> Any:
        """``H[r, t, k] = Σ_i h_rti e^{-j2π·bin_k·d_i/N}`` at FFT ``bins`` ``(K,)``,
        on ``bins``' device: ``(n_rx, n_tx, K)`` complex64."""
        xp = array_module(bins)
        ph = xp.exp(
            (-2j * np.pi / nfft)
            * xp.asarray(self.delays)[:, None].astype(xp.float64)
            * bins[None, :].astype(xp.float64)
        )  # (taps, K)
        return xp.einsum("rti,ik->rtk", xp.asarray(self.taps), ph.astype(xp.complex64))

    def propagate(self, x: Any) -> Any:
        """Time samples ``(n_tx, S)`` → ``(n_rx, S)``: linear convolution (slot starts
        from silence; the tail past ``S`` is dropped). No noise."""
        xp = array_module(x)
        if x.ndim != 2 or x.shape[0] != self.n_tx:
            raise FieldError("x", f"must be (n_tx={self.n_tx}, samples), got {x.shape}")
        s = x.shape[1]
        n = s + self.max_delay
        xf = xp.fft.fft(x, n=n, axis=-1)
        hf = xp.fft.fft(xp.asarray(self._dense), n=n, axis=-1)
        y = xp.fft.ifft(xp.einsum("rtn,tn->rn", hf, xf), axis=-1)[:, :s]
        return y.astype(xp.complex64)

    def apply(self, x: Any, snr_db: float, rng: np.random.Generator) -> Any:
        """:meth:`propagate` then :func:`awgn` at ``snr_db``."""
        return awgn(self.propagate(x), snr_db, rng)

    def apply_grid(self, grid: Any, bins: Any, nfft: int) -> Any:
        """Frequency-domain equivalent on a grid ``(n_tx, 14, K)`` → ``(n_rx, 14, K)``."""
        xp = array_module(grid)
        h = self.freq_response(bins, nfft)
        return xp.einsum("rtk,tsk->rsk", h, grid).astype(xp.complex64)
