"""O1-style management of one node: configuration, VES events, alarms — and its client.

* **Provisioning** (O-RAN.WG10.O1-Interface §2.1 "Provisioning Management Services":
  read and modify the managed element's configuration, with the whole change validated
  and applied atomically, as NETCONF's ``<edit-config>`` with rollback-on-error).
  ``Get(path)`` returns the JSON of a subtree of the :class:`~airan.node.NodeConfig` tree;
  ``Set(edits)`` applies edits to a copy, validates the whole tree with
  ``NodeConfig.parse`` and hands it to :meth:`Node.apply_config` (which undoes what it
  applied if a step fails). The accepted tree is persisted atomically (temp file written
  in full and fsynced, ``os.replace``, directory fsync: POSIX ``rename(2)``), and
  restored when the service starts, after the temp files of saves that were killed
  midway are removed (:func:`remove_stale_temps`).
* **Events** (O-RAN.WG10.O1-Interface §2.2 fault supervision, §2.3 performance
  assurance, heartbeat; ONAP VES Event Listener 7.2 common event format):
  ``SubscribeEvents`` streams ``fault``, ``measurement`` and ``heartbeat`` events.
* **Alarms** (3GPP TS 28.532 §11.2 fault supervision: alarm list, new/cleared alarm
  notifications): a monitor thread polls :meth:`Node.health` and raises / clears the
  alarms ``deadlineMissRatio``, ``executorFault``, ``aiFault``, ``l2Silence``,
  ``configRestoreFailed``, ``configPersistFailed``; ``ListActiveAlarms`` returns the
  active ones. A clear is the
  raise's fault event again (same eventId, next sequence) with severity ``NORMAL``.

Paths are JSON Pointers (RFC 6901): ``/`` the whole tree, ``/policy/guard_us``,
``/ran/slice_quotas/0/max_ratio``, ``/policy/tenants/llm/paused``; ``~1`` is ``/`` and
``~0`` is ``~`` inside a key; ``-`` as the last index of a Set appends to a list.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import math
import os
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from airan.core.errors import AiranError, FieldError
from airan.node import Fault, Node, NodeConfig, NodeSnapshot
from airan.o1.v1 import o1_pb2, o1_pb2_grpc
from airan.ric.security import ClientSecurity, Permission
from airan.ric.server import ServiceRegistration
from airan.sched.arbiter import ControlTimeoutError

__all__ = [
    "DOMAINS",
    "O1_PERMISSIONS",
    "O1_SERVICE",
    "Alarm",
    "EventStream",
    "O1Client",
    "O1Error",
    "O1Service",
    "SetResult",
    "apply_edit",
    "get_at",
    "load_state",
    "parse_path",
    "remove_stale_temps",
    "ves_json",
]

log = logging.getLogger(__name__)

O1_SERVICE = "airan.o1.v1.O1"
#: the O1 methods that change the node; everything else needs ``read``
O1_PERMISSIONS: Mapping[str, Permission] = {"Set": Permission.CONTROL}
DOMAINS: tuple[str, ...] = ("fault", "measurement", "heartbeat")

VES_LISTENER_VERSION = "7.2.1"
HEADER_VERSION = "4.1"
FAULT_FIELDS_VERSION = "4.0"
MEASUREMENT_FIELDS_VERSION = "4.0"
HEARTBEAT_FIELDS_VERSION = "3.0"
SEVERITIES: tuple[str, ...] = ("CRITICAL", "MAJOR", "MINOR", "WARNING", "NORMAL")
_PRIORITY = {"CRITICAL": "High", "MAJOR": "High", "MINOR": "Medium", "WARNING": "Low"}
MAX_PATH = 1024
MAX_EDITS = 256
MAX_VALUE_BYTES = 1 << 20
MAX_VALUE_DEPTH = 32
STATE_FORMAT = 1


# =========================================================================== the tree


def parse_path(path: str, field_name: str = "path") -> list[str]:
    """The tokens of a JSON Pointer (RFC 6901 §3-4); ``"/"`` and ``""`` are the root."""
    if not isinstance(path, str) or len(path) > MAX_PATH:
        raise FieldError(field_name, f"must be a string of at most {MAX_PATH} characters")
    if path in ("", "/"):
        return []
    if not path.startswith("/"):
        raise FieldError(field_name, f"{path!r} must start with '/' (e.g. /policy/guard_us)")
    tokens = path[1:].split("/")
    for tok in tokens:
        if tok == "":
            raise FieldError(field_name, f"{path!r} has an empty segment")
        rest = tok.replace("~0", "").replace("~1", "")
        if "~" in rest:
            raise FieldError(field_name, f"{path!r}: '~' must be escaped as ~0 (and '/' as ~1)")
    return [t.replace("~1", "/").replace("~0", "~") for t in tokens]


def _pointer(tokens: Sequence[str]) -> str:
    return "/" + "/".join(t.replace("~", "~0").replace("/", "~1") for t in tokens)


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if v is None:
        return "null"
    return "a list" if isinstance(v, list) else "an object"


class PathNotFound(FieldError):
    """A well-formed JSON Pointer that names nothing in the tree (no such key, index out
    of range, a child of a scalar): ``NOT_FOUND`` for a Get."""


def _index(lst: list[Any], tok: str, where: str, field_name: str, append: bool) -> int:
    if append and tok == "-":
        return len(lst)
    if not tok.isdigit() or (len(tok) > 1 and tok[0] == "0"):
        raise FieldError(field_name, f"{where}: list index must be a non-negative integer")
    i = int(tok)
    if i >= len(lst) + (1 if append else 0):
        raise PathNotFound(
            field_name, f"{where}: index {i} out of range (list has {len(lst)} items)"
        )
    return i


def _step(node: Any, tok: str, where: str, field_name: str) -> Any:
    if isinstance(node, dict):
        if tok not in node:
            keys = ", ".join(sorted(map(str, node))) or "none"
            raise PathNotFound(field_name, f"{where}: no key {tok!r} (keys: {keys})")
        return node[tok]
    if isinstance(node, list):
        return node[_index(node, tok, where, field_name, append=False)]
    raise PathNotFound(field_name, f"{where}: the parent is {_kind(node)}, not an object or list")


def get_at(tree: Any, path: str, field_name: str = "path") -> Any:
    """The subtree of ``tree`` at ``path``; :class:`FieldError` naming ``field_name`` if
    the path does not exist."""
    node = tree
    tokens = parse_path(path, field_name)
    for n, tok in enumerate(tokens):
        node = _step(node, tok, _pointer(tokens[: n + 1]), field_name)
    return node


def apply_edit(
    tree: Any, path: str, value: Any, *, remove: bool = False, field_name: str = "path"
) -> Any:
    """Set (or remove) ``path`` in ``tree`` in place and return the tree (a new one when
    the root is replaced). A new key may be added to an object (the model's validation
    refuses keys it does not know); ``-`` appends to a list."""
    tokens = parse_path(path, field_name)
    if not tokens:
        if remove:
            raise FieldError(field_name, "the root cannot be removed")
        if not isinstance(value, dict):
            raise FieldError(field_name, f"/: the whole tree must be an object, not {_kind(value)}")
        return value
    parent = tree
    for n, tok in enumerate(tokens[:-1]):
        parent = _step(parent, tok, _pointer(tokens[: n + 1]), field_name)
    last, where = tokens[-1], _pointer(tokens)
    if isinstance(parent, dict):
        if remove:
            if last not in parent:
                keys = ", ".join(sorted(map(str, parent))) or "none"
                raise FieldError(field_name, f"{where}: no key {last!r} to remove (keys: {keys})")
            del parent[last]
        else:
            parent[last] = value
    elif isinstance(parent, list):
        i = _index(parent, last, where, field_name, append=not remove)
        if remove:
            del parent[i]
        elif i == len(parent):
            parent.append(value)
        else:
            parent[i] = value
    else:
        raise FieldError(
            field_name, f"{where}: the parent is {_kind(parent)}, not an object or list"
        )
    return tree


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _depth(value: Any) -> int:
    """Nesting depth of JSON data (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, d + 1)
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _loads(text: str, field_name: str) -> Any:
    """The JSON value of an edit. Refused (FieldError): more than
    :data:`MAX_VALUE_BYTES`, not JSON (NaN and Infinity included), nested deeper than
    :data:`MAX_VALUE_DEPTH` (deeper values overflowed the parser's recursion: INTERNAL,
    found by tests/test_fuzz_grpc.py; the configuration tree is a few levels deep)."""
    if len(text.encode("utf-8")) > MAX_VALUE_BYTES:
        raise FieldError(field_name, f"longer than {MAX_VALUE_BYTES} bytes")
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except (json.JSONDecodeError, ValueError) as exc:
        raise FieldError(
            field_name, f"not JSON: {exc} (a string needs quotes: '\"fifo\"')"
        ) from None
    except RecursionError:
        value = None
        depth = MAX_VALUE_DEPTH + 1
    else:
        depth = _depth(value)
    if depth > MAX_VALUE_DEPTH:
        raise FieldError(field_name, f"nested deeper than {MAX_VALUE_DEPTH} levels")
    return value


def _diff(a: Any, b: Any, tokens: list[str], out: list[str]) -> None:
    if a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(_pointer([*tokens, k]))
            else:
                _diff(a[k], b[k], [*tokens, k], out)
        return
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, [*tokens, str(i)], out)
        return
    out.append(_pointer(tokens))


def _field_to_path(fe: FieldError) -> str:
    """``node.policy.guard_us`` → ``/policy/guard_us`` (the Set's vocabulary)."""
    f = fe.field
    if f == "node":
        return "/"
    if f.startswith("node."):
        f = f[5:]
    if f.split(".", 1)[0] in NodeConfig.model_fields:
        return _pointer(f.split("."))
    return f


def _explain(exc: FieldError, old_tree: Any) -> FieldError:
    """The validation error in the Set's vocabulary: the path, and for a key the model
    does not have, the keys it has."""
    path = _field_to_path(exc)
    if exc.reason.startswith("Extra inputs are not permitted") and path.startswith("/"):
        parent = path.rsplit("/", 1)[0] or "/"
        try:
            keys = get_at(old_tree, parent)
        except FieldError:
            keys = None
        if isinstance(keys, dict):
            return FieldError(path, f"unknown key (keys at {parent}: {', '.join(sorted(keys))})")
        return FieldError(path, "unknown key")
    return FieldError(path, exc.reason)


def _dotted_to_path(dotted: str) -> str:
    return _pointer(dotted.split(".")) if dotted else "/"


# =========================================================================== persistence


def load_state(path: Path) -> tuple[NodeConfig, int]:
    """The configuration and revision saved at ``path``; :class:`FieldError` naming
    ``state`` (or the bad field) when the file cannot be read or is invalid."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise FieldError("state", f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(raw, parse_constant=_no_constants)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise FieldError("state", f"{path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise FieldError("state", f"{path} must hold an object with a 'config' object")
    rev = doc.get("revision", 0)
    if not isinstance(rev, int) or isinstance(rev, bool) or rev < 0:
        raise FieldError("state.revision", f"must be a non-negative integer (got {rev!r})")
    return NodeConfig.parse(doc["config"]), rev


def _temp_name(path: Path) -> Path:
    """The temp file of this process and thread for the state file ``path``:
    ``.<name>.<pid>.<thread>.tmp`` beside it (see :func:`remove_stale_temps`)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def _write_temp(path: Path, config: NodeConfig, revision: int) -> Path:
    """Write the state next to ``path`` (same directory: same file system, so the final
    ``os.replace`` is atomic) and fsync it; return the temp file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    doc = {
        "format": STATE_FORMAT,
        "revision": revision,
        "saved_epoch_s": time.time(),
        "config": config.model_dump(mode="json"),
    }
    data = memoryview((json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8"))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while data:  # write(2) may write less than asked
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except (OverflowError, ValueError):
        return False
    return True


#: a temp file older than this cannot belong to a write in progress (a write takes ms)
STALE_TEMP_S = 60.0


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temp files a writer of the state file ``path`` left behind when it was
    killed between writing and renaming (``.<name>.<pid>.<thread>.tmp``): those of a
    process that no longer runs, and any older than :data:`STALE_TEMP_S`. The temp
    files of live writers are left alone. Returns the files removed."""
    removed: list[Path] = []
    prefix = f".{path.name}."
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    now = time.time()
    for p in candidates:
        parts = p.name[len(prefix) :].split(".")
        if len(parts) != 3 or parts[2] != "tmp" or not parts[0].isdigit():
            continue
        pid = int(parts[0])
        try:
            age = now - p.stat().st_mtime
        except OSError:
            continue
        if (pid != os.getpid() and not _pid_alive(pid)) or age > STALE_TEMP_S:
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def _commit(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# =========================================================================== events


def _epoch_us() -> int:
    return time.time_ns() // 1000


def ves_json(event: o1_pb2.VesEvent) -> dict[str, Any]:
    """The event as VES 7.2 JSON: ``{"event": {"commonEventHeader": ..., "faultFields":
    ...}}`` (proto3 JSON names are the VES names)."""
    doc = MessageToDict(event)
    header = doc.get("commonEventHeader", {})
    for key in ("sequence", "startEpochMicrosec", "lastEpochMicrosec"):
        header[key] = int(header.get(key, 0))  # proto3 JSON writes int64 as strings
    return {"event": doc}


@dataclass
class Alarm:
    """One alarm's state (TS 28.532 §11.2): its condition, the event that raised it."""

    condition: str
    severity: str
    specific_problem: str
    event_id: str
    start_us: int
    sequence: int = 0
    info: dict[str, str] = field(default_factory=dict)
    since_ns: int = 0  # perf_counter_ns of the last (re)raise

    def event(self, node_id: str, severity: str | None = None) -> o1_pb2.VesEvent:
        """The fault event of this alarm (``severity="NORMAL"``: its clear)."""
        sev = severity or self.severity
        return o1_pb2.VesEvent(
            common_event_header=_header(
                node_id,
                "fault",
                f"Fault_airan_{self.condition}",
                self.event_id,
                self.sequence,
                _PRIORITY.get(sev, "Normal"),
                self.start_us,
            ),
            fault_fields=o1_pb2.FaultFields(
                fault_fields_version=FAULT_FIELDS_VERSION,
                alarm_condition=self.condition,
                event_severity=sev,
                event_source_type="other(airanNode)",
                specific_problem=self.specific_problem,
                vf_status="Active",
                alarm_additional_information=self.info,
                alarm_interface_a=node_id,
            ),
        )


def _header(
    node_id: str,
    domain: str,
    name: str,
    event_id: str,
    sequence: int,
    priority: str,
    start_us: int,
    last_us: int | None = None,
) -> o1_pb2.CommonEventHeader:
    return o1_pb2.CommonEventHeader(
        domain=domain,
        event_id=event_id,
        event_name=name,
        event_type="airan",
        source_name=node_id,
        source_id=node_id,
        reporting_entity_name=node_id,
        reporting_entity_id=node_id,
        priority=priority,
        sequence=sequence,
        start_epoch_microsec=start_us,
        last_epoch_microsec=_epoch_us() if last_us is None else last_us,
        version=HEADER_VERSION,
        ves_event_listener_version=VES_LISTENER_VERSION,
        nf_vendor_name="airan",
        time_zone_offset="UTC+00:00",
    )


def _num(v: float) -> str:
    return f"{v:.9g}"


class _Subscriber:
    __slots__ = ("closed", "domains", "overflowed", "q", "wake")

    def __init__(
        self,
        domains: frozenset[str],
        max_queue: int,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.domains = domains
        self.q: queue.Queue[o1_pb2.VesEvent] = queue.Queue(maxsize=max_queue)
        self.overflowed = False
        self.closed = False
        #: called when an event was queued, or the subscriber was dropped or closed
        self.wake = wake

    def notify(self) -> None:
        if self.wake is not None:
            # RuntimeError: the asyncio loop of the stream is closed, the stream is gone
            with contextlib.suppress(RuntimeError):
                self.wake()


# =========================================================================== the service


class O1Service(o1_pb2_grpc.O1Servicer):
    """The O1 service of one node (register it with :meth:`registration`).

    ``state_path``: where the configuration is persisted (``None``: not persisted); at
    construction a saved configuration is applied to the node — if it is unreadable or
    invalid, the node keeps its configuration and the ``configRestoreFailed`` alarm is
    raised (cleared by the next successful Set, which rewrites the file). Changes made
    outside its Set (E2 control, :meth:`Node.set_policy`, ...) bump :attr:`revision` and
    are persisted too (:meth:`_on_config_change`), so a restart restores them.
    ``measurement_s``: period of measurement events (0: none). ``max_queue``: events a
    subscriber may fall behind before its stream is closed with RESOURCE_EXHAUSTED.
    ``poll_s``: how often the alarm monitor polls the node. ``monitor``: start the
    monitor thread (``False``: call :meth:`poll` yourself).
    """

    def __init__(
        self,
        node: Node,
        state_path: Path | None = None,
        *,
        measurement_s: float = 10.0,
        max_queue: int = 1024,
        poll_s: float = 0.05,
        monitor: bool = True,
    ) -> None:
        if not (measurement_s == 0 or 0.05 <= measurement_s <= 86_400):
            raise FieldError(
                "measurement_s", f"must be 0 (off) or 0.05..86400 (got {measurement_s})"
            )
        if not 1 <= max_queue <= 1_000_000:
            raise FieldError("max_queue", f"must be 1..1000000 (got {max_queue})")
        if not 0.001 <= poll_s <= 10:
            raise FieldError("poll_s", f"must be 0.001..10 s (got {poll_s})")
        self.node = node
        self.state_path = None if state_path is None else Path(state_path)
        self.measurement_s = measurement_s
        self.max_queue = max_queue
        self.poll_s = poll_s
        self.revision = 0
        self.restore_error: str | None = None
        #: dotted fields of the restored configuration that wait for a restart
        self.restart_pending: list[str] = []
        self.subscribers_dropped = 0
        self.events_published = 0
        self._set_lock = threading.Lock()  # one Set at a time
        # the revision and the state file; never held while waiting for the node's lock
        self._persist_lock = threading.Lock()
        self._own_thread: int | None = None  # the thread applying an O1 Set
        #: configuration changes made outside O1 Set (E2 control, the node's API) seen
        self.external_changes = 0
        #: persist failures of such changes (the configPersistFailed alarm is raised)
        self.persist_failures = 0
        self._lock = threading.Lock()  # subscribers, alarms, sequences
        self._subs: list[_Subscriber] = []
        self._alarms: dict[str, Alarm] = {}
        self._raised = 0
        self._seq = dict.fromkeys(DOMAINS, 0)
        self._stop = threading.Event()
        # monitor state
        self._window: deque[tuple[int, int, int]] = deque()
        self._seen_faults: set[tuple[int, str, str]] = set()
        self._last_fault_ns: dict[str, int] = {}
        self._running_since_ns: int | None = None
        self._last_hb_ns = time.perf_counter_ns()
        self._last_meas_ns = self._last_hb_ns
        self._meas_snap: NodeSnapshot | None = None
        #: ``name -> fn``: fields added to every heartbeat (:meth:`add_heartbeat_source`)
        self._heartbeat_sources: dict[str, Callable[[], Mapping[str, object]]] = {}
        #: temp files of killed writers removed at start (:func:`remove_stale_temps`)
        self.stale_temps_removed: list[Path] = []
        if self.state_path is not None:
            self.stale_temps_removed = remove_stale_temps(self.state_path)
            if self.stale_temps_removed:
                log.warning(
                    "O1: removed %d temp file(s) of an interrupted save: %s",
                    len(self.stale_temps_removed),
                    ", ".join(p.name for p in self.stale_temps_removed),
                )
        self._restore()
        node.add_config_listener(self._on_config_change)
        self._thread: threading.Thread | None = None
        if monitor:
            self._thread = threading.Thread(target=self._monitor, name="airan-o1", daemon=True)
            self._thread.start()

    # -- lifetime --------------------------------------------------------------------
    def registration(self) -> ServiceRegistration:
        """This service for :func:`airan.ric.server.build_server` (``Set`` needs
        ``control``)."""
        return ServiceRegistration(
            O1_SERVICE,
            lambda s: self._add_handlers(s, aio=False),
            O1_PERMISSIONS,
            add_to_aio_server=lambda s: self._add_handlers(s, aio=True),
        )

    def _add_handlers(self, server: Any, aio: bool) -> None:
        """Register the four methods, as the generated ``add_O1Servicer_to_server`` but
        with request deserializers that never raise (:class:`_Undecodable`: a request
        that does not decode is refused with INVALID_ARGUMENT). On a ``grpc.aio``
        server ``SubscribeEvents`` is a coroutine on the loop; the unary methods stay
        sync (they run in the server's migration thread pool: ``Set`` waits for the
        arbiter)."""

        def unary(fn: Callable[..., Any], req: Any, resp: Any) -> grpc.RpcMethodHandler[Any, Any]:
            return grpc.unary_unary_rpc_method_handler(
                _refusing_undecodable(fn),
                request_deserializer=_decoder(req),
                response_serializer=resp.SerializeToString,
            )

        events: Callable[..., Any] = (
            _refusing_undecodable_agen(self._aio_subscribe_events)
            if aio
            else _refusing_undecodable_gen(self.SubscribeEvents)
        )
        handlers = {
            "Get": unary(self.Get, o1_pb2.GetRequest, o1_pb2.GetResponse),
            "Set": unary(self.Set, o1_pb2.SetRequest, o1_pb2.SetResponse),
            "SubscribeEvents": grpc.unary_stream_rpc_method_handler(
                events,
                request_deserializer=_decoder(o1_pb2.SubscribeEventsRequest),
                response_serializer=o1_pb2.VesEvent.SerializeToString,
            ),
            "ListActiveAlarms": unary(
                self.ListActiveAlarms,
                o1_pb2.ListActiveAlarmsRequest,
                o1_pb2.ListActiveAlarmsResponse,
            ),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(O1_SERVICE, handlers),)
        )
        server.add_registered_method_handlers(O1_SERVICE, handlers)

    def close(self) -> None:
        """Stop the monitor and end every event stream (cleanly)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        with self._lock:
            subs = list(self._subs)
            for sub in subs:
                sub.closed = True
            self._subs.clear()
        for sub in subs:
            sub.notify()

    def __enter__(self) -> O1Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- configuration -----------------------------------------------------------------
    def _restore(self) -> None:
        if self.state_path is None or not self.state_path.exists():
            return
        try:
            cfg, rev = load_state(self.state_path)
            self.restart_pending = self.node.apply_config(cfg)
            self.revision = rev
        except FieldError as exc:
            self._restore_failed(str(exc))
        except Exception as exc:  # the node refused it some other way
            self._restore_failed(f"{type(exc).__name__}: {exc}")

    def _restore_failed(self, why: str) -> None:
        self.restore_error = why
        log.error("O1: saved configuration %s not restored: %s", self.state_path, why)
        self._raise_alarm(
            "configRestoreFailed",
            "MAJOR",
            f"saved configuration not restored, node keeps its defaults: {why}",
            {"file": str(self.state_path)},
        )

    def tree(self) -> dict[str, Any]:
        """The configuration tree now, as JSON-ready data."""
        data: dict[str, Any] = self.node.config.model_dump(mode="json")
        return data

    def get(self, path: str) -> Any:
        """The subtree at ``path``: :class:`PathNotFound` (a FieldError naming ``path``)
        if it does not exist, FieldError if it is malformed."""
        return copy.deepcopy(get_at(self.tree(), path))

    def set(self, edits: Sequence[tuple[str, Any, bool]], if_revision: int = 0) -> SetResult:
        """Apply ``edits`` (path, value, remove) together: all or nothing.

        Raises :class:`FieldError` (bad path or value; nothing applied),
        :class:`_Conflict` (``if_revision`` is stale) or :class:`_ApplyFailed` (the node
        or the disk refused; the node was rolled back)."""
        if len(edits) > MAX_EDITS:
            raise FieldError("edits", f"at most {MAX_EDITS} edits per Set (got {len(edits)})")
        with self._set_lock:
            if if_revision and if_revision != self.revision:
                raise _Conflict(
                    f"if_revision: configuration is at revision {self.revision}, "
                    f"not {if_revision}; Get it again and retry"
                )
            rev0 = self.revision
            built: dict[str, Any] = {}

            def change(cur: NodeConfig) -> NodeConfig:
                # under the node's configuration lock: the edits apply to the tree in
                # force now, so a concurrent E2 control is neither lost nor undone
                old_tree = cur.model_dump(mode="json")
                tree: Any = copy.deepcopy(old_tree)
                for i, (path, value, remove) in enumerate(edits):
                    tree = apply_edit(
                        tree, path, value, remove=remove, field_name=f"edits[{i}].path"
                    )
                try:
                    new = NodeConfig.parse(tree)
                except FieldError as exc:
                    raise _explain(exc, old_tree) from None
                changed: list[str] = []
                _diff(old_tree, new.model_dump(mode="json"), [], changed)
                built.update(old=cur, changed=changed, tmp=None)
                if not changed:
                    return cur
                if self.state_path is not None:
                    try:
                        built["tmp"] = _write_temp(self.state_path, new, rev0 + 1)
                    except OSError as exc:
                        raise _ApplyFailed(
                            f"cannot persist the configuration to {self.state_path}: {exc}; "
                            "nothing applied"
                        ) from None
                built["applying"] = True
                self._own_thread = threading.get_ident()
                return new

            try:
                new, restart = self.node.update_config(change)
            except ControlTimeoutError as exc:
                _unlink(built.get("tmp"))
                raise _Timeout(f"{_field_to_path(exc)}: {exc.reason} (nothing applied)") from None
            except FieldError as exc:
                if not built.get("applying"):
                    raise  # a bad edit or value: already in the Set's vocabulary
                _unlink(built.get("tmp"))
                raise FieldError(_field_to_path(exc), f"{exc.reason} (nothing applied)") from None
            except (_ApplyFailed, _Conflict):
                raise
            except Exception as exc:
                _unlink(built.get("tmp"))
                raise _ApplyFailed(
                    f"the node could not apply it ({type(exc).__name__}: {exc}); "
                    "configuration unchanged"
                ) from None
            finally:
                self._own_thread = None
            old: NodeConfig = built["old"]
            changed = built["changed"]
            tmp: Path | None = built["tmp"]
            if not changed:
                return SetResult(self.revision, (), ())
            failed: OSError | None = None
            with self._persist_lock:
                if tmp is not None and self.state_path is not None:
                    try:
                        cur = self.node.config
                        if cur != new:  # changed since (E2): save what is in force now
                            _unlink(tmp)
                            tmp = None
                            tmp = _write_temp(self.state_path, cur, self.revision + 1)
                        elif self.revision != rev0:  # an E2 change saved in between
                            _unlink(tmp)
                            tmp = None
                            tmp = _write_temp(self.state_path, new, self.revision + 1)
                        _commit(tmp, self.state_path)
                    except OSError as exc:
                        _unlink(tmp)
                        failed = exc
                if failed is None:
                    self.revision += 1
            if failed is not None:  # outside the persist lock: the node's lock comes next
                try:
                    self._own_thread = threading.get_ident()
                    self.node.apply_config(old)
                finally:
                    self._own_thread = None
                raise _ApplyFailed(
                    f"cannot persist the configuration to {self.state_path}: {failed}; "
                    "the node was rolled back"
                ) from None
            if self.restore_error is not None:
                self.restore_error = None
                self._clear_alarm("configRestoreFailed")
            return SetResult(
                self.revision, tuple(changed), tuple(_dotted_to_path(d) for d in restart)
            )

    def _on_config_change(self, old: NodeConfig, new: NodeConfig) -> None:
        """Node config listener: a change not made by this service's Set (E2 control of
        the policy, a tenant's pause, the slice quotas; the node's API) bumps the
        revision and, with a ``state_path``, is persisted like a Set (temp file, fsync,
        ``os.replace``), so a restart restores it. Runs under the node's configuration
        lock, in the thread that made the change: once it returns, the change is on
        disk. A failure to write is logged and raises the ``configPersistFailed`` alarm
        (cleared by the next successful write); the change itself stays applied."""
        if self._own_thread == threading.get_ident():
            return  # our own Set (or its rollback): set() persists it
        changed: list[str] = []
        _diff(old.model_dump(mode="json"), new.model_dump(mode="json"), [], changed)
        failed: str | None = None
        with self._persist_lock:
            self.external_changes += 1
            self.revision += 1
            rev = self.revision
            if self.state_path is not None:
                tmp: Path | None = None
                try:
                    tmp = _write_temp(self.state_path, new, rev)
                    _commit(tmp, self.state_path)
                except OSError as exc:
                    _unlink(tmp)
                    self.persist_failures += 1
                    failed = f"{type(exc).__name__}: {exc}"
        what = ", ".join(changed) or "-"
        if self.state_path is None:
            log.info("O1: configuration changed outside O1 (revision %d): %s", rev, what)
            return
        if failed is not None:
            log.error(
                "O1: configuration change outside O1 (revision %d: %s) not saved to %s: %s",
                rev,
                what,
                self.state_path,
                failed,
            )
            self._raise_alarm(
                "configPersistFailed",
                "MAJOR",
                f"a configuration change made outside O1 ({what}) is applied but not saved: "
                f"{failed}",
                {"file": str(self.state_path), "revision": str(rev), "changed": what},
            )
            return
        log.info(
            "O1: configuration changed outside O1 (revision %d): %s; saved to %s",
            rev,
            what,
            self.state_path,
        )
        self._clear_alarm("configPersistFailed", f"revision {rev} saved")
        if self.restore_error is not None:
            self.restore_error = None
            self._clear_alarm("configRestoreFailed", f"revision {rev} saved")

    # -- gRPC methods ------------------------------------------------------------------
    def Get(self, request: o1_pb2.GetRequest, context: grpc.ServicerContext) -> o1_pb2.GetResponse:
        try:
            value = self.get(request.path)
            rev = self.revision
        except PathNotFound as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, _clip(str(exc)))
        except FieldError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, _clip(str(exc)))
        return o1_pb2.GetResponse(
            path=request.path or "/", json_value=json.dumps(value), revision=rev
        )

    def Set(self, request: o1_pb2.SetRequest, context: grpc.ServicerContext) -> o1_pb2.SetResponse:
        code, msg = grpc.StatusCode.INTERNAL, ""
        try:
            if not request.edits:
                raise FieldError("edits", "give at least one edit")
            edits: list[tuple[str, Any, bool]] = []
            for i, e in enumerate(request.edits):
                parse_path(e.path, f"edits[{i}].path")
                value = None if e.remove else _loads(e.json_value, f"edits[{i}].json_value")
                edits.append((e.path, value, e.remove))
            r = self.set(edits, request.if_revision)
            return o1_pb2.SetResponse(
                revision=r.revision, changed=r.changed, restart_required=r.restart_required
            )
        except FieldError as exc:
            code, msg = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except _Conflict as exc:
            code, msg = grpc.StatusCode.FAILED_PRECONDITION, str(exc)
        except _Timeout as exc:
            code, msg = grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)
        except _ApplyFailed as exc:
            code, msg = grpc.StatusCode.INTERNAL, str(exc)
        except Exception as exc:  # never a crash: the caller learns, others go on
            log.exception("O1 Set failed")
            code, msg = grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"
        context.abort(code, _clip(msg))

    def SubscribeEvents(
        self, request: o1_pb2.SubscribeEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[o1_pb2.VesEvent]:
        for i, d in enumerate(request.domains):
            if d not in DOMAINS:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    _clip(f"domains[{i}]: unknown domain {d!r} (one of {', '.join(DOMAINS)})"),
                )
        sub = self.subscribe(request.domains or DOMAINS, replay=not request.skip_active_alarms)
        try:
            while context.is_active():
                if sub.overflowed:
                    context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"subscriber fell {self.max_queue} events behind and was dropped; "
                        "read faster or resubscribe (active alarms are replayed)",
                    )
                if sub.closed:
                    return
                try:
                    ev = sub.q.get(timeout=0.1)
                except queue.Empty:
                    continue
                yield ev
        finally:
            self.unsubscribe(sub)

    async def _aio_subscribe_events(
        self, request: o1_pb2.SubscribeEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[o1_pb2.VesEvent]:
        """``SubscribeEvents`` on a ``grpc.aio`` server: waits on an asyncio event the
        publishers set, holds no thread."""
        for i, d in enumerate(request.domains):
            if d not in DOMAINS:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    _clip(f"domains[{i}]: unknown domain {d!r} (one of {', '.join(DOMAINS)})"),
                )
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def notify() -> None:
            loop.call_soon_threadsafe(wake.set)

        sub = self.subscribe(
            request.domains or DOMAINS, replay=not request.skip_active_alarms, wake=notify
        )
        try:
            while True:
                if sub.overflowed:
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"subscriber fell {self.max_queue} events behind and was dropped; "
                        "read faster or resubscribe (active alarms are replayed)",
                    )
                if sub.closed:
                    return
                try:
                    ev = sub.q.get_nowait()
                except queue.Empty:
                    wake.clear()
                    if sub.q.empty() and not sub.overflowed and not sub.closed:
                        await wake.wait()
                    continue
                yield ev
        finally:
            self.unsubscribe(sub)

    def ListActiveAlarms(
        self, request: o1_pb2.ListActiveAlarmsRequest, context: grpc.ServicerContext
    ) -> o1_pb2.ListActiveAlarmsResponse:
        return o1_pb2.ListActiveAlarmsResponse(alarms=self.active_alarms())

    # -- events --------------------------------------------------------------------------
    def subscribe(
        self,
        domains: Sequence[str],
        replay: bool = True,
        wake: Callable[[], None] | None = None,
    ) -> _Subscriber:
        """A new subscriber (the fault domain starts with the active alarms); ``wake`` is
        called (from the publishing thread) when it has something new."""
        sub = _Subscriber(frozenset(domains), self.max_queue, wake)
        with self._lock:
            if replay and "fault" in sub.domains:
                for a in list(self._alarms.values())[: self.max_queue]:
                    sub.q.put_nowait(a.event(self.node.node_id))
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def publish(self, event: o1_pb2.VesEvent) -> None:
        """Hand ``event`` to every subscriber of its domain; never blocks. A subscriber
        whose queue is full is dropped (its stream ends with RESOURCE_EXHAUSTED)."""
        with self._lock:
            self._publish_locked(event)

    def _publish_locked(self, event: o1_pb2.VesEvent) -> None:
        domain = event.common_event_header.domain
        self.events_published += 1
        for sub in list(self._subs):
            if domain not in sub.domains:
                continue
            try:
                sub.q.put_nowait(event)
            except queue.Full:
                sub.overflowed = True
                self._subs.remove(sub)
                self.subscribers_dropped += 1
                log.warning("O1: dropped a subscriber %d events behind", self.max_queue)
            sub.notify()

    def active_alarms(self) -> list[o1_pb2.VesEvent]:
        """The fault event of every active alarm."""
        with self._lock:
            return [a.event(self.node.node_id) for a in self._alarms.values()]

    def _next_seq(self, domain: str) -> int:
        self._seq[domain] += 1
        return self._seq[domain]

    def _raise_alarm(
        self, condition: str, severity: str, problem: str, info: Mapping[str, str]
    ) -> None:
        with self._lock:
            a = self._alarms.get(condition)
            now_ns = time.perf_counter_ns()
            if a is None:
                self._raised += 1
                a = Alarm(
                    condition,
                    severity,
                    problem,
                    f"{self.node.node_id}:{condition}:{self._raised}",
                    _epoch_us(),
                    info=dict(info),
                    since_ns=now_ns,
                )
                self._alarms[condition] = a
            else:  # the same condition again: the same eventId, next sequence
                a.sequence += 1
                a.severity, a.specific_problem, a.info, a.since_ns = (
                    severity,
                    problem,
                    dict(info),
                    now_ns,
                )
            self._publish_locked(a.event(self.node.node_id))

    def _clear_alarm(self, condition: str, why: str = "") -> None:
        with self._lock:
            a = self._alarms.pop(condition, None)
            if a is None:
                return
            a.sequence += 1
            if why:
                a.specific_problem = f"cleared: {why}"
            self._publish_locked(a.event(self.node.node_id, severity="NORMAL"))

    def is_active(self, condition: str) -> bool:
        with self._lock:
            return condition in self._alarms

    # -- the monitor ---------------------------------------------------------------------
    def _monitor(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception:  # keep monitoring whatever one poll met
                log.exception("O1 monitor poll failed")

    def poll(self, now_ns: int | None = None) -> None:
        """One look at the node: alarms raised or cleared, heartbeat and measurement
        events when due."""
        now = time.perf_counter_ns() if now_ns is None else now_ns
        cfg = self.node.config.alarms
        h = self.node.health()
        self._check_misses(now, h.tasks, h.misses, cfg.window_s, cfg.miss_ratio_threshold)
        self._check_faults(now, h.faults, h.running, cfg.window_s)
        self._check_l2(now, h.running, h.last_l2_message_ns, cfg.l2_silence_ms)
        if now - self._last_hb_ns >= cfg.heartbeat_s * 1e9:
            self._last_hb_ns = now
            self._heartbeat(cfg.heartbeat_s)
        if self.measurement_s > 0 and now - self._last_meas_ns >= self.measurement_s * 1e9:
            self._last_meas_ns = now
            self._measure()

    def _check_misses(
        self, now: int, tasks: int, misses: int, window_s: float, threshold: float
    ) -> None:
        w = self._window
        w.append((now, tasks, misses))
        horizon = now - int(window_s * 1e9)
        while len(w) > 1 and w[1][0] <= horizon:
            w.popleft()
        t0, tasks0, misses0 = w[0]
        d_tasks, d_misses = tasks - tasks0, misses - misses0
        if d_tasks < 0 or d_misses < 0:  # counters reset (a new run): start over
            w.clear()
            w.append((now, tasks, misses))
            return
        ratio = d_misses / d_tasks if d_tasks > 0 else 0.0
        if d_tasks > 0 and ratio > threshold:
            if not self.is_active("deadlineMissRatio"):
                self._raise_alarm(
                    "deadlineMissRatio",
                    "CRITICAL" if ratio > min(1.0, 10 * threshold) else "MAJOR",
                    f"radio deadline-miss ratio {ratio:.4g} over the last "
                    f"{(now - t0) / 1e9:.3g} s exceeds {threshold:g}",
                    {
                        "missRatio": _num(ratio),
                        "misses": str(d_misses),
                        "tasks": str(d_tasks),
                        "thresholdRatio": _num(threshold),
                        "windowS": _num(window_s),
                    },
                )
        elif now - t0 >= window_s * 1e9 * 0.999 or d_tasks == 0:
            self._clear_alarm(
                "deadlineMissRatio",
                f"miss ratio {ratio:.4g} over {(now - t0) / 1e9:.3g} s is within {threshold:g}",
            )

    def _check_faults(
        self, now: int, faults: Sequence[Fault], running: bool, window_s: float
    ) -> None:
        for f in faults:
            key = (f.t_ns, f.source, f.text)
            if key in self._seen_faults:
                continue
            self._seen_faults.add(key)
            self._last_fault_ns[f.source] = now
            severity = {"executor": "CRITICAL", "ai": "MINOR"}.get(f.source, "MAJOR")
            self._raise_alarm(
                f"{f.source}Fault", severity, f.text, {"source": f.source, "text": f.text}
            )
        if len(self._seen_faults) > 4096:  # the node keeps the last 256: forget older ones
            live = {(f.t_ns, f.source, f.text) for f in faults}
            self._seen_faults &= live
        for source, last in list(self._last_fault_ns.items()):
            quiet = now - last >= window_s * 1e9
            if quiet and (source != "executor" or running):
                del self._last_fault_ns[source]
                self._clear_alarm(f"{source}Fault", f"no {source} fault for {window_s:g} s")

    def _check_l2(self, now: int, running: bool, last_l2: int | None, limit_ms: float) -> None:
        if not running:
            self._running_since_ns = None
            self._clear_alarm("l2Silence", "the node is not running")
            return
        if self._running_since_ns is None:
            self._running_since_ns = now
        ref = self._running_since_ns if last_l2 is None else max(last_l2, 0)
        silent_ms = (now - ref) / 1e6
        if silent_ms > limit_ms:
            if not self.is_active("l2Silence"):
                self._raise_alarm(
                    "l2Silence",
                    "MAJOR",
                    f"no FAPI request from the L2 for {silent_ms:.1f} ms (limit {limit_ms:g} ms)",
                    {"silentMs": _num(silent_ms), "limitMs": _num(limit_ms)},
                )
        else:
            self._clear_alarm("l2Silence", f"the L2 spoke {silent_ms:.1f} ms ago")

    def _heartbeat(self, interval_s: float) -> None:
        extra = self._source_fields()  # outside the lock: the sources take their own
        with self._lock:
            seq = self._next_seq("heartbeat")
            nid = self.node.node_id
            ev = o1_pb2.VesEvent(
                common_event_header=_header(
                    nid,
                    "heartbeat",
                    "Heartbeat_airan",
                    f"{nid}:heartbeat",
                    seq,
                    "Normal",
                    _epoch_us(),
                ),
                heartbeat_fields=o1_pb2.HeartbeatFields(
                    heartbeat_fields_version=HEARTBEAT_FIELDS_VERSION,
                    heartbeat_interval=max(1, math.ceil(interval_s)),
                    additional_fields={
                        "heartbeatIntervalS": _num(interval_s),
                        "running": str(self.node.running).lower(),
                        "activeAlarms": str(len(self._alarms)),
                        "subscribers": str(len(self._subs)),
                        "subscribersDropped": str(self.subscribers_dropped),
                        "configRevision": str(self.revision),
                        **extra,
                    },
                ),
            )
            self._publish_locked(ev)

    def add_heartbeat_source(self, name: str, fn: Callable[[], Mapping[str, object]]) -> None:
        """Add ``fn()``'s counters to every heartbeat's ``additionalFields`` as
        ``<name>.<key>`` (e.g. ``add_heartbeat_source("e2", agent.stats)``: the E2
        subscriptions, indications dropped for slow subscribers, subscriptions ended).
        ``fn`` runs in the monitor thread; an exception is logged and skipped."""
        if not name or "." in name:
            raise FieldError("name", f"must be a non-empty name without '.', got {name!r}")
        self._heartbeat_sources[name] = fn

    def _source_fields(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, fn in list(self._heartbeat_sources.items()):
            try:
                values = fn()
            except Exception:
                log.exception("O1: heartbeat source %r failed", name)
                continue
            out.update({f"{name}.{k}": str(v) for k, v in values.items()})
        return out

    def _measure(self) -> None:
        snap = self.node.snapshot()
        prev, self._meas_snap = self._meas_snap, snap
        if prev is None:
            return  # the first snapshot opens the first period
        m = Node.measurements(prev, snap)
        groups = [
            o1_pb2.NamedHashMap(name="node", hash_map={k: _num(v) for k, v in m.node.items()})
        ]
        groups += [
            o1_pb2.NamedHashMap(name=f"ue.{ue}", hash_map={k: _num(v) for k, v in figs.items()})
            for ue, figs in sorted(m.ues.items())
        ]
        start_us = _epoch_us() - (snap.t_ns - prev.t_ns) // 1000
        with self._lock:
            seq = self._next_seq("measurement")
            nid = self.node.node_id
            ev = o1_pb2.VesEvent(
                common_event_header=_header(
                    nid,
                    "measurement",
                    "Measurement_airan",
                    f"{nid}:measurement:{seq}",
                    seq,
                    "Normal",
                    start_us,
                ),
                measurement_fields=o1_pb2.MeasurementFields(
                    measurement_fields_version=MEASUREMENT_FIELDS_VERSION,
                    measurement_interval=(snap.t_ns - prev.t_ns) / 1e9,
                    additional_measurements=groups,
                ),
            )
            self._publish_locked(ev)


class _Conflict(AiranError):
    """``if_revision`` is not the configuration's revision."""


class _Timeout(AiranError):
    """The arbiter's loop did not take the policy in time; withdrawn, nothing applied."""


class _ApplyFailed(AiranError):
    """The node or the disk refused a valid configuration; the node was left as it was."""


@dataclass(frozen=True, slots=True)
class _Undecodable:
    """A request whose bytes are not a valid encoding of its message type: the request
    deserializers return it instead of raising (a raising deserializer makes gRPC
    answer INTERNAL, or UNKNOWN with a logged traceback per request on a ``grpc.aio``
    server: found by tests/test_fuzz_grpc.py), and the call is refused with
    INVALID_ARGUMENT."""

    type_name: str
    error: str

    @property
    def message(self) -> str:
        return _clip(
            f"request: not a valid {self.type_name} encoding ({self.error or 'decode error'})"
        )


def _decoder(cls: Any) -> Callable[[bytes], Any]:
    """A request deserializer for message class ``cls`` that never raises."""
    name = cls.DESCRIPTOR.full_name

    def decode(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except Exception as exc:  # DecodeError (other protobuf backends: others)
            return _Undecodable(name, str(exc))

    return decode


def _refusing_undecodable(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A unary method ``fn`` that refuses an :class:`_Undecodable` request first."""

    def call(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return fn(request, context)

    return call


def _refusing_undecodable_gen(fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """:func:`_refusing_undecodable` for a sync server-streaming method."""

    def gen(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        if isinstance(request, _Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        yield from fn(request, context)

    return gen


def _refusing_undecodable_agen(
    fn: Callable[..., AsyncIterator[Any]],
) -> Callable[..., AsyncIterator[Any]]:
    """:func:`_refusing_undecodable` for a ``grpc.aio`` server-streaming method."""

    async def agen(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        if isinstance(request, _Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        async for ev in fn(request, context):
            yield ev

    return agen


#: longest status message (UTF-8 bytes) a refused call carries: messages echo what the
#: caller sent (a path, a domain), and gRPC percent-encodes them into a trailer that
#: must stay below its 8 KiB metadata soft limit, or the client gets a transport error
#: instead of the refusal (found by tests/test_fuzz_grpc.py)
MAX_MESSAGE_BYTES = 2048


def _clip(text: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, saying how much was cut."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    kept = raw[: limit - 48].decode("utf-8", "ignore")
    return f"{kept}... ({len(text) - len(kept)} more characters)"


def _unlink(p: Path | None) -> None:
    if p is not None:
        with contextlib.suppress(OSError):
            p.unlink()


# =========================================================================== the client


class O1Error(AiranError):
    """An O1 call failed: ``code`` is the gRPC status, ``message`` the server's text."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code.name}: {message}")


def _wrap(exc: grpc.RpcError) -> O1Error:
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    return O1Error(code, details or "")


@dataclass(frozen=True)
class SetResult:
    """What a Set did: the new revision, the paths changed, those waiting for a restart."""

    revision: int
    changed: tuple[str, ...]
    restart_required: tuple[str, ...]


class EventStream(Iterator[o1_pb2.VesEvent]):
    """The events of a subscription; iterate, and :meth:`cancel` to end it (the iteration
    then stops). Errors are raised as :class:`O1Error`."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._cancelled = False

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> o1_pb2.VesEvent:
        try:
            ev: o1_pb2.VesEvent = next(self._call)
            return ev
        except grpc.RpcError as exc:
            err = _wrap(exc)
            if self._cancelled and err.code == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            raise err from None

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()


Edit = tuple[str, Any]


class O1Client:
    """A synchronous O1 client.

    >>> with O1Client("localhost:50051", ClientSecurity(ca=ca, token=tok)) as o1:
    ...     o1.set("/policy/guard_us", 30.0)
    ...     o1.get("/policy/guard_us")
    30.0
    """

    def __init__(
        self,
        target: str,
        security: ClientSecurity | None = None,
        timeout_s: float = 10.0,
        channel: grpc.Channel | None = None,
    ) -> None:
        self._channel = channel or (security or ClientSecurity()).channel(target)
        self._stub = o1_pb2_grpc.O1Stub(self._channel)
        self.timeout_s = timeout_s
        #: the configuration revision seen by the last get/set
        self.revision = 0

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> O1Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str = "/") -> Any:
        """The JSON value at ``path``."""
        try:
            resp: o1_pb2.GetResponse = self._stub.Get(
                o1_pb2.GetRequest(path=path), timeout=self.timeout_s
            )
        except grpc.RpcError as exc:
            raise _wrap(exc) from None
        self.revision = resp.revision
        return json.loads(resp.json_value)

    def set(self, path: str, value: Any, *, if_revision: int = 0) -> SetResult:
        """Set one value."""
        return self.set_many([(path, value)], if_revision=if_revision)

    def remove(self, path: str, *, if_revision: int = 0) -> SetResult:
        """Remove a map entry or list item."""
        return self._set([o1_pb2.Edit(path=path, remove=True)], if_revision)

    def set_many(
        self, edits: Sequence[Edit] | Mapping[str, Any], *, if_revision: int = 0
    ) -> SetResult:
        """Apply several edits together (in order): all or nothing."""
        items = list(edits.items()) if isinstance(edits, Mapping) else list(edits)
        return self._set(
            [o1_pb2.Edit(path=p, json_value=json.dumps(v)) for p, v in items], if_revision
        )

    def _set(self, edits: list[o1_pb2.Edit], if_revision: int) -> SetResult:
        try:
            resp: o1_pb2.SetResponse = self._stub.Set(
                o1_pb2.SetRequest(edits=edits, if_revision=if_revision), timeout=self.timeout_s
            )
        except grpc.RpcError as exc:
            raise _wrap(exc) from None
        self.revision = resp.revision
        return SetResult(resp.revision, tuple(resp.changed), tuple(resp.restart_required))

    def events(
        self, domains: Sequence[str] = (), *, skip_active_alarms: bool = False
    ) -> EventStream:
        """Subscribe to VES events of ``domains`` (empty: all)."""
        call = self._stub.SubscribeEvents(
            o1_pb2.SubscribeEventsRequest(
                domains=list(domains), skip_active_alarms=skip_active_alarms
            )
        )
        return EventStream(call)

    def active_alarms(self) -> list[o1_pb2.VesEvent]:
        """The fault event of each active alarm."""
        try:
            resp: o1_pb2.ListActiveAlarmsResponse = self._stub.ListActiveAlarms(
                o1_pb2.ListActiveAlarmsRequest(), timeout=self.timeout_s
            )
        except grpc.RpcError as exc:
            raise _wrap(exc) from None
        return list(resp.alarms)
