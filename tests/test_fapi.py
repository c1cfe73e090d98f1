"""FAPI L2<->L1 interface: codec, semantic checks, timing, error handling, transport."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airan.core.errors import FieldError
from airan.fapi.v1 import fapi_pb2 as pb
from airan.ran import fapi
from airan.ran.fapi import (
    CellConfig,
    EchoHandler,
    FapiError,
    FixedScheduler,
    L1Endpoint,
    L2Endpoint,
    PuschResult,
    SlotRequest,
    SlotResult,
    check_tx_data,
    decode,
    encode,
    expected_payload,
    num_code_blocks,
)

CELL = CellConfig(cell_id=7, numerology=1, carrier_prbs=106)

# -- helpers -------------------------------------------------------------------------------


def envelope(cell: CellConfig = CELL, sfn: int = 3, slot: int = 4, mid: int = 1) -> pb.FapiMessage:
    return pb.FapiMessage(
        version=fapi.FAPI_VERSION,
        message_id=mid,
        sender="test",
        cell_id=cell.cell_id,
        sfn=sfn,
        slot=slot,
        send_time_ns=time.time_ns(),
    )


def fill_pdu(p: pb.PuschPdu | pb.PdschPdu, index: int = 0) -> None:
    p.pdu_index = index
    p.rnti = 0x4601 + index
    p.ue_index = index
    p.snssai.sst = 1
    p.snssai.sd = 0x000102
    p.bwp_start = 0
    p.bwp_size = 106
    p.rb_start = 10 * index
    p.rb_size = 10
    p.start_symbol = 0
    p.nr_of_symbols = 14
    p.dmrs_symbol_positions = (1 << 2) | (1 << 11)
    p.mcs_index = 9
    p.mcs_table = 0
    p.qm = 2
    p.target_code_rate = 6790
    p.num_layers = 1
    p.tb_size_bits = 2024
    p.harq_process_id = 3
    p.rv_index = 0
    p.ndi = True


def ul_msg(cell: CellConfig = CELL, n: int = 1) -> pb.FapiMessage:
    m = envelope(cell)
    for i in range(n):
        fill_pdu(m.ul_tti_request.pdus.add(), i)
    return m


def dl_msg(cell: CellConfig = CELL, n: int = 1) -> pb.FapiMessage:
    m = envelope(cell)
    for i in range(n):
        fill_pdu(m.dl_tti_request.pdus.add(), i)
    return m


def crc_msg(cell: CellConfig = CELL) -> pb.FapiMessage:
    m = envelope(cell)
    m.crc_indication.pdus.add(
        pdu_index=0, rnti=0x4601, harq_id=3, tb_crc_ok=True, ul_sinr_db=12.5, num_cb=1, num_cb_ok=1
    )
    return m


def inproc() -> str:
    return f"inproc://fapi-{uuid.uuid4().hex}"


# -- codec: properties -----------------------------------------------------------------------


@st.composite
def cells(draw: st.DrawFn) -> CellConfig:
    return CellConfig(
        cell_id=draw(st.integers(0, 1007)),
        numerology=draw(st.integers(0, 3)),
        carrier_prbs=draw(st.integers(1, 275)),
    )


@st.composite
def sch_pdu(draw: st.DrawFn, cell: CellConfig, cls: type[Any], index: int) -> Any:
    bwp_size = draw(st.integers(1, cell.carrier_prbs))
    bwp_start = draw(st.integers(0, cell.carrier_prbs - bwp_size))
    rb_size = draw(st.integers(1, bwp_size))
    rb_start = draw(st.integers(0, bwp_size - rb_size))
    start = draw(st.integers(0, 13))
    nsym = draw(st.integers(1, 14 - start))
    dmrs = draw(st.integers(1, (1 << nsym) - 1)) << start
    table = draw(st.integers(0, 2 if cls is pb.PdschPdu else 4))
    qm = draw(st.sampled_from([2, 4, 6, 8] if table == 1 else [2, 4, 6]))
    layers = draw(st.integers(1, 4))
    cap = rb_size * 12 * nsym * qm * layers
    return cls(
        pdu_index=index,
        rnti=draw(st.integers(1, 0xFFEF)),
        ue_index=draw(st.integers(0, 2**32 - 1)),
        snssai=pb.Snssai(sst=draw(st.integers(0, 255)), sd=draw(st.integers(0, 0xFFFFFF))),
        bwp_start=bwp_start,
        bwp_size=bwp_size,
        rb_start=rb_start,
        rb_size=rb_size,
        start_symbol=start,
        nr_of_symbols=nsym,
        dmrs_symbol_positions=dmrs,
        mcs_index=draw(st.integers(0, 31)),
        mcs_table=table,
        qm=qm,
        target_code_rate=draw(st.integers(1, 10239)),
        num_layers=layers,
        tb_size_bits=8 * draw(st.integers(1, cap // 8)),
        harq_process_id=draw(st.integers(0, 15)),
        rv_index=draw(st.integers(0, 3)),
        ndi=draw(st.booleans()),
    )


@st.composite
def messages(draw: st.DrawFn) -> tuple[CellConfig, pb.FapiMessage]:
    cell = draw(cells())
    m = pb.FapiMessage(
        version=fapi.FAPI_VERSION,
        message_id=draw(st.integers(1, 2**64 - 1)),
        sender=draw(st.text(min_size=1, max_size=64)),
        cell_id=cell.cell_id,
        sfn=draw(st.integers(0, 1023)),
        slot=draw(st.integers(0, cell.slots_per_frame - 1)),
        send_time_ns=draw(st.integers(1, 2**64 - 1)),
    )
    body = draw(st.sampled_from(sorted(fapi._BODIES)))
    getattr(m, body).SetInParent()  # the body is present even when it has no PDUs
    n = draw(st.integers(0, 3))
    small = st.integers(0, 15)
    if body == "ul_tti_request":
        m.ul_tti_request.pdus.extend(draw(sch_pdu(cell, pb.PuschPdu, i)) for i in range(n))
    elif body == "dl_tti_request":
        m.dl_tti_request.pdus.extend(draw(sch_pdu(cell, pb.PdschPdu, i)) for i in range(n))
    elif body == "tx_data_request":
        for i in range(n):
            m.tx_data_request.pdus.add(pdu_index=i, payload=draw(st.binary(min_size=1)))
    elif body == "rx_data_indication":
        for i in range(n):
            m.rx_data_indication.pdus.add(
                pdu_index=i,
                rnti=draw(st.integers(1, 0xFFEF)),
                harq_id=draw(small),
                payload=draw(st.binary(min_size=1)),
            )
    elif body == "crc_indication":
        for i in range(n):
            ok = draw(st.booleans())
            num_cb = draw(st.integers(1, 200))
            c = m.crc_indication.pdus.add(
                pdu_index=i,
                rnti=draw(st.integers(1, 0xFFEF)),
                harq_id=draw(small),
                tb_crc_ok=ok,
                ul_sinr_db=draw(st.floats(-64, 64, width=32)),
                num_cb=num_cb,
                num_cb_ok=num_cb if ok else draw(st.integers(0, num_cb)),
            )
            if draw(st.booleans()):
                c.timing_advance = draw(st.integers(0, 63))
    elif body == "error_indication":
        e = m.error_indication
        e.error_code = draw(st.sampled_from(list(pb.ErrorCode.values())))
        e.message_type = draw(st.sampled_from(list(pb.MessageType.values())))
        e.rejected_message_id = draw(st.integers(0, 2**64 - 1))
        e.field = draw(st.text(max_size=40))
        e.reason = draw(st.text(max_size=80))
        if draw(st.booleans()):
            e.rejected_sfn = draw(st.integers(0, 1023))
            e.rejected_slot = draw(st.integers(0, cell.slots_per_frame - 1))
    elif body == "slot_indication":
        m.slot_indication.last = draw(st.booleans())
    return cell, m


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_round_trip(cm: tuple[CellConfig, pb.FapiMessage]) -> None:
    cell, m = cm
    out = decode(encode(m, cell), cell)
    assert out == m
    assert out.WhichOneof("body") == m.WhichOneof("body")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_decoder(data: bytes) -> None:
    try:
        m = decode(data, CELL)
    except FapiError as err:
        assert err.code in pb.ErrorCode.values() and err.field
    else:  # whatever passes is a fully valid message
        fapi.validate(m, CELL)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.data())
def test_corrupted_messages_raise_only_fapi_errors(
    cm: tuple[CellConfig, pb.FapiMessage], data: st.DataObject
) -> None:
    cell, m = cm
    raw = bytearray(encode(m, cell))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    with contextlib.suppress(FapiError):
        decode(bytes(raw[:cut]), cell)


# -- codec: each semantic check names its field ------------------------------------------------

Mut = Callable[[pb.FapiMessage], object]


def _ul(f: Callable[[pb.PuschPdu], object]) -> Mut:
    return lambda m: f(m.ul_tti_request.pdus[0])


def _set(name: str, value: Any) -> Callable[[Any], None]:
    return lambda o: setattr(o, name, value)


UL = "ul_tti_request.pdus[0]"
CASES: list[tuple[str, Callable[..., pb.FapiMessage], Mut, str, int]] = [
    ("version", ul_msg, _set("version", 2), "version", pb.MSG_INVALID_VERSION),
    ("message_id", ul_msg, _set("message_id", 0), "message_id", pb.MSG_INVALID_CONFIG),
    ("sender empty", ul_msg, _set("sender", ""), "sender", pb.MSG_INVALID_CONFIG),
    ("sender long", ul_msg, _set("sender", "x" * 65), "sender", pb.MSG_INVALID_CONFIG),
    ("cell", ul_msg, _set("cell_id", 8), "cell_id", pb.MSG_INVALID_PHY_ID),
    ("sfn", ul_msg, _set("sfn", 1024), "sfn", pb.MSG_INVALID_SFN),
    ("slot mu1", ul_msg, _set("slot", 20), "slot", pb.MSG_INVALID_SFN),
    ("send time", ul_msg, _set("send_time_ns", 0), "send_time_ns", pb.MSG_INVALID_CONFIG),
    ("no body", ul_msg, lambda m: m.ClearField("ul_tti_request"), "body", pb.MSG_UNKNOWN_BODY),
    ("rnti 0", ul_msg, _ul(_set("rnti", 0)), f"{UL}.rnti", pb.MSG_INVALID_CONFIG),
    ("rnti high", ul_msg, _ul(_set("rnti", 0xFFF0)), f"{UL}.rnti", pb.MSG_INVALID_CONFIG),
    ("sst", ul_msg, _ul(lambda p: setattr(p.snssai, "sst", 256)), f"{UL}.snssai.sst", 2),
    ("sd", ul_msg, _ul(lambda p: setattr(p.snssai, "sd", 1 << 24)), f"{UL}.snssai.sd", 2),
    ("bwp size 0", ul_msg, _ul(_set("bwp_size", 0)), f"{UL}.bwp_size", 2),
    ("bwp off carrier", ul_msg, _ul(_set("bwp_start", 1)), f"{UL}.bwp_size", 2),
    ("rb size 0", ul_msg, _ul(_set("rb_size", 0)), f"{UL}.rb_size", 2),
    ("prb off bwp", ul_msg, _ul(_set("rb_start", 97)), f"{UL}.rb_start", 2),
    ("start symbol", ul_msg, _ul(_set("start_symbol", 14)), f"{UL}.start_symbol", 2),
    ("symbols 0", ul_msg, _ul(_set("nr_of_symbols", 0)), f"{UL}.nr_of_symbols", 2),
    (
        "symbols past slot",
        ul_msg,
        _ul(lambda p: (setattr(p, "start_symbol", 2), setattr(p, "nr_of_symbols", 13))),
        f"{UL}.nr_of_symbols",
        2,
    ),
    ("no dmrs", ul_msg, _ul(_set("dmrs_symbol_positions", 0)), f"{UL}.dmrs_symbol_positions", 2),
    (
        "dmrs outside",
        ul_msg,
        _ul(lambda p: (setattr(p, "start_symbol", 3), setattr(p, "nr_of_symbols", 11))),
        f"{UL}.dmrs_symbol_positions",
        2,
    ),
    ("mcs", ul_msg, _ul(_set("mcs_index", 32)), f"{UL}.mcs_index", 2),
    ("mcs table ul", ul_msg, _ul(_set("mcs_table", 5)), f"{UL}.mcs_table", 2),
    (
        "mcs table dl",
        dl_msg,
        lambda m: setattr(m.dl_tti_request.pdus[0], "mcs_table", 3),
        "dl_tti_request.pdus[0].mcs_table",
        2,
    ),
    ("qm 3", ul_msg, _ul(_set("qm", 3)), f"{UL}.qm", 2),
    ("qm 8 needs 256qam table", ul_msg, _ul(_set("qm", 8)), f"{UL}.qm", 2),
    ("rate 0", ul_msg, _ul(_set("target_code_rate", 0)), f"{UL}.target_code_rate", 2),
    (
        "rate 1",
        ul_msg,
        _ul(_set("target_code_rate", 10240)),
        f"{UL}.target_code_rate",
        2,
    ),
    ("layers 0", ul_msg, _ul(_set("num_layers", 0)), f"{UL}.num_layers", 2),
    ("layers 5", ul_msg, _ul(_set("num_layers", 5)), f"{UL}.num_layers", 2),
    ("tbs 0", ul_msg, _ul(_set("tb_size_bits", 0)), f"{UL}.tb_size_bits", 2),
    ("tbs bytes", ul_msg, _ul(_set("tb_size_bits", 2023)), f"{UL}.tb_size_bits", 2),
    (
        "tbs capacity",
        ul_msg,
        _ul(_set("tb_size_bits", 10 * 12 * 14 * 2 + 8)),
        f"{UL}.tb_size_bits",
        2,
    ),
    ("harq", ul_msg, _ul(_set("harq_process_id", 16)), f"{UL}.harq_process_id", 2),
    ("rv", ul_msg, _ul(_set("rv_index", 4)), f"{UL}.rv_index", 2),
    (
        "dup pdu index",
        lambda: ul_msg(n=2),
        lambda m: setattr(m.ul_tti_request.pdus[1], "pdu_index", 0),
        "ul_tti_request.pdus[1].pdu_index",
        2,
    ),
    (
        "too many pdus",
        lambda: ul_msg(n=1),
        lambda m: m.ul_tti_request.pdus.extend([m.ul_tti_request.pdus[0]] * 255),
        "ul_tti_request.pdus",
        2,
    ),
    (
        "empty tx payload",
        envelope,
        lambda m: m.tx_data_request.pdus.add(pdu_index=0, payload=b""),
        "tx_data_request.pdus[0].payload",
        2,
    ),
    (
        "sinr nan",
        crc_msg,
        lambda m: setattr(m.crc_indication.pdus[0], "ul_sinr_db", float("nan")),
        "crc_indication.pdus[0].ul_sinr_db",
        2,
    ),
    (
        "ta",
        crc_msg,
        lambda m: setattr(m.crc_indication.pdus[0], "timing_advance", 64),
        "crc_indication.pdus[0].timing_advance",
        2,
    ),
    (
        "cb ok > cb",
        crc_msg,
        lambda m: setattr(m.crc_indication.pdus[0], "num_cb_ok", 2),
        "crc_indication.pdus[0].num_cb_ok",
        2,
    ),
    (
        "crc ok but a cb failed",
        crc_msg,
        lambda m: setattr(m.crc_indication.pdus[0], "num_cb", 3),
        "crc_indication.pdus[0].num_cb_ok",
        2,
    ),
    (
        "rx empty",
        envelope,
        lambda m: m.rx_data_indication.pdus.add(pdu_index=0, rnti=1, harq_id=0),
        "rx_data_indication.pdus[0].payload",
        2,
    ),
    (
        "error code unknown",
        envelope,
        lambda m: setattr(m.error_indication, "error_code", 77),
        "error_indication.error_code",
        2,
    ),
    (
        "error slot",
        envelope,
        lambda m: (
            setattr(m.error_indication, "rejected_sfn", 1),
            setattr(m.error_indication, "rejected_slot", 20),
        ),
        "error_indication.rejected_slot",
        2,
    ),
]


@pytest.mark.parametrize(("make", "mutate", "field", "code"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_semantic_checks_name_the_field(
    make: Callable[[], pb.FapiMessage], mutate: Mut, field: str, code: int
) -> None:
    m = make()
    decode(m.SerializeToString(), CELL) if m.WhichOneof("body") else None  # base is valid
    mutate(m)
    with pytest.raises(FapiError) as exc:
        decode(m.SerializeToString(), CELL)
    assert exc.value.field == field
    assert exc.value.code == code, exc.value
    assert isinstance(exc.value, FieldError) and isinstance(exc.value, ValueError)
    assert pb.ErrorCode.Name(code) in str(exc.value)
    with pytest.raises(FapiError):  # the sender's encode refuses it too
        encode(m, CELL)


def test_slot_range_follows_the_numerology() -> None:
    for mu, spf in ((0, 10), (1, 20), (2, 40), (3, 80)):
        cell = CellConfig(cell_id=7, numerology=mu, carrier_prbs=106)
        m = ul_msg(cell)
        m.slot = spf - 1
        decode(encode(m, cell), cell)
        m.slot = spf
        with pytest.raises(FapiError, match="slot"):
            decode(m.SerializeToString(), cell)


def test_garbage_and_unknown_bodies() -> None:
    with pytest.raises(FapiError) as exc:
        decode(b"\xff\xff\xff\xff", CELL)
    assert exc.value.code == pb.MSG_MALFORMED and exc.value.field == "data"
    unknown = envelope().SerializeToString() + b"\xf2\x01\x00"  # field 30, empty: a future body
    with pytest.raises(FapiError) as exc:
        decode(unknown, CELL)
    assert exc.value.code == pb.MSG_UNKNOWN_BODY and "version knows" in exc.value.reason
    with pytest.raises(FapiError) as exc:
        decode(b"\x00" * (fapi.MAX_MESSAGE_BYTES + 1), CELL)
    assert exc.value.code == pb.MSG_MALFORMED


def test_tx_data_must_match_the_dl_tti_tb_sizes() -> None:
    dl = dl_msg(n=2).dl_tti_request.pdus
    tx = pb.TxDataRequest()
    tx.pdus.add(pdu_index=0, payload=bytes(253))
    tx.pdus.add(pdu_index=1, payload=bytes(253))
    check_tx_data(dl, tx)
    tx.pdus[1].payload = bytes(252)
    with pytest.raises(FapiError) as exc:
        check_tx_data(dl, tx)
    assert exc.value.code == pb.MSG_TX_ERR and exc.value.field == "tx_data_request.pdus[1].payload"
    tx.pdus[1].pdu_index = 9
    with pytest.raises(FapiError, match="pdu_index"):
        check_tx_data(dl, tx)


def test_code_block_segmentation() -> None:
    # TS 38.212 §5.2.2 / §7.2.2: BG2 below 3824 bits at R <= 0.67, Kcb 3840 / 8448
    # (the rate is SCF 222's targetCodeRate: R x 1024 in 0.1 units)
    assert num_code_blocks(100, 5120) == 1
    assert num_code_blocks(3824, 5120) == 1  # BG2, B = 3840 = Kcb
    assert num_code_blocks(3832, 7000) == 1  # BG1
    assert num_code_blocks(8424, 9000) == 1  # BG1, B = 8448
    assert num_code_blocks(8432, 9000) == 2
    assert num_code_blocks(20000, 2000) == 6  # BG2 (R <= 1/4): ceil(20024 / 3816)


def test_cell_config_rejects_bad_values() -> None:
    with pytest.raises(FieldError, match="numerology"):
        CellConfig(numerology=4)
    with pytest.raises(FieldError, match="carrier_prbs"):
        CellConfig(carrier_prbs=276)


# -- endpoints in one process, driven slot by slot -------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.crc: list[tuple[int, int, pb.CrcPdu]] = []
        self.rx: list[tuple[int, int, pb.RxDataPdu]] = []
        self.errors: list[pb.FapiMessage] = []

    def on_crc(self, sfn: int, slot: int, pdu: pb.CrcPdu) -> None:
        self.crc.append((sfn, slot, pdu))

    def on_rx(self, sfn: int, slot: int, pdu: pb.RxDataPdu) -> None:
        self.rx.append((sfn, slot, pdu))

    def on_error(self, msg: pb.FapiMessage) -> None:
        self.errors.append(msg)


def settle(*ends: L1Endpoint | L2Endpoint, rounds: int = 3) -> None:
    """Let inproc messages cross (they are queued at once; poll a few times to be sure)."""
    for _ in range(rounds):
        for e in ends:
            e.poll(20)


@pytest.fixture
def pair() -> Iterator[tuple[L1Endpoint, L2Endpoint, Recorder]]:
    ep = inproc()
    rec = Recorder()
    l1 = L1Endpoint(ep, CELL)
    l2 = L2Endpoint(
        ep, FixedScheduler(CELL), CELL, on_crc=rec.on_crc, on_rx_data=rec.on_rx,
        on_error=rec.on_error,
    )  # fmt: skip
    try:
        yield l1, l2, rec
    finally:
        l2.close()
        l1.close()


def injector(endpoint: str) -> zmq.Socket[bytes]:
    s: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.ROUTING_ID, b"inject")
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    return s


def error_reply(s: zmq.Socket[bytes], l1: L1Endpoint) -> pb.ErrorIndication:
    for _ in range(50):
        l1.poll(0)
        if s.poll(10):
            m = decode(s.recv(), CELL)
            assert m.WhichOneof("body") == "error_indication"
            return m.error_indication
    raise AssertionError("no ERROR.indication")


def test_slot_exchange_late_and_rejected_requests_inproc(
    pair: tuple[L1Endpoint, L2Endpoint, Recorder],
) -> None:
    l1, l2, rec = pair
    assert l1.tick(0) is None  # not started: nothing indicated, nothing due
    l2.start()
    settle(l1)
    assert l1.running
    # slots 1..3 indicate 4..6; the L2 answers each at once
    for n in (1, 2, 3):
        assert l1.tick(n) is None  # slots 1..3 were never indicated
        settle(l2)
    assert l2.stats.received["SLOT.indication"] == 3
    settle(l1)
    req = l1.step(4)
    assert isinstance(req, SlotRequest)
    assert (req.sfn, req.slot, req.abs_slot) == (0, 4, 4)
    assert [p.rnti for p in req.ul] == [0x4601, 0x4602] and len(req.dl) == 2
    assert req.payloads[1] == expected_payload(0, 4, 0x4602, 4, len(req.payloads[1]), uplink=False)
    settle(l2)
    assert [(s, sl, c.rnti, c.tb_crc_ok) for s, sl, c in rec.crc] == [
        (0, 4, 0x4601, True),
        (0, 4, 0x4602, True),
    ]
    assert [r.payload for _, _, r in rec.rx] == [
        expected_payload(0, 4, 0x4601, 4, len(rec.rx[0][2].payload)),
        expected_payload(0, 4, 0x4602, 4, len(rec.rx[1][2].payload)),
    ]

    # late: the L1 runs through slots 5..9 while the L2 is busy; the L2 then answers the
    # indications for 8, 9 (already processed: late) and 10, 11, 12 (in time); slot 7 was
    # indicated before and answered by the settle above
    for n in range(5, 10):
        l1.step(n)
    settle(l2)
    settle(l1)
    assert l1.stats.rejected["MSG_SLOT_ERR"] == 6  # DL, UL, TX_DATA of slots 8, 9
    assert l1.stats.rejected_by_type["UL_TTI.request"] == 2
    settle(l2)
    late = [m.error_indication for m in rec.errors]
    assert {(e.error_code, e.rejected_sfn, e.rejected_slot) for e in late} == {
        (pb.MSG_SLOT_ERR, 0, 8),
        (pb.MSG_SLOT_ERR, 0, 9),
    }
    assert l2.stats.events["ul_pdus_rejected"] == 4  # their CRCs will never come
    assert l2.ul_pdus_awaiting_crc == 6  # slots 10, 11, 12, in time
    req = l1.step(10)
    assert req is not None and len(req.ul) == 2

    # garbage, unknown, invalid, never-indicated and duplicate messages from another peer
    inj = injector(l1.endpoint)
    try:
        inj.send(b"\xff\xfe garbage")
        e = error_reply(inj, l1)
        assert (e.error_code, e.message_type, e.rejected_message_id) == (pb.MSG_MALFORMED, 0, 0)

        m = envelope(sfn=0, slot=11, mid=1)
        inj.send(m.SerializeToString() + b"\xf2\x01\x00")
        assert error_reply(inj, l1).error_code == pb.MSG_UNKNOWN_BODY

        m = ul_msg()
        m.sfn, m.slot, m.message_id = 0, 11, 2
        m.ul_tti_request.pdus[0].qm = 5
        e = error_reply_after(inj, l1, m)
        assert (e.error_code, e.field) == (pb.MSG_INVALID_CONFIG, "ul_tti_request.pdus[0].qm")
        assert (e.message_type, e.rejected_message_id) == (pb.MESSAGE_TYPE_UL_TTI_REQUEST, 2)

        m = ul_msg()
        m.sfn, m.slot, m.message_id = 5, 0, 3
        e = error_reply_after(inj, l1, m)
        assert (e.error_code, e.rejected_sfn, e.rejected_slot) == (pb.SFN_OUT_OF_SYNC, 5, 0)

        m = ul_msg()
        m.sfn, m.slot, m.message_id = 0, 11, 4  # slot 11 already has the L2's UL_TTI
        assert error_reply_after(inj, l1, m).error_code == pb.MSG_DUPLICATE
        m.message_id = 4  # same sequence number again
        assert error_reply_after(inj, l1, m).error_code == pb.MSG_DUPLICATE

        m = crc_msg()
        m.message_id = 5
        assert error_reply_after(inj, l1, m).error_code == pb.MSG_INVALID_STATE

        m = envelope(sfn=0, slot=12, mid=6)
        m.tx_data_request.pdus.add(pdu_index=0, payload=b"x")
        assert error_reply_after(inj, l1, m).error_code == pb.MSG_DUPLICATE  # L2 sent it
    finally:
        inj.close(linger=0)
    assert l1.stats.rejected_by_type["unknown"] == 2  # garbage and the unknown body
    for code in ("MSG_MALFORMED", "MSG_UNKNOWN_BODY", "MSG_INVALID_CONFIG", "SFN_OUT_OF_SYNC"):
        assert l1.stats.rejected[code] == 1
    assert l1.stats.rejected["MSG_DUPLICATE"] == 3

    # ... and the L1 keeps serving the L2's slots
    for n in (11, 12):
        req = l1.step(n)
        assert req is not None and len(req.ul) == 2 and len(req.payloads) == 2
    settle(l2)  # CRCs of 10, 11, 12 arrive; the L2 answers 13, 14, 15
    assert sorted({slot for _, slot, _ in rec.crc}) == [4, 5, 6, 7, 10, 11, 12]
    assert len(rec.rx) == len(rec.crc) == 14 and all(c.tb_crc_ok for _, _, c in rec.crc)

    # STOP.request: indicated slots (13, 14, 15) are still processed, then STOP.indication
    l2.stop()
    settle(l1)
    assert l1.running
    n = 13
    while not l1.stopped:
        l1.step(n)
        n += 1
    assert n == 16
    settle(l2)
    assert l2.stopped
    assert l2.ul_pdus_awaiting_crc == 0 and len(rec.crc) == 20
    assert l1.stats.sent["ERROR.indication"] == sum(l1.stats.rejected.values())
    assert l2.stats.errors_received.total() == 6  # the late ones went to the L2
    assert l1.stats.seq_gaps == l2.stats.seq_gaps == 0


def error_reply_after(
    s: zmq.Socket[bytes], l1: L1Endpoint, m: pb.FapiMessage
) -> pb.ErrorIndication:
    s.send(m.SerializeToString())
    return error_reply(s, l1)


def test_handler_failures_become_crc_failures(
    pair: tuple[L1Endpoint, L2Endpoint, Recorder],
) -> None:
    l1, l2, rec = pair

    class Broken:
        calls = 0

        def on_slot(self, req: SlotRequest) -> SlotResult:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("PHY crashed")
            if self.calls == 2:  # wrong payload length and an unknown PDU
                return SlotResult(
                    [
                        PuschResult(0, crc_ok=True, sinr_db=3.0, payload=b"short"),
                        PuschResult(1, crc_ok=False, sinr_db=-3.0),
                        PuschResult(9, crc_ok=True, sinr_db=3.0, payload=b""),
                    ]
                )
            return EchoHandler(crc_fail_every=2).on_slot(req)

    l1.handler = Broken()
    l2.start()
    settle(l1)
    for n in range(1, 4):
        l1.step(n)
        settle(l2)
    settle(l1)
    for n in range(4, 7):
        l1.step(n)
    settle(l2)
    by_slot = {}
    for _, slot, c in rec.crc:
        by_slot.setdefault(slot, []).append(c.tb_crc_ok)
    assert by_slot == {4: [False, False], 5: [False, False], 6: [False, True]}
    assert [slot for _, slot, _ in rec.rx] == [6]  # only the PDU that passed carries data
    assert l1.stats.events["handler_errors"] == 3
    assert l1.running


def test_scheduler_failure_still_answers_the_slot() -> None:
    ep = inproc()

    class Bad:
        def schedule(self, sfn: int, slot: int) -> fapi.Schedule:
            u = pb.PuschPdu()
            fill_pdu(u)
            u.qm = 7
            return fapi.Schedule([u], [], {})

    with L1Endpoint(ep, CELL) as l1, L2Endpoint(ep, Bad(), CELL) as l2:
        l2.start()
        settle(l1)
        l1.tick(1)
        settle(l2)
        settle(l1)
        req = l1.tick(4)
        assert req is not None and req.has_ul_tti and req.has_dl_tti and not req.ul
        assert l2.stats.events["scheduler_errors"] == 1
        assert not l1.stats.rejected


def test_endpoint_arguments_are_checked() -> None:
    with pytest.raises(FieldError, match="slot_ahead"):
        L1Endpoint(inproc(), CELL, slot_ahead=0)
    with pytest.raises(FieldError, match="endpoint"):
        L1Endpoint("nonsense://x", CELL)
    with L1Endpoint(inproc(), CELL) as l1:
        l1._now = 5
        with pytest.raises(FieldError, match="slot"):
            l1.tick(5)


# -- free-running endpoints ----------------------------------------------------------------


def check_accounting(s1: dict[str, Any], s2: dict[str, Any], n: int, ues: int) -> None:
    """Nothing lost: every message one end sent arrived at the other, accepted or
    rejected (late) with an ERROR.indication that arrived back."""
    assert s1["sent"]["SLOT.indication"] == n == s2["received"]["SLOT.indication"]
    assert s1["events"]["slots_processed"] == n
    for t in ("DL_TTI.request", "UL_TTI.request", "TX_DATA.request"):
        assert s2["sent"][t] == n
        assert s1["received"].get(t, 0) + s1["rejected_by_type"].get(t, 0) == n, t
    for t in ("CRC.indication", "RX_DATA.indication", "ERROR.indication", "STOP.indication"):
        assert s1["sent"].get(t, 0) == s2["received"].get(t, 0), t
    assert s1["received"]["START.request"] == s1["received"]["STOP.request"] == 1
    assert s1["sent"]["CRC.indication"] == s1["received"].get("UL_TTI.request", 0)
    assert set(s1["rejected"]) <= {"MSG_SLOT_ERR"}  # lateness, nothing else
    assert sum(s1["rejected"].values()) == s1["sent"].get("ERROR.indication", 0)
    assert s2["errors_received"] == s1["rejected"]
    assert s1["seq_gaps"] == s2["seq_gaps"] == 0
    assert not s1["send_failed"] and not s2["send_failed"]
    assert s2["ul_pdus_awaiting_crc"] == 0
    assert s2["events"].get("crc_ok", 0) == ues * s1["sent"]["CRC.indication"]
    assert s2["events"].get("rx_pdus", 0) == s2["events"].get("crc_ok", 0)
    assert s1["sent"]["CRC.indication"] > 0


def test_free_running_threads_inproc() -> None:
    ep = inproc()
    n = 1000
    got: list[bytes] = []
    with (
        L1Endpoint(ep, CELL) as l1,
        L2Endpoint(
            ep, FixedScheduler(CELL), CELL, on_rx_data=lambda s, sl, p: got.append(p.payload)
        ) as l2,
    ):
        t = threading.Thread(target=l2.run, args=(30.0,))
        t.start()
        try:
            assert l1.run(n)
        finally:
            t.join(30)
        assert l2.stopped
        check_accounting(l1.counters(), l2.counters(), n, ues=2)
        assert len(got) == 2 * l1.stats.sent["CRC.indication"]


def test_l1_without_l2_times_out() -> None:
    with L1Endpoint(inproc(), CELL) as l1, pytest.raises(TimeoutError):
        l1.run(10, start_timeout_s=0.05)


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "airan.ran.fapi", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_exchange_10000_slots_over_tcp() -> None:
    n = 10_000  # µ=1: 0.5 ms slots, 5 s
    l1 = _spawn("l1", "--endpoint", "tcp://127.0.0.1:*", "--slots", str(n), "--numerology", "1",
                "--timeout", "20")  # fmt: skip
    l2: subprocess.Popen[str] | None = None
    try:
        assert l1.stdout is not None
        endpoint = json.loads(l1.stdout.readline())["endpoint"]
        assert endpoint.startswith("tcp://127.0.0.1:")
        l2 = _spawn("l2", "--endpoint", endpoint, "--numerology", "1", "--timeout", "40")
        out2, err2 = l2.communicate(timeout=60)
        out1, err1 = l1.communicate(timeout=30)
    finally:
        for p in (l1, l2):
            if p is not None and p.poll() is None:
                p.kill()
    assert l1.returncode == 0, err1[-2000:]
    assert l2.returncode == 0, err2[-2000:]
    r1 = json.loads(out1.strip().splitlines()[-1])
    r2 = json.loads(out2.strip().splitlines()[-1])
    assert r1["ok"] and r2["ok"]
    s1, s2 = r1["counters"], r2["counters"]
    check_accounting(s1, s2, n, ues=2)
    assert s2["events"]["rx_payload_ok"] == s2["events"]["rx_pdus"]  # bytes intact end to end
    assert "rx_payload_bad" not in s2["events"]


def test_cli_rejects_bad_numerology() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "airan.ran.fapi", "l1", "--endpoint", "tcp://127.0.0.1:*",
         "--numerology", "5"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert p.returncode == 2 and "numerology" in p.stderr


def test_mac_adapter_drives_the_real_mac() -> None:
    from airan.ran.config import RanConfig
    from airan.ran.mac import Mac

    mac = Mac(RanConfig(), seed=3, ul_crc_from_l1=True)
    sched = fapi.MacScheduler(mac)
    cell = sched.cell
    assert (cell.numerology, cell.carrier_prbs) == (mac.mu, mac.n_prb)
    ep = inproc()
    with L1Endpoint(ep, cell) as l1, L2Endpoint(ep, sched, cell, on_crc=sched.on_crc) as l2:
        l2.start()
        settle(l1)
        for n in range(1, 60):
            l1.step(n)
            settle(l2, rounds=1)
            settle(l1, rounds=1)
        assert not l1.stats.rejected and not l2.stats.events["scheduler_errors"]
        assert l1.stats.received["UL_TTI.request"] >= 50
    assert sched.crc_applied > 0 and sched.crc_ignored == 0
