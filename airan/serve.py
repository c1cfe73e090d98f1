"""``airan serve``: a long-running node configured from a file.

One process runs one node on one device: the DU (MAC and the real L1 kernels), the
arbiter and the AI tenants (:meth:`airan.node.Node.on_device`), and, as the file asks,
the E2-style agent toward a near-RT RIC (:func:`airan.ric.e2.serve_e2`), the O1-style
management service (:class:`airan.ric.o1.O1Service`, its configuration persisted in a
state file), a Prometheus metrics endpoint (:mod:`airan.telemetry.metrics`) and a trace
recorder (:mod:`airan.telemetry.trace`).

The file (TOML, or JSON for a ``.json`` name) is validated as a whole before anything
starts (:func:`load_config`, then :func:`check_resources` for the files it names): a bad
value raises :class:`~airan.core.errors.FieldError` naming the field as a dotted path in
the file (``e2.port``, ``node.policy.guard_us``) and the file; an unknown key is an
error. ``docs/serve.md`` is the reference of every key.

A graceful stop (SIGTERM or SIGINT, or ``--seconds`` elapsed): the arbiter releases no
new radio work and finishes what was released (the slot in flight), the run report
(:class:`~airan.core.report.RunReport`) and the trace are written atomically (a temp
file, fsync, ``os.replace``), E2 subscribers get their deletion notice, the servers
stop, and the process exits 0. The arbiter's loop runs in a thread of its own; the main
thread only waits for a signal, so signal handling never delays the radio.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from airan.core.errors import FieldError
from airan.core.faults import FaultKind, FaultPlan, FaultSpec
from airan.core.policy import TENANT_NAME, CheckedModel
from airan.node import AiTenantConfig, NodeConfig
from airan.outputs import check_output_path, write_atomic

if TYPE_CHECKING:
    from rich.console import Console

    from airan.backend import Backend
    from airan.node import Node
    from airan.ric.e2 import E2Server
    from airan.ric.o1 import O1Service
    from airan.ric.security import ServerSecurity
    from airan.ric.server import EventLoopThread
    from airan.telemetry.metrics import MetricsServer
    from airan.telemetry.trace import Recorder

__all__ = [
    "NodeService",
    "ServeConfig",
    "add_parser",
    "check_resources",
    "cmd_serve",
    "load_config",
]

log = logging.getLogger(__name__)

#: how long a stop may wait for E2 subscribers to take their deletion notice, and for
#: the gRPC servers' calls to end (the whole stop must fit in about a second)
STOP_GRACE_S = 0.25
#: the longest run ``--seconds`` may ask for (the node's own limit)
MAX_SECONDS = 365 * 86_400.0

_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def _check_address(v: str) -> str:
    """An address to bind: an IPv4 or IPv6 address (no brackets) or a host name."""
    import ipaddress

    try:
        ipaddress.ip_address(v)
        return v
    except ValueError:
        pass
    if not _HOST.fullmatch(v):
        raise ValueError(
            f"{v!r} is not an IP address or a host name (write IPv6 without brackets: ::1)"
        )
    return v


# =========================================================================== the file


class _Section(CheckedModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Section):
    """TLS of a gRPC port: PEM files (relative paths: from the config file's folder).
    ``client_ca``: require client certificates signed by it (mutual TLS)."""

    cert: str = Field(min_length=1)
    key: str = Field(min_length=1)
    client_ca: str | None = Field(None, min_length=1)


class _GrpcPort(_Section):
    address: str = "127.0.0.1"
    tls: TlsConfig | None = None
    access: str | None = Field(
        None,
        min_length=1,
        description="The access file (JSON: applications, token digests, permissions, "
        "audit log) of airan.ric.security.Access.load; none: no tokens asked.",
    )
    allow_plaintext_tokens: bool = False

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return _check_address(v)


class E2Config(_GrpcPort):
    """The E2-style agent's gRPC port (``airan.e2.v1.E2Node``)."""

    port: int = Field(50051, ge=0, le=65535, description="0: any free port.")
    max_subscriptions: int = Field(128, ge=1, le=100_000)
    max_queue: int = Field(1024, ge=2, le=1_000_000)
    control_timeout_s: float = Field(5.0, gt=0.0, le=60.0)


class O1Config(_GrpcPort):
    """The O1-style service. Without ``port`` it shares the E2 port (and its address and
    security); with one it has a server of its own."""

    port: int | None = Field(None, ge=0, le=65535, description="None: on the E2 port.")
    state: str | None = Field(
        None, min_length=1, description="State file: the configuration O1 persists."
    )
    measurement_s: float = Field(
        10.0, ge=0.0, le=86_400.0, description="Period of VES measurement events (0: none)."
    )


class MetricsConfig(_Section):
    """The Prometheus endpoint (``/metrics``, and ``/healthz``)."""

    address: str = "127.0.0.1"
    port: int = Field(9470, ge=0, le=65535, description="0: any free port.")

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return _check_address(v)


class DeviceConfig(_Section):
    """The device the node runs on."""

    backend: Literal["auto", "numpy", "cupy"] = "auto"
    seed: int = Field(0, ge=0, le=2**63 - 1)
    cpus: tuple[int, ...] | None = Field(
        None, min_length=1, description="Pin the process to these CPUs (sched_setaffinity)."
    )


class AiConfig(_Section):
    """The AI tenants: name → kind (``transformer`` or ``synthetic``), priority, batch.
    Omitted: one transformer per tenant the policy declares, or one named ``llm``;
    ``tenants = {}``: no AI."""

    tenants: dict[str, AiTenantConfig] | None = None

    @field_validator("tenants")
    @classmethod
    def _names(cls, v: dict[str, AiTenantConfig] | None) -> dict[str, AiTenantConfig] | None:
        for name in v or {}:
            if not re.fullmatch(TENANT_NAME, name):
                raise ValueError(f"tenant name {name!r} must be 1 to 64 letters, digits or ._:-")
        return v


class ReportConfig(_Section):
    """Where the run report (JSON, ``airan.core.report.RunReport``) is written at stop."""

    path: str = Field(min_length=1)


#: events the trace of ``airan serve`` keeps by default: the moments before the stop,
#: written at stop in about 0.35 s (a full ring of arbiter events writes at about
#: 60,000 events/s on a 2-vCPU VM), so that the whole stop stays within a second
SERVE_TRACE_EVENTS = 20_000


class TraceConfig(_Section):
    """Where the execution trace (Chrome / Perfetto JSON) is written at stop, and how
    many of the last events it keeps (a bounded ring: the trace is a flight recorder of
    the last moments before the stop). Writing costs about 17 µs per event at stop on
    a 2-vCPU VM: more than about 40,000 events makes the stop take longer than a
    second there."""

    path: str = Field(min_length=1)
    max_events: int = Field(SERVE_TRACE_EVENTS, ge=1_000, le=10_000_000)


class ServeConfig(BaseModel):
    """The whole file. Sections: ``node`` (:class:`~airan.node.NodeConfig`: node_id,
    policy, ran, alarms), ``device``, ``ai``, ``e2``, ``o1``, ``metrics``, ``report``,
    ``trace``, ``faults``. ``e2``, ``o1``, ``report`` and ``trace`` are off unless present;
    ``faults`` (``[[faults]]`` tables, :class:`~airan.core.faults.FaultSpec`) plants faults
    on purpose, for a lab or a rehearsal (``docs/reliability.md``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _sections: ClassVar[tuple[str, ...]] = (
        "node", "device", "ai", "e2", "o1", "metrics", "report", "trace", "faults",
    )  # fmt: skip

    node: NodeConfig = Field(default_factory=NodeConfig)
    device: DeviceConfig = Field(default_factory=DeviceConfig)
    ai: AiConfig = Field(default_factory=AiConfig)
    e2: E2Config | None = None
    o1: O1Config | None = None
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    report: ReportConfig | None = None
    trace: TraceConfig | None = None
    faults: list[FaultSpec] = Field(default_factory=list, max_length=64)


# ----------------------------------------------------------------------- reading


def _read(path: Path) -> dict[str, Any]:
    """The file's content as a dict: TOML, or JSON for a ``.json`` name."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FieldError("--config", f"{path} does not exist") from None
    except IsADirectoryError:
        raise FieldError("--config", f"{path} is a directory; give the config file") from None
    except OSError as exc:
        raise FieldError("--config", f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FieldError("--config", f"{path} is not UTF-8 text: {exc}") from None
    if path.suffix.lower() == ".json":

        def no_constant(name: str) -> Any:
            raise ValueError(f"{name} is not a number JSON allows")

        try:
            doc = json.loads(text, parse_constant=no_constant)
        except ValueError as exc:
            raise FieldError("--config", f"{path} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise FieldError("--config", f"{path} must hold a JSON object")
        return doc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FieldError("--config", f"{path} is not valid TOML: {exc}") from None


def _inner_model(annotation: Any) -> Any:
    """The model class inside ``X | None`` or ``dict[str, X]`` (else ``annotation``)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                return _inner_model(arg)
    if origin is dict:
        return ("dict", _inner_model(typing.get_args(annotation)[1]))
    if origin is list:
        return ("list", _inner_model(typing.get_args(annotation)[0]))
    return annotation


def _allowed_keys(loc: tuple[Any, ...]) -> list[str] | None:
    """The keys the model at ``loc`` (the parent of an unknown key) accepts."""
    model: Any = ServeConfig
    for part in loc:
        if isinstance(model, tuple):  # a dict or list of models: any key, then the model
            model = model[1]
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        f = model.model_fields.get(str(part))
        if f is None:
            return None
        model = _inner_model(f.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return None


def _field_error(exc: ValidationError, source: Path) -> FieldError:
    """One :class:`FieldError` naming the first bad field (dotted path in the file) and
    listing the others; the file is named in the reason."""
    items: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        name = ".".join(str(p) for p in loc) or "config"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            msg = "unknown key" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
        elif loc:
            msg = f"{msg} (got {err['input']!r})"
        items.append((name, msg))
    name, reason = items[0]
    if len(items) > 1:
        reason += "; also " + "; ".join(f"{n}: {r}" for n, r in items[1:])
    return FieldError(name, f"{reason} (in {source})")


def _first_non_json(doc: Any, where: str = "") -> tuple[str, Any] | None:
    """The dotted path and value of the first value JSON cannot carry (a TOML date or
    time; a NaN or infinite float), or ``None``."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            found = _first_non_json(v, f"{where}.{k}" if where else str(k))
            if found is not None:
                return found
        return None
    if isinstance(doc, list):
        for i, v in enumerate(doc):
            found = _first_non_json(v, f"{where}.{i}")
            if found is not None:
                return found
        return None
    if isinstance(doc, float) and not math.isfinite(doc):
        return where or "config", doc
    if doc is None or isinstance(doc, str | int | float | bool):
        return None
    return where or "config", doc


def _gpu_for(backend: str) -> bool:
    if backend == "numpy":
        return False
    if backend == "cupy":
        return True
    from airan.backend import probe_cupy

    return probe_cupy() is not None


def _with_defaults(doc: dict[str, Any], gpu: bool) -> dict[str, Any]:
    """``doc`` with the per-device defaults of :mod:`airan.runner` under the policy and
    cell keys it omits (keys it gives win; a given ``traffic`` table replaces the
    default one whole)."""
    from airan.runner import device_defaults, ran_defaults

    node = doc.get("node", {})
    if not isinstance(node, dict):
        return doc
    node = dict(node)
    policy = node.get("policy", {})
    if isinstance(policy, dict):
        node["policy"] = {**device_defaults(gpu)[0], **policy}
    ran = node.get("ran", {})
    if isinstance(ran, dict):
        node["ran"] = {**ran_defaults(gpu), **ran}
    return {**doc, "node": node}


def _resolve(base: Path, p: str | None) -> str | None:
    if p is None:
        return None
    q = Path(p).expanduser()
    return str(q if q.is_absolute() else base / q)


def _resolve_paths(cfg: ServeConfig, base: Path) -> ServeConfig:
    """Relative file names are relative to the config file's folder."""
    update: dict[str, Any] = {}

    def grpc(sec: _GrpcPort) -> dict[str, Any]:
        up: dict[str, Any] = {"access": _resolve(base, sec.access)}
        if sec.tls is not None:
            up["tls"] = sec.tls.model_copy(
                update={
                    "cert": _resolve(base, sec.tls.cert),
                    "key": _resolve(base, sec.tls.key),
                    "client_ca": _resolve(base, sec.tls.client_ca),
                }
            )
        return up

    if cfg.e2 is not None:
        update["e2"] = cfg.e2.model_copy(update=grpc(cfg.e2))
    if cfg.o1 is not None:
        update["o1"] = cfg.o1.model_copy(
            update={**grpc(cfg.o1), "state": _resolve(base, cfg.o1.state)}
        )
    if cfg.report is not None:
        update["report"] = cfg.report.model_copy(update={"path": _resolve(base, cfg.report.path)})
    if cfg.trace is not None:
        update["trace"] = cfg.trace.model_copy(update={"path": _resolve(base, cfg.trace.path)})
    return cfg.model_copy(update=update)


def _cross_check(cfg: ServeConfig, source: Path) -> None:
    """What no single section can check: tenants against the policy, O1 on the E2 port,
    two servers on one port."""

    def err(name: str, reason: str) -> FieldError:
        return FieldError(name, f"{reason} (in {source})")

    for i, spec in enumerate(cfg.faults):
        if spec.kind is FaultKind.L2_FLOOD:
            raise err(
                f"faults.{i}.kind",
                "l2_flood needs an L2 that sends messages (FAPI over ZMQ): airan serve runs "
                "the MAC in-process; the flood is tested at the FAPI L1 (tests/test_faults.py)",
            )
    declared = cfg.node.policy.tenants
    for name in cfg.ai.tenants or {}:
        if declared and name not in declared:
            raise err(
                f"ai.tenants.{name}",
                f"node.policy.tenants declares {', '.join(sorted(declared))}: declare this "
                "tenant there too",
            )
    o1 = cfg.o1
    if o1 is not None and o1.port is None:
        if cfg.e2 is None:
            raise err(
                "o1.port", "give a port: without an [e2] section there is no E2 port to share"
            )
        shared = ("tls", "access", "allow_plaintext_tokens", "address")
        given = [k for k in shared if k in o1.model_fields_set]
        if given:
            raise err(
                f"o1.{given[0]}",
                "O1 without a port of its own shares the E2 port, its address and its "
                "security: set them in [e2], or give o1.port",
            )
    ports: list[tuple[str, str, int]] = [("metrics", cfg.metrics.address, cfg.metrics.port)]
    if cfg.e2 is not None:
        ports.append(("e2", cfg.e2.address, cfg.e2.port))
    if o1 is not None and o1.port is not None:
        ports.append(("o1", o1.address, o1.port))
    seen: dict[int, str] = {}
    for name, _address, port in ports:
        if port == 0:
            continue
        if port in seen:
            raise err(f"{name}.port", f"{port} is also {seen[port]}.port: give each a port")
        seen[port] = name


def load_config(path: Path | str) -> ServeConfig:
    """Read and validate a ``serve`` config file (TOML, or JSON for ``*.json``).

    The per-device defaults (:func:`airan.runner.device_defaults`,
    :func:`~airan.runner.ran_defaults`) fill the policy and cell keys the file omits,
    for the device ``device.backend`` selects (``auto`` probes for a GPU). Relative file
    names are made relative to the file's folder. Raises :class:`FieldError` naming the
    field (``e2.port``) and the file; reads no file but the config itself
    (:func:`check_resources` checks the files it names)."""
    source = Path(path)
    doc = _read(source)
    device = doc.get("device", {})
    backend = device.get("backend", "auto") if isinstance(device, dict) else "auto"
    try:
        DeviceConfig.model_validate_json(json.dumps(device), strict=True)
        gpu = _gpu_for(str(backend))
    except (ValidationError, TypeError, ValueError):
        gpu = False  # the full validation below names the bad field
    bad = _first_non_json(doc)
    if bad is not None:
        where, value = bad
        raise FieldError(
            where, f"{type(value).__name__} values are not accepted, got {value!r} (in {source})"
        )
    text = json.dumps(_with_defaults(doc, gpu))
    try:
        cfg = ServeConfig.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise _field_error(exc, source) from None
    _cross_check(cfg, source)
    return _resolve_paths(cfg, source.resolve().parent)


# ----------------------------------------------------------------------- resources


def _security(sec: _GrpcPort, where: str) -> ServerSecurity:
    """The :class:`ServerSecurity` of a port, its files read and checked now."""
    from airan.ric.security import Access, ServerSecurity, TlsFiles

    tls = None
    if sec.tls is not None:
        tls = TlsFiles(
            Path(sec.tls.cert),
            Path(sec.tls.key),
            None if sec.tls.client_ca is None else Path(sec.tls.client_ca),
        )
    try:
        access = None if sec.access is None else Access.load(Path(sec.access))
    except FieldError as exc:
        raise FieldError(f"{where}.access", f"{exc.field}: {exc.reason}") from None
    out = ServerSecurity(tls, access, sec.allow_plaintext_tokens)
    try:
        out.check_host(sec.address)
        out.server_credentials()  # reads and checks the PEM files
    except FieldError as exc:
        raise FieldError(f"{where}.{exc.field.removeprefix('security.')}", exc.reason) from None
    return out


@dataclass
class Resources:
    """What :func:`check_resources` read and checked: the ports' security, and the node
    configuration to start with (the O1 state's, when one was saved and is valid)."""

    e2_security: ServerSecurity | None = None
    o1_security: ServerSecurity | None = None
    node: NodeConfig | None = None
    restored_from: str | None = None
    restored_revision: int = 0
    notes: list[str] = field(default_factory=list)


def check_resources(cfg: ServeConfig, trace: Path | None = None) -> Resources:
    """Read and check every file the config names, before anything starts: the TLS PEM
    files and access files (``e2.tls.cert``, ``o1.access``, ...), the folders of the
    report, the trace (``trace``: the ``--trace`` override) and the O1 state, and the
    CPUs of ``device.cpus``. A saved O1 state that is valid becomes the node's
    configuration (O1 changes survive a restart); an invalid one is left for the O1
    service to report (its ``configRestoreFailed`` alarm)."""
    out = Resources(node=cfg.node)
    if cfg.e2 is not None:
        out.e2_security = _security(cfg.e2, "e2")
    if cfg.o1 is not None:
        if cfg.o1.port is not None:
            out.o1_security = _security(cfg.o1, "o1")
        if cfg.o1.state is not None:
            state = Path(cfg.o1.state)
            check_output_path(state, "o1.state", make_folders=True)
            if state.exists():
                from airan.ric.o1 import load_state

                try:
                    out.node, out.restored_revision = load_state(state)
                    out.restored_from = str(state)
                except FieldError as exc:
                    out.notes.append(f"O1 state {state} not restored: {exc}")
    if cfg.report is not None:
        check_output_path(Path(cfg.report.path), "report.path", make_folders=True)
    trace_path = trace if trace is not None else (None if cfg.trace is None else cfg.trace.path)
    if trace_path is not None:
        check_output_path(
            Path(trace_path), "--trace" if trace is not None else "trace.path", make_folders=True
        )
    if cfg.device.cpus is not None:
        have = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
        bad = sorted(set(cfg.device.cpus) - have)
        if bad:
            raise FieldError(
                "device.cpus",
                f"CPU(s) {bad} are not available to this process (available: {sorted(have)})",
            )
    return out


# =========================================================================== the service


class _O1Server:
    """The O1 service on a ``grpc.aio`` server of its own (an event-loop thread)."""

    def __init__(self, o1: O1Service, port: int, security: ServerSecurity, host: str) -> None:
        from airan.ric.server import EventLoopThread, build_aio_server

        self.loop: EventLoopThread = EventLoopThread("airan-o1-aio")
        self.host = host
        try:

            async def start() -> tuple[Any, int]:
                srv, bound = await build_aio_server(port, security, [o1.registration()], host)
                await srv.start()
                return srv, bound

            self.server, self.port = self.loop.run(start(), 30.0)
        except BaseException:
            self.loop.stop()
            raise

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def stop(self, grace_s: float) -> None:
        try:
            self.loop.run(self.server.stop(grace_s), grace_s + 5.0)
        finally:
            self.loop.stop()


@dataclass
class StopResult:
    """What a stop did: how long it took (from the request), and what it wrote."""

    seconds: float
    report: Path | None = None
    trace: Path | None = None
    trace_events: int = 0
    deadline_met_ratio: float = 1.0
    tasks: int = 0
    faults: list[str] = field(default_factory=list)
    #: the node's loop ended on an error (an executor fault), not on request
    loop_failed: bool = False
    #: what failed during the stop (a file that could not be written, a loop that did
    #: not end)
    errors: list[str] = field(default_factory=list)
    #: seconds each step took: ``node`` (the slot in flight), ``report``, ``trace``,
    #: ``servers``
    steps: dict[str, float] = field(default_factory=dict)

    def describe_steps(self) -> str:
        return ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in self.steps.items())


class NodeService:
    """A node and its servers, as ``airan serve`` runs them (see the module doc).

    ``start()`` builds the node on the device, starts the servers (the metrics endpoint
    last but one, the node's loop last) and returns; ``stop()`` stops it gracefully.
    ``say`` receives the lines worth printing (the bound addresses among them)."""

    def __init__(
        self,
        config: ServeConfig,
        resources: Resources | None = None,
        *,
        trace: Path | None = None,
        seconds: float = MAX_SECONDS,
        source: Path | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        if not 0 < seconds <= MAX_SECONDS:
            raise FieldError("--seconds", f"must be in (0, {MAX_SECONDS:.0f}], got {seconds!r}")
        self.config = config
        self.resources = resources if resources is not None else check_resources(config, trace)
        self.seconds = seconds
        self.source = source
        self.say = say
        self.trace_path = trace if trace is not None else (
            None if config.trace is None else Path(config.trace.path)
        )  # fmt: skip
        self.node: Node | None = None
        self.backend: Backend | None = None
        self.o1: O1Service | None = None
        self.e2: E2Server | None = None
        self.o1_server: _O1Server | None = None
        self.metrics: MetricsServer | None = None
        self.recorder: Recorder | None = None
        self._t0 = 0.0
        self._stopped: StopResult | None = None
        self._lock = threading.Lock()

    # -- start -------------------------------------------------------------------------
    def build(self) -> Node:
        """Select the backend and build the node on it (the slow part: the L1 and the
        model are calibrated on the device)."""
        from airan.backend import select_backend
        from airan.node import Node

        cfg = self.config
        if cfg.device.cpus is not None:
            os.sched_setaffinity(0, cfg.device.cpus)
        try:
            self.backend = select_backend(cfg.device.backend)
        except FieldError as exc:
            raise FieldError("device.backend", exc.reason) from None
        node_cfg = self.resources.node or cfg.node
        self.node = Node.on_device(node_cfg, self.backend, cfg.device.seed, ai=cfg.ai.tenants)
        if cfg.faults:
            self.node.install_faults(FaultPlan(faults=cfg.faults))
            self.say(f"fault injection: {len(cfg.faults)} planned fault(s) (the [[faults]] tables)")
        return self.node

    def start(self) -> None:
        """Build the node (unless :meth:`build` did), start the O1 service, the E2 and O1
        servers and the metrics endpoint, then the node's loop. On any error what was
        started is stopped again and the error is raised (a bind error names the port:
        ``e2.port``)."""
        from airan import __version__
        from airan.telemetry.metrics import MetricsServer, node_registry

        node = self.node if self.node is not None else self.build()
        cfg = self.config
        res = self.resources
        try:
            if res.restored_from is not None:
                self.say(
                    f"node configuration restored from the O1 state {res.restored_from} "
                    f"(revision {res.restored_revision})"
                )
            for note in res.notes:
                self.say(note)
            if cfg.o1 is not None:
                from airan.ric.o1 import O1Service

                state = None if cfg.o1.state is None else Path(cfg.o1.state)
                self.o1 = O1Service(node, state, measurement_s=cfg.o1.measurement_s)
            if cfg.e2 is not None:
                self._start_e2(cfg.e2)
            if self.o1 is not None and cfg.o1 is not None and cfg.o1.port is not None:
                assert res.o1_security is not None
                try:
                    self.o1_server = _O1Server(
                        self.o1, cfg.o1.port, res.o1_security, cfg.o1.address
                    )
                except FieldError as exc:
                    raise FieldError(f"o1.{exc.field}", exc.reason) from None
            if self.trace_path is not None:
                from airan.telemetry.trace import Recorder

                max_events = SERVE_TRACE_EVENTS if cfg.trace is None else cfg.trace.max_events
                self.recorder = Recorder(max_events, label=f"airan serve {node.node_id}")
                node.arbiter.recorder = self.recorder
            registry = node_registry(
                node,
                e2=None if self.e2 is None else self.e2.agent,
                o1=self.o1,
                info={"version": __version__},
            )
            try:
                self.metrics = MetricsServer(
                    registry,
                    cfg.metrics.address,
                    cfg.metrics.port,
                    healthy=lambda: node.running,
                )
            except FieldError as exc:
                raise FieldError(f"metrics.{exc.field}", exc.reason) from None
            # What set-up allocated (weights, test vectors, tables) stays: keep it out of
            # the collector's full passes, which would stall the loop for milliseconds.
            import gc

            gc.collect()
            gc.freeze()
            self._t0 = time.perf_counter()
            node.start(self.seconds)
        except BaseException:
            self._close_servers()
            node.close()
            raise
        self.say(f"metrics listening on {self.metrics.url}")
        if self.e2 is not None:
            self.say(f"e2 listening on {self.e2.target}")
            if self.o1 is not None and self.o1_server is None:
                self.say(f"o1 listening on {self.e2.target}")
        if self.o1_server is not None:
            self.say(f"o1 listening on {self.o1_server.target}")

    def _start_e2(self, e2: E2Config) -> None:
        from airan.ric.e2 import serve_e2

        assert self.node is not None
        extra = [] if self.o1 is None or self.config.o1 is None or self.config.o1.port else [
            self.o1.registration()
        ]  # fmt: skip
        try:
            self.e2 = serve_e2(
                self.node,
                e2.port,
                self.resources.e2_security,
                e2.address,
                extra_services=extra,
                max_subscriptions=e2.max_subscriptions,
                max_queue=e2.max_queue,
                control_timeout_s=e2.control_timeout_s,
            )
        except FieldError as exc:
            raise FieldError(f"e2.{exc.field.removeprefix('security.')}", exc.reason) from None
        if self.o1 is not None:  # the E2 counters (drops, stalls) in every O1 heartbeat
            self.o1.add_heartbeat_source("e2", self.e2.agent.stats)

    @property
    def running(self) -> bool:
        return self.node is not None and self.node.running

    # -- stop --------------------------------------------------------------------------
    def stop(self) -> StopResult:
        """Stop gracefully (once; later calls return the first result): the node's loop
        finishes the radio work released so far, the report and the trace are written
        atomically, E2 subscribers get their deletion notice, the servers stop, the
        device is released. Never raises: what went wrong is in ``errors``."""
        with self._lock:
            if self._stopped is not None:
                return self._stopped
            t0 = time.perf_counter()
            result = StopResult(0.0)
            node = self.node
            stopped = True
            try:
                if node is not None:
                    stopped = self._stop_node(node, result, t0)
            finally:
                t1 = time.perf_counter()
                self._close_servers()
                if node is not None and stopped:
                    node.arbiter.executor.close()
                result.steps["servers"] = time.perf_counter() - t1
            result.seconds = time.perf_counter() - t0
            self._stopped = result
            return result

    def _stop_node(self, node: Node, result: StopResult, t0: float) -> bool:
        """Stop the node's loop, then write the report and the trace; ``False`` if the
        loop did not end (then nothing is written: its run is not over)."""
        before = node.arbiter.counters()
        t_before = time.perf_counter_ns()
        try:
            node.stop(timeout_s=5.0)
        except FieldError as exc:
            result.errors.append(f"the node's loop did not stop: {exc}")
            return False
        self._fix_elapsed(before.elapsed_ns + time.perf_counter_ns() - t_before)
        result.steps["node"] = time.perf_counter() - t0
        faults = node.health().faults
        result.faults = [f"{f.source}: {f.text}" for f in faults]
        result.loop_failed = node.loop_error is not None
        if self._t0 > 0:  # it ran: it has a report
            self._write_outputs(result)
        return True

    def _fix_elapsed(self, bound_ns: int) -> None:
        """A run stopped early must report the time it ran, not the time it was asked
        to run: ``Arbiter.run`` sets ``elapsed_ns`` to at least the requested duration
        (right for a run that ends on its own). Clamp it to the time measured around
        the stop (a no-op once the arbiter takes the stop time itself)."""
        assert self.node is not None
        arb = self.node.arbiter
        if arb.elapsed_ns > bound_ns:
            arb.elapsed_ns = max(bound_ns, 1)

    def _write_outputs(self, result: StopResult) -> None:
        """The run report and the trace, each written atomically; a failure to write
        one is recorded in ``result.errors`` and does not stop the other."""
        assert self.node is not None
        cfg = self.config
        t0 = time.perf_counter()
        report = self.node.report(wall_time_s=time.perf_counter() - self._t0)
        report.workload["serve_config"] = None if self.source is None else str(self.source)
        result.deadline_met_ratio = report.ran.deadline_met_ratio
        result.tasks = report.ran.tasks
        if cfg.report is not None:
            path = Path(cfg.report.path)
            try:
                write_atomic(path, report.to_json() + "\n")
                result.report = path
            except OSError as exc:
                result.errors.append(f"report.path: cannot write {path}: {exc}")
        result.steps["report"] = time.perf_counter() - t0
        if self.recorder is not None and self.trace_path is not None:
            from airan.telemetry.trace import write_trace

            t1 = time.perf_counter()
            meta = {
                "command": "airan serve",
                "node_id": self.node.node_id,
                "backend": report.backend,
                "device": report.device,
                "policy": report.policy.get("name"),
                "seed": report.seed,
            }
            try:
                result.trace_events = write_trace(self.trace_path, [self.recorder], meta)
                result.trace = self.trace_path
            except OSError as exc:
                result.errors.append(f"trace: cannot write {self.trace_path}: {exc}")
            result.steps["trace"] = time.perf_counter() - t1

    def _close_servers(self) -> None:
        """Stop what runs besides the node, each step independent of the others."""
        steps: list[tuple[str, Callable[[], None]]] = []
        if self.e2 is not None:
            e2 = self.e2
            steps.append(("e2", lambda: e2.stop(STOP_GRACE_S)))
        if self.o1_server is not None:
            o1s = self.o1_server
            steps.append(("o1 server", lambda: o1s.stop(STOP_GRACE_S)))
        if self.o1 is not None:
            steps.append(("o1", self.o1.close))
        if self.metrics is not None:
            steps.append(("metrics", self.metrics.stop))
        for name, fn in steps:
            try:
                fn()
            except Exception:
                log.exception("airan serve: stopping %s failed", name)
        self.e2 = self.o1_server = self.o1 = self.metrics = None


# =========================================================================== the command


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seconds must be a number, got {text!r}") from None
    if not 0 < v <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"--seconds must be in (0, {MAX_SECONDS:.0f}]")
    return v


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``serve`` to the ``airan`` command's subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="run a long-lived node from a config file (E2, O1, Prometheus metrics)",
        description="Run a node (DU, arbiter, AI tenants) on this host's device until "
        "SIGTERM or SIGINT, with the E2 and O1 servers and the metrics endpoint the "
        "config file asks for. See docs/serve.md.",
    )
    p.add_argument(
        "--config",
        type=Path,
        required=True,
        metavar="FILE",
        help="the node's config file (TOML, or JSON for *.json)",
    )
    p.add_argument(
        "--trace",
        type=Path,
        metavar="PATH",
        help="write the execution trace (Chrome / Perfetto JSON) here at stop; "
        "overrides trace.path",
    )
    p.add_argument(
        "--seconds",
        type=_seconds,
        metavar="S",
        help="stop by itself after S seconds (default: run until signalled)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the config file and the files it names, print the result, exit",
    )
    return p


class _Signals:
    """SIGTERM and SIGINT set an event that the main thread waits on (the handlers run
    in the main thread, between bytecodes: never in the radio loop's thread)."""

    NAMES: ClassVar[Mapping[int, str]] = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: str | None = None
        self.at = 0.0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for sig in self.NAMES:
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is None:
            self.received = self.NAMES.get(signum, str(signum))
            self.at = time.perf_counter()
        self.event.set()

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def cmd_serve(args: argparse.Namespace, console: Console) -> int:
    """``airan serve --config FILE [--trace PATH] [--seconds S] [--check]``.

    Exit status: 0 after a graceful stop (a signal, or ``--seconds`` elapsed); 2 for a
    bad config or a port that cannot be bound (nothing left running); 1 if the node's
    loop died on a fault (the report is written all the same), or the report or the
    trace could not be written."""

    def say(line: str) -> None:
        print(line, flush=True)

    cfg = load_config(args.config)
    resources = check_resources(cfg, args.trace)
    if args.check:
        say(f"{args.config}: valid")
        return 0
    if cfg.device.backend != "cupy":
        unset = [v for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS") if v not in os.environ]
        if unset and os.environ.get("MKL_NUM_THREADS") is None:
            print(
                f"airan serve: warning: {' and '.join(unset)} unset: a multi-threaded BLAS "
                "competes with the radio loop for the CPU (set them to 1; see "
                "docs/deployment.md)",
                file=sys.stderr,
                flush=True,
            )
    service = NodeService(
        cfg,
        resources,
        trace=args.trace,
        seconds=args.seconds or MAX_SECONDS,
        source=args.config,
        say=say,
    )
    with _Signals() as signals:
        node = service.build()
        tenants = ", ".join(f"{k} ({v})" for k, v in node.ai_kinds.items()) or "none"
        assert service.backend is not None
        say(
            f"airan serve: node {node.node_id} on {service.backend.name} "
            f"({service.backend.device}); policy {node.config.policy.name}; "
            f"AI tenants: {tenants}"
        )
        if signals.event.is_set():  # signalled during set-up: nothing to run
            service.stop()
            say(f"airan serve: {signals.received} during set-up: stopped")
            return 0
        service.start()
        say("airan serve: running (SIGTERM or SIGINT stops it)")
        while not signals.event.wait(0.2):
            if not service.running:
                break
        why = signals.received or "the run ended"
        result = service.stop()
    since = (time.perf_counter() - signals.at) if signals.received else result.seconds
    if result.report is not None:
        say(f"report written to {result.report}")
    if result.trace is not None:
        say(f"trace written to {result.trace} ({result.trace_events} events)")
    console.print(
        f"airan serve: {why}: stopped in {since * 1000:.0f} ms ({result.describe_steps()}); "
        f"{result.tasks} radio tasks, deadline-met ratio {result.deadline_met_ratio:.6f}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    for error in result.errors:
        print(f"airan serve: error: {error}", file=sys.stderr, flush=True)
    for fault in result.faults:
        print(f"airan serve: fault: {fault}", file=sys.stderr, flush=True)
    # the loop died, or the report or trace is lost: let a supervisor know
    return 1 if result.loop_failed or result.errors else 0
