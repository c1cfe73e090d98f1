"""Transport security, application tokens, permissions and the audit log of the RIC-facing
gRPC servers (E2-style and O1-style).

* **Transport** — TLS 1.2+ with an X.509 server certificate; with a client CA, mutual TLS
  (the client must present a certificate that CA signed). This is the security the O-RAN
  WG11 security specification (O-RAN.WG11.Security-Protocols-Specification, "TLS" clause)
  requires of the E2/O1 interfaces when they run over TLS; O-RAN.WG10.O1-Interface
  §2.3 ("Security") asks for mutually authenticated, encrypted management sessions.
* **Applications** — each xApp/rApp/operator tool holds a bearer token
  (``authorization: Bearer <token>`` call metadata, the OAuth 2.0 bearer scheme of
  RFC 6750 §2.1 that O-RAN.WG11 uses for API authorisation). The server keeps only the
  token's SHA-256 and compares digests in constant time.
* **Permissions** — ``read`` (subscriptions, reports, Get) or ``control`` (anything that
  changes the node: E2 control, O1 Set). Each service declares which of its methods need
  ``control``; the :class:`AuthInterceptor` enforces it for unary and streaming methods.
* **Audit** — every control call (allowed or refused) and every refusal is written as one
  JSON line: ``time``, ``app``, ``method``, ``peer``, ``decision``, ``reason``, ``code``
  (the gRPC status: for an allowed call, written after the call with its outcome), the
  mutual-TLS client certificate's subject when there is one, and what the servicer noted
  about the call (:func:`audit_note`: e.g. the E2 control's RIC request ID).

The servicer learns who calls through :func:`current_call` (a context variable the
interceptor sets for the duration of the call; ``None`` without an access policy).

The server side is :class:`ServerSecurity` (used by :func:`airan.ric.server.build_server`
and :func:`airan.ric.server.build_aio_server`);
the client side is :class:`ClientSecurity` (a ``grpc.Channel`` or ``grpc.aio.Channel``).
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as _dt
import hashlib
import hmac
import inspect
import ipaddress
import json
import re
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeAlias

import grpc
import grpc.aio
from pydantic import BaseModel, ConfigDict, Field, model_validator

from airan.core.errors import FieldError
from airan.core.policy import CheckedModel

__all__ = [
    "Access",
    "AioAuthInterceptor",
    "AppGrant",
    "AuditLog",
    "AuthInterceptor",
    "CallInfo",
    "ClientSecurity",
    "Permission",
    "ServerSecurity",
    "TlsFiles",
    "audit_note",
    "current_call",
    "hash_token",
    "is_loopback_host",
    "new_token",
]

AUTH_HEADER = "authorization"
_BEARER = re.compile(r"Bearer\s+(\S+)\s*", re.IGNORECASE)


class Permission(StrEnum):
    """What an application may do: ``read`` observes, ``control`` also changes the node.

    ``control`` implies ``read``.
    """

    READ = "read"
    CONTROL = "control"

    def allows(self, needed: Permission) -> bool:
        """Whether an application holding this permission may call a method needing
        ``needed``."""
        return self is Permission.CONTROL or needed is Permission.READ


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token: what the access file stores instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe base64)."""
    return secrets.token_urlsafe(32)


def _read(path: Path, where: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise FieldError(where, f"cannot read {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- server side


@dataclass(frozen=True)
class TlsFiles:
    """The server's TLS material, PEM files.

    ``cert``: the server certificate chain; ``key``: its private key; ``client_ca``: when
    set, mutual TLS — every client must present a certificate signed by this CA (bundle),
    or the handshake fails.
    """

    cert: Path
    key: Path
    client_ca: Path | None = None

    def server_credentials(self) -> grpc.ServerCredentials:
        """``grpc.ssl_server_credentials`` for these files (read now; FieldError naming
        ``tls.cert`` / ``tls.key`` / ``tls.client_ca`` when one cannot be read)."""
        cert = _read(self.cert, "tls.cert")
        key = _read(self.key, "tls.key")
        for name, pem, marker in (("tls.cert", cert, b"CERTIFICATE"), ("tls.key", key, b"KEY")):
            if b"-----BEGIN" not in pem or marker not in pem:
                raise FieldError(name, f"{getattr(self, name[4:])} is not a PEM {marker.decode()}")
        ca = None if self.client_ca is None else _read(self.client_ca, "tls.client_ca")
        if ca is not None and b"-----BEGIN CERTIFICATE" not in ca:
            raise FieldError("tls.client_ca", f"{self.client_ca} is not a PEM CERTIFICATE")
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
        )


class AppGrant(BaseModel):
    """One application of the access file: its name, its token's SHA-256, its permission."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
    token_sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="hex SHA-256 of the token")
    permission: Permission


class _AccessFile(CheckedModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    _where: ClassVar[str] = "access"

    apps: list[AppGrant]
    audit_log: str | None = None

    @model_validator(mode="after")
    def _unique(self) -> _AccessFile:
        names: set[str] = set()
        digests: set[str] = set()
        for i, app in enumerate(self.apps):
            if app.name in names:
                raise ValueError(f"apps.{i}.name: duplicate application name {app.name!r}")
            if app.token_sha256.lower() in digests:
                raise ValueError(f"apps.{i}.token_sha256: same token as an earlier application")
            names.add(app.name)
            digests.add(app.token_sha256.lower())
        return self


class AuditLog:
    """An append-only JSON-lines file; one line per decision, flushed at once.

    Each line: ``{"time": RFC 3339 UTC, "app": name or null, "method": "/pkg.Svc/M",
    "peer": "ipv4:127.0.0.1:5555", "decision": "allow"|"deny", "reason": text}``.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.path.open("a", encoding="utf-8"):
                pass
        except OSError as exc:
            raise FieldError("access.audit_log", f"cannot open {path}: {exc.strerror}") from None

    def write(
        self,
        app: str | None,
        method: str,
        peer: str,
        decision: str,
        reason: str,
        **extra: Any,
    ) -> None:
        """Append one line (thread-safe); ``extra`` fields that are not ``None`` are added
        after the fixed ones (``code``, ``client_cert_subject``, ``ric_request_id``, ...)."""
        doc: dict[str, Any] = {
            "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds"),
            "app": app,
            "method": method,
            "peer": peer,
            "decision": decision,
            "reason": reason,
        }
        for k, v in extra.items():
            if v is not None and k not in doc:
                doc[k] = v
        line = json.dumps(doc, separators=(",", ":"), default=str)
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()


class Access:
    """The access policy: applications (token digest → name, permission) and the audit log.

    Tokens are never stored; :meth:`authenticate` hashes the presented token and compares
    it with *every* stored digest with :func:`hmac.compare_digest` (constant time, no early
    exit), so the time taken says nothing about which digest (if any) is close.
    """

    def __init__(self, apps: Sequence[AppGrant], audit_log: Path | None = None) -> None:
        checked = _AccessFile.parse({"apps": [a.model_dump() for a in apps]})
        self.apps: tuple[AppGrant, ...] = tuple(checked.apps)
        self._digests = [(bytes.fromhex(a.token_sha256), a) for a in self.apps]
        self.audit: AuditLog | None = None if audit_log is None else AuditLog(audit_log)

    @classmethod
    def load(cls, path: Path) -> Access:
        """Read the access file (JSON)::

            {"audit_log": "audit.jsonl",
             "apps": [{"name": "kpm-xapp", "token_sha256": "<64 hex>", "permission": "read"},
                      {"name": "rc-xapp",  "token_sha256": "<64 hex>", "permission": "control"}]}

        ``audit_log`` (optional) is relative to the file's directory. Errors raise
        :class:`FieldError` naming the field (``access.apps.1.permission``, ...).
        """
        path = Path(path)
        raw = _read(path, "access")
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FieldError("access", f"{path} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise FieldError("access", f"{path} must hold a JSON object with an 'apps' list")
        parsed = _AccessFile.parse(doc)
        log = None if parsed.audit_log is None else path.parent / parsed.audit_log
        return cls(parsed.apps, log)

    def authenticate(self, token: str) -> AppGrant | None:
        """The application holding ``token``, or ``None``."""
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        found: AppGrant | None = None
        for stored, app in self._digests:
            if hmac.compare_digest(stored, digest):
                found = app
        return found


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a bind address) is a loopback one: ``localhost``, 127.0.0.0/8,
    ``::1``."""
    h = host.strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerSecurity:
    """A server's security settings: TLS (``None``: plaintext) and access control
    (``None``: every caller may call every method — only for a trusted loopback setup).

    Tokens without TLS (``tls=None`` with an ``access`` policy) travel in clear text:
    anyone who sees the traffic can read a token and replay it with its permission. The
    servers refuse that combination (:meth:`check_host`) unless they bind a loopback
    host, or ``allow_plaintext_tokens=True`` says it is meant (e.g. behind a TLS-
    terminating proxy on the same host)."""

    tls: TlsFiles | None = None
    access: Access | None = None
    allow_plaintext_tokens: bool = False

    def check_host(self, host: str) -> None:
        """Raise :class:`FieldError` (``security.tls``) if bearer tokens would be accepted
        in clear text on a non-loopback ``host`` without ``allow_plaintext_tokens``."""
        if (
            self.tls is None
            and self.access is not None
            and not self.allow_plaintext_tokens
            and not is_loopback_host(host)
        ):
            raise FieldError(
                "security.tls",
                f"bearer tokens over plaintext on {host!r} can be read and replayed by anyone "
                "on the path: give TlsFiles, bind a loopback host, or set "
                "allow_plaintext_tokens=True",
            )

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """The TLS credentials to bind with, or ``None`` for a plaintext port."""
        return None if self.tls is None else self.tls.server_credentials()

    def interceptor(self, permissions: Mapping[str, Permission]) -> AuthInterceptor | None:
        """The interceptor enforcing ``permissions`` (full method path ``/pkg.Svc/Method``
        → permission needed; methods not listed need ``read``), or ``None`` without an
        access policy."""
        return None if self.access is None else AuthInterceptor(self.access, permissions)

    def aio_interceptor(self, permissions: Mapping[str, Permission]) -> AioAuthInterceptor | None:
        """:meth:`interceptor` for a ``grpc.aio`` server."""
        return None if self.access is None else AioAuthInterceptor(self.access, permissions)


@dataclass
class CallInfo:
    """The call being served, as the auth interceptor saw it (:func:`current_call`):
    the authenticated application, the method, the peer, the mutual-TLS client
    certificate's subject (``None`` without one) and the fields the servicer added to
    the call's audit line (:func:`audit_note`)."""

    app: AppGrant
    method: str
    peer: str
    client_cert_subject: str | None = None
    audit: dict[str, Any] = field(default_factory=dict)


_CALL: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar(
    "airan_ric_call", default=None
)


def current_call() -> CallInfo | None:
    """The authenticated call the current servicer code runs for; ``None`` when the
    server has no access policy (no token checked). Read it in the handler itself (a
    thread pool the handler hands work to does not inherit it)."""
    return _CALL.get()


def audit_note(**fields: Any) -> None:
    """Add ``fields`` to the audit line of the current call (written after the call for
    control methods); nothing without an access policy."""
    info = _CALL.get()
    if info is not None:
        info.audit.update(fields)


def _cert_subject(auth: Mapping[str, Sequence[bytes]] | None) -> str | None:
    """The client certificate's subject from a gRPC auth context (mutual TLS)."""
    if not auth:
        return None
    subject = auth.get("x509_subject")
    if subject:
        return subject[0].decode("utf-8", "replace")
    cn = auth.get("x509_common_name")
    if cn:
        return "CN=" + cn[0].decode("utf-8", "replace")
    return None


def _auth_context(context: Any) -> Mapping[str, Sequence[bytes]] | None:
    try:
        auth: Mapping[str, Sequence[bytes]] = context.auth_context()
    except Exception:  # pragma: no cover - a context always has one
        return None
    return auth


def _code_of(context: Any) -> Any:
    """The status code a servicer set on ``context`` (abort, set_code), or ``None``."""
    try:
        return context.code()
    except Exception:  # pragma: no cover - grpc >= 1.38 contexts have code()
        return None


def _details_of(context: Any) -> str | None:
    """The status message a servicer set on ``context``, or ``None``."""
    try:
        details = context.details()
    except Exception:  # pragma: no cover - grpc >= 1.38 contexts have details()
        return None
    if isinstance(details, bytes):
        return details.decode("utf-8", "replace")
    return details if isinstance(details, str) else None


def _status_name(code: Any, default: str) -> str:
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):  # a raw C-core status number
        for c in grpc.StatusCode:
            if c.value[0] == code:
                return c.name
    return default


class _Decision(NamedTuple):
    app: AppGrant | None
    code: grpc.StatusCode | None  # None: allowed
    reason: str


_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

if TYPE_CHECKING:  # grpc-stubs makes these generic; the runtime classes are not
    _ServerInterceptor = grpc.ServerInterceptor[Any, Any]
    _UUInterceptor = grpc.UnaryUnaryClientInterceptor[Any, Any]
    _USInterceptor = grpc.UnaryStreamClientInterceptor[Any, Any]
    _SUInterceptor = grpc.StreamUnaryClientInterceptor[Any, Any]
    _SSInterceptor = grpc.StreamStreamClientInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.ServerInterceptor
    _UUInterceptor = grpc.UnaryUnaryClientInterceptor
    _USInterceptor = grpc.UnaryStreamClientInterceptor
    _SUInterceptor = grpc.StreamUnaryClientInterceptor
    _SSInterceptor = grpc.StreamStreamClientInterceptor


class AuthInterceptor(_ServerInterceptor):
    """Bearer-token authentication and per-method permissions for a sync ``grpc.Server``.

    No or unknown token ⇒ ``UNAUTHENTICATED``; a permission below the method's ⇒
    ``PERMISSION_DENIED``. Refusals are audited at once; every allowed call of a
    ``control`` method (and any call the service itself refuses with
    ``PERMISSION_DENIED``) after it ends, with its status code. While an allowed call
    runs, :func:`current_call` tells the servicer who calls.
    The check runs inside the handler (where the peer is known) before the servicer is
    called, for unary and streaming methods alike; a refused streaming call sends nothing.
    """

    def __init__(self, access: Access, permissions: Mapping[str, Permission]) -> None:
        self.access = access
        self.permissions = dict(permissions)

    def decide(self, method: str, metadata: Sequence[tuple[str, str | bytes]]) -> _Decision:
        """Who is calling and whether ``method`` is allowed (no side effect)."""
        values = [v for k, v in metadata if k.lower() == AUTH_HEADER]
        if not values:
            return _Decision(None, grpc.StatusCode.UNAUTHENTICATED, "no authorization metadata")
        if len(values) > 1:
            return _Decision(
                None, grpc.StatusCode.UNAUTHENTICATED, "more than one authorization header"
            )
        value = values[0]
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        m = _BEARER.fullmatch(text)
        if m is None:
            return _Decision(
                None,
                grpc.StatusCode.UNAUTHENTICATED,
                "authorization metadata must be 'Bearer <token>'",
            )
        app = self.access.authenticate(m.group(1))
        if app is None:
            return _Decision(None, grpc.StatusCode.UNAUTHENTICATED, "unknown token")
        needed = self.permissions.get(method, Permission.READ)
        if not app.permission.allows(needed):
            return _Decision(
                app,
                grpc.StatusCode.PERMISSION_DENIED,
                f"application {app.name!r} has permission {app.permission.value!r}; "
                f"{method} needs {needed.value!r}",
            )
        return _Decision(app, None, f"permission {app.permission.value!r} allows {needed.value!r}")

    # -- one call: check, serve with the caller known, audit ---------------------------
    def _audit(
        self,
        d: _Decision,
        method: str,
        peer: str,
        subject: str | None,
        code: str,
        notes: Mapping[str, Any] | None = None,
    ) -> None:
        if self.access.audit is None:
            return
        extra: dict[str, Any] = dict(notes or {})
        extra["code"] = code
        extra["client_cert_subject"] = subject
        self.access.audit.write(
            None if d.app is None else d.app.name,
            method,
            peer,
            "allow" if d.code is None else "deny",
            d.reason,
            **extra,
        )

    def _admit(
        self, method: str, metadata: Any, peer: str, auth: Mapping[str, Sequence[bytes]] | None
    ) -> tuple[_Decision, CallInfo | None]:
        """The decision; a refusal is audited here (``None``: refused)."""
        d = self.decide(method, tuple(metadata or ()))
        subject = _cert_subject(auth)
        if d.code is not None or d.app is None:
            self._audit(d, method, peer, subject, _status_name(d.code, "UNKNOWN"))
            return d, None
        return d, CallInfo(d.app, method, peer, subject)

    def _finish(self, d: _Decision, info: CallInfo, code: str, context: Any = None) -> None:
        """After an allowed call: the audit line of a control method, with the outcome;
        and of any call the service itself refused (``PERMISSION_DENIED``, e.g. deleting
        another application's subscription), as a ``deny``."""
        if code == "PERMISSION_DENIED":
            details = _details_of(context) or "refused by the service"
            d = _Decision(d.app, grpc.StatusCode.PERMISSION_DENIED, details)
        elif self.permissions.get(info.method, Permission.READ) is not Permission.CONTROL:
            return
        self._audit(d, info.method, info.peer, info.client_cert_subject, code, info.audit)

    def _begin(self, method: str, context: grpc.ServicerContext) -> tuple[_Decision, CallInfo]:
        d, info = self._admit(
            method, context.invocation_metadata(), context.peer(), _auth_context(context)
        )
        if info is None:
            context.abort(d.code or grpc.StatusCode.UNAUTHENTICATED, f"{method}: {d.reason}")
        assert info is not None
        return d, info

    def _call(self, method: str, context: grpc.ServicerContext, fn: Callable[[], Any]) -> Any:
        d, info = self._begin(method, context)
        token = _CALL.set(info)
        code = "UNKNOWN"
        try:
            result = fn()
            code = _status_name(_code_of(context), "OK")
            return result
        except BaseException:
            code = _status_name(_code_of(context), "UNKNOWN")
            raise
        finally:
            _reset(token)
            self._finish(d, info, code, context)

    def _stream(
        self, method: str, context: grpc.ServicerContext, make: Callable[[], Iterator[Any]]
    ) -> Iterator[Any]:
        d, info = self._begin(method, context)
        token = _CALL.set(info)
        code = "UNKNOWN"
        try:
            yield from make()
            code = _status_name(_code_of(context), "OK")
        except GeneratorExit:
            code = _status_name(_code_of(context), "CANCELLED")
            raise
        except BaseException:
            code = _status_name(_code_of(context), "UNKNOWN")
            raise
        finally:
            _reset(token)
            self._finish(d, info, code, context)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], _Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        call, stream = self._call, self._stream
        des, ser = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary is not None:
            uu = handler.unary_unary

            def unary_unary(request: Any, context: grpc.ServicerContext) -> Any:
                return call(method, context, lambda: uu(request, context))

            return grpc.unary_unary_rpc_method_handler(unary_unary, des, ser)
        if handler.unary_stream is not None:
            us = handler.unary_stream

            def unary_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                return stream(method, context, lambda: us(request, context))

            return grpc.unary_stream_rpc_method_handler(unary_stream, des, ser)
        if handler.stream_unary is not None:
            su = handler.stream_unary

            def stream_unary(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                return call(method, context, lambda: su(requests, context))

            return grpc.stream_unary_rpc_method_handler(stream_unary, des, ser)
        if handler.stream_stream is not None:
            ss = handler.stream_stream

            def stream_stream(
                requests: Iterator[Any], context: grpc.ServicerContext
            ) -> Iterator[Any]:
                return stream(method, context, lambda: ss(requests, context))

            return grpc.stream_stream_rpc_method_handler(stream_stream, des, ser)
        return handler  # pragma: no cover - a handler always has one of the four


def _reset(token: contextvars.Token[CallInfo | None]) -> None:
    try:
        _CALL.reset(token)
    except ValueError:  # resumed in another context (a stream): just forget the call
        _CALL.set(None)


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)


class AioAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """:class:`AuthInterceptor` for a ``grpc.aio`` server: the same decisions, refusals
    and audit lines. Async handlers get async wrappers (``await context.abort``); sync
    handlers (run in the server's migration thread pool) keep sync ones, so a handler
    stays what grpc expects of it."""

    def __init__(self, access: Access, permissions: Mapping[str, Permission]) -> None:
        self._sync = AuthInterceptor(access, permissions)

    @property
    def access(self) -> Access:
        return self._sync.access

    @property
    def permissions(self) -> dict[str, Permission]:
        return self._sync.permissions

    async def _abegin(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tuple[_Decision, CallInfo]:
        d, info = self._sync._admit(
            method, context.invocation_metadata(), context.peer(), _auth_context(context)
        )
        if info is None:
            await context.abort(d.code or grpc.StatusCode.UNAUTHENTICATED, f"{method}: {d.reason}")
        assert info is not None
        return d, info

    async def _acall(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        fn: Callable[[], Awaitable[Any]],
    ) -> Any:
        d, info = await self._abegin(method, context)
        token = _CALL.set(info)
        code = "UNKNOWN"
        try:
            result = await fn()
            code = _status_name(_code_of(context), "OK")
            return result
        except asyncio.CancelledError:
            code = _status_name(_code_of(context), "CANCELLED")
            raise
        except BaseException:
            code = _status_name(_code_of(context), "UNKNOWN")
            raise
        finally:
            _reset(token)
            self._sync._finish(d, info, code, context)

    async def _astream(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        make: Callable[[], AsyncIterator[Any]],
    ) -> AsyncIterator[Any]:
        d, info = await self._abegin(method, context)
        token = _CALL.set(info)
        code = "UNKNOWN"
        try:
            async for item in make():
                yield item
            code = _status_name(_code_of(context), "OK")
        except (asyncio.CancelledError, GeneratorExit):
            code = _status_name(_code_of(context), "CANCELLED")
            raise
        except BaseException:
            code = _status_name(_code_of(context), "UNKNOWN")
            raise
        finally:
            _reset(token)
            self._sync._finish(d, info, code, context)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # unknown method: grpc answers UNIMPLEMENTED
        method = handler_call_details.method
        acall, astream = self._acall, self._astream
        scall, sstream = self._sync._call, self._sync._stream
        des, ser = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary is not None:
            uu = handler.unary_unary
            if _is_async(uu):

                async def a_uu(request: Any, context: Any) -> Any:
                    return await acall(method, context, lambda: uu(request, context))

                return grpc.unary_unary_rpc_method_handler(a_uu, des, ser)

            def s_uu(request: Any, context: Any) -> Any:
                return scall(method, context, lambda: uu(request, context))

            return grpc.unary_unary_rpc_method_handler(s_uu, des, ser)
        if handler.unary_stream is not None:
            us = handler.unary_stream
            aus: Any = us
            if _is_async(us):

                async def a_us(request: Any, context: Any) -> AsyncIterator[Any]:
                    # an async generator function: what grpc.aio serves on the loop
                    async for item in astream(method, context, lambda: aus(request, context)):
                        yield item

                return grpc.unary_stream_rpc_method_handler(a_us, des, ser)

            def s_us(request: Any, context: Any) -> Iterator[Any]:
                return sstream(method, context, lambda: us(request, context))

            return grpc.unary_stream_rpc_method_handler(s_us, des, ser)
        if handler.stream_unary is not None:
            su = handler.stream_unary
            asu: Any = su
            if _is_async(su):

                async def a_su(requests: Any, context: Any) -> Any:
                    return await acall(method, context, lambda: asu(requests, context))

                return grpc.stream_unary_rpc_method_handler(a_su, des, ser)

            def s_su(requests: Any, context: Any) -> Any:
                return scall(method, context, lambda: su(requests, context))

            return grpc.stream_unary_rpc_method_handler(s_su, des, ser)
        if handler.stream_stream is not None:
            ss = handler.stream_stream
            ass: Any = ss
            if _is_async(ss):

                async def a_ss(requests: Any, context: Any) -> AsyncIterator[Any]:
                    # an async generator function: what grpc.aio serves on the loop
                    async for item in astream(method, context, lambda: ass(requests, context)):
                        yield item

                return grpc.stream_stream_rpc_method_handler(a_ss, des, ser)

            def s_ss(requests: Any, context: Any) -> Iterator[Any]:
                return sstream(method, context, lambda: ss(requests, context))

            return grpc.stream_stream_rpc_method_handler(s_ss, des, ser)
        return handler  # pragma: no cover - a handler always has one of the four


# --------------------------------------------------------------------------- client side


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _SyncCallDetails(_Details, grpc.ClientCallDetails):
    """A concrete ``grpc.ClientCallDetails`` (the grpc class is abstract)."""


def _with_token_sync(details: grpc.ClientCallDetails, header: tuple[str, str]) -> _SyncCallDetails:
    md = [*(details.metadata or ()), header]
    return _SyncCallDetails(
        details.method,
        details.timeout,
        md,
        details.credentials,
        getattr(details, "wait_for_ready", None),
        getattr(details, "compression", None),
    )


class _PlaintextTokenSync(_UUInterceptor, _USInterceptor, _SUInterceptor, _SSInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call of a plaintext sync channel."""

    def __init__(self, token: str) -> None:
        self.header = (AUTH_HEADER, f"Bearer {token}")

    def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return continuation(_with_token_sync(client_call_details, self.header), request)

    def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return continuation(_with_token_sync(client_call_details, self.header), request)

    def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(_with_token_sync(client_call_details, self.header), request_iterator)

    def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(_with_token_sync(client_call_details, self.header), request_iterator)


def _with_token_aio(details: Any, header: tuple[str, str]) -> grpc.aio.ClientCallDetails:
    md = grpc.aio.Metadata(*(details.metadata or ()))
    md.add(*header)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, md, details.credentials, details.wait_for_ready
    )


class _AioUU(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, header: tuple[str, str]) -> None:
        self.header = header

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_token_aio(details, self.header), request)


class _AioUS(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, header: tuple[str, str]) -> None:
        self.header = header

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_token_aio(details, self.header), request)


class _AioSU(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, header: tuple[str, str]) -> None:
        self.header = header

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_token_aio(details, self.header), requests)


class _AioSS(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, header: tuple[str, str]) -> None:
        self.header = header

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_token_aio(details, self.header), requests)


@dataclass(frozen=True)
class ClientSecurity:
    """How a client (xApp, rApp, operator tool) connects to a RIC-facing server.

    * ``ca``: the CA bundle that signed the server's certificate (PEM). Setting ``ca`` (or
      ``cert``/``key``) selects TLS; ``tls=True`` forces TLS with the system's roots.
    * ``cert`` + ``key``: the client certificate for mutual TLS (both or neither).
    * ``token``: the application's bearer token, sent as ``authorization: Bearer <token>``
      — as gRPC call credentials composed with the TLS channel credentials.
    * ``server_name_override``: the name checked against the server certificate when it
      differs from the target's host (test certificates, IP targets).
    * ``allow_plaintext_token``: without TLS a token travels in clear text and anyone on
      the path can read and replay it; this must be ``True`` to allow it (loopback tests).
    """

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    token: str | None = None
    server_name_override: str | None = None
    tls: bool | None = None
    allow_plaintext_token: bool = False
    options: Sequence[tuple[str, Any]] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise FieldError("ClientSecurity.cert", "cert and key must be given together")
        if self.tls is False and (self.ca or self.cert):
            raise FieldError("ClientSecurity.tls", "tls=False contradicts ca/cert/key")
        if self.token is not None and (not self.token or any(c.isspace() for c in self.token)):
            raise FieldError("ClientSecurity.token", "must be non-empty, without whitespace")
        if self.token is not None and not self.use_tls and not self.allow_plaintext_token:
            raise FieldError(
                "ClientSecurity.token",
                "a token over a plaintext channel can be read and replayed by anyone on the "
                "path: use TLS (ca=...) or set allow_plaintext_token=True",
            )

    @property
    def use_tls(self) -> bool:
        """Whether channels are TLS."""
        if self.tls is not None:
            return self.tls
        return self.ca is not None or self.cert is not None

    def _options(self) -> list[tuple[str, Any]]:
        opts = list(self.options)
        if self.server_name_override is not None:
            opts.append(("grpc.ssl_target_name_override", self.server_name_override))
        return opts

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS channel credentials (with the token composed as call credentials), or
        ``None`` for plaintext."""
        if not self.use_tls:
            return None
        creds = grpc.ssl_channel_credentials(
            root_certificates=None if self.ca is None else _read(self.ca, "ClientSecurity.ca"),
            private_key=None if self.key is None else _read(self.key, "ClientSecurity.key"),
            certificate_chain=None
            if self.cert is None
            else _read(self.cert, "ClientSecurity.cert"),
        )
        if self.token is not None:
            creds = grpc.composite_channel_credentials(
                creds, grpc.access_token_call_credentials(self.token)
            )
        return creds

    def channel(self, target: str) -> grpc.Channel:
        """A sync channel to ``target`` (``host:port``)."""
        creds = self.channel_credentials()
        if creds is not None:
            return grpc.secure_channel(target, creds, options=self._options())
        ch = grpc.insecure_channel(target, options=self._options())
        if self.token is not None:
            ch = grpc.intercept_channel(ch, _PlaintextTokenSync(self.token))
        return ch

    def aio_channel(self, target: str) -> grpc.aio.Channel:
        """An asyncio channel to ``target`` (create it inside the running event loop)."""
        creds = self.channel_credentials()
        if creds is not None:
            return grpc.aio.secure_channel(target, creds, options=self._options())
        interceptors: list[Any] = []
        if self.token is not None:
            h = (AUTH_HEADER, f"Bearer {self.token}")
            interceptors = [_AioUU(h), _AioUS(h), _AioSU(h), _AioSS(h)]
        return grpc.aio.insecure_channel(
            target, options=self._options(), interceptors=interceptors or None
        )
