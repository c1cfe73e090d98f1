"""Hypothesis strategies for protobuf messages, derived from their descriptors.

:func:`messages` walks a message :class:`~google.protobuf.descriptor.Descriptor` and
builds a strategy that draws arbitrary instances: every scalar type over its whole
wire range with its edge values (0, ±1, the type's min and max), floats including NaN,
±inf and -0.0, strings from empty to long and across Unicode, arbitrary bytes, enum
values both named and unknown (proto3 enums are open), repeated fields and maps of
0..``max_items`` entries, one member or none of each oneof, nested messages down to
``max_depth`` levels, and ``google.protobuf.Struct`` / ``Value`` / ``ListValue`` as
arbitrary JSON. ``hints`` maps full field names (``"airan.o1.v1.Edit.path"``) to
strategies of meaningful values, drawn with probability ``hint_probability`` instead of
the generic ones, and ``presence_probability`` is the chance that a field outside a
oneof is set: raise both to reach past the first validity checks.

Used by tests/test_fuzz_grpc.py (every E2 and O1 request type) and
tests/test_fuzz_fapi.py (every FAPI message).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

__all__ = ["json_values", "messages", "mutated", "scalar"]

_F = FieldDescriptor

_INT_RANGES: dict[int, tuple[int, int]] = {
    _F.TYPE_INT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _F.TYPE_INT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _F.TYPE_UINT32: (0, 2**32 - 1),
    _F.TYPE_FIXED32: (0, 2**32 - 1),
    _F.TYPE_UINT64: (0, 2**64 - 1),
    _F.TYPE_FIXED64: (0, 2**64 - 1),
}


def _integers(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = sorted({v for v in (lo, lo + 1, -1, 0, 1, 2, 255, 65535, hi - 1, hi) if lo <= v <= hi})
    return st.one_of(st.sampled_from(edges), st.integers(0, min(hi, 300)), st.integers(lo, hi))


def _texts() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=24),
        st.text(st.characters(codec="ascii"), max_size=24),
        # long, and very long: size limits must be checked before work is done
        st.builds(
            lambda s, n: (s or "x") * n, st.text(min_size=1, max_size=8), st.integers(1, 20_000)
        ),
    )


def _binaries() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=64),
        st.builds(
            lambda b, n: (b or b"\0") * n, st.binary(min_size=1, max_size=8), st.integers(1, 20_000)
        ),
    )


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    """Values of one scalar (non-message) field, over its whole range."""
    t = field.type
    if t in _INT_RANGES:
        return _integers(*_INT_RANGES[t])
    if t == _F.TYPE_DOUBLE:
        return st.one_of(
            st.sampled_from([0.0, -0.0, 1.0, -1.0, float("nan"), float("inf"), float("-inf")]),
            st.floats(allow_nan=True, allow_infinity=True),
        )
    if t == _F.TYPE_FLOAT:
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if t == _F.TYPE_BOOL:
        return st.booleans()
    if t == _F.TYPE_STRING:
        return _texts()
    if t == _F.TYPE_BYTES:
        return _binaries()
    if t == _F.TYPE_ENUM:
        named = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(named), _integers(-(2**31), 2**31 - 1))
    raise TypeError(f"{field.full_name}: not a scalar field (type {t})")


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Arbitrary JSON-able values as a ``google.protobuf.Value`` can carry them
    (numbers are doubles: NaN and ±inf included)."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(2**53), 2**53).map(float),
        _texts(),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(_texts(), inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def _is_map(field: FieldDescriptor) -> bool:
    mt = field.message_type
    return mt is not None and mt.GetOptions().map_entry


def _chance(p: float) -> st.SearchStrategy[bool]:
    """True with probability ``p`` (shrinks towards True)."""
    return st.integers(0, 999).map(lambda r: r < p * 1000)


class _Builder:
    def __init__(
        self,
        hints: Mapping[str, st.SearchStrategy[Any]],
        max_depth: int,
        max_items: int,
        hint_probability: float,
        presence_probability: float,
    ) -> None:
        self.hints = hints
        self.max_depth = max_depth
        self.max_items = max_items
        self.hint_p = hint_probability
        self.presence_p = presence_probability

    def value(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        """One value of ``field`` (an element, for a repeated field)."""
        hint = self.hints.get(field.full_name)
        if field.type == _F.TYPE_MESSAGE:
            generic: st.SearchStrategy[Any] = self.message(field.message_type, depth + 1)
        else:
            generic = scalar(field)
        if hint is None:
            return generic
        return _chance(self.hint_p).flatmap(lambda use: hint if use else generic)

    def message(self, desc: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
        cls = _message_class(desc)
        if desc.full_name == "google.protobuf.Struct":
            return st.dictionaries(_texts(), json_values(), max_size=6).map(_struct)
        if desc.full_name == "google.protobuf.Value":
            return json_values().map(_value)
        if desc.full_name == "google.protobuf.ListValue":
            return st.lists(json_values(), max_size=6).map(_list_value)
        if depth > self.max_depth:
            return st.just(cls())
        builder = self

        @st.composite
        def draw_message(draw: st.DrawFn) -> Message:
            msg = cls()
            in_oneof = {f.full_name for o in desc.oneofs for f in o.fields}
            for o in desc.oneofs:  # one member or none (proto3 `optional` included)
                chosen = draw(st.sampled_from([None, *o.fields]))
                if chosen is not None:
                    builder.set(draw, msg, chosen, depth)
            for f in desc.fields:
                if f.full_name in in_oneof or not draw(_chance(builder.presence_p)):
                    continue
                builder.set(draw, msg, f, depth)
            return msg

        return draw_message()

    def set(self, draw: st.DrawFn, msg: Message, f: FieldDescriptor, depth: int) -> None:
        """Draw and set field ``f`` of ``msg``."""
        if _is_map(f):
            key_f = f.message_type.fields_by_name["key"]
            val_f = f.message_type.fields_by_name["value"]
            keys = draw(st.lists(scalar(key_f), max_size=self.max_items, unique=True))
            target = getattr(msg, f.name)
            for k in keys:
                v = draw(self.value(val_f, depth))
                if val_f.type == _F.TYPE_MESSAGE:
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
            return
        if f.is_repeated:
            items = draw(st.lists(self.value(f, depth), max_size=self.max_items))
            target = getattr(msg, f.name)
            if f.type == _F.TYPE_MESSAGE:
                for item in items:
                    target.add().CopyFrom(item)
            else:
                target.extend(items)
            return
        v = draw(self.value(f, depth))
        if f.type == _F.TYPE_MESSAGE:
            getattr(msg, f.name).CopyFrom(v)
        else:
            setattr(msg, f.name, v)


def _message_class(desc: Descriptor) -> type[Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(desc)


def _struct(d: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(d)
    return s


def _value(v: Any) -> struct_pb2.Value:
    out = struct_pb2.Value()
    out.CopyFrom(_struct({"v": v}).fields["v"])
    return out


def _list_value(items: list[Any]) -> struct_pb2.ListValue:
    lv = struct_pb2.ListValue()
    lv.extend(items)
    return lv


def messages(
    desc: Descriptor,
    hints: Mapping[str, st.SearchStrategy[Any]] | None = None,
    *,
    max_depth: int = 4,
    max_items: int = 4,
    hint_probability: float = 0.5,
    presence_probability: float = 0.5,
) -> st.SearchStrategy[Message]:
    """Arbitrary messages of type ``desc`` (see the module doc)."""
    builder = _Builder(hints or {}, max_depth, max_items, hint_probability, presence_probability)
    return builder.message(desc)


def _fields_of(msg: Message, depth: int = 0) -> list[tuple[Message, FieldDescriptor, int]]:
    """Every (message, field) of ``msg`` and of the messages it holds, set or not."""
    if msg.DESCRIPTOR.full_name.startswith("google.protobuf."):
        return []
    out: list[tuple[Message, FieldDescriptor, int]] = []
    for f in msg.DESCRIPTOR.fields:
        out.append((msg, f, depth))
        if f.type != _F.TYPE_MESSAGE or _is_map(f):
            continue
        if f.is_repeated:
            for item in getattr(msg, f.name):
                out += _fields_of(item, depth + 1)
        elif msg.HasField(f.name):
            out += _fields_of(getattr(msg, f.name), depth + 1)
    return out


def mutated(
    valid: st.SearchStrategy[Message],
    hints: Mapping[str, st.SearchStrategy[Any]] | None = None,
    *,
    max_mutations: int = 2,
) -> st.SearchStrategy[Message]:
    """Valid messages with 0..``max_mutations`` fields (anywhere in the message tree)
    replaced by arbitrary values, or cleared: valid-but-inconsistent requests, which
    reach the checks that only run once everything before them passed."""
    builder = _Builder(hints or {}, 4, 4, 0.3, 0.5)

    @st.composite
    def draw_mutant(draw: st.DrawFn) -> Message:
        msg = draw(valid)
        msg = type(msg).FromString(msg.SerializeToString())  # a copy we may change
        for _ in range(draw(st.integers(0, max_mutations))):
            fields = _fields_of(msg)
            if not fields:
                break
            owner, f, depth = draw(st.sampled_from(fields))
            owner.ClearField(f.name)
            if draw(st.booleans()):
                builder.set(draw, owner, f, depth)
        return msg

    return draw_mutant()
