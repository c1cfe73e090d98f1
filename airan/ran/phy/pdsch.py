"""PDSCH transmit chain for one slot and several UEs (TS 38.211 §7.3.1, §7.4.1.1; TS 38.212 §7.2).

Per grant (:class:`~airan.ran.phy.pusch.SchGrant`, one codeword ``q = 0``)::

    DL-SCH coding (TS 38.212 §7.2: CRC, segmentation, LDPC, rate matching)  encode()
    → scrambling c_init = n_RNTI·2^15 + q·2^14 + n_ID (§7.3.1.1)            encode()
    → modulation (§7.3.1.2, §5.1)                                          modulate()
    → layer mapping x^(v)(i) = d(L·i + v) (§7.3.1.3, Table 7.3.1.3-1)
    → antenna port mapping, identity: layer v on port v (§7.3.1.4)
    → mapping to VRBs/PRBs, frequency first then time, around the DM-RS symbols
      (§7.3.1.5-§7.3.1.6, non-interleaved), DM-RS (§7.4.1.1, type 1, ``β = √2``)
    → OFDM modulation with CP for every port (§5.3.1)

``n_ports`` is the number of antenna ports of the transmitter (≥ every grant's
``layers``); each UE's layer ``v`` sits on port ``v`` inside its own PRBs, so the output
``(n_ports, samples)`` carries all UEs. Simulating uplink UEs separately (each through
its own channel) is a matter of transmitting each grant alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from airan.backend import array_module
from airan.core.errors import FieldError
from airan.ran.phy import coding
from airan.ran.phy.dmrs import MAX_PORTS, PORT_DELTA
from airan.ran.phy.modulation import modulate
from airan.ran.phy.ofdm import SC_PER_PRB, SYMBOLS_PER_SLOT, OfdmPlan, cp_lengths
from airan.ran.phy.pusch import (
    CellConfig,
    SchGrant,
    SlotPlan,
    UePlan,
    check_grant_set,
    plan_ue,
)

__all__ = ["CellConfig", "PdschTransmitter", "SchGrant"]


class PdschTransmitter:
    """PDSCH transmitter for one cell shape with ``n_ports`` antenna ports (1-4)."""

    def __init__(self, cell: CellConfig, n_ports: int, *, xp: ModuleType = np) -> None:
        if (
            isinstance(n_ports, bool)
            or not isinstance(n_ports, int)
            or not (1 <= n_ports <= MAX_PORTS)
        ):
            raise FieldError("n_ports", f"must be an integer in [1, {MAX_PORTS}], got {n_ports!r}")
        self.cell = cell
        self.n_ports = n_ports
        self.xp = xp
        self._ofdm: dict[tuple[int, ...], OfdmPlan] = {}
        self._cache: dict[tuple[tuple[SchGrant, ...], int], SlotPlan] = {}

    def ofdm(self, slot: int = 0) -> OfdmPlan:
        """The OFDM plan of ``slot``'s CP pattern (cached)."""
        key = tuple(int(c) for c in cp_lengths(self.cell.mu, self.cell.fft, slot))
        plan = self._ofdm.get(key)
        if plan is None:
            plan = OfdmPlan(self.cell.mu, self.cell.n_prb, self.cell.fft, slot, self.xp)
            self._ofdm[key] = plan
        return plan

    def plan(self, grants: Sequence[SchGrant], slot: int = 0) -> SlotPlan:
        """Validate the grants and precompute their constants (cached per grant set)."""
        key = (tuple(grants), int(slot))
        hit = self._cache.get(key)
        if hit is None:
            check_grant_set(self.cell, grants, self.n_ports, "tx ports")
            hit = SlotPlan(
                slot=int(slot),
                ues=tuple(
                    plan_ue(self.cell, g, slot, self.xp, index=i) for i, g in enumerate(grants)
                ),
            )
            if len(self._cache) >= 64:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = hit
        return hit

    def _as_plan(self, grants: Sequence[SchGrant] | SlotPlan, slot: int) -> SlotPlan:
        return grants if isinstance(grants, SlotPlan) else self.plan(grants, slot)

    def encode(
        self, grants: Sequence[SchGrant] | SlotPlan, payloads: Sequence[Any], slot: int = 0
    ) -> list[Any]:
        """TB coding and scrambling per grant (TS 38.212 §7.2; TS 38.211 §7.3.1.1).

        ``payloads[i]``: uint8 ``(tbs,)`` bits of grant ``i``. Returns the scrambled coded
        bits ``b̃`` (uint8 ``(G,)``) per grant, on the transmitter's device.
        """
        plan = self._as_plan(grants, slot)
        if len(payloads) != len(plan.ues):
            raise FieldError("payloads", f"expected {len(plan.ues)} payloads, got {len(payloads)}")
        xp = self.xp
        out = []
        for i, (ue, bits) in enumerate(zip(plan.ues, payloads, strict=True)):
            b = xp.asarray(bits)
            if b.shape != (ue.grant.tbs,):
                raise FieldError(
                    f"payloads[{i}]", f"must have shape ({ue.grant.tbs},), got {tuple(b.shape)}"
                )
            coded = coding.encode_tb(b.astype(xp.uint8), ue.tb)
            # Scrambling as a multiply by the precomputed signs: b̃ = b xor c.
            c = (ue.signs < 0).astype(xp.uint8)
            out.append((coded.astype(xp.uint8) ^ c).astype(xp.uint8))
        return out

    def map_grid(
        self, grants: Sequence[SchGrant] | SlotPlan, coded: Sequence[Any], slot: int = 0
    ) -> Any:
        """Modulation, layer mapping, DM-RS and resource mapping → grid
        ``(n_ports, 14, K)`` complex64 (TS 38.211 §7.3.1.2-§7.3.1.6, §7.4.1.1.2)."""
        plan = self._as_plan(grants, slot)
        if len(coded) != len(plan.ues):
            raise FieldError("coded", f"expected {len(plan.ues)} codewords, got {len(coded)}")
        xp = self.xp
        k = self.cell.n_prb * SC_PER_PRB
        grid = xp.zeros((self.n_ports, SYMBOLS_PER_SLOT, k), dtype=xp.complex64)
        for i, (ue, bits) in enumerate(zip(plan.ues, coded, strict=True)):
            if bits.shape != (ue.g_bits,):
                raise FieldError(f"coded[{i}]", f"must have shape ({ue.g_bits},), got {bits.shape}")
            _map_ue(grid, ue, modulate(bits, ue.grant.qm))
        return grid

    def modulate(
        self, grants: Sequence[SchGrant] | SlotPlan, coded: Sequence[Any], slot: int = 0
    ) -> Any:
        """:meth:`map_grid` then OFDM with CP: time samples ``(n_ports, samples)``."""
        return self.ofdm(slot).modulate(self.map_grid(grants, coded, slot))

    def transmit(self, grants: Sequence[SchGrant], payloads: Sequence[Any], slot: int = 0) -> Any:
        """:meth:`encode` then :meth:`modulate` for one slot."""
        plan = self.plan(grants, slot)
        return self.modulate(plan, self.encode(plan, payloads), slot)


def _map_ue(grid: Any, ue: UePlan, d: Any) -> None:
    """Write one UE's layer symbols and DM-RS into ``grid`` (ports, 14, K), in place.

    Layer mapping §7.3.1.3: ``x^(v)(i) = d(L·i + v)``, i.e. ``d`` reshaped ``(n_re, L)``;
    RE ``i`` of a layer is subcarrier ``i mod 12n`` of the ``i // 12n``-th data symbol
    (frequency first, §7.3.1.5).
    """
    xp = array_module(grid)
    g = ue.grant
    n_sc = SC_PER_PRB * g.n_prb
    x = d.reshape(ue.n_re, g.layers).T.reshape(g.layers, len(ue.data_symbols), n_sc)
    grid[: g.layers, ue.data_sym, ue.sc : ue.sc + n_sc] = x
    # DM-RS: port p on subcarriers sc + 2j + Δ_p of every DM-RS symbol.
    ports = np.arange(g.layers)
    sc = ue.sc + 2 * np.arange(6 * g.n_prb)[None, :] + np.array(PORT_DELTA)[ports][:, None]
    syms = np.array(ue.dmrs.symbols)
    pi = xp.asarray(ports[:, None, None])
    si = xp.asarray(syms[None, :, None])
    ki = xp.asarray(sc[:, None, :])
    grid[pi, si, ki] = xp.asarray(ue.dmrs.values)
