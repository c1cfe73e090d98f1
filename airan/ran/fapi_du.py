"""The DU split as deployed: the L2 (MAC) in a process of its own, the L1 in the
arbiter's, FAPI-style messages over ZMQ between them (``docs/fapi.md``).

For every cell, :class:`FapiDu` binds an :class:`~airan.ran.fapi.L1Endpoint` on a
loopback port and starts a child process running the cell's
:class:`~airan.ran.mac.Mac` behind an :class:`~airan.ran.fapi.L2Endpoint`. The L1 owns
the timing (SCF 222): when the arbiter reaches slot ``m`` it closes the requests of
slot ``s = m + slot_ahead - 1`` (asked for by the SLOT.indication sent one slot
earlier) and sends SLOT.indication for ``s + slot_ahead``. The requests become the same
radio tasks as in :class:`~airan.ran.du.DuWorkload` (TS 38.211 §4.3 deadlines): the
PDSCH PDUs are encoded and modulated as given; the uplink replays the L1's test vectors
(see :mod:`airan.ran.l1`) and each PUSCH PDU's CRC.indication carries the decode
outcome of the test-vector UE it was mapped to. The MAC decides its HARQ outcomes with
its own link model, so it only counts those CRCs.

A request that comes late, malformed or for a slot never indicated is counted and
answered with ERROR.indication by the L1 endpoint; the run goes on (``fapi`` counters
in the report).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Iterator, Sequence
from typing import Any

from airan.core.errors import FieldError
from airan.core.slices import RanTask
from airan.ran import fapi
from airan.ran.config import RanConfig
from airan.ran.du import dl_task, ul_task
from airan.ran.l1 import L1Work


def _l2_main(endpoint: str, ran_json: str, seed: int, cell: int, timeout_s: float) -> None:
    """Child process: the cell's MAC behind the FAPI L2 endpoint, until STOP."""
    from airan.ran.mac import Mac

    config = RanConfig.model_validate_json(ran_json)
    mac = Mac(config, seed + 7919 * cell, cell=cell)
    sched = fapi.MacScheduler(mac)
    with fapi.L2Endpoint(endpoint, sched, cell=sched.cell, name=f"l2-cell{cell}") as l2:
        l2.run(timeout_s=timeout_s)


def pdu_grant(pdu: Any, config: RanConfig) -> Any:
    """A PUSCH/PDSCH PDU as the L1's :class:`~airan.ran.phy.pusch.SchGrant`."""
    from airan.ran.phy.pusch import SchGrant

    return SchGrant(
        rnti=pdu.rnti,
        prb_start=pdu.bwp_start + pdu.rb_start,
        n_prb=pdu.rb_size,
        qm=pdu.qm,
        code_rate=pdu.target_code_rate / 10240.0,
        tbs=pdu.tb_size_bits,
        layers=pdu.num_layers,
        rv=pdu.rv_index,
        start_symbol=pdu.start_symbol,
        n_symbols=pdu.nr_of_symbols,
        dmrs_add_pos=config.dmrs_additional_position,
        harq_id=pdu.harq_process_id,
    )


class FapiDu:
    """A DU of ``config.cells`` cells whose MACs run in child processes (FAPI over ZMQ)."""

    def __init__(
        self,
        config: RanConfig,
        seed: int,
        l1: Sequence[L1Work],
        *,
        start_timeout_s: float = 60.0,
        session_s: float = 86_400.0,
    ) -> None:
        if len(l1) != config.cells:
            raise FieldError("l1", f"one L1Work per cell: {config.cells} expected, got {len(l1)}")
        self.config = config
        self.l1 = tuple(l1)
        self.slot_ns = config.slot_ns
        self.l1_crc_ok = 0
        self.l1_crc_total = 0
        self.links: list[fapi.L1Endpoint] = []
        self._procs: list[Any] = []
        ctx = mp.get_context("spawn")
        try:
            for c in range(config.cells):
                cell = fapi.CellConfig(
                    cell_id=c, numerology=config.numerology, carrier_prbs=config.n_prb
                )
                ep = fapi.L1Endpoint(
                    "tcp://127.0.0.1:*", cell=cell, slot_ahead=config.slot_ahead, name=f"l1-cell{c}"
                )
                self.links.append(ep)
                proc = ctx.Process(
                    target=_l2_main,
                    args=(ep.endpoint, config.model_dump_json(), seed, c, session_s),
                    daemon=True,
                    name=f"airan-l2-cell{c}",
                )
                proc.start()
                self._procs.append(proc)
            for ep in self.links:
                if not ep.wait_for_start(start_timeout_s):
                    raise RuntimeError(f"{ep.name}: the L2 process sent no START.request")
        except BaseException:
            self.close()
            raise

    def describe(self) -> dict[str, Any]:
        return {
            "workload": "du",
            "l2": "separate process per cell, FAPI over ZMQ",
            "ran": self.config.model_dump(mode="json"),
            "synthetic": False,
        }

    def counters(self) -> dict[str, Any]:
        """Each cell's L1-endpoint counters (messages by type, late, rejected, lost)."""
        return {ep.name: ep.counters() for ep in self.links}

    def radio_tasks(self, start_ns: int, slots: int) -> Iterator[RanTask | int]:
        """As :meth:`airan.ran.du.DuWorkload.radio_tasks`, from the L2's FAPI requests.

        Before closing the requests of a slot it yields the time to be asked again
        (half a slot before the release of that slot's work), so the L1 ticks with the
        clock and never runs ahead of what the L2 has had time to send."""
        T = self.slot_ns
        ahead = self.config.slot_ahead
        lead = ahead - 1
        pending: dict[int, list[tuple[int, fapi.SlotRequest]]] = {}
        for m in range(slots + 1):
            for cell, ul in pending.pop(m - 1, []):  # slot m-1 has ended
                yield self._ul_task(start_ns, m - 1, cell, ul)
            s = m + lead
            if m == slots or s >= slots:
                continue
            yield start_ns + m * T - T // 2
            for cell, ep in enumerate(self.links):
                req = ep.tick(s, indicate=s + ahead < slots, last=s + ahead == slots - 1)
                if req is None:
                    continue
                if req.ul:
                    pending.setdefault(s, []).append((cell, req))
                if req.dl:
                    yield self._dl_task(start_ns, s, cell, req)

    def _ul_task(self, start_ns: int, n: int, cell: int, req: fapi.SlotRequest) -> RanTask:
        grants = [pdu_grant(p, self.config) for p in req.ul]
        l1 = self.l1[cell]
        ep = self.links[cell]
        fe, eq, dc = l1.ul_work(n, self._count_crc)

        def decode() -> object:
            res: list[Any] = dc()  # type: ignore[assignment]
            out = fapi.SlotResult()
            for i, p in enumerate(req.ul):
                r = res[i % len(res)]
                ok = bool(r.crc_ok)
                payload = (
                    fapi.expected_payload(req.sfn, req.slot, p.rnti, p.harq_process_id,
                                          p.tb_size_bits // 8)
                    if ok
                    else None
                )  # fmt: skip
                out.pusch.append(fapi.PuschResult(p.pdu_index, ok, float(r.snr_db), payload))
            ep.send_results(req, out)
            return res

        return ul_task(self.config, start_ns, n, cell, grants, (fe, eq, decode), l1.bound)

    def _dl_task(self, start_ns: int, n: int, cell: int, req: fapi.SlotRequest) -> RanTask:
        grants = [pdu_grant(p, self.config) for p in req.dl]
        l1 = self.l1[cell]
        work = l1.dl_work_grants(grants, req.slot)
        return dl_task(self.config, start_ns, n, cell, grants, work, l1.bound)

    def _count_crc(self, ok: int, total: int) -> None:
        self.l1_crc_ok += ok
        self.l1_crc_total += total

    def close(self, timeout_s: float = 5.0) -> None:
        """End the FAPI sessions (STOP handshake when possible) and the L2 processes."""
        deadline = time.monotonic() + timeout_s
        for ep in self.links:
            while not ep.stopped and ep.running and time.monotonic() < deadline:
                ep.poll(10)
        for ep in self.links:
            ep.close()
        for proc in self._procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(1.0)
