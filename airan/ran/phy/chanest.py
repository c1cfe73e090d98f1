"""DM-RS based least-squares channel and noise estimation (TS 38.211 §6.4.1.1 / §7.4.1.1).

For one allocation (PRB range, DM-RS symbols, ``L`` layers on ports ``0..L-1``, type-1
single-symbol DM-RS, see :mod:`airan.ran.phy.dmrs`), per receive antenna and layer:

1. **LS and OCC despreading.** On the CDM group with offset ``Δ`` the ``j``-th DM-RS RE
   ``y_j = β r_j Σ_p w_f,p(j mod 2) h_p + n`` is derotated, ``z_j = y_j r_j* / β``, and
   each pair ``(z_2n, z_2n+1)`` (4 subcarriers per pair) is despread by the port's
   frequency OCC: ``ĥ_p(n) = (z_2n + w_f,p(1)·z_2n+1)/2``, an estimate at the pair's
   centre subcarrier ``4n + 1 + Δ`` (assumes the channel equal on the pair's two REs).
2. **Frequency interpolation**, linear between pair centres (linear extrapolation at the
   allocation edges), by a gather with precomputed indices and weights.
3. **Time interpolation** over the DM-RS symbols: ``"linear"`` between DM-RS symbols
   (held before the first and after the last), or ``"average"`` (the mean of all
   DM-RS symbols: best for a channel static over the slot).
4. **Noise variance** ``σ²`` (per RE, per receive antenna, averaged over antennas), from
   whatever the allocation leaves free of signal, chosen when the plan is built:

   * 1-2 layers: CDM group 1 is empty (no data on DM-RS symbols):
     ``σ² = mean |y|²`` over its REs (exact);
   * 3 layers: port 3's OCC code is unused: ``σ² = 4·mean |ĥ_3|²`` (its despread
     estimate is noise only, variance ``σ²/4``);
   * 4 layers with ≥ 2 DM-RS symbols: the residual between symbols,
     ``σ² = 2·mean |ĥ(l_i+1) - ĥ(l_i)|²`` (assumes no Doppler within the slot);
   * 4 layers, one DM-RS symbol: the residual against the mean of the neighbouring
     pairs, ``σ² = (8/3)·mean |ĥ(n) - (ĥ(n-1)+ĥ(n+1))/2|²``; this one is biased upward
     by frequency selectivity (long delay spreads read as noise).

   The SNR estimate is ``(mean |ĥ|² - σ²/4)/σ²``: mean channel power per (antenna,
   layer) RE over the noise, i.e. the per-layer, per-antenna SNR.

Everything is batched over antennas, layers, DM-RS symbols and subcarriers; shapes are
fixed by the plan, and no value leaves the device (``noise_var``/``snr_db`` are 0-d
arrays).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

import numpy as np

from airan.core.errors import FieldError
from airan.ran.phy.dmrs import BETA_DMRS, PORT_CDM_GROUP, PORT_WF1, DmrsPattern

TimeInterp = Literal["linear", "average"]
NoiseMethod = Literal["empty_cdm_group", "unused_occ", "time_residual", "freq_residual"]


@dataclass(frozen=True)
class ChannelEstimate:
    """``h``: ``(n_re, rx, layers)`` complex64 at the data REs (symbol-major order);
    ``h_dmrs``: ``(rx, layers, n_dmrs, 3·n_prb)`` the despread LS estimates;
    ``noise_var``, ``snr_db``: 0-d float32 arrays on the device."""

    h: Any
    h_dmrs: Any
    noise_var: Any
    snr_db: Any


@dataclass(frozen=True)
class ChanEstPlan:
    """Precomputed, device-resident constants for estimating one allocation's channel."""

    pattern: DmrsPattern
    data_symbols: tuple[int, ...]
    time_interp: TimeInterp
    xp: ModuleType = field(repr=False)
    noise_method: NoiseMethod = field(init=False)
    sc_start: int = field(init=False)
    n_groups: int = field(init=False)
    ref_conj: Any = field(init=False, repr=False)  # (G, S, 6n): r*/β
    occ: Any = field(init=False, repr=False)  # (P, G, 2) despreading weights /2
    f_idx: Any = field(init=False, repr=False)  # (1, P, 1, 12n) left pair index
    f_w: Any = field(init=False, repr=False)  # (1, P, 1, 12n) right weight
    t_mat: Any = field(init=False, repr=False)  # (n_data_sym, S)
    dmrs_sym: Any = field(init=False, repr=False)  # (S,)

    def __post_init__(self) -> None:
        if self.time_interp not in ("linear", "average"):
            raise FieldError(
                "time_interp", f"must be 'linear' or 'average', got {self.time_interp!r}"
            )
        pat, xp = self.pattern, self.xp
        n_ports, n = pat.n_ports, pat.n_prb
        groups = sorted({PORT_CDM_GROUP[p] for p in range(n_ports)})
        g_count = len(groups)
        # r*/β per group: the two groups use the same r(m) on their own subcarriers.
        base = np.asarray(pat.values[0]) / BETA_DMRS  # port 0: w_f = +1, β r(m)
        ref_conj = np.stack([np.conj(base) / BETA_DMRS] * g_count).astype(np.complex64)
        occ = np.zeros((n_ports, g_count, 2), dtype=np.complex64)
        for p in range(n_ports):  # ≤ 4 ports: builds a constant
            occ[p, PORT_CDM_GROUP[p], :] = (0.5, 0.5 * PORT_WF1[p])
        # Frequency interpolation: pair n of port p is centred on local subcarrier 4n+1+Δ.
        k = np.arange(12 * n, dtype=np.float64)
        delta = np.array([PORT_CDM_GROUP[p] for p in range(n_ports)], dtype=np.float64)
        pos = (k[None, :] - 1.0 - delta[:, None]) / 4.0  # (P, 12n) in pair units
        i0 = np.clip(np.floor(pos), 0, 3 * n - 2).astype(np.int64)
        w = (pos - i0).astype(np.float32)
        # Time interpolation matrix from DM-RS symbols to data symbols.
        ds = np.array(pat.symbols, dtype=np.float64)
        t = np.array(self.data_symbols, dtype=np.float64)
        s_count = ds.shape[0]
        if self.time_interp == "average" or s_count == 1:
            t_mat = np.full((t.shape[0], s_count), 1.0 / s_count)
        else:
            tc = np.clip(t, ds[0], ds[-1])
            j = np.clip(np.searchsorted(ds, tc, side="right") - 1, 0, s_count - 2)
            a = (tc - ds[j]) / (ds[j + 1] - ds[j])
            t_mat = np.zeros((t.shape[0], s_count))
            t_mat[np.arange(t.shape[0]), j] = 1.0 - a
            t_mat[np.arange(t.shape[0]), j + 1] += a
        if n_ports <= 2:
            method: NoiseMethod = "empty_cdm_group"
        elif n_ports == 3:
            method = "unused_occ"
        elif s_count >= 2:
            method = "time_residual"
        else:
            method = "freq_residual"
        set_ = object.__setattr__
        set_(self, "noise_method", method)
        set_(self, "sc_start", 12 * pat.prb_start)
        set_(self, "n_groups", g_count)
        set_(self, "ref_conj", xp.asarray(ref_conj))
        set_(self, "occ", xp.asarray(occ))
        set_(self, "f_idx", xp.asarray(i0[None, :, None, :]))
        set_(self, "f_w", xp.asarray(w[None, :, None, :]))
        set_(self, "t_mat", xp.asarray(t_mat.astype(np.float32)))
        set_(self, "dmrs_sym", xp.asarray(np.array(pat.symbols, dtype=np.int64)))


def estimate(grid: Any, plan: ChanEstPlan) -> ChannelEstimate:
    """Estimate the channel and noise of one allocation from the received grid.

    ``grid``: ``(rx, 14, K)`` complex64 (after :meth:`OfdmPlan.demodulate`). Returns the
    channel at every data RE of the allocation (TS 38.211 §6.4.1.1.3 DM-RS mapping).
    """
    xp = plan.xp
    pat = plan.pattern
    n = pat.n_prb
    rx = grid.shape[0]
    k0 = plan.sc_start
    yd = grid[:, plan.dmrs_sym, k0 : k0 + 12 * n]  # (rx, S, 12n)
    s_count = yd.shape[1]
    # (rx, S, 6n, 2): [..., j, g] is the j-th RE of CDM group g (subcarrier 2j + g).
    yg = yd.reshape(rx, s_count, 6 * n, 2)
    z = yg[..., : plan.n_groups].transpose(0, 3, 1, 2) * plan.ref_conj[None]  # (rx,G,S,6n)
    z = z.reshape(rx, plan.n_groups, s_count, 3 * n, 2)
    h_pairs = xp.einsum("rgsnk,pgk->rpsn", z, plan.occ)  # (rx, P, S, 3n)
    # Noise variance, by the method fixed at plan time.
    if plan.noise_method == "empty_cdm_group":
        noise_var = xp.mean(xp.abs(yg[..., 1]) ** 2)
    elif plan.noise_method == "unused_occ":
        spare = 0.5 * (z[:, 1, ..., 0] - z[:, 1, ..., 1])  # port 3's code, unused
        noise_var = 4.0 * xp.mean(xp.abs(spare) ** 2)
    elif plan.noise_method == "time_residual":
        noise_var = 2.0 * xp.mean(xp.abs(h_pairs[:, :, 1:] - h_pairs[:, :, :-1]) ** 2)
    else:
        mid = h_pairs[..., 1:-1] - 0.5 * (h_pairs[..., :-2] + h_pairs[..., 2:])
        noise_var = (8.0 / 3.0) * xp.mean(xp.abs(mid) ** 2)
    noise_var = xp.maximum(noise_var, np.float32(1e-10)).astype(xp.float32)
    sig = xp.maximum(xp.mean(xp.abs(h_pairs) ** 2) - noise_var / 4.0, np.float32(1e-10))
    snr_db = (10.0 * xp.log10(sig / noise_var)).astype(xp.float32)
    # Frequency interpolation (linear) to every subcarrier of the allocation.
    p_count = h_pairs.shape[1]
    idx = xp.broadcast_to(plan.f_idx, (rx, p_count, s_count, 12 * n))
    left = xp.take_along_axis(h_pairs, idx, axis=-1)
    right = xp.take_along_axis(h_pairs, idx + 1, axis=-1)
    h_f = left + plan.f_w * (right - left)  # (rx, P, S, 12n)
    # Time interpolation to the data symbols, laid out as (RE, rx, layer).
    h = xp.einsum("ts,rpsk->tkrp", plan.t_mat, h_f).astype(xp.complex64)
    h = h.reshape(-1, rx, p_count)
    return ChannelEstimate(h=h, h_dmrs=h_pairs, noise_var=noise_var, snr_db=snr_db)
