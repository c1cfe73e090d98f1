"""One helper that hosts RIC-facing gRPC services (E2-style, O1-style) on a port, with the
security settings of :mod:`airan.ric.security` (TLS or mutual TLS, bearer tokens,
per-method permissions, audit log).

Each service registers itself with a :class:`ServiceRegistration`: its full proto service
name, the generated ``add_<Service>Servicer_to_server`` bound to a servicer (and, for a
``grpc.aio`` server, optionally one bound to an asyncio servicer), and which of its
methods need the ``control`` permission (O-RAN.WG10.O1-Interface §2.3 and O-RAN.WG11
security: changes to the managed element require an authorised principal).

Two server flavours: :func:`build_server` (a sync ``grpc.Server``: one pool thread per
open call) and :func:`build_aio_server` (a ``grpc.aio.Server`` on one asyncio event loop,
e.g. an :class:`EventLoopThread`: every call is a coroutine on that one thread, which is
much cheaper per streamed message and does not multiply the threads that fight for the
GIL). Both enforce the same security.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf import descriptor_pool

from airan.core.errors import FieldError
from airan.ric.security import Permission, ServerSecurity

__all__ = ["EventLoopThread", "ServiceRegistration", "build_aio_server", "build_server"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class ServiceRegistration:
    """A service to host.

    ``service``: the full proto name (``"airan.o1.v1.O1"``); ``add_to_server``: registers
    the servicer (``lambda s: o1_pb2_grpc.add_O1Servicer_to_server(servicer, s)``);
    ``permissions``: method name (``"Set"``) → permission needed; methods not listed need
    ``read``. Every name is checked against the service's descriptor, so a typo cannot
    silently leave a control method readable. ``add_to_aio_server``: registers an asyncio
    servicer on a ``grpc.aio.Server``; without it :func:`build_aio_server` registers the
    sync servicer, whose calls then run in the server's migration thread pool.
    """

    service: str
    add_to_server: Callable[[grpc.Server], None]
    permissions: Mapping[str, Permission] = field(default_factory=dict)
    add_to_aio_server: Callable[[grpc.aio.Server], None] | None = None

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


def _checked(
    port: int,
    security: ServerSecurity | None,
    services: Sequence[ServiceRegistration],
    host: str,
) -> tuple[ServerSecurity, dict[str, Permission]]:
    if not 0 <= port <= 65535:
        raise FieldError("port", f"must be 0..65535 (got {port})")
    sec = security or ServerSecurity()
    sec.check_host(host)  # no bearer tokens in clear text off loopback unless asked for
    perms: dict[str, Permission] = {}
    names: set[str] = set()
    for i, reg in enumerate(services):
        if reg.service in names:
            raise FieldError(f"services.{i}", f"service {reg.service!r} registered twice")
        names.add(reg.service)
        perms.update(reg.method_permissions())
    return sec, perms


def _bind(
    server: grpc.Server | grpc.aio.Server,
    creds: grpc.ServerCredentials | None,
    host: str,
    port: int,
) -> int:
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
    return bound


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
    methods the ``control`` permission; tokens without TLS are refused
    (:class:`FieldError` ``security.tls``) unless ``host`` is a loopback address or
    ``security.allow_plaintext_tokens`` is set. Each streaming call holds one worker thread while
    open: size ``max_workers`` for the expected subscribers plus unary traffic.
    """
    if max_workers < 1:
        raise FieldError("max_workers", f"must be >= 1 (got {max_workers})")
    sec, perms = _checked(port, security, services, host)
    creds = sec.server_credentials()  # TLS files are checked before anything starts
    interceptor = sec.interceptor(perms)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="airan-grpc"),
        interceptors=None if interceptor is None else [interceptor],
        options=list(options),
    )
    for reg in services:
        reg.add_to_server(server)
    return server, _bind(server, creds, host, port)


async def build_aio_server(
    port: int,
    security: ServerSecurity | None,
    services: Sequence[ServiceRegistration],
    host: str = "127.0.0.1",
    migration_workers: int = 8,
    options: Sequence[tuple[str, Any]] = (),
) -> tuple[grpc.aio.Server, int]:
    """A ``grpc.aio.Server`` (not started) on the running event loop hosting ``services``
    on ``host:port`` (``port=0``: any free port) and the port actually bound; the same
    TLS / token / permission handling as :func:`build_server`
    (:class:`~airan.ric.security.AioAuthInterceptor`).

    Services with ``add_to_aio_server`` are served by coroutines on the loop; the others'
    sync handlers run in a migration pool of ``migration_workers`` threads.
    """
    if migration_workers < 1:
        raise FieldError("migration_workers", f"must be >= 1 (got {migration_workers})")
    sec, perms = _checked(port, security, services, host)
    creds = sec.server_credentials()
    interceptor = sec.aio_interceptor(perms)
    server = grpc.aio.server(
        migration_thread_pool=futures.ThreadPoolExecutor(
            max_workers=migration_workers, thread_name_prefix="airan-grpc-sync"
        ),
        interceptors=None if interceptor is None else [interceptor],
        options=list(options),
    )
    for reg in services:
        if reg.add_to_aio_server is not None:
            reg.add_to_aio_server(server)
        else:
            reg.add_to_server(server)  # type: ignore[arg-type]  # same registration API
    return server, _bind(server, creds, host, port)


class EventLoopThread:
    """An asyncio event loop running in its own (daemon) thread, for hosting a
    ``grpc.aio`` server inside a program that is otherwise synchronous.

    :meth:`run` runs a coroutine on the loop and waits for its result; :meth:`call`
    runs a plain function there; :meth:`stop` stops the loop and joins the thread.
    """

    def __init__(self, name: str = "airan-aio") -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
                for t in pending:
                    t.cancel()
                if pending:
                    self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    @property
    def in_loop(self) -> bool:
        """Whether the caller runs on the loop's thread."""
        return threading.get_ident() == self.thread.ident

    def run(self, coro: Coroutine[Any, Any, _T], timeout_s: float | None = None) -> _T:
        """Run ``coro`` on the loop and return its result (from another thread)."""
        if self.in_loop:
            coro.close()
            raise RuntimeError("EventLoopThread.run called from its own loop")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def call(self, fn: Callable[[], _T], timeout_s: float | None = None) -> _T:
        """Run ``fn()`` on the loop's thread and return its result."""
        if self.in_loop:
            return fn()

        async def wrap() -> _T:
            return fn()

        return self.run(wrap(), timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the loop (cancelling what still runs on it) and join the thread."""
        if self.loop.is_closed():
            return
        if self.in_loop:
            raise RuntimeError("EventLoopThread.stop called from its own loop")
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout_s)
