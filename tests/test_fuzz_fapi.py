"""Hypothesis fuzzing of the FAPI decoders (airan/ran/fapi.py) and of the L1 endpoint
under hostile input.

tests/test_fapi.py already checks random bytes and byte-corrupted valid messages
against :func:`decode`. Here, in addition:

* every message type, with its body drawn from the protobuf descriptor
  (:mod:`protofuzz`: every field over its whole range, NaN/inf SINRs, unknown enum
  values, oversized lists) and as a valid message with one or two fields changed
  (valid-but-inconsistent); the decoder raises nothing but :class:`FapiError`, whose
  code is a known SCF 222 error code and whose ``field`` names a field that exists in
  the message; whatever it accepts passes :func:`validate` again and survives a
  round trip;
* ``check_tx_data`` against arbitrary DL_TTI / TX_DATA pairs;
* a live L1 endpoint (ZMQ, in process) serving a real L2 while an injector sends it
  fuzzed frames (random bytes, empty frames, arbitrary and mutated messages, several
  per ZMQ message) between slots: every frame is either accepted or rejected with an
  ERROR.indication to its sender and counted (an injector that never reads its
  replies gets at most the high-water mark of them; the rest are counted as not
  sent); the L1 processes every slot and, once the injector stops, serves the L2's
  slots (CRC.indication) as before;
* the L2 endpoint likewise under frames from a hostile "L1".

``AIRAN_FUZZ_EXAMPLES`` (default 100) sets the examples per property.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protofuzz import messages, mutated
from test_fapi import CELL, sch_pdu

from airan.fapi.v1 import fapi_pb2 as pb
from airan.ran import fapi
from airan.ran.fapi import (
    FapiError,
    FixedScheduler,
    L1Endpoint,
    L2Endpoint,
    check_tx_data,
    decode,
    encode,
    validate,
)

EXAMPLES = int(os.environ.get("AIRAN_FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
BODIES = sorted(fapi._BODIES)
SPF = CELL.slots_per_frame

# ---- strategies -----------------------------------------------------------------------

#: values that make the envelope pass, so that the body's checks are reached
ENVELOPE_HINTS: dict[str, st.SearchStrategy[Any]] = {
    "airan.fapi.v1.FapiMessage.version": st.just(fapi.FAPI_VERSION),
    "airan.fapi.v1.FapiMessage.message_id": st.integers(1, 2**64 - 1),
    "airan.fapi.v1.FapiMessage.sender": st.text(min_size=1, max_size=64),
    "airan.fapi.v1.FapiMessage.cell_id": st.just(CELL.cell_id),
    "airan.fapi.v1.FapiMessage.sfn": st.integers(0, 1023),
    "airan.fapi.v1.FapiMessage.slot": st.integers(0, SPF - 1),
    "airan.fapi.v1.FapiMessage.send_time_ns": st.integers(1, 2**64 - 1),
}


def envelope(draw: st.DrawFn) -> pb.FapiMessage:
    return pb.FapiMessage(
        version=fapi.FAPI_VERSION,
        message_id=draw(st.integers(1, 2**64 - 1)),
        sender=draw(st.text(min_size=1, max_size=64)),
        cell_id=CELL.cell_id,
        sfn=draw(st.integers(0, 1023)),
        slot=draw(st.integers(0, SPF - 1)),
        send_time_ns=draw(st.integers(1, 2**64 - 1)),
    )


@st.composite
def arbitrary_body(draw: st.DrawFn, body: str) -> pb.FapiMessage:
    """A valid envelope and an arbitrary ``body`` (from its descriptor)."""
    m = envelope(draw)
    field = pb.FapiMessage.DESCRIPTOR.fields_by_name[body]
    part = draw(messages(field.message_type, max_items=6))
    getattr(m, body).CopyFrom(part)
    return m


@st.composite
def valid_message(draw: st.DrawFn, body: str) -> pb.FapiMessage:
    """A message ``validate`` accepts, for :data:`CELL`."""
    m = envelope(draw)
    getattr(m, body).SetInParent()
    n = draw(st.integers(0, 3))
    if body == "ul_tti_request":
        m.ul_tti_request.pdus.extend(draw(sch_pdu(CELL, pb.PuschPdu, i)) for i in range(n))
    elif body == "dl_tti_request":
        m.dl_tti_request.pdus.extend(draw(sch_pdu(CELL, pb.PdschPdu, i)) for i in range(n))
    elif body == "tx_data_request":
        for i in range(n):
            m.tx_data_request.pdus.add(pdu_index=i, payload=draw(st.binary(min_size=1)))
    elif body == "rx_data_indication":
        for i in range(n):
            m.rx_data_indication.pdus.add(
                pdu_index=i,
                rnti=draw(st.integers(1, 0xFFEF)),
                harq_id=draw(st.integers(0, 15)),
                payload=draw(st.binary(min_size=1)),
            )
    elif body == "crc_indication":
        for i in range(n):
            num_cb = draw(st.integers(1, 64))
            ok = draw(st.booleans())
            m.crc_indication.pdus.add(
                pdu_index=i,
                rnti=draw(st.integers(1, 0xFFEF)),
                harq_id=draw(st.integers(0, 15)),
                tb_crc_ok=ok,
                ul_sinr_db=draw(st.floats(-64, 64)),
                num_cb=num_cb,
                num_cb_ok=num_cb if ok else draw(st.integers(0, num_cb)),
            )
    elif body == "error_indication":
        e = m.error_indication
        e.error_code = draw(st.sampled_from(list(pb.ErrorCode.values())))
        e.message_type = draw(st.sampled_from(list(pb.MessageType.values())))
        e.reason = draw(st.text(max_size=40))
    elif body == "slot_indication":
        m.slot_indication.last = draw(st.booleans())
    validate(m, CELL)  # the generator's own check
    return m


def any_message(body: str | None = None) -> st.SearchStrategy[pb.FapiMessage]:
    bodies = [body] if body else BODIES
    return st.one_of(
        messages(pb.FapiMessage.DESCRIPTOR, max_items=4),
        messages(pb.FapiMessage.DESCRIPTOR, ENVELOPE_HINTS, hint_probability=0.9),
        *(arbitrary_body(b) for b in bodies),
        *(mutated(valid_message(b)) for b in bodies),
    )


@st.composite
def wire_bytes(draw: st.DrawFn) -> bytes:
    """Bytes as they could arrive: arbitrary, an encoding, or one damaged."""
    kind = draw(st.sampled_from(["random", "message", "damaged"]))
    if kind == "random":
        return draw(st.binary(max_size=512))
    raw = bytearray(draw(any_message()).SerializeToString())
    if kind == "damaged" and raw:
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] ^= 1 << draw(st.integers(0, 7))
        raw = raw[: draw(st.integers(0, len(raw)))]
    return bytes(raw)


# ---- the decoder --------------------------------------------------------------------------


def resolve(msg: Message, dotted: str) -> Any:
    """The field a FapiError names (``ul_tti_request.pdus[1].snssai.sst``) in ``msg``:
    an AttributeError / IndexError if it does not exist."""
    value: Any = msg
    for part in dotted.split("."):
        m = re.fullmatch(r"([a-z_0-9]+)(?:\[(\d+)\])?", part)
        assert m, f"malformed field name {dotted!r}"
        value = getattr(value, m[1])
        if m[2] is not None:
            value = value[int(m[2])]
    return value


def check_decode(data: bytes) -> pb.FapiMessage | None:
    """``decode`` raises only FapiError, naming a real field; what it accepts is valid
    and round-trips."""
    try:
        msg = decode(data, CELL)
    except FapiError as err:
        assert err.code in pb.ErrorCode.values()
        assert err.field and err.reason and err.code_name.startswith(("MSG_", "SFN_"))
        if err.field not in ("data", "body"):
            resolve(fapi.parse(data), err.field)
        return None
    validate(msg, CELL)
    assert decode(encode(msg, CELL), CELL) == msg
    return msg


@FUZZ
@given(wire_bytes())
def test_decoder_on_wire_bytes(data: bytes) -> None:
    check_decode(data)


@pytest.mark.parametrize("body", BODIES)
def test_decoder_on_each_message_type(body: str) -> None:
    accepted: list[int] = []

    @FUZZ
    @given(st.one_of(arbitrary_body(body), mutated(valid_message(body)), valid_message(body)))
    def run(m: pb.FapiMessage) -> None:
        if check_decode(m.SerializeToString()) is not None:
            accepted.append(1)

    run()
    assert accepted  # the valid ones at least


@FUZZ
@given(
    st.lists(st.one_of(sch_pdu(CELL, pb.PdschPdu, 0), sch_pdu(CELL, pb.PdschPdu, 1)), max_size=3),
    messages(pb.TxDataRequest.DESCRIPTOR, max_items=4),
)
def test_tx_data_check_raises_only_fapi_errors(dl: list[Any], tx: pb.TxDataRequest) -> None:
    try:
        check_tx_data(dl, tx)
    except FapiError as err:
        assert err.code == pb.MSG_TX_ERR and err.field.startswith("tx_data_request.pdus[")
        return
    sizes = {p.pdu_index: p.tb_size_bits // 8 for p in dl}
    assert all(len(t.payload) == sizes[t.pdu_index] for t in tx.pdus)


# ---- the L1 endpoint under hostile input ------------------------------------------------


class Crc:
    def __init__(self) -> None:
        self.slots: list[tuple[int, int]] = []

    def __call__(self, sfn: int, slot: int, pdu: pb.CrcPdu) -> None:
        self.slots.append((sfn, slot))


def settle(*ends: L1Endpoint | L2Endpoint) -> None:
    for _ in range(3):
        for e in ends:
            e.poll(5)


@pytest.fixture
def endpoints() -> Iterator[tuple[L1Endpoint, L2Endpoint, Crc, zmq.Socket[bytes]]]:
    ep = f"inproc://fuzz-fapi-{uuid.uuid4().hex}"
    crc = Crc()
    l1 = L1Endpoint(ep, CELL)
    l2 = L2Endpoint(ep, FixedScheduler(CELL), CELL, on_crc=crc)
    inj: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    inj.setsockopt(zmq.ROUTING_ID, b"hostile")
    inj.setsockopt(zmq.LINGER, 0)
    inj.connect(ep)
    try:
        yield l1, l2, crc, inj
    finally:
        inj.close(linger=0)
        l2.close()
        l1.close()


def arrivals(e: L1Endpoint | L2Endpoint) -> int:
    return sum(e.stats.received.values()) + sum(e.stats.rejected.values())


@st.composite
def hostile_batches(draw: st.DrawFn) -> list[list[list[bytes]]]:
    """Per slot, the ZMQ messages (each a list of frames) the injector sends."""
    frame = st.one_of(st.just(b""), wire_bytes())
    message = st.lists(frame, min_size=1, max_size=3)
    return draw(st.lists(st.lists(message, max_size=3), min_size=1, max_size=8))


def test_the_l1_serves_the_l2_while_fed_garbage(
    endpoints: tuple[L1Endpoint, L2Endpoint, Crc, zmq.Socket[bytes]],
) -> None:
    l1, l2, crc, inj = endpoints
    l2.start()
    settle(l1, l2)
    assert l1.running
    state = {"slot": 0, "injected": 0}

    @FUZZ
    @given(hostile_batches())
    def run(batches: list[list[list[bytes]]]) -> None:
        for per_slot in batches:
            for frames in per_slot:
                inj.send_multipart(frames)
                state["injected"] += len(frames)
            state["slot"] += 1
            processed = l1.stats.events["slots_processed"]
            l1.step(state["slot"])
            settle(l2, l1)
            assert l1.running
            assert l1.stats.events["slots_processed"] in (processed, processed + 1)
        # every frame that reached the L1 was accepted or refused, and each refusal
        # was answered with an ERROR.indication -- or counted as not sent: the injector
        # never reads its replies, and once its queue holds the high-water mark (4096)
        # the L1 drops further replies to it instead of blocking or buffering more
        assert arrivals(l1) == state["injected"] + sum(l2.stats.sent.values())
        answered = l1.stats.sent["ERROR.indication"] + l1.stats.send_failed["ERROR.indication"]
        assert answered == sum(l1.stats.rejected.values())

    run()
    # the injector goes quiet: the L2's slots are served as before
    seen = len(crc.slots)
    for _ in range(12):
        state["slot"] += 1
        l1.step(state["slot"])
        settle(l2, l1)
    assert len(crc.slots) > seen
    assert l1.running and not l1.stopped
    errors = 0
    while inj.poll(0):
        reply = decode(inj.recv(), CELL)
        assert reply.WhichOneof("body") == "error_indication"
        errors += 1
    assert errors > 0
    print(
        f"\nL1 under fuzzing: {state['injected']} hostile frames, "
        f"rejected {dict(l1.stats.rejected)}, {errors} ERROR.indication read by the "
        f"injector, {l1.stats.send_failed['ERROR.indication']} not sent (its queue full)"
    )


def test_the_l2_survives_a_hostile_l1() -> None:
    ep = f"inproc://fuzz-fapi-l2-{uuid.uuid4().hex}"
    ctx = zmq.Context.instance()
    fake_l1: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
    fake_l1.setsockopt(zmq.LINGER, 0)
    fake_l1.bind(ep)
    l2 = L2Endpoint(ep, FixedScheduler(CELL), CELL)
    try:
        l2.start()
        assert fake_l1.poll(1000)
        identity = fake_l1.recv_multipart()[0]
        sent = {"frames": 0}

        @FUZZ
        @given(st.lists(st.lists(st.one_of(st.just(b""), wire_bytes()), min_size=1, max_size=3)))
        def run(messages_: list[list[bytes]]) -> None:
            for frames in messages_:
                fake_l1.send_multipart([identity, *frames])
                sent["frames"] += len(frames)
            deadline = time.monotonic() + 5
            while arrivals(l2) < sent["frames"]:
                assert time.monotonic() < deadline, "the L2 lost frames"
                l2.poll(5)
            assert arrivals(l2) == sent["frames"]

        run()
        assert sum(l2.stats.rejected.values()) > 0
    finally:
        l2.close()
        fake_l1.close(linger=0)


def test_a_spoofed_sender_cannot_starve_the_real_l2(
    endpoints: tuple[L1Endpoint, L2Endpoint, Crc, zmq.Socket[bytes]],
) -> None:
    l1, l2, crc, inj = endpoints
    l2.start()
    settle(l1, l2)
    spoof = pb.FapiMessage(
        version=fapi.FAPI_VERSION,
        message_id=2**63,
        sender="l2",
        cell_id=CELL.cell_id,
        send_time_ns=time.time_ns(),
    )
    spoof.stop_request.SetInParent()
    inj.send(spoof.SerializeToString())
    for n in range(1, 16):
        l1.step(n)
        settle(l2, l1)
    # before the fix (the duplicate check keyed by the sender name alone) every UL_TTI of
    # the real L2 was refused as a "duplicate" of the spoofed id 2**63
    assert len(crc.slots) > 0
    assert l1.running  # the spoofed STOP.request came from another peer: refused
    assert l1.stats.rejected["MSG_INVALID_STATE"] >= 1


def test_an_l2_flood_costs_each_slot_a_bounded_time(
    endpoints: tuple[L1Endpoint, L2Endpoint, Crc, zmq.Socket[bytes]],
) -> None:
    """The L2 floods (fault ``l2_flood``, docs/reliability.md): a peer sends 20,000 slot
    requests as fast as it can. Each tick takes at most ``max_per_tick`` messages (the
    rest waits in the bounded socket queue), every message taken is refused and
    answered or counted, and the real L2's slots go on being served meanwhile."""
    l1, l2, crc, inj = endpoints
    l2.start()
    settle(l1, l2)
    msg = pb.FapiMessage(
        version=fapi.FAPI_VERSION, sender="l2", cell_id=CELL.cell_id, sfn=0, slot=1
    )
    msg.dl_tti_request.SetInParent()
    sent = 0
    for i in range(1, 20_001):
        msg.message_id = i
        msg.send_time_ns = time.time_ns()
        try:
            inj.send(msg.SerializeToString(), zmq.NOBLOCK)
        except zmq.Again:  # the high-water mark: the flooder is held back on its side
            break
        sent += 1
    assert sent >= 1000
    per_tick: list[int] = []
    taken = 0
    slot = 0
    t_max = 0.0
    while taken < sent and slot < 1000:
        slot += 1
        before = arrivals(l1)
        t0 = time.perf_counter()
        l1.step(slot)
        t_max = max(t_max, time.perf_counter() - t0)
        per_tick.append(arrivals(l1) - before)
        for _ in range(2):  # the L2 answers; the L1 serves its socket a batch at a time
            l2.poll(5)
            assert l1.poll(5, l1.max_per_tick) <= l1.max_per_tick
        taken = l1.stats.rejected_by_type["DL_TTI.request"]
    assert max(per_tick) <= l1.max_per_tick  # each tick took a bounded batch
    assert l1.stats.events["tick_budget_reached"] >= 1
    assert len(crc.slots) > 0 and l1.running  # the real L2 was served throughout
    assert taken >= sent  # every flood message was taken, and refused
    print(
        f"\nL2 flood: {sent} messages queued (high-water mark {fapi.DEFAULT_HWM}), taken "
        f"over {slot} ticks, at most {max(per_tick)} per tick, slowest tick {t_max * 1e3:.1f} ms; "
        f"{len(crc.slots)} slots of the real L2 served"
    )
