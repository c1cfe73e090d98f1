"""FAPI-style L2 <-> L1 interface over pyzmq (SCF 222 "5G FAPI: PHY API", P5/P7 subset).

Protobuf messages (``proto/airan/fapi/v1/fapi.proto``) carried over ZMQ, so the MAC (L2)
and the PHY (L1) can run in separate processes (``tcp://``) or in one (``inproc://``).

* **Codec** -- :func:`encode` / :func:`decode` (= :func:`parse` + :func:`validate`): every
  field is checked semantically; bad input raises :class:`FapiError` carrying the SCF 222
  ERROR.indication code and the dotted name of the offending field.
* **Timing** (TS 38.211 §4.3: 10 ms frames, SFN 0..1023, ``10·2^µ`` slots per frame of
  ``1 ms / 2^µ``) -- the L1 owns the slot clock. At the start of slot ``n`` it sends
  SLOT.indication for slot ``n + slot_ahead`` and processes slot ``n`` with the
  UL_TTI.request / DL_TTI.request / TX_DATA.request that arrived for it. Anything for a
  slot already processed is *late* (MSG_SLOT_ERR); for a slot never indicated,
  SFN_OUT_OF_SYNC.
* :class:`L1Endpoint` -- the PHY side (ZMQ ROUTER, binds). :meth:`L1Endpoint.tick` is
  the non-blocking step an external scheduler loop drives; :meth:`L1Endpoint.run` is the
  free-running clock around it. Slot processing is pluggable (:class:`SlotHandler`).
* :class:`L2Endpoint` -- the MAC side (ZMQ DEALER, connects): answers SLOT.indication
  through a pluggable :class:`SlotScheduler`, delivers CRC.indication / RX_DATA.indication
  to callbacks.
* Every message sent, received and rejected is counted per type and reason
  (:meth:`L1Endpoint.counters`), the future O1/E2 measurements.

Run the two ends as processes (each prints a JSON summary of its counters at the end)::

    python -m airan.ran.fapi l1 --endpoint tcp://127.0.0.1:5555 --slots 10000 --numerology 1
    python -m airan.ran.fapi l2 --endpoint tcp://127.0.0.1:5555 --numerology 1

See ``docs/fapi.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, TypeAlias

import zmq

from airan.core.errors import FieldError
from airan.fapi.v1 import fapi_pb2 as pb
from airan.ran.numerology import (
    SFN_PERIOD,
    SYMBOLS_PER_SLOT,
    SlotId,
    check_mu,
    slot_duration_ns,
    slot_start_ns,
    slots_per_frame,
)

if TYPE_CHECKING:
    from airan.ran.mac import Grant, Mac

__all__ = [
    "DEFAULT_CELL",
    "FAPI_VERSION",
    "CellConfig",
    "EchoHandler",
    "FapiCounters",
    "FapiError",
    "FixedScheduler",
    "L1Endpoint",
    "L2Endpoint",
    "MacScheduler",
    "PuschResult",
    "Schedule",
    "SlotHandler",
    "SlotRequest",
    "SlotResult",
    "SlotScheduler",
    "check_tx_data",
    "decode",
    "encode",
    "expected_payload",
    "main",
    "message_name",
    "num_code_blocks",
    "parse",
    "validate",
]

log = logging.getLogger(__name__)

FAPI_VERSION: Final = 1
"""Version of this interface carried in every envelope (``FapiMessage.version``)."""

MAX_MESSAGE_BYTES: Final = 8 << 20
"""Largest message accepted (also the sockets' ZMQ_MAXMSGSIZE): bounded memory per message."""

DEFAULT_HWM: Final = 4096
"""ZMQ high-water mark (messages) of every socket: bounded buffering (a second or two of
slots at µ=1) that rides out a stalled peer instead of failing at once."""

DEFAULT_MAX_PER_TICK: Final = 64
"""Messages the L1 takes from its socket per slot tick (or per wait between ticks), at
most: about 1.4 ms of refusals on a 2-vCPU VM, room for a few cells' 3 requests per slot.
An L2 (or any peer) that floods costs a slot a bounded time; the rest waits in the
socket's queue, itself bounded by the high-water mark, and the flooder's sends then
block or fail on its side."""

MAX_RNTI: Final = 0xFFEF  # C-RNTI 0x0001..0xFFEF (TS 38.321 Table 7.1-1)
MAX_PRBS: Final = 275  # largest N_RB of TS 38.101-1/-2 Table 5.3.2-1
MAX_HARQ_ID: Final = 15  # 16 HARQ processes (TS 38.321 §5.3.2.1 / §5.4.2.1)
MAX_SENDER_LEN: Final = 64
MAX_TEXT_LEN: Final = 512
SUBCARRIERS_PER_RB: Final = 12

ErrorCodeValue: TypeAlias = pb.ErrorCode.ValueType
MessageTypeValue: TypeAlias = pb.MessageType.ValueType
PuschPdu = pb.PuschPdu
PdschPdu = pb.PdschPdu
FapiMessage = pb.FapiMessage

# oneof body field -> (SCF 222 message name, SCF message type id)
_BODIES: Final[dict[str, tuple[str, MessageTypeValue]]] = {
    "start_request": ("START.request", pb.MESSAGE_TYPE_START_REQUEST),
    "stop_request": ("STOP.request", pb.MESSAGE_TYPE_STOP_REQUEST),
    "stop_indication": ("STOP.indication", pb.MESSAGE_TYPE_STOP_INDICATION),
    "error_indication": ("ERROR.indication", pb.MESSAGE_TYPE_ERROR_INDICATION),
    "slot_indication": ("SLOT.indication", pb.MESSAGE_TYPE_SLOT_INDICATION),
    "dl_tti_request": ("DL_TTI.request", pb.MESSAGE_TYPE_DL_TTI_REQUEST),
    "ul_tti_request": ("UL_TTI.request", pb.MESSAGE_TYPE_UL_TTI_REQUEST),
    "tx_data_request": ("TX_DATA.request", pb.MESSAGE_TYPE_TX_DATA_REQUEST),
    "rx_data_indication": ("RX_DATA.indication", pb.MESSAGE_TYPE_RX_DATA_INDICATION),
    "crc_indication": ("CRC.indication", pb.MESSAGE_TYPE_CRC_INDICATION),
}
_NAME_BY_TYPE: Final[dict[int, str]] = {t: n for n, t in _BODIES.values()}
_KNOWN_ERROR_CODES: Final = frozenset(pb.ErrorCode.values())
_KNOWN_MESSAGE_TYPES: Final = frozenset(pb.MessageType.values())


# -- errors and cell configuration --------------------------------------------------------


class FapiError(FieldError):
    """A FAPI message is not acceptable: ``code`` is the SCF 222 ERROR.indication error
    code (``pb.MSG_INVALID_CONFIG``, ``pb.MSG_SLOT_ERR``, ...) that an L1 answers with,
    ``field`` the dotted name of the offending field, ``reason`` what is wrong."""

    def __init__(self, code: ErrorCodeValue, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.code = code
        self.args = (f"{self.code_name} {field}: {reason}",)

    @property
    def code_name(self) -> str:
        """The SCF name of :attr:`code` (``"MSG_SLOT_ERR"``)."""
        return pb.ErrorCode.Name(self.code)


@dataclass(frozen=True, slots=True)
class CellConfig:
    """What both ends know of the cell (SCF 222 CONFIG.request is not carried: each end is
    configured locally and every message is checked against this).

    ``numerology`` is µ of TS 38.211 §4.2 (0..3), ``carrier_prbs`` the carrier's N_RB
    (TS 38.101 Table 5.3.2-1, at most 275), ``max_pdus`` the PDUs one request may carry.
    """

    cell_id: int = 0
    numerology: int = 1
    carrier_prbs: int = 273
    max_layers: int = 4
    max_pdus: int = 255
    _spf: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        if not 0 <= self.cell_id <= 0xFFFFFFFF:
            raise FieldError("CellConfig.cell_id", f"must be in 0..2^32-1 (got {self.cell_id})")
        check_mu(self.numerology, "CellConfig.numerology")
        if not 1 <= self.carrier_prbs <= MAX_PRBS:
            raise FieldError(
                "CellConfig.carrier_prbs", f"must be in 1..{MAX_PRBS} (got {self.carrier_prbs})"
            )
        if not 1 <= self.max_layers <= 4:
            raise FieldError("CellConfig.max_layers", f"must be in 1..4 (got {self.max_layers})")
        if not 1 <= self.max_pdus <= 65535:
            raise FieldError("CellConfig.max_pdus", f"must be in 1..65535 (got {self.max_pdus})")
        object.__setattr__(self, "_spf", slots_per_frame(self.numerology))

    @property
    def slots_per_frame(self) -> int:
        """N_slot^frame,µ = 10·2^µ (TS 38.211 Table 4.3.2-1)."""
        return self._spf

    @property
    def period(self) -> int:
        """Slots in one SFN period of 1024 frames (TS 38.211 §4.3.1)."""
        return SFN_PERIOD * self.slots_per_frame

    @property
    def slot_ns(self) -> int:
        """Nominal slot length 1 ms / 2^µ in ns."""
        return slot_duration_ns(self.numerology)

    def sfn_slot(self, abs_slot: int) -> tuple[int, int]:
        """(SFN, slot) of an absolute slot count, wrapped at 1024 frames."""
        return divmod(abs_slot % self.period, self.slots_per_frame)


DEFAULT_CELL: Final = CellConfig()


def message_name(msg: FapiMessage) -> str:
    """SCF 222 name of the message's body (``"UL_TTI.request"``), ``"unknown"`` if none."""
    body = msg.WhichOneof("body")
    return _BODIES[body][0] if body is not None else "unknown"


def _message_type(msg: FapiMessage) -> MessageTypeValue:
    body = msg.WhichOneof("body")
    return _BODIES[body][1] if body is not None else pb.MESSAGE_TYPE_UNSPECIFIED


# -- codec ----------------------------------------------------------------------------------


def _bad(where: str, name: str, reason: str, code: ErrorCodeValue = pb.MSG_INVALID_CONFIG) -> None:
    raise FapiError(code, f"{where}.{name}" if where else name, reason)


def _rng(v: int, lo: int, hi: int, where: str, name: str) -> None:
    if not lo <= v <= hi:
        _bad(where, name, f"must be in {lo}..{hi} (got {v})")


def _unique_indices(pdus: Sequence[Any], where: str, cell: CellConfig) -> None:
    if len(pdus) > cell.max_pdus:
        _bad(where, "pdus", f"at most {cell.max_pdus} PDUs per message (got {len(pdus)})")
    seen: set[int] = set()
    for i, p in enumerate(pdus):
        idx: int = p.pdu_index
        if idx in seen:
            _bad(f"{where}.pdus[{i}]", "pdu_index", f"duplicate pdu_index {idx}")
        seen.add(idx)


def _check_sch_pdu(p: PuschPdu | PdschPdu, where: str, cell: CellConfig, max_table: int) -> None:
    """Semantic checks of one PUSCH/PDSCH PDU (SCF 222 UL_TTI.request PUSCH PDU /
    DL_TTI.request PDSCH PDU; allocation per TS 38.214 §5.1.2 / §6.1.2)."""
    _rng(p.rnti, 1, MAX_RNTI, where, "rnti")
    _rng(p.snssai.sst, 0, 255, where, "snssai.sst")
    _rng(p.snssai.sd, 0, 0xFFFFFF, where, "snssai.sd")
    _rng(p.bwp_size, 1, MAX_PRBS, where, "bwp_size")
    if p.bwp_start + p.bwp_size > cell.carrier_prbs:
        _bad(
            where,
            "bwp_size",
            f"BWP of CRBs {p.bwp_start}..{p.bwp_start + p.bwp_size - 1} exceeds the "
            f"carrier's {cell.carrier_prbs} PRBs",
        )
    _rng(p.rb_size, 1, p.bwp_size, where, "rb_size")
    if p.rb_start + p.rb_size > p.bwp_size:
        _bad(
            where,
            "rb_start",
            f"PRBs {p.rb_start}..{p.rb_start + p.rb_size - 1} exceed the BWP of {p.bwp_size} PRBs",
        )
    _rng(p.start_symbol, 0, SYMBOLS_PER_SLOT - 1, where, "start_symbol")
    _rng(p.nr_of_symbols, 1, SYMBOLS_PER_SLOT - p.start_symbol, where, "nr_of_symbols")
    alloc = ((1 << p.nr_of_symbols) - 1) << p.start_symbol
    dmrs = p.dmrs_symbol_positions
    if dmrs == 0 or dmrs & ~alloc:
        _bad(
            where,
            "dmrs_symbol_positions",
            f"must mark at least one DM-RS symbol, all within the allocated symbols "
            f"{p.start_symbol}..{p.start_symbol + p.nr_of_symbols - 1} (got {dmrs:#06x})",
        )
    _rng(p.mcs_index, 0, 31, where, "mcs_index")
    _rng(p.mcs_table, 0, max_table, where, "mcs_table")
    if p.qm not in (2, 4, 6, 8):
        _bad(where, "qm", f"modulation order must be 2, 4, 6 or 8 (got {p.qm})")
    if p.qm == 8 and p.mcs_table != 1:
        _bad(where, "qm", f"256QAM (qm=8) needs mcs_table 1, qam256 (got {p.mcs_table})")
    _rng(p.target_code_rate, 1, 10239, where, "target_code_rate")
    _rng(p.num_layers, 1, cell.max_layers, where, "num_layers")
    tb = p.tb_size_bits
    if tb == 0:
        _bad(where, "tb_size_bits", "must be > 0")
    if tb % 8:
        _bad(where, "tb_size_bits", f"must be whole bytes, a multiple of 8 (got {tb})")
    cap = p.rb_size * SUBCARRIERS_PER_RB * p.nr_of_symbols * p.qm * p.num_layers
    if tb > cap:
        _bad(where, "tb_size_bits", f"{tb} bits exceed the allocation's {cap} coded bits")
    _rng(p.harq_process_id, 0, MAX_HARQ_ID, where, "harq_process_id")
    _rng(p.rv_index, 0, 3, where, "rv_index")


def _check_body(msg: FapiMessage, body: str, cell: CellConfig) -> None:
    if body == "ul_tti_request":
        w = "ul_tti_request"
        ul = msg.ul_tti_request.pdus
        _unique_indices(ul, w, cell)
        for i, pu in enumerate(ul):
            _check_sch_pdu(pu, f"{w}.pdus[{i}]", cell, 4)
    elif body == "dl_tti_request":
        w = "dl_tti_request"
        dl = msg.dl_tti_request.pdus
        _unique_indices(dl, w, cell)
        for i, pd in enumerate(dl):
            _check_sch_pdu(pd, f"{w}.pdus[{i}]", cell, 2)
    elif body == "tx_data_request":
        w = "tx_data_request"
        tx = msg.tx_data_request.pdus
        _unique_indices(tx, w, cell)
        for i, t in enumerate(tx):
            if not t.payload:
                _bad(f"{w}.pdus[{i}]", "payload", "must not be empty")
    elif body == "crc_indication":
        w = "crc_indication"
        crc = msg.crc_indication.pdus
        _unique_indices(crc, w, cell)
        for i, c in enumerate(crc):
            wi = f"{w}.pdus[{i}]"
            _rng(c.rnti, 1, MAX_RNTI, wi, "rnti")
            _rng(c.harq_id, 0, MAX_HARQ_ID, wi, "harq_id")
            if not (math.isfinite(c.ul_sinr_db) and -64.0 <= c.ul_sinr_db <= 64.0):
                _bad(wi, "ul_sinr_db", f"must be finite, in -64..64 dB (got {c.ul_sinr_db})")
            if c.HasField("timing_advance"):
                _rng(c.timing_advance, 0, 63, wi, "timing_advance")
            _rng(c.num_cb, 1, 1 << 16, wi, "num_cb")
            _rng(c.num_cb_ok, 0, c.num_cb, wi, "num_cb_ok")
            if c.tb_crc_ok and c.num_cb_ok != c.num_cb:
                _bad(wi, "num_cb_ok", "a TB that passed CRC has every code block ok")
    elif body == "rx_data_indication":
        w = "rx_data_indication"
        rx = msg.rx_data_indication.pdus
        _unique_indices(rx, w, cell)
        for i, r in enumerate(rx):
            wi = f"{w}.pdus[{i}]"
            _rng(r.rnti, 1, MAX_RNTI, wi, "rnti")
            _rng(r.harq_id, 0, MAX_HARQ_ID, wi, "harq_id")
            if not r.payload:
                _bad(wi, "payload", "must not be empty")
    elif body == "error_indication":
        w = "error_indication"
        e = msg.error_indication
        if e.error_code not in _KNOWN_ERROR_CODES:
            _bad(w, "error_code", f"unknown error code {e.error_code}")
        if e.message_type not in _KNOWN_MESSAGE_TYPES:
            _bad(w, "message_type", f"unknown message type {e.message_type}")
        if len(e.field) > MAX_TEXT_LEN or len(e.reason) > MAX_TEXT_LEN:
            _bad(w, "reason", f"field and reason are at most {MAX_TEXT_LEN} characters")
        if e.HasField("rejected_sfn"):
            _rng(e.rejected_sfn, 0, SFN_PERIOD - 1, w, "rejected_sfn")
        if e.HasField("rejected_slot"):
            _rng(e.rejected_slot, 0, cell.slots_per_frame - 1, w, "rejected_slot")
    # start/stop requests, STOP.indication and SLOT.indication carry nothing to check


def parse(data: bytes) -> FapiMessage:
    """Parse wire bytes into a :class:`FapiMessage` without semantic checks.

    Raises :class:`FapiError` (MSG_MALFORMED, field ``"data"``) for anything that is not
    a protobuf-encoded FapiMessage of at most :data:`MAX_MESSAGE_BYTES` bytes."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FapiError(pb.MSG_MALFORMED, "data", f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise FapiError(pb.MSG_MALFORMED, "data", f"{len(data)} bytes > {MAX_MESSAGE_BYTES}")
    msg = FapiMessage()
    try:
        msg.ParseFromString(bytes(data))
    except Exception as exc:  # DecodeError; other backends may raise other errors
        raise FapiError(pb.MSG_MALFORMED, "data", f"not a FapiMessage ({exc})") from None
    return msg


def validate(msg: FapiMessage, cell: CellConfig = DEFAULT_CELL) -> None:
    """Check a message semantically against the cell; raise :class:`FapiError` if it fails.

    Envelope (SCF 222 message header + P7 SFN/slot, TS 38.211 §4.3): version, message id
    ≥ 1, sender name, cell id, SFN 0..1023, slot < 10·2^µ, send time. Body: known type;
    per PUSCH/PDSCH PDU: RNTI, S-NSSAI, BWP within the carrier, PRBs within the BWP,
    symbols within the slot, DM-RS inside the allocation, MCS index/table, Qm ∈ {2,4,6,8}
    (8 only with the 256QAM table), code rate, layers 1..4, TB size > 0 in whole bytes and
    within the allocation, HARQ id 0..15, RV 0..3, unique PDU indices; CRC/RX_DATA/ERROR
    fields likewise. The TX_DATA payload lengths need the slot's DL_TTI.request: see
    :func:`check_tx_data`.
    """
    if msg.version != FAPI_VERSION:
        raise FapiError(
            pb.MSG_INVALID_VERSION, "version", f"must be {FAPI_VERSION} (got {msg.version})"
        )
    if msg.message_id == 0:
        _bad("", "message_id", "must be >= 1 (a per-sender sequence number)")
    if not 1 <= len(msg.sender) <= MAX_SENDER_LEN:
        _bad("", "sender", f"must be 1..{MAX_SENDER_LEN} characters (got {len(msg.sender)})")
    if msg.cell_id != cell.cell_id:
        raise FapiError(
            pb.MSG_INVALID_PHY_ID,
            "cell_id",
            f"this end serves cell {cell.cell_id}, not {msg.cell_id}",
        )
    if msg.sfn >= SFN_PERIOD:
        raise FapiError(
            pb.MSG_INVALID_SFN, "sfn", f"must be in 0..{SFN_PERIOD - 1} (got {msg.sfn})"
        )
    spf = cell.slots_per_frame
    if msg.slot >= spf:
        raise FapiError(
            pb.MSG_INVALID_SFN,
            "slot",
            f"must be in 0..{spf - 1} for numerology {cell.numerology} (got {msg.slot})",
        )
    if msg.send_time_ns == 0:
        _bad("", "send_time_ns", "must be set (ns since the epoch)")
    body = msg.WhichOneof("body")
    if body is None:
        raise FapiError(pb.MSG_UNKNOWN_BODY, "body", "no message body this version knows")
    _check_body(msg, body, cell)


def decode(data: bytes, cell: CellConfig = DEFAULT_CELL) -> FapiMessage:
    """Parse and validate wire bytes (:func:`parse` then :func:`validate`).

    Never raises anything but :class:`FapiError` for bad input."""
    msg = parse(data)
    validate(msg, cell)
    return msg


def encode(msg: FapiMessage, cell: CellConfig = DEFAULT_CELL, *, check: bool = True) -> bytes:
    """Serialize a message; with ``check`` (default) it is first validated like
    :func:`decode` would, so a bad message fails at its sender with the field named."""
    if check:
        validate(msg, cell)
    return msg.SerializeToString()


def check_tx_data(
    dl_pdus: Sequence[PdschPdu], tx: pb.TxDataRequest, where: str = "tx_data_request"
) -> None:
    """TX_DATA.request against the same slot's DL_TTI.request (SCF 222 TX_DATA.request):
    each payload belongs to a PDSCH PDU of the slot and is exactly ``tb_size_bits / 8``
    bytes. Raises :class:`FapiError` with MSG_TX_ERR."""
    tbs = {p.pdu_index: p.tb_size_bits for p in dl_pdus}
    for i, t in enumerate(tx.pdus):
        if t.pdu_index not in tbs:
            raise FapiError(
                pb.MSG_TX_ERR,
                f"{where}.pdus[{i}].pdu_index",
                f"no PDSCH PDU {t.pdu_index} in the slot's DL_TTI.request",
            )
        want = tbs[t.pdu_index] // 8
        if len(t.payload) != want:
            raise FapiError(
                pb.MSG_TX_ERR,
                f"{where}.pdus[{i}].payload",
                f"{len(t.payload)} bytes, but the PDSCH PDU's TB is {want} bytes",
            )


def num_code_blocks(tb_size_bits: int, code_rate_x10240: int) -> int:
    """Code blocks C of a transport block (TS 38.212 §7.2.2 / §6.2.2 LDPC base graph
    selection, §5.2.2 code block segmentation)."""
    a = tb_size_bits
    r = code_rate_x10240 / 10240
    bg2 = a <= 292 or (a <= 3824 and r <= 0.67) or r <= 0.25
    b = a + (24 if a > 3824 else 16)
    kcb = 3840 if bg2 else 8448
    return 1 if b <= kcb else math.ceil(b / (kcb - 24))


def expected_payload(
    sfn: int, slot: int, rnti: int, harq_id: int, nbytes: int, *, uplink: bool = True
) -> bytes:
    """Deterministic transport-block bytes for tests and demos: both ends can compute what
    a TB of (SFN, slot, RNTI, HARQ id, direction) carries and check it end to end."""
    seed = (((sfn * 1024 + slot) * 65536 + rnti) * 16 + harq_id) * 2 + int(uplink)
    return random.Random(seed).randbytes(nbytes)


# -- counters -------------------------------------------------------------------------------


def _quantiles_us(samples: Sequence[int]) -> dict[str, float]:
    if not samples:
        return {"n": 0}
    s = sorted(samples)
    n = len(s)

    def q(p: float) -> float:
        return round(s[min(n - 1, int(p * n))] / 1000, 1)

    return {"n": n, "p50": q(0.5), "p99": q(0.99), "max": round(s[-1] / 1000, 1)}


class FapiCounters:
    """Counters of one endpoint (future O1/E2 measurements).

    ``sent`` / ``received`` / ``send_failed``: by SCF message name; ``received`` counts
    the messages accepted, ``rejected`` the refused ones by reason (ERROR.indication
    code name) and ``rejected_by_type`` by message name (``"unknown"`` when unreadable),
    so arrivals of a type = ``received + rejected_by_type``. ``seq_gaps``: messages
    missing by sequence number (lost). ``events``: everything else (slots processed,
    overruns, handler errors, ...). Latencies are bounded samples (last 65,536)."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.rejected_by_type: Counter[str] = Counter()
        self.send_failed: Counter[str] = Counter()
        self.errors_received: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.seq_gaps = 0
        self.one_way_ns: deque[int] = deque(maxlen=65536)
        self.tick_late_ns: deque[int] = deque(maxlen=65536)
        self.request_margin_ns: deque[int] = deque(maxlen=65536)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot."""
        return {
            "sent": dict(self.sent),
            "received": dict(self.received),
            "rejected": dict(self.rejected),
            "rejected_by_type": dict(self.rejected_by_type),
            "send_failed": dict(self.send_failed),
            "errors_received": dict(self.errors_received),
            "events": dict(self.events),
            "seq_gaps": self.seq_gaps,
            "one_way_latency_us": _quantiles_us(self.one_way_ns),
            "tick_late_us": _quantiles_us(self.tick_late_ns),
            "request_margin_us": _quantiles_us(self.request_margin_ns),
        }


class _RateLimitedLog:
    """Log the first ``first`` occurrences of each key, then every ``every``-th."""

    def __init__(self, first: int = 10, every: int = 1000) -> None:
        self.first = first
        self.every = every
        self.seen: Counter[str] = Counter()

    def warning(self, key: str, fmt: str, *args: object) -> None:
        self.seen[key] += 1
        n = self.seen[key]
        if n <= self.first or n % self.every == 0:
            log.warning(fmt + " [%s #%d]", *args, key, n)


# -- endpoint plumbing ------------------------------------------------------------------------

ZmqContext = zmq.Context[zmq.Socket[bytes]]
ZmqSocket = zmq.Socket[bytes]


class _Endpoint:
    """What both ends share: envelope stamping, sequence checks, counters, close."""

    def __init__(self, sock: ZmqSocket, name: str, cell: CellConfig, hwm: int) -> None:
        if not 1 <= len(name) <= MAX_SENDER_LEN:
            raise FieldError("name", f"must be 1..{MAX_SENDER_LEN} characters")
        if hwm < 1:
            raise FieldError("hwm", "must be >= 1 (0 would mean unbounded buffering)")
        self.name = name
        self.cell = cell
        self.stats = FapiCounters()
        self._sock = sock
        self._seq: OrderedDict[bytes, int] = OrderedDict()  # per destination
        #: last message_id per (ZMQ peer, sender name): a peer cannot spend another's ids
        self._last_seq: OrderedDict[tuple[bytes, str], int] = OrderedDict()
        self._log = _RateLimitedLog()
        self._closed = False
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES + 4096)

    def _envelope(self, sfn: int, slot: int) -> FapiMessage:
        """A message header; ``message_id`` and ``send_time_ns`` are stamped by :meth:`_encode`."""
        return FapiMessage(
            version=FAPI_VERSION, sender=self.name, cell_id=self.cell.cell_id, sfn=sfn, slot=slot
        )

    def _encode_batch(self, dest: bytes, msgs: Sequence[FapiMessage]) -> list[bytes]:
        """Stamp the next sequence numbers towards ``dest`` and the send time, validate,
        serialize. Each destination sees its own 1, 2, 3, ...; the numbers are only used
        up by :meth:`_sent`, so messages that are never sent leave no gap."""
        now = time.time_ns()
        base = self._seq.get(dest, 0)
        out = []
        for i, msg in enumerate(msgs, start=1):
            msg.message_id = base + i
            msg.send_time_ns = now
            out.append(encode(msg, self.cell))
        return out

    def _sent(self, dest: bytes, msgs: Sequence[FapiMessage]) -> None:
        for msg in msgs:
            self.stats.sent[message_name(msg)] += 1
        self._seq[dest] = self._seq.get(dest, 0) + len(msgs)
        self._seq.move_to_end(dest)
        while len(self._seq) > 64:
            self._seq.popitem(last=False)

    def _send_failed(self, msgs: Sequence[FapiMessage], why: object) -> None:
        names = [message_name(m) for m in msgs]
        for name in names:
            self.stats.send_failed[name] += 1
        self._log.warning("send_failed", "%s: cannot send %s: %s", self.name, names, why)

    def _note_arrival(self, msg: FapiMessage) -> None:
        self.stats.one_way_ns.append(max(0, time.time_ns() - msg.send_time_ns))

    def _check_seq(self, msg: FapiMessage, peer: bytes = b"") -> FapiError | None:
        """Per-sender sequence: a non-increasing id is a duplicate; a jump counts lost ones.

        Keyed by the ZMQ peer (its routing id) and the sender name in the message, so a
        peer that claims another's name uses up only its own ids: it cannot make the real
        sender's next messages look like duplicates."""
        sender = msg.sender
        key = (peer, sender)
        if msg.HasField("start_request"):
            self._last_seq.pop(key, None)  # a (re)started peer counts from 1 again
        last = self._last_seq.get(key, 0)
        if msg.message_id <= last:
            return FapiError(
                pb.MSG_DUPLICATE,
                "message_id",
                f"{msg.message_id} from {sender!r} already seen (last {last})",
            )
        if last and msg.message_id > last + 1:
            self.stats.seq_gaps += msg.message_id - last - 1
            self._log.warning(
                "seq_gap", "%s: %d message(s) from %r missing", self.name,
                msg.message_id - last - 1, sender,
            )  # fmt: skip
        self._last_seq[key] = msg.message_id
        self._last_seq.move_to_end(key)
        while len(self._last_seq) > 64:
            self._last_seq.popitem(last=False)
        return None

    def poll(self, timeout_ms: int = 0, max_messages: int | None = None) -> int:
        """Handle incoming messages: wait up to ``timeout_ms`` for the first, then take
        what is queued without blocking, at most ``max_messages`` (the rest stays queued,
        bounded by the high-water mark). Returns how many were handled."""
        n = 0
        if timeout_ms > 0 and not self._sock.poll(timeout_ms, zmq.POLLIN):
            return 0
        while max_messages is None or n < max_messages:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return n
            n += 1
            self._on_frames(frames)
        return n

    def _on_frames(self, frames: list[bytes]) -> None:
        raise NotImplementedError

    def counters(self) -> dict[str, Any]:
        """JSON-ready counters of this endpoint (see :class:`FapiCounters`)."""
        return self.stats.as_dict()

    @property
    def socket(self) -> ZmqSocket:
        """The ZMQ socket (for a poller in an external loop); do not send on it."""
        return self._sock

    def close(self) -> None:
        """Close the socket at once (linger 0). The context is left to its owner."""
        if not self._closed:
            self._closed = True
            self._sock.close(linger=0)


# -- L1 --------------------------------------------------------------------------------------


@dataclass(slots=True)
class SlotRequest:
    """Everything the L2 asked of one slot (SCF 222 UL_TTI/DL_TTI/TX_DATA.request merged).

    ``abs_slot`` is the L1's monotonic slot count; ``payloads`` maps PDSCH ``pdu_index``
    to its transport block."""

    sfn: int
    slot: int
    abs_slot: int
    ul: list[PuschPdu] = field(default_factory=list)
    dl: list[PdschPdu] = field(default_factory=list)
    payloads: dict[int, bytes] = field(default_factory=dict)
    has_ul_tti: bool = False
    has_dl_tti: bool = False
    has_tx_data: bool = False
    last_arrival_ns: int = 0


@dataclass(frozen=True, slots=True)
class PuschResult:
    """The PHY's outcome for one PUSCH PDU (becomes a CRC.indication PDU, and an
    RX_DATA.indication PDU when the CRC passed). ``num_cb_ok`` defaults to all code
    blocks when the CRC passed, none otherwise; ``payload`` must then be the TB."""

    pdu_index: int
    crc_ok: bool
    sinr_db: float
    payload: bytes | None = None
    timing_advance: int | None = None
    num_cb: int = 1
    num_cb_ok: int | None = None


@dataclass(slots=True)
class SlotResult:
    """The PHY's outcome of one slot: one :class:`PuschResult` per PUSCH PDU."""

    pusch: list[PuschResult] = field(default_factory=list)


class SlotHandler(Protocol):
    """Slot processing plugged into the L1 (the real PHY, later)."""

    def on_slot(self, req: SlotRequest) -> SlotResult: ...


class EchoHandler:
    """A plain :class:`SlotHandler`: every PUSCH PDU decodes with ``sinr_db`` and carries
    :func:`expected_payload`; with ``crc_fail_every = k > 0`` every k-th PDU (by HARQ
    id + slot) fails its CRC instead."""

    def __init__(self, sinr_db: float = 20.0, crc_fail_every: int = 0) -> None:
        if crc_fail_every < 0:
            raise FieldError("crc_fail_every", "must be >= 0")
        self.sinr_db = sinr_db
        self.crc_fail_every = crc_fail_every

    def on_slot(self, req: SlotRequest) -> SlotResult:
        out: list[PuschResult] = []
        for p in req.ul:
            ncb = num_code_blocks(p.tb_size_bits, p.target_code_rate)
            k = self.crc_fail_every
            fail = k > 0 and (req.abs_slot + p.pdu_index) % k == 0
            payload = None
            if not fail:
                payload = expected_payload(
                    req.sfn, req.slot, p.rnti, p.harq_process_id, p.tb_size_bits // 8
                )
            out.append(
                PuschResult(
                    p.pdu_index, crc_ok=not fail, sinr_db=self.sinr_db, payload=payload,
                    timing_advance=31, num_cb=ncb,
                )
            )  # fmt: skip
        return SlotResult(out)


_CONFIGURED, _RUNNING, _STOPPED = "configured", "running", "stopped"


class L1Endpoint(_Endpoint):
    """The PHY end of the interface (SCF 222 P7 timing master); binds a ZMQ ROUTER.

    States follow SCF 222: *configured* until START.request, then *running*; a
    STOP.request (or the end of :meth:`run`) stops indicating new slots, the slots already
    indicated are processed, and STOP.indication closes the session (*stopped*).

    Timing (TS 38.211 §4.3): ``tick(n)`` at the start of slot ``n`` sends SLOT.indication
    for slot ``n + slot_ahead`` and hands back the requests of slot ``n``; requests for
    ``n`` arriving afterwards are late. Rejected messages are counted, logged and answered
    with ERROR.indication to their sender; the L1 keeps running.

    A flood is bounded: each tick takes at most ``max_per_tick`` messages (the ticks that
    left some queued are counted in ``events["tick_budget_reached"]``), the socket buffers
    at most ``hwm``, and ZMQ's ROUTER serves its peers in turn, so a flooding peer cannot
    starve the real L2 of its share.
    """

    def __init__(
        self,
        endpoint: str,
        cell: CellConfig = DEFAULT_CELL,
        *,
        handler: SlotHandler | None = None,
        slot_ahead: int = 3,
        name: str = "l1",
        context: ZmqContext | None = None,
        hwm: int = DEFAULT_HWM,
        max_per_tick: int = DEFAULT_MAX_PER_TICK,
    ) -> None:
        if not 1 <= slot_ahead <= 64:
            raise FieldError("slot_ahead", f"must be in 1..64 slots (got {slot_ahead})")
        if not 1 <= max_per_tick <= 1 << 20:
            raise FieldError("max_per_tick", f"must be in 1..2**20 messages (got {max_per_tick})")
        self.max_per_tick = max_per_tick
        ctx: ZmqContext = context if context is not None else zmq.Context.instance()
        sock = ctx.socket(zmq.ROUTER)
        super().__init__(sock, name, cell, hwm)
        # nothing is dropped silently: an unroutable peer or a full queue raises
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise FieldError("endpoint", f"cannot bind {endpoint!r}: {exc}") from None
        last = sock.getsockopt(zmq.LAST_ENDPOINT)
        self.endpoint: str = last.decode() if isinstance(last, bytes) else endpoint
        self.handler: SlotHandler = handler if handler is not None else EchoHandler()
        self.slot_ahead = slot_ahead
        self.state = _CONFIGURED
        self._peer: bytes | None = None
        self._pending: dict[int, SlotRequest] = {}  # key (sfn·spf + slot) -> request
        self._done: OrderedDict[int, None] = OrderedDict()  # keys processed recently
        self._now: int | None = None  # last slot ticked (absolute)
        self._last_indicated: int | None = None
        self._awaiting_results: set[int] = set()
        self._stop_requested = False
        self._no_more_indications = False

    # -- receive ----------------------------------------------------------------------------

    def _on_frames(self, frames: list[bytes]) -> None:
        identity = frames[0]
        if len(frames) < 2:
            err = FapiError(pb.MSG_MALFORMED, "frames", "a ZMQ message without a FAPI message")
            self._reject(identity, err, None)
            return
        for data in frames[1:]:
            self._on_data(identity, data)

    def _on_data(self, identity: bytes, data: bytes) -> None:
        try:
            msg = parse(data)
        except FapiError as err:
            self._reject(identity, err, None)
            return
        try:
            validate(msg, self.cell)
        except FapiError as err:
            self._reject(identity, err, msg)
            return
        self._note_arrival(msg)
        dup = self._check_seq(msg, identity)
        if dup is not None:
            self._reject(identity, dup, msg)
            return
        body = msg.WhichOneof("body")
        if body == "start_request":
            self._on_start(identity, msg)
        elif body == "stop_request":
            self._on_stop(identity, msg)
        elif body in ("ul_tti_request", "dl_tti_request", "tx_data_request"):
            self._on_slot_request(identity, msg, body)
        else:
            self._reject(
                identity,
                FapiError(
                    pb.MSG_INVALID_STATE, "body", f"{message_name(msg)} is not sent to an L1"
                ),
                msg,
            )

    def _on_start(self, identity: bytes, msg: FapiMessage) -> None:
        if self.state != _CONFIGURED:
            err = FapiError(pb.MSG_INVALID_STATE, "body", f"START.request while {self.state}")
            self._reject(identity, err, msg)
            return
        self.stats.received[message_name(msg)] += 1
        self._peer = identity
        self.state = _RUNNING
        log.info("%s: START.request from %r; running", self.name, msg.sender)

    def _on_stop(self, identity: bytes, msg: FapiMessage) -> None:
        if self.state != _RUNNING or identity != self._peer:
            err = FapiError(pb.MSG_INVALID_STATE, "body", f"STOP.request while {self.state}")
            self._reject(identity, err, msg)
            return
        self.stats.received[message_name(msg)] += 1
        self._stop_requested = True
        self._maybe_finish_stop()

    def _on_slot_request(self, identity: bytes, msg: FapiMessage, body: str) -> None:
        if self.state != _RUNNING:
            err = FapiError(pb.MSG_INVALID_STATE, "body", f"{message_name(msg)} while {self.state}")
            self._reject(identity, err, msg)
            return
        spf = self.cell.slots_per_frame
        key = msg.sfn * spf + msg.slot
        req = self._pending.get(key)
        if req is None:
            if key in self._done:
                err = FapiError(
                    pb.MSG_SLOT_ERR,
                    "slot",
                    f"slot {msg.sfn}.{msg.slot} is already processed (late)",
                )
            else:
                err = FapiError(
                    pb.SFN_OUT_OF_SYNC, "slot", f"slot {msg.sfn}.{msg.slot} was never indicated"
                )
            self._reject(identity, err, msg)
            return
        if body == "ul_tti_request":
            if req.has_ul_tti:
                self._reject(identity, _dup_request(msg), msg)
                return
            req.has_ul_tti = True
            req.ul = list(msg.ul_tti_request.pdus)
        elif body == "dl_tti_request":
            if req.has_dl_tti:
                self._reject(identity, _dup_request(msg), msg)
                return
            req.has_dl_tti = True
            req.dl = list(msg.dl_tti_request.pdus)
        else:
            if req.has_tx_data:
                self._reject(identity, _dup_request(msg), msg)
                return
            if not req.has_dl_tti:
                err = FapiError(
                    pb.MSG_TX_ERR, "tx_data_request", "no DL_TTI.request for this slot yet"
                )
                self._reject(identity, err, msg)
                return
            try:
                check_tx_data(req.dl, msg.tx_data_request)
            except FapiError as err:
                self._reject(identity, err, msg)
                return
            req.has_tx_data = True
            req.payloads = {t.pdu_index: t.payload for t in msg.tx_data_request.pdus}
        req.last_arrival_ns = time.perf_counter_ns()
        self.stats.received[message_name(msg)] += 1

    def _reject(self, identity: bytes, err: FapiError, msg: FapiMessage | None) -> None:
        """Count, log and answer with ERROR.indication (SCF 222) to the sender."""
        mname = message_name(msg) if msg is not None else "unknown"
        self.stats.rejected[err.code_name] += 1
        self.stats.rejected_by_type[mname] += 1
        sender = msg.sender if msg is not None else identity.hex()
        self._log.warning(
            err.code_name, "%s: rejected %s from %r: %s", self.name, mname, sender, err
        )
        sfn, slot = self.cell.sfn_slot(self._now) if self._now is not None else (0, 0)
        out = self._envelope(sfn, slot)
        e = out.error_indication
        e.error_code = err.code
        e.field = err.field[:MAX_TEXT_LEN]
        e.reason = err.reason[:MAX_TEXT_LEN]
        if msg is not None:
            e.message_type = _message_type(msg)
            e.rejected_message_id = msg.message_id
            if msg.sfn < SFN_PERIOD and msg.slot < self.cell.slots_per_frame:
                e.rejected_sfn = msg.sfn
                e.rejected_slot = msg.slot
        self._send_to(identity, out)

    # -- send -------------------------------------------------------------------------------
    def _send_to(self, identity: bytes, *msgs: FapiMessage) -> bool:
        """Send FAPI messages as the frames of one ZMQ message (SCF 222 lets one transport
        message carry several PHY API messages): one wake-up of the peer, not one each."""
        frames = [identity, *self._encode_batch(identity, msgs)]
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # EAGAIN (queue full) or EHOSTUNREACH (peer gone)
            self._send_failed(msgs, exc)
            return False
        self._sent(identity, msgs)
        return True

    def _send_peer(self, *msgs: FapiMessage) -> bool:
        if self._peer is None:
            self._send_failed(msgs, "no peer has sent START.request")
            return False
        return self._send_to(self._peer, *msgs)

    # -- timing -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Started and not yet stopped."""
        return self.state == _RUNNING

    @property
    def stopped(self) -> bool:
        """STOP.indication has been sent: the session is over."""
        return self.state == _STOPPED

    def tick(self, slot: int, *, indicate: bool = True, last: bool = False) -> SlotRequest | None:
        """Start slot ``slot`` (absolute, increasing); never blocks.

        Takes the queued messages, sends SLOT.indication for ``slot + slot_ahead`` (unless
        ``indicate`` is false or a stop is under way; ``last`` marks it as the final one),
        and closes slot ``slot``: its :class:`SlotRequest` is returned (``None`` if the slot
        was never indicated or the L1 is not running) and later requests for it are late.
        The caller processes it and calls :meth:`send_results` (or uses :meth:`step`).
        """
        if self._now is not None and slot <= self._now:
            raise FieldError("slot", f"must increase (got {slot} after {self._now})")
        if self.poll(0, self.max_per_tick) >= self.max_per_tick:
            self.stats.events["tick_budget_reached"] += 1
        if self.state != _RUNNING:
            return None
        if self._now is not None and slot > self._now + 1:
            self.stats.events["slots_skipped"] += slot - self._now - 1
        self._now = slot
        target = slot + self.slot_ahead
        if (
            indicate
            and not self._stop_requested
            and not self._no_more_indications
            and (self._last_indicated is None or target > self._last_indicated)
        ):
            sfn, s = self.cell.sfn_slot(target)
            key = sfn * self.cell.slots_per_frame + s
            self._pending[key] = SlotRequest(sfn, s, target)
            self._last_indicated = target
            ind = self._envelope(sfn, s)
            ind.slot_indication.last = last
            self._send_peer(ind)
            self.stats.events["slots_indicated"] += 1
            if last:
                self._no_more_indications = True
        sfn, s = self.cell.sfn_slot(slot)
        key = sfn * self.cell.slots_per_frame + s
        req = self._pending.pop(key, None)
        self._done[key] = None
        while len(self._done) > 4096:
            self._done.popitem(last=False)
        if req is not None:
            self.stats.events["slots_processed"] += 1
            if req.last_arrival_ns:
                self.stats.request_margin_ns.append(time.perf_counter_ns() - req.last_arrival_ns)
            missing = [p.pdu_index for p in req.dl if p.pdu_index not in req.payloads]
            if missing:
                self.stats.events["dl_pdus_without_payload"] += len(missing)
                self._log.warning(
                    "dl_no_payload", "%s: slot %d.%d: PDSCH PDUs %s have no TX_DATA",
                    self.name, sfn, s, missing,
                )  # fmt: skip
            if req.ul:
                self._awaiting_results.add(req.abs_slot)
        self._maybe_finish_stop()
        return req

    def send_results(self, req: SlotRequest, result: SlotResult) -> None:
        """Send CRC.indication (every PUSCH PDU) and RX_DATA.indication (the PDUs whose CRC
        passed) for a slot handed out by :meth:`tick` (SCF 222 CRC/RX_DATA.indication).

        A result that does not fit the request (unknown PDU, wrong payload length, invalid
        values) is counted as a ``handler_errors`` event and reported as a CRC failure."""
        by_index: dict[int, PuschResult] = {}
        ul_index = {p.pdu_index for p in req.ul}
        for r in result.pusch:
            if r.pdu_index not in ul_index or r.pdu_index in by_index:
                self._handler_error(req, f"result for unknown/duplicate PDU {r.pdu_index}")
                continue
            by_index[r.pdu_index] = r
        crc = self._envelope(req.sfn, req.slot)
        rx = self._envelope(req.sfn, req.slot)
        crc_pdus = crc.crc_indication.pdus
        rx_pdus = rx.rx_data_indication.pdus
        for p in req.ul:
            found = by_index.get(p.pdu_index)
            if found is None:
                self._handler_error(req, f"no result for PUSCH PDU {p.pdu_index}")
                found = PuschResult(p.pdu_index, crc_ok=False, sinr_db=-64.0)
            r = found
            ok = r.crc_ok
            if ok and (r.payload is None or len(r.payload) != p.tb_size_bits // 8):
                self._handler_error(req, f"PDU {p.pdu_index}: payload is not the TB")
                ok = False
            num_cb = r.num_cb if r.num_cb >= 1 else 1
            c = crc_pdus.add(
                pdu_index=p.pdu_index,
                rnti=p.rnti,
                harq_id=p.harq_process_id,
                tb_crc_ok=ok,
                ul_sinr_db=r.sinr_db,
                num_cb=num_cb,
                num_cb_ok=r.num_cb_ok if r.num_cb_ok is not None else (num_cb if ok else 0),
            )
            if r.timing_advance is not None:
                c.timing_advance = r.timing_advance
            if ok and r.payload is not None:
                rx_pdus.add(
                    pdu_index=p.pdu_index, rnti=p.rnti, harq_id=p.harq_process_id, payload=r.payload
                )
        if crc_pdus:
            try:
                _check_body(crc, "crc_indication", self.cell)
            except FapiError as err:  # e.g. a NaN SINR: report every PDU as failed
                self._handler_error(req, str(err))
                for c in crc_pdus:
                    c.tb_crc_ok, c.num_cb_ok, c.ul_sinr_db = False, 0, -64.0
                    c.ClearField("timing_advance")
                del rx_pdus[:]
        if crc_pdus and rx_pdus:
            self._send_peer(crc, rx)
        elif crc_pdus:
            self._send_peer(crc)
        self._awaiting_results.discard(req.abs_slot)
        self._maybe_finish_stop()

    def _handler_error(self, req: SlotRequest, what: str) -> None:
        self.stats.events["handler_errors"] += 1
        self._log.warning("handler_error", "%s: slot %d.%d: %s", self.name, req.sfn, req.slot, what)

    def step(self, slot: int, *, indicate: bool = True, last: bool = False) -> SlotRequest | None:
        """:meth:`tick`, then the :class:`SlotHandler`, then :meth:`send_results`. A handler
        that raises is counted (``handler_errors``) and its PDUs reported as CRC failures."""
        req = self.tick(slot, indicate=indicate, last=last)
        if req is None or not req.ul:
            return req
        try:
            result = self.handler.on_slot(req)
        except Exception:
            log.exception("%s: slot handler failed in slot %d.%d", self.name, req.sfn, req.slot)
            self.stats.events["handler_errors"] += 1
            result = SlotResult(
                [PuschResult(p.pdu_index, crc_ok=False, sinr_db=-64.0) for p in req.ul]
            )
        self.send_results(req, result)
        return req

    def _maybe_finish_stop(self) -> None:
        if (
            self.state == _RUNNING
            and self._stop_requested
            and not self._pending
            and not self._awaiting_results
        ):
            self._finish_stop()

    def _finish_stop(self) -> None:
        sfn, slot = self.cell.sfn_slot(self._now) if self._now is not None else (0, 0)
        self.state = _STOPPED
        if self._peer is not None:
            msg = self._envelope(sfn, slot)
            msg.stop_indication.SetInParent()
            self._send_to(self._peer, msg)
        log.info("%s: stopped", self.name)

    def wait_for_start(self, timeout_s: float) -> bool:
        """Serve the socket until START.request arrives (True) or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while self.state == _CONFIGURED:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.poll(max(1, min(100, int(left * 1000))))
        return True

    def _wait_until(self, t_ns: int) -> None:
        """Wait until ``perf_counter_ns() >= t_ns``: serve the socket in zmq poll while
        more than ~2 ms remain, then sleep (sub-ms precision without spinning; what
        arrives meanwhile is taken by the next :meth:`tick`, before it closes its slot)."""
        while True:
            left = t_ns - time.perf_counter_ns()
            if left <= 0:
                return
            if left > 2_000_000:  # a batch at most, then look at the clock again
                self.poll(left // 1_000_000 - 1, self.max_per_tick)
            else:
                time.sleep(left / 1e9)

    def run(
        self,
        n_slots: int,
        *,
        start_timeout_s: float = 10.0,
        stop_timeout_s: float = 5.0,
    ) -> bool:
        """Free-running slot clock around :meth:`step`: wait for START.request, indicate
        ``n_slots`` slots (the last with ``last=true``) and process them at their slot
        times (TS 38.211 §4.3 slot boundaries, :func:`slot_start_ns`), then wait for the
        L2's STOP.request and answer STOP.indication. A slot started more than one slot
        late counts as an ``slot_overruns`` event (the clock catches up, nothing is
        skipped). A STOP.request from the L2 ends the run early. Returns True if the
        session ended with the STOP handshake."""
        if n_slots < 1:
            raise FieldError("n_slots", f"must be >= 1 (got {n_slots})")
        if not self.wait_for_start(start_timeout_s):
            raise TimeoutError(f"no START.request within {start_timeout_s} s")
        mu = self.cell.numerology
        first = (self._now + 1) if self._now is not None else 0
        epoch = time.perf_counter_ns() - slot_start_ns(mu, first)
        slot_ns = self.cell.slot_ns
        end = first + n_slots
        for n in range(first, end + self.slot_ahead):
            if self.state != _RUNNING:
                break
            t = epoch + slot_start_ns(mu, n)
            self._wait_until(t)
            late = time.perf_counter_ns() - t
            self.stats.tick_late_ns.append(late)
            if late > slot_ns:
                self.stats.events["slot_overruns"] += 1
            self.step(n, indicate=n < end, last=n == end - 1)
        deadline = time.monotonic() + stop_timeout_s
        while self.state == _RUNNING and time.monotonic() < deadline:
            self.poll(10)
        if self.state == _RUNNING:
            self.stats.events["stop_timeouts"] += 1
            log.warning("%s: no STOP.request within %s s; stopping", self.name, stop_timeout_s)
            self._finish_stop()
            return False
        return True

    def __enter__(self) -> L1Endpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dup_request(msg: FapiMessage) -> FapiError:
    return FapiError(
        pb.MSG_DUPLICATE, "body", f"second {message_name(msg)} for slot {msg.sfn}.{msg.slot}"
    )


# -- L2 --------------------------------------------------------------------------------------


class Schedule(NamedTuple):
    """What the MAC schedules in one slot: PUSCH PDUs, PDSCH PDUs, and the transport block
    of each PDSCH PDU by ``pdu_index``."""

    ul: Sequence[PuschPdu]
    dl: Sequence[PdschPdu]
    payloads: Mapping[int, bytes]


class SlotScheduler(Protocol):
    """The MAC plugged into the L2: called for each SLOT.indication."""

    def schedule(self, sfn: int, slot: int) -> Schedule | tuple[
        Sequence[PuschPdu], Sequence[PdschPdu], Mapping[int, bytes]
    ]: ...  # fmt: skip


CrcCallback = Callable[[int, int, pb.CrcPdu], None]
"""``on_crc(sfn, slot, pdu)``: one CRC.indication PDU (e.g. → ``Mac.on_ul_crc``)."""
RxDataCallback = Callable[[int, int, pb.RxDataPdu], None]
"""``on_rx_data(sfn, slot, pdu)``: one RX_DATA.indication PDU."""
ErrorCallback = Callable[[FapiMessage], None]
"""``on_error(msg)``: an ERROR.indication the L1 sent (``msg.error_indication``)."""


class FixedScheduler:
    """A plain :class:`SlotScheduler` for tests and demos: each slot, each of ``n_ues`` UEs
    gets one PUSCH and one PDSCH PDU of ``prbs_per_ue`` PRBs over the whole slot, QPSK at
    R = ``rate_x1024``/1024, carrying :func:`expected_payload` bytes; HARQ id = slot mod 16.
    """

    def __init__(
        self,
        cell: CellConfig = DEFAULT_CELL,
        n_ues: int = 2,
        prbs_per_ue: int = 8,
        rate_x1024: int = 378,
        dmrs_symbols: tuple[int, ...] = (2, 11),
    ) -> None:
        if n_ues < 0 or n_ues > cell.max_pdus:
            raise FieldError("n_ues", f"must be in 0..{cell.max_pdus}")
        if prbs_per_ue < 1 or n_ues * prbs_per_ue > cell.carrier_prbs:
            raise FieldError(
                "prbs_per_ue", f"{n_ues} UEs x {prbs_per_ue} PRBs exceed {cell.carrier_prbs} PRBs"
            )
        if not 1 <= rate_x1024 <= 1023:
            raise FieldError("rate_x1024", "must be in 1..1023")
        if not dmrs_symbols or any(not 0 <= d < SYMBOLS_PER_SLOT for d in dmrs_symbols):
            raise FieldError("dmrs_symbols", "need DM-RS symbols in 0..13")
        self.cell = cell
        self.n_ues = n_ues
        self.prbs = prbs_per_ue
        self.rate = rate_x1024
        self.dmrs = sum(1 << d for d in set(dmrs_symbols))
        data_re = prbs_per_ue * SUBCARRIERS_PER_RB * (SYMBOLS_PER_SLOT - len(set(dmrs_symbols)))
        self.tb_bits = max(8, data_re * 2 * rate_x1024 // 1024 // 8 * 8)

    def _pdu(self, pdu: PuschPdu | PdschPdu, ue: int, harq: int, ndi: bool) -> None:
        pdu.pdu_index = ue
        pdu.rnti = 0x4601 + ue
        pdu.ue_index = ue
        pdu.snssai.sst = 1
        pdu.snssai.sd = 0xFFFFFF
        pdu.bwp_start = 0
        pdu.bwp_size = self.cell.carrier_prbs
        pdu.rb_start = ue * self.prbs
        pdu.rb_size = self.prbs
        pdu.start_symbol = 0
        pdu.nr_of_symbols = SYMBOLS_PER_SLOT
        pdu.dmrs_symbol_positions = self.dmrs
        pdu.mcs_index = 5
        pdu.mcs_table = 0
        pdu.qm = 2
        pdu.target_code_rate = self.rate * 10
        pdu.num_layers = 1
        pdu.tb_size_bits = self.tb_bits
        pdu.harq_process_id = harq
        pdu.rv_index = 0
        pdu.ndi = ndi

    def schedule(self, sfn: int, slot: int) -> Schedule:
        abs_slot = sfn * self.cell.slots_per_frame + slot
        harq = abs_slot % (MAX_HARQ_ID + 1)
        ndi = (abs_slot // (MAX_HARQ_ID + 1)) % 2 == 1
        ul: list[PuschPdu] = []
        dl: list[PdschPdu] = []
        payloads: dict[int, bytes] = {}
        for ue in range(self.n_ues):
            u = PuschPdu()
            self._pdu(u, ue, harq, ndi)
            ul.append(u)
            d = PdschPdu()
            self._pdu(d, ue, harq, ndi)
            dl.append(d)
            payloads[ue] = expected_payload(
                sfn, slot, d.rnti, harq, self.tb_bits // 8, uplink=False
            )
        return Schedule(ul, dl, payloads)


class MacScheduler:
    """Adapter from :class:`airan.ran.mac.Mac` to the FAPI L2: :meth:`schedule` is the
    :class:`SlotScheduler` (each :class:`~airan.ran.mac.Grant` becomes a PUSCH/PDSCH PDU,
    each PDSCH TB carries :func:`expected_payload` bytes) and :meth:`on_crc` the
    ``on_crc`` callback feeding ``Mac.on_ul_crc`` (build the Mac with
    ``ul_crc_from_l1=True``). MCS tables map MAC 1 (64QAM) → FAPI 0 and 2 (256QAM) → 1.

    ``crc_applied`` / ``crc_ignored`` count what ``Mac.on_ul_crc`` accepted / refused
    (late or duplicate for its HARQ process)."""

    def __init__(self, mac: Mac, cell: CellConfig | None = None) -> None:
        self.mac = mac
        self.cell = cell if cell is not None else CellConfig(
            cell_id=mac.cell, numerology=mac.mu, carrier_prbs=mac.n_prb
        )  # fmt: skip
        if self.cell.numerology != mac.mu:
            raise FieldError("cell.numerology", f"{self.cell.numerology} != the MAC's {mac.mu}")
        if self.cell.carrier_prbs < mac.n_prb:
            raise FieldError("cell.carrier_prbs", f"fewer than the MAC's {mac.n_prb} PRBs")
        self.crc_applied = 0
        self.crc_ignored = 0

    def _pdu(self, pdu: PuschPdu | PdschPdu, index: int, g: Grant) -> None:
        pdu.pdu_index = index
        pdu.rnti = g.rnti
        pdu.ue_index = g.ue
        pdu.snssai.sst = g.snssai.sst
        pdu.snssai.sd = 0xFFFFFF if g.snssai.sd is None else g.snssai.sd
        pdu.bwp_start = 0
        pdu.bwp_size = self.mac.n_prb
        pdu.rb_start = g.prb_start
        pdu.rb_size = g.n_prb
        pdu.start_symbol = g.start_symbol
        pdu.nr_of_symbols = g.n_symbols
        pdu.dmrs_symbol_positions = sum(1 << d for d in set(g.dmrs_symbols))
        pdu.mcs_index = g.mcs
        pdu.mcs_table = 1 if g.mcs_table == 2 else 0
        pdu.qm = g.qm
        pdu.target_code_rate = min(10239, max(1, round(g.code_rate * 10)))  # 0.1 units
        pdu.num_layers = g.layers
        pdu.tb_size_bits = g.tbs
        pdu.harq_process_id = g.harq_id
        pdu.rv_index = g.rv
        pdu.ndi = bool(g.ndi)

    def schedule(self, sfn: int, slot: int) -> Schedule:
        d = self.mac.schedule(SlotId(sfn, slot, self.cell.numerology))
        ul: list[PuschPdu] = []
        dl: list[PdschPdu] = []
        for i, g in enumerate(d.ul):
            u = PuschPdu()
            self._pdu(u, i, g)
            ul.append(u)
        payloads: dict[int, bytes] = {}
        for i, g in enumerate(d.dl):
            p = PdschPdu()
            self._pdu(p, i, g)
            dl.append(p)
            payloads[i] = expected_payload(sfn, slot, g.rnti, g.harq_id, g.tbs // 8, uplink=False)
        return Schedule(ul, dl, payloads)

    def on_crc(self, sfn: int, slot: int, pdu: pb.CrcPdu) -> None:
        """CRC.indication PDU → ``Mac.on_ul_crc(slot, rnti, harq_id, ok, snr_db)``."""
        sid = SlotId(sfn, slot, self.cell.numerology)
        if self.mac.on_ul_crc(sid, pdu.rnti, pdu.harq_id, pdu.tb_crc_ok, float(pdu.ul_sinr_db)):
            self.crc_applied += 1
        else:
            self.crc_ignored += 1


class L2Endpoint(_Endpoint):
    """The MAC end of the interface; a ZMQ DEALER that connects to the L1's ROUTER.

    :meth:`start` sends START.request. Each SLOT.indication is answered with
    DL_TTI.request and UL_TTI.request (always, possibly empty) and TX_DATA.request (when
    there are payloads) from the :class:`SlotScheduler`; CRC.indication and
    RX_DATA.indication PDUs go to ``on_crc`` / ``on_rx_data``, ERROR.indication to
    ``on_error``. After a SLOT.indication marked ``last`` the L2 sends STOP.request; the
    session ends at STOP.indication (SCF 222 STOP.request / STOP.indication).

    Sends block at most ``send_timeout_ms`` when the high-water mark is reached (never a
    silent drop); a send that times out is counted in ``send_failed``.
    """

    def __init__(
        self,
        endpoint: str,
        scheduler: SlotScheduler,
        cell: CellConfig = DEFAULT_CELL,
        *,
        on_crc: CrcCallback | None = None,
        on_rx_data: RxDataCallback | None = None,
        on_error: ErrorCallback | None = None,
        name: str = "l2",
        context: ZmqContext | None = None,
        hwm: int = DEFAULT_HWM,
        send_timeout_ms: int = 1000,
    ) -> None:
        ctx: ZmqContext = context if context is not None else zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        super().__init__(sock, name, cell, hwm)
        # a fixed routing id keeps the L1's route to us across TCP reconnects
        sock.setsockopt(zmq.ROUTING_ID, name.encode())
        sock.setsockopt(zmq.SNDTIMEO, send_timeout_ms)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise FieldError("endpoint", f"cannot connect to {endpoint!r}: {exc}") from None
        self.endpoint = endpoint
        self.scheduler = scheduler
        self.on_crc = on_crc
        self.on_rx_data = on_rx_data
        self.on_error = on_error
        self.started = False
        self.stopped = False
        self._stop_sent = False
        # UL PDUs scheduled and not yet answered by CRC.indication, per slot key
        self._awaiting_crc: dict[int, dict[int, PuschPdu]] = {}
        self._recent_ul: OrderedDict[int, dict[int, PuschPdu]] = OrderedDict()

    def _send(self, *msgs: FapiMessage) -> bool:
        """Send FAPI messages as the frames of one ZMQ message (atomic: all or none)."""
        frames = self._encode_batch(b"", msgs)
        try:
            self._sock.send_multipart(frames)
        except zmq.ZMQError as exc:  # EAGAIN: high-water mark held for send_timeout_ms
            self._send_failed(msgs, exc)
            return False
        self._sent(b"", msgs)
        return True

    def start(self) -> None:
        """Send START.request (SCF 222): the L1 starts its slot clock."""
        msg = self._envelope(0, 0)
        msg.start_request.SetInParent()
        self._send(msg)
        self.started = True

    def stop(self) -> None:
        """Send STOP.request (SCF 222) once; the L1 answers STOP.indication."""
        if self._stop_sent:
            return
        msg = self._envelope(0, 0)
        msg.stop_request.SetInParent()
        self._send(msg)
        self._stop_sent = True

    @property
    def ul_pdus_awaiting_crc(self) -> int:
        """PUSCH PDUs sent in an accepted-so-far UL_TTI.request and not yet answered."""
        return sum(len(v) for v in self._awaiting_crc.values())

    def counters(self) -> dict[str, Any]:
        out = super().counters()
        out["ul_pdus_awaiting_crc"] = self.ul_pdus_awaiting_crc
        return out


    def _refuse(self, err: FapiError, msg: FapiMessage | None) -> None:
        self.stats.rejected[err.code_name] += 1
        self.stats.rejected_by_type[message_name(msg) if msg is not None else "unknown"] += 1
        self._log.warning(err.code_name, "%s: refused a message: %s", self.name, err)

    def _on_frames(self, frames: list[bytes]) -> None:
        for data in frames:
            self._on_data(data)

    def _on_data(self, data: bytes) -> None:
        try:
            msg = parse(data)
        except FapiError as err:
            self._refuse(err, None)
            return
        try:
            validate(msg, self.cell)
        except FapiError as err:
            self._refuse(err, msg)
            return
        self._note_arrival(msg)
        dup = self._check_seq(msg)
        if dup is not None:
            self._refuse(dup, msg)
            return
        body = msg.WhichOneof("body")
        name = message_name(msg)
        if body == "slot_indication":
            self.stats.received[name] += 1
            self._on_slot_indication(msg)
        elif body == "crc_indication":
            self.stats.received[name] += 1
            self._on_crc(msg)
        elif body == "rx_data_indication":
            self.stats.received[name] += 1
            self._on_rx(msg)
        elif body == "error_indication":
            self.stats.received[name] += 1
            self._on_error(msg)
        elif body == "stop_indication":
            self.stats.received[name] += 1
            self.stopped = True
        else:
            self._refuse(
                FapiError(pb.MSG_INVALID_STATE, "body", f"{name} is not sent to an L2"), msg
            )

    def _on_slot_indication(self, msg: FapiMessage) -> None:
        sfn, slot = msg.sfn, msg.slot
        t0 = time.perf_counter_ns()
        try:
            ul, dl, payloads = self.scheduler.schedule(sfn, slot)
            dl_msg = self._envelope(sfn, slot)
            dl_msg.dl_tti_request.pdus.extend(dl)
            ul_msg = self._envelope(sfn, slot)
            ul_msg.ul_tti_request.pdus.extend(ul)
            tx_msg = self._envelope(sfn, slot)
            for idx, data in payloads.items():
                tx_msg.tx_data_request.pdus.add(pdu_index=idx, payload=data)
            _check_body(dl_msg, "dl_tti_request", self.cell)
            _check_body(ul_msg, "ul_tti_request", self.cell)
            if payloads:
                _check_body(tx_msg, "tx_data_request", self.cell)
                check_tx_data(dl_msg.dl_tti_request.pdus, tx_msg.tx_data_request)
        except Exception as exc:
            # a scheduler bug must not stop the slot: send empty requests instead
            self.stats.events["scheduler_errors"] += 1
            self._log.warning("scheduler_error", "%s: scheduler failed in %d.%d: %r",
                              self.name, sfn, slot, exc)  # fmt: skip
            dl_msg, ul_msg, payloads = self._envelope(sfn, slot), self._envelope(sfn, slot), {}
            dl_msg.dl_tti_request.SetInParent()
            ul_msg.ul_tti_request.SetInParent()
            tx_msg = FapiMessage()
        ul_msg.ul_tti_request.SetInParent()
        dl_msg.dl_tti_request.SetInParent()
        batch = (dl_msg, ul_msg, tx_msg) if payloads else (dl_msg, ul_msg)
        if self._send(*batch) and ul_msg.ul_tti_request.pdus:
            key = sfn * self.cell.slots_per_frame + slot
            pdus = {p.pdu_index: p for p in ul_msg.ul_tti_request.pdus}
            self._awaiting_crc[key] = dict(pdus)
            self._recent_ul[key] = pdus
            while len(self._recent_ul) > 256:
                old, _ = self._recent_ul.popitem(last=False)
                stale = self._awaiting_crc.pop(old, None)
                if stale:
                    self.stats.events["ul_pdus_unanswered"] += len(stale)
        self.stats.events["schedule_ns_total"] += time.perf_counter_ns() - t0
        if msg.slot_indication.last:
            self.stop()

    def _on_crc(self, msg: FapiMessage) -> None:
        key = msg.sfn * self.cell.slots_per_frame + msg.slot
        waiting = self._awaiting_crc.get(key, {})
        for c in msg.crc_indication.pdus:
            p = waiting.pop(c.pdu_index, None)
            if p is None or p.rnti != c.rnti or p.harq_process_id != c.harq_id:
                self.stats.events["crc_unexpected"] += 1
                continue
            self.stats.events["crc_ok" if c.tb_crc_ok else "crc_fail"] += 1
            if self.on_crc is not None:
                self.on_crc(msg.sfn, msg.slot, c)
        if not waiting:
            self._awaiting_crc.pop(key, None)

    def _on_rx(self, msg: FapiMessage) -> None:
        key = msg.sfn * self.cell.slots_per_frame + msg.slot
        sched = self._recent_ul.get(key, {})
        for r in msg.rx_data_indication.pdus:
            p = sched.get(r.pdu_index)
            if p is None or p.rnti != r.rnti:
                self.stats.events["rx_unexpected"] += 1
                continue
            if len(r.payload) != p.tb_size_bits // 8:
                self.stats.events["rx_length_mismatch"] += 1
                continue
            self.stats.events["rx_pdus"] += 1
            if self.on_rx_data is not None:
                self.on_rx_data(msg.sfn, msg.slot, r)

    def _on_error(self, msg: FapiMessage) -> None:
        e = msg.error_indication
        code = pb.ErrorCode.Name(e.error_code)
        self.stats.errors_received[code] += 1
        self._log.warning(
            "error_indication", "%s: L1 rejected %s #%d: %s %s: %s", self.name,
            _NAME_BY_TYPE.get(e.message_type, "unknown"), e.rejected_message_id, code, e.field,
            e.reason,
        )  # fmt: skip
        if (
            e.message_type == pb.MESSAGE_TYPE_UL_TTI_REQUEST
            and e.HasField("rejected_sfn")
            and e.HasField("rejected_slot")
        ):
            key = e.rejected_sfn * self.cell.slots_per_frame + e.rejected_slot
            dropped = self._awaiting_crc.pop(key, None)
            if dropped:
                self.stats.events["ul_pdus_rejected"] += len(dropped)
        if self.on_error is not None:
            self.on_error(msg)

    def run(self, timeout_s: float = 60.0) -> bool:
        """Send START.request (if not yet) and serve until STOP.indication (True) or
        ``timeout_s`` (False)."""
        if not self.started:
            self.start()
        deadline = time.monotonic() + timeout_s
        while not self.stopped:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.poll(max(1, min(100, int(left * 1000))))
        return True

    def __enter__(self) -> L2Endpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- entry point --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m airan.ran.fapi",
        description="Run the FAPI L1 (PHY, binds) or L2 (MAC, connects) end over ZMQ; "
        "prints a JSON summary of its counters at the end.",
    )
    ap.add_argument("role", choices=("l1", "l2"))
    ap.add_argument("--endpoint", required=True, help="tcp://HOST:PORT (l1: PORT may be *)")
    ap.add_argument("--numerology", type=int, default=1, help="µ, 0..3 (slot = 1 ms / 2^µ)")
    ap.add_argument("--prbs", type=int, default=273, help="carrier PRBs")
    ap.add_argument("--cell-id", type=int, default=0)
    ap.add_argument("--slots", type=int, default=1000, help="l1: slots to indicate")
    ap.add_argument("--slot-ahead", type=int, default=3, help="l1: SLOT.indication lead")
    ap.add_argument("--ues", type=int, default=2, help="l2: UEs scheduled per slot")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait at most")
    ap.add_argument("--log-level", default="WARNING")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m airan.ran.fapi {l1,l2} ...``: 0 when the session ended with the
    STOP handshake, 1 otherwise, 2 on bad arguments."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    try:
        cell = CellConfig(cell_id=args.cell_id, numerology=args.numerology, carrier_prbs=args.prbs)
    except FieldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok = False
    summary: dict[str, Any] = {"role": args.role, "numerology": args.numerology}
    t0 = time.perf_counter()
    if args.role == "l1":
        with L1Endpoint(args.endpoint, cell, slot_ahead=args.slot_ahead) as l1:
            print(json.dumps({"endpoint": l1.endpoint}), flush=True)
            try:
                ok = l1.run(args.slots, start_timeout_s=args.timeout)
            except TimeoutError as exc:
                print(f"error: {exc}", file=sys.stderr)
            summary["endpoint"] = l1.endpoint
            summary["counters"] = l1.counters()
    else:
        checks: Counter[str] = Counter()

        def on_rx(sfn: int, slot: int, pdu: pb.RxDataPdu) -> None:
            want = expected_payload(sfn, slot, pdu.rnti, pdu.harq_id, len(pdu.payload))
            checks["rx_payload_ok" if pdu.payload == want else "rx_payload_bad"] += 1

        sched = FixedScheduler(cell, n_ues=args.ues)
        with L2Endpoint(args.endpoint, sched, cell, on_rx_data=on_rx) as l2:
            ok = l2.run(args.timeout)
            summary["endpoint"] = args.endpoint
            summary["counters"] = l2.counters()
            summary["counters"]["events"].update(checks)
    summary["ok"] = ok
    summary["wall_s"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(summary), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
