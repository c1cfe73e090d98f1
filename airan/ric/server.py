"""One helper that hosts RIC-facing gRPC services (E2-style, O1-style) on a port, with the
security settings of :mod:`airan.ric.security` (TLS or mutual TLS, bearer tokens,
per-method permissions, audit log).

Each service registers itself with a :class:`ServiceRegistration`: its full proto service
name, the generated ``add_<Service>Servicer_to_server`` bound to a servicer, and which of
its methods need the ``control`` permission (O-RAN.WG10.O1-Interface §2.3 and
O-RAN.WG11 security: changes to the managed element require an authorised principal).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor_pool

from airan.core.errors import FieldError
from airan.ric.security import Permission, ServerSecurity

__all__ = ["ServiceRegistration", "build_server"]


@dataclass(frozen=True)
class ServiceRegistration:
    """A service to host.

    ``service``: the full proto name (``"airan.o1.v1.O1"``); ``add_to_server``: registers
    the servicer (``lambda s: o1_pb2_grpc.add_O1Servicer_to_server(servicer, s)``);
    ``permissions``: method name (``"Set"``) → permission needed; methods not listed need
    ``read``. Every name is checked against the service's descriptor, so a typo cannot
    silently leave a control method readable.
    """

    service: str
    add_to_server: Callable[[grpc.Server], None]
    permissions: Mapping[str, Permission] = field(default_factory=dict)

    def method_permissions(self) -> dict[str, Permission]:
        """Full method path (``/airan.o1.v1.O1/Set``) → permission, validated."""
        try:
            desc = descriptor_pool.Default().FindServiceByName(self.service)
        except KeyError:
            raise FieldError(
                "ServiceRegistration.service",
                f"unknown service {self.service!r} (import its _pb2 module first)",
            ) from None
        known = {m.name for m in desc.methods}
        out: dict[str, Permission] = {}
        for name, perm in self.permissions.items():
            if name not in known:
                raise FieldError(
                    f"ServiceRegistration.permissions.{name}",
                    f"{self.service} has no method {name!r} (methods: {sorted(known)})",
                )
            out[f"/{self.service}/{name}"] = Permission(perm)
        return out


def build_server(
    port: int,
    security: ServerSecurity | None,
    services: Sequence[ServiceRegistration],
    host: str = "127.0.0.1",
    max_workers: int = 16,
    options: Sequence[tuple[str, Any]] = (),
) -> tuple[grpc.Server, int]:
    """A sync ``grpc.Server`` (not started) hosting ``services`` on
    ``host:port`` (``port=0``: any free port) and the port actually bound.

    With ``security.tls`` the port is TLS (mutual TLS with ``tls.client_ca``); otherwise
    plaintext. With ``security.access`` every call needs a bearer token and control
    methods the ``control`` permission. Each streaming call holds one worker thread while
    open: size ``max_workers`` for the expected subscribers plus unary traffic.
    """
    if not 0 <= port <= 65535:
        raise FieldError("port", f"must be 0..65535 (got {port})")
    if max_workers < 1:
        raise FieldError("max_workers", f"must be >= 1 (got {max_workers})")
    sec = security or ServerSecurity()
    perms: dict[str, Permission] = {}
    names: set[str] = set()
    for i, reg in enumerate(services):
        if reg.service in names:
            raise FieldError(f"services.{i}", f"service {reg.service!r} registered twice")
        names.add(reg.service)
        perms.update(reg.method_permissions())
    creds = sec.server_credentials()
    interceptor = sec.interceptor(perms)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="airan-grpc"),
        interceptors=None if interceptor is None else [interceptor],
        options=list(options),
    )
    for reg in services:
        reg.add_to_server(server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = (
            server.add_insecure_port(address)
            if creds is None
            else server.add_secure_port(address, creds)
        )
    except RuntimeError as exc:
        raise FieldError("port", f"cannot bind {address}: {exc}") from None
    if bound == 0:
        raise FieldError("port", f"cannot bind {address}")
    return server, bound
