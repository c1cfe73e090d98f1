"""Demodulation reference signals for PUSCH and PDSCH (TS 38.211 §6.4.1.1, §7.4.1.1).

Scope: DM-RS configuration type 1, single-symbol, mapping type A, antenna ports
``p̃ = 0..3`` (two CDM groups of two ports each), transform precoding disabled.

* Sequence (§6.4.1.1.1.1 / §7.4.1.1.1): ``r(m) = (1-2c(2m))/√2 + j(1-2c(2m+1))/√2`` with
  the Gold sequence of §5.2.1 seeded by
  ``c_init = (2^17 (14·n_s + l + 1)(2 N_ID + 1) + 2 N_ID + n_SCID) mod 2^31``
  (the Rel-16 ``2^17⌊λ/2⌋`` term is 0 for type-1 CDM groups 0 and 1). ``m`` counts from
  subcarrier 0 of the carrier grid (the grid is taken to start at common RB 0).
* Mapping (§6.4.1.1.3, Table 6.4.1.1.3-1; §7.4.1.1.2, Table 7.4.1.1.2-1):
  ``a(k, l) = β·w_f(k')·w_t(l')·r(2n + k')``, ``k = 4n + 2k' + Δ``, ``k' ∈ {0, 1}``:

  ====  =========  ===  ============
  port  CDM group  Δ    w_f(0), w_f(1)
  ====  =========  ===  ============
  0     0          0    +1, +1
  1     0          0    +1, -1
  2     1          1    +1, +1
  3     1          1    +1, -1
  ====  =========  ===  ============

  (``w_t = +1`` for single-symbol DM-RS.) Layer ``v`` is sent on port ``v``.
* Both CDM groups are declared "without data" (TS 38.212 Table 7.3.1.1.2-8/-10 rows with
  2 CDM groups), so DM-RS symbols carry no data and the DM-RS is boosted by
  ``β = √2`` (3 dB, TS 38.214 Table 6.2.2-1 / Table 4.1-1).
* Positions ``l̄`` (Table 6.4.1.1.3-3 / Table 7.4.1.1.2-3, type A, single symbol), with
  ``l0 = dmrs-TypeA-Position ∈ {2, 3}`` and ``l_d`` the duration from the slot start to
  the last scheduled symbol (see :func:`dmrs_symbols`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from airan.core.errors import FieldError
from airan.ran.phy.scrambling import gold_sequence

#: Largest number of layers (ports) supported: type 1, single symbol.
MAX_PORTS = 4
#: DM-RS amplitude scaling with two CDM groups without data (3 dB).
BETA_DMRS = float(np.sqrt(2.0))
#: Per port: CDM group λ, frequency offset Δ, and w_f(1) (w_f(0) = +1).
PORT_CDM_GROUP = (0, 0, 1, 1)
PORT_DELTA = (0, 0, 1, 1)
PORT_WF1 = (1.0, -1.0, 1.0, -1.0)

# Table 6.4.1.1.3-3 (PUSCH) / 7.4.1.1.2-3 (PDSCH), type A, single-symbol DM-RS:
# l_d -> positions beyond l0 for dmrs-AdditionalPosition 0..3 ("l0" implicit first).
_ADDITIONAL: dict[int, tuple[tuple[int, ...], ...]] = {
    4: ((), (), (), ()),
    5: ((), (), (), ()),
    6: ((), (), (), ()),
    7: ((), (), (), ()),
    8: ((), (7,), (7,), (7,)),
    9: ((), (7,), (7,), (7,)),
    10: ((), (9,), (6, 9), (6, 9)),
    11: ((), (9,), (6, 9), (6, 9)),
    12: ((), (9,), (6, 9), (5, 8, 11)),
    13: ((), (11,), (7, 11), (5, 8, 11)),
    14: ((), (11,), (7, 11), (5, 8, 11)),
}


def dmrs_symbols(
    start_symbol: int, n_symbols: int, add_pos: int = 1, typea_pos: int = 2
) -> tuple[int, ...]:
    """DM-RS symbol indices in the slot for a type-A allocation (Table 6.4.1.1.3-3).

    ``start_symbol`` and ``n_symbols`` give the scheduled symbols ``S..S+L-1``; type A
    needs ``S ≤ l0`` and ``l_d = S + L ∈ [4, 14]``. ``add_pos`` is
    dmrs-AdditionalPosition (0-3), ``typea_pos`` is dmrs-TypeA-Position ``l0`` (2 or 3).
    """
    if typea_pos not in (2, 3):
        raise FieldError("dmrs_typea_pos", f"must be 2 or 3, got {typea_pos!r}")
    if isinstance(add_pos, bool) or add_pos not in (0, 1, 2, 3):
        raise FieldError("dmrs_add_pos", f"must be 0, 1, 2 or 3, got {add_pos!r}")
    if not 0 <= start_symbol <= typea_pos:
        raise FieldError(
            "start_symbol",
            f"mapping type A needs 0 <= start_symbol <= l0={typea_pos}, got {start_symbol}",
        )
    l_d = start_symbol + n_symbols
    if l_d not in _ADDITIONAL or n_symbols < 1:
        raise FieldError(
            "n_symbols",
            f"start_symbol + n_symbols must be in [4, 14] (type A), got {start_symbol}"
            f" + {n_symbols}",
        )
    if typea_pos == 3 and add_pos == 3:
        raise FieldError("dmrs_add_pos", "3 is allowed only with dmrs-TypeA-Position 2")
    return (typea_pos, *_ADDITIONAL[l_d][add_pos])


def dmrs_c_init(slot: int, symbol: int, n_id: int, n_scid: int = 0) -> int:
    """``c_init`` of the DM-RS Gold sequence (TS 38.211 §6.4.1.1.1.1 / §7.4.1.1.1)."""
    if not 0 <= n_id <= 65535:
        raise FieldError("dmrs_n_id", f"must be in [0, 65535], got {n_id}")
    if n_scid not in (0, 1):
        raise FieldError("n_scid", f"must be 0 or 1, got {n_scid}")
    if not 0 <= symbol < 14:
        raise FieldError("symbol", f"must be in [0, 13], got {symbol}")
    if slot < 0:
        raise FieldError("slot", f"must be >= 0, got {slot}")
    return ((1 << 17) * (14 * slot + symbol + 1) * (2 * n_id + 1) + 2 * n_id + n_scid) % (1 << 31)


@functools.lru_cache(maxsize=512)
def _sequence(c_init: int, n: int) -> np.ndarray:
    c = gold_sequence(c_init, 2 * n).astype(np.float32)
    r = ((1.0 - 2.0 * c[0::2]) + 1j * (1.0 - 2.0 * c[1::2])) / np.sqrt(2.0)
    out: np.ndarray = r.astype(np.complex64)
    out.setflags(write=False)
    return out


def dmrs_sequence(
    slot: int, symbol: int, n_id: int, n_prb_grid: int, n_scid: int = 0
) -> np.ndarray:
    """``r(m)``, ``m = 0..6·N_grid-1``, for one DM-RS symbol of the whole grid (type 1).

    Subcarrier ``k`` of CDM group with offset ``Δ`` uses ``r((k - Δ)/2)``.
    """
    seq: np.ndarray = _sequence(dmrs_c_init(slot, symbol, n_id, n_scid), 6 * n_prb_grid)
    return seq


def port_weights(n_ports: int) -> np.ndarray:
    """``w_f(k')`` for the ``2·3`` DM-RS REs of each ``(n, k')`` pattern: ``(ports, 2)``."""
    if not 1 <= n_ports <= MAX_PORTS:
        raise FieldError("layers", f"must be in [1, {MAX_PORTS}], got {n_ports}")
    return np.array([[1.0, PORT_WF1[p]] for p in range(n_ports)], dtype=np.float32)


@dataclass(frozen=True)
class DmrsPattern:
    """The DM-RS of one allocation: positions and the transmitted values per port.

    ``symbols``: the DM-RS symbol indices; ``values``: ``(ports, n_dmrs, 6·n_prb)``
    complex64, the value port ``p`` puts on the ``j``-th RE of its CDM group,
    subcarrier ``12·prb_start + 2j + Δ_p`` (zero-free: every port's CDM group REs).
    """

    symbols: tuple[int, ...]
    prb_start: int
    n_prb: int
    n_ports: int
    values: np.ndarray

    def subcarriers(self, port: int) -> np.ndarray:
        """Grid subcarriers of ``port``'s CDM group within the allocation."""
        return 12 * self.prb_start + 2 * np.arange(6 * self.n_prb) + PORT_DELTA[port]


def dmrs_pattern(
    *,
    slot: int,
    symbols: tuple[int, ...],
    prb_start: int,
    n_prb: int,
    n_ports: int,
    n_id: int,
    n_prb_grid: int,
    n_scid: int = 0,
) -> DmrsPattern:
    """Build the DM-RS values of an allocation (TS 38.211 §6.4.1.1.3 / §7.4.1.1.2).

    ``values[p, i, j] = β·w_f(j mod 2)·r(6·prb_start + j)`` on DM-RS symbol ``symbols[i]``.
    """
    wf = port_weights(n_ports)  # (P, 2)
    if prb_start < 0 or n_prb < 1 or prb_start + n_prb > n_prb_grid:
        raise FieldError(
            "prb", f"[{prb_start}, {prb_start + n_prb}) is outside the grid [0, {n_prb_grid})"
        )
    seq = np.stack([dmrs_sequence(slot, s, n_id, n_prb_grid, n_scid) for s in symbols])[
        :, 6 * prb_start : 6 * (prb_start + n_prb)
    ]  # (S, 6n)
    w = np.tile(wf, (1, 3 * n_prb))  # (P, 6n): w_f(k') with k' = j mod 2
    values = (BETA_DMRS * w[:, None, :] * seq[None, :, :]).astype(np.complex64)
    values.setflags(write=False)
    return DmrsPattern(tuple(symbols), prb_start, n_prb, n_ports, values)
