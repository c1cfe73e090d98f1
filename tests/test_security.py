"""Security of the RIC-facing gRPC servers, against real servers on loopback ports:
TLS, mutual TLS, bearer tokens, permissions and the audit log."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest

from airan.core.errors import FieldError
from airan.o1.v1 import o1_pb2, o1_pb2_grpc
from airan.ric.security import (
    Access,
    AppGrant,
    ClientSecurity,
    Permission,
    ServerSecurity,
    TlsFiles,
    hash_token,
)
from airan.ric.server import (
    EventLoopThread,
    ServiceRegistration,
    build_aio_server,
    build_server,
)

TIMEOUT = 5.0
READ_TOKEN = "read-token-0123456789abcdef"
CONTROL_TOKEN = "control-token-0123456789abcdef"

# --------------------------------------------------------------------------- a test PKI

#: the openssl commands docs/security.md shows, run verbatim (EC P-256 keys: fast)
PKI_SCRIPT = r"""
set -e
# a CA
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout ca.key -out ca.crt -days 365 -subj "/CN=airan test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
# the server's certificate: its DNS names and IP addresses in subjectAltName
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout server.key -out server.csr -subj "/CN=airan-node-1"
echo 'subjectAltName=DNS:localhost,DNS:airan-node-1,IP:127.0.0.1' > server.ext
echo 'extendedKeyUsage=serverAuth' >> server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
  -out server.crt -days 365 -extfile server.ext
# a client certificate (mutual TLS), CN = the application's name
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout client.key -out client.csr -subj "/CN=rc-xapp"
echo 'extendedKeyUsage=clientAuth' > client.ext
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
  -out client.crt -days 365 -extfile client.ext
"""


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(directory: Path) -> Pki:
    """Run :data:`PKI_SCRIPT` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["bash", "-c", PKI_SCRIPT], cwd=directory, check=True, capture_output=True)
    d = directory
    return Pki(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def rogue(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA with its own server and client certificates: trusted by nobody."""
    return make_pki(tmp_path_factory.mktemp("rogue"))


# --------------------------------------------------------------------------- a servicer


class EchoO1(o1_pb2_grpc.O1Servicer):
    """A minimal O1 servicer: enough to see which calls get through."""

    def __init__(self) -> None:
        self.sets = 0

    def Get(self, request: o1_pb2.GetRequest, context: grpc.ServicerContext) -> o1_pb2.GetResponse:
        return o1_pb2.GetResponse(path=request.path, json_value="1")

    def Set(self, request: o1_pb2.SetRequest, context: grpc.ServicerContext) -> o1_pb2.SetResponse:
        self.sets += 1
        return o1_pb2.SetResponse(revision=self.sets)

    def SubscribeEvents(
        self, request: o1_pb2.SubscribeEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[o1_pb2.VesEvent]:
        for i in range(3):
            yield o1_pb2.VesEvent(
                common_event_header=o1_pb2.CommonEventHeader(domain="heartbeat", sequence=i)
            )

    def ListActiveAlarms(
        self, request: o1_pb2.ListActiveAlarmsRequest, context: grpc.ServicerContext
    ) -> o1_pb2.ListActiveAlarmsResponse:
        return o1_pb2.ListActiveAlarmsResponse()


def registration(servicer: EchoO1) -> ServiceRegistration:
    return ServiceRegistration(
        "airan.o1.v1.O1",
        lambda s: o1_pb2_grpc.add_O1Servicer_to_server(servicer, s),
        {"Set": Permission.CONTROL},
    )


def write_access(directory: Path) -> Path:
    doc = {
        "audit_log": "audit.jsonl",
        "apps": [
            {"name": "kpm-xapp", "token_sha256": hash_token(READ_TOKEN), "permission": "read"},
            {"name": "rc-xapp", "token_sha256": hash_token(CONTROL_TOKEN), "permission": "control"},
        ],
    }
    path = directory / "access.json"
    path.write_text(json.dumps(doc))
    return path


Serve = Callable[[ServerSecurity | None], tuple[int, EchoO1]]


@pytest.fixture(params=["sync", "aio"])
def serve(request: pytest.FixtureRequest) -> Iterator[Serve]:
    """Start a server with the security given: a sync ``grpc.Server``, or a
    ``grpc.aio`` server on an event-loop thread (the same checks must hold)."""
    servers: list[grpc.Server] = []
    loops: list[tuple[EventLoopThread, grpc.aio.Server]] = []

    def start(security: ServerSecurity | None) -> tuple[int, EchoO1]:
        servicer = EchoO1()
        if request.param == "sync":
            server, port = build_server(0, security, [registration(servicer)], max_workers=4)
            server.start()
            servers.append(server)
            return port, servicer
        lt = EventLoopThread("test-aio")

        async def go() -> tuple[grpc.aio.Server, int]:
            srv, bound = await build_aio_server(0, security, [registration(servicer)])
            await srv.start()
            return srv, bound

        try:
            aserver, port = lt.run(go(), TIMEOUT)
        except BaseException:
            lt.stop()
            raise
        loops.append((lt, aserver))
        return port, servicer

    yield start
    for s in servers:
        s.stop(None)
    for lt, a in loops:
        lt.run(a.stop(None), TIMEOUT)
        lt.stop()


def _code(call: object) -> grpc.StatusCode:
    assert isinstance(call, grpc.RpcError)
    code = call.code()
    assert isinstance(code, grpc.StatusCode)
    return code


def get(ch: grpc.Channel) -> o1_pb2.GetResponse:
    resp: o1_pb2.GetResponse = o1_pb2_grpc.O1Stub(ch).Get(
        o1_pb2.GetRequest(path="/"), timeout=TIMEOUT
    )
    return resp


def set_(ch: grpc.Channel) -> o1_pb2.SetResponse:
    resp: o1_pb2.SetResponse = o1_pb2_grpc.O1Stub(ch).Set(o1_pb2.SetRequest(), timeout=TIMEOUT)
    return resp


# --------------------------------------------------------------------------- TLS


def test_tls_server_is_reached_only_by_clients_trusting_its_ca(
    serve: Serve, pki: Pki, rogue: Pki
) -> None:
    port, _ = serve(ServerSecurity(TlsFiles(pki.server_cert, pki.server_key)))
    target = f"localhost:{port}"
    with ClientSecurity(ca=pki.ca).channel(target) as ch:
        assert get(ch).json_value == "1"
    # by IP address: the certificate names 127.0.0.1 too
    with ClientSecurity(ca=pki.ca).channel(f"127.0.0.1:{port}") as ch:
        assert get(ch).path == "/"
    # a name the certificate does not carry is refused unless overridden
    with ClientSecurity(ca=pki.ca, server_name_override="evil.example").channel(target) as ch:
        with pytest.raises(grpc.RpcError) as err:
            get(ch)
        assert _code(err.value) == grpc.StatusCode.UNAVAILABLE
    with ClientSecurity(ca=pki.ca, server_name_override="airan-node-1").channel(target) as ch:
        assert get(ch).path == "/"
    # a client trusting another CA, or speaking plaintext, gets nowhere
    for sec in (ClientSecurity(ca=rogue.ca), ClientSecurity()):
        with sec.channel(target) as ch:
            with pytest.raises(grpc.RpcError) as err:
                get(ch)
            assert _code(err.value) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_refuses_clients_without_a_certificate_of_the_ca(
    serve: Serve, pki: Pki, rogue: Pki
) -> None:
    tls = TlsFiles(pki.server_cert, pki.server_key, client_ca=pki.ca)
    port, servicer = serve(ServerSecurity(tls))
    target = f"localhost:{port}"
    with ClientSecurity(ca=pki.ca, cert=pki.client_cert, key=pki.client_key).channel(target) as ch:
        assert get(ch).json_value == "1"
        assert set_(ch).revision == 1
    refused = (
        ClientSecurity(ca=pki.ca),  # no client certificate
        ClientSecurity(ca=pki.ca, cert=rogue.client_cert, key=rogue.client_key),  # other CA
    )
    for sec in refused:
        with sec.channel(target) as ch:
            with pytest.raises(grpc.RpcError) as err:
                set_(ch)
            assert _code(err.value) == grpc.StatusCode.UNAVAILABLE
    assert servicer.sets == 1


def test_tls_files_errors_name_the_file(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(FieldError) as err:
        TlsFiles(tmp_path / "missing.crt", pki.server_key).server_credentials()
    assert err.value.field == "tls.cert" and "missing.crt" in err.value.reason
    junk = tmp_path / "junk.pem"
    junk.write_text("not a pem")
    with pytest.raises(FieldError) as err:
        TlsFiles(pki.server_cert, junk).server_credentials()
    assert err.value.field == "tls.key"
    with pytest.raises(FieldError) as err:
        TlsFiles(pki.server_cert, pki.server_key, client_ca=junk).server_credentials()
    assert err.value.field == "tls.client_ca"


# --------------------------------------------------------------------------- tokens


def _audit(path: Path, at_least: int = 0) -> list[dict[str, object]]:
    """The audit lines, once there are ``at_least`` (a call's line is written after the
    call: on the aio server an aborted call's status may reach the client first)."""
    end = time.monotonic() + 5.0
    while True:
        lines = (
            [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        )
        if len(lines) >= at_least or time.monotonic() > end:
            return lines
        time.sleep(0.005)


def test_tokens_and_permissions_over_tls(serve: Serve, pki: Pki, tmp_path: Path) -> None:
    access = Access.load(write_access(tmp_path))
    audit = tmp_path / "audit.jsonl"
    port, servicer = serve(ServerSecurity(TlsFiles(pki.server_cert, pki.server_key), access))
    target = f"localhost:{port}"

    # no token, unknown token: UNAUTHENTICATED, the servicer never runs
    for token in (None, "not-a-known-token"):
        with ClientSecurity(ca=pki.ca, token=token).channel(target) as ch:
            for call in (get, set_):
                with pytest.raises(grpc.RpcError) as err:
                    call(ch)
                assert _code(err.value) == grpc.StatusCode.UNAUTHENTICATED
    assert servicer.sets == 0
    denials = _audit(audit)
    assert len(denials) == 4 and {d["decision"] for d in denials} == {"deny"}
    assert {d["app"] for d in denials} == {None}

    # read-only token: Get yes, Set no (PERMISSION_DENIED, audited with app and peer)
    with ClientSecurity(ca=pki.ca, token=READ_TOKEN).channel(target) as ch:
        assert get(ch).json_value == "1"
        with pytest.raises(grpc.RpcError) as err:
            set_(ch)
        assert _code(err.value) == grpc.StatusCode.PERMISSION_DENIED
        assert isinstance(err.value, grpc.Call)
        assert "kpm-xapp" in err.value.details() and "control" in err.value.details()
    assert servicer.sets == 0
    line = _audit(audit)[-1]
    assert line["app"] == "kpm-xapp" and line["decision"] == "deny"
    assert line["method"] == "/airan.o1.v1.O1/Set"
    assert str(line["peer"]).startswith(("ipv4:127.0.0.1:", "ipv6:"))
    assert set(line) == {"time", "app", "method", "peer", "decision", "reason", "code"}
    assert line["code"] == "PERMISSION_DENIED"
    n_lines = len(_audit(audit))

    # control token: Set runs and is audited as allowed; reads are not audited
    with ClientSecurity(ca=pki.ca, token=CONTROL_TOKEN).channel(target) as ch:
        assert set_(ch).revision == 1
        assert get(ch).json_value == "1"
    lines = _audit(audit, n_lines + 1)
    assert len(lines) == n_lines + 1
    assert lines[-1]["app"] == "rc-xapp" and lines[-1]["decision"] == "allow"
    assert lines[-1]["code"] == "OK" and "client_cert_subject" not in lines[-1]
    assert servicer.sets == 1


def test_streaming_calls_are_checked_too(serve: Serve, tmp_path: Path) -> None:
    access = Access.load(write_access(tmp_path))
    port, _ = serve(ServerSecurity(None, access))
    target = f"127.0.0.1:{port}"
    req = o1_pb2.SubscribeEventsRequest()
    with ClientSecurity(token="wrong-token", allow_plaintext_token=True).channel(target) as ch:
        with pytest.raises(grpc.RpcError) as err:
            list(o1_pb2_grpc.O1Stub(ch).SubscribeEvents(req, timeout=TIMEOUT))
        assert _code(err.value) == grpc.StatusCode.UNAUTHENTICATED
    with ClientSecurity(token=READ_TOKEN, allow_plaintext_token=True).channel(target) as ch:
        events = list(o1_pb2_grpc.O1Stub(ch).SubscribeEvents(req, timeout=TIMEOUT))
    assert [e.common_event_header.sequence for e in events] == [0, 1, 2]


def test_aio_channels_carry_the_token(serve: Serve, pki: Pki, tmp_path: Path) -> None:
    access = Access.load(write_access(tmp_path))
    tls_port, _ = serve(ServerSecurity(TlsFiles(pki.server_cert, pki.server_key), access))
    plain_port, _ = serve(ServerSecurity(None, access))

    async def run() -> list[str]:
        out = []
        cases = (
            (ClientSecurity(ca=pki.ca, token=CONTROL_TOKEN), f"localhost:{tls_port}"),
            (
                ClientSecurity(token=CONTROL_TOKEN, allow_plaintext_token=True),
                f"127.0.0.1:{plain_port}",
            ),
        )
        for sec, target in cases:
            async with sec.aio_channel(target) as ch:
                stub = o1_pb2_grpc.O1Stub(ch)
                resp = await stub.Set(o1_pb2.SetRequest(), timeout=TIMEOUT)
                out.append(str(resp.revision))
                events = [e async for e in stub.SubscribeEvents(o1_pb2.SubscribeEventsRequest())]
                out.append(str(len(events)))
        async with ClientSecurity(ca=pki.ca).aio_channel(f"localhost:{tls_port}") as ch:
            try:
                await o1_pb2_grpc.O1Stub(ch).Get(o1_pb2.GetRequest(), timeout=TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                out.append(exc.code().name)
        return out

    assert asyncio.run(run()) == ["1", "3", "1", "3", "UNAUTHENTICATED"]


def test_a_token_in_clear_text_must_be_asked_for() -> None:
    with pytest.raises(FieldError) as err:
        ClientSecurity(token=READ_TOKEN)
    assert err.value.field == "ClientSecurity.token" and "plaintext" in err.value.reason
    with pytest.raises(FieldError) as err:
        ClientSecurity(ca=Path("ca.crt"), cert=Path("c.crt"))
    assert err.value.field == "ClientSecurity.cert"


# --------------------------------------------------------------------------- the access file


def test_access_file_stores_digests_only_and_errors_name_the_field(tmp_path: Path) -> None:
    path = write_access(tmp_path)
    assert READ_TOKEN not in path.read_text()
    access = Access.load(path)
    app = access.authenticate(READ_TOKEN)
    assert app is not None and app.name == "kpm-xapp" and app.permission is Permission.READ
    assert access.authenticate(READ_TOKEN + "x") is None
    assert access.authenticate("") is None
    assert access.audit is not None and access.audit.path == tmp_path / "audit.jsonl"
    good = {"name": "a", "token_sha256": hash_token("t"), "permission": "read"}

    def bad(doc: object, field: str) -> str:
        path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
        with pytest.raises(FieldError) as err:
            Access.load(path)
        assert err.value.field == field, err.value
        return err.value.reason

    assert "JSON" in bad("{nope", "access")
    bad([], "access")
    bad({"apps": [good, {**good, "name": "b", "permission": "admin"}]}, "access.apps.1.permission")
    bad({"apps": [{**good, "token_sha256": "abc"}]}, "access.apps.0.token_sha256")
    bad({"apps": [good], "extra": 1}, "access.extra")
    assert "duplicate" in bad({"apps": [good, good]}, "access")
    assert "same token" in bad({"apps": [good, {**good, "name": "b"}]}, "access")
    with pytest.raises(FieldError) as err:
        Access.load(tmp_path / "none.json")
    assert err.value.field == "access"


def test_permissions_and_registrations_are_checked() -> None:
    assert Permission.CONTROL.allows(Permission.READ)
    assert not Permission.READ.allows(Permission.CONTROL)
    grant = AppGrant(name="x", token_sha256=hash_token("t"), permission=Permission.READ)
    assert Access([grant]).authenticate("t") == grant
    reg = ServiceRegistration("airan.o1.v1.O1", lambda s: None, {"Sett": Permission.CONTROL})
    with pytest.raises(FieldError) as err:
        build_server(0, None, [reg])
    assert err.value.field == "ServiceRegistration.permissions.Sett"
    with pytest.raises(FieldError) as err:
        build_server(0, None, [ServiceRegistration("airan.nope.v1.X", lambda s: None)])
    assert err.value.field == "ServiceRegistration.service"
    servicer = EchoO1()
    with pytest.raises(FieldError) as err:
        build_server(0, None, [registration(servicer), registration(servicer)])
    assert err.value.field == "services.1"


# --------------------------------------------------------------------------- the real services


def test_e2_and_o1_of_a_fake_node_over_mutual_tls_with_tokens(
    pki: Pki, rogue: Pki, tmp_path: Path
) -> None:
    """A FakeNode serving E2 + O1 with mutual TLS and tokens: an xApp with a client
    certificate of the CA subscribes over E2 and reads over O1; its control call is
    audited with its certificate's subject; a client without a certificate (or with
    one of another CA) gets nowhere."""
    from airan.ric.o1 import O1Client, O1Error
    from airan.ric.xapp import E2Client, E2Error
    from airan.testing import FakeNode

    access = Access.load(write_access(tmp_path))
    audit = tmp_path / "audit.jsonl"
    tls = TlsFiles(pki.server_cert, pki.server_key, client_ca=pki.ca)
    with FakeNode(seed=3, security=ServerSecurity(tls, access)) as fake:
        target = fake.e2_target.replace("127.0.0.1", "localhost")
        good = ClientSecurity(
            ca=pki.ca, cert=pki.client_cert, key=pki.client_key, token=CONTROL_TOKEN
        )
        with E2Client(target, good) as e2, O1Client(target, good, timeout_s=TIMEOUT) as o1:
            with e2.kpm.subscribe(["airan.AiBusy"], period_ms=20) as sub:
                assert next(iter(sub)).sequence == 1
            assert o1.get("/policy/ai_share_cap") == 1.0
            n = len(_audit(audit))
            e2.cosched.set_policy(ai_share_cap=0.6)
            line = _audit(audit, n + 1)[-1]
            assert line["method"] == "/airan.e2.v1.E2Node/Control" and line["code"] == "OK"
            assert line["app"] == "rc-xapp"
            assert "rc-xapp" in str(line["client_cert_subject"])
            assert o1.get("/policy/ai_share_cap") == 0.6
        refused = (
            ClientSecurity(ca=pki.ca, token=CONTROL_TOKEN),  # no client certificate
            ClientSecurity(
                ca=pki.ca, cert=rogue.client_cert, key=rogue.client_key, token=CONTROL_TOKEN
            ),
        )
        for sec in refused:
            with E2Client(target, sec, timeout_s=TIMEOUT) as e2, pytest.raises(E2Error) as err:
                e2.setup()
            assert err.value.code == grpc.StatusCode.UNAVAILABLE
            with O1Client(target, sec, timeout_s=TIMEOUT) as o1, pytest.raises(O1Error) as oerr:
                o1.get("/")
            assert oerr.value.code == grpc.StatusCode.UNAVAILABLE
        # the right certificate without a token: the handshake passes, the call does not
        no_token = ClientSecurity(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
        with E2Client(target, no_token) as e2, pytest.raises(E2Error) as err:
            e2.setup()
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert fake.node.arbiter.policy.ai_share_cap == 0.6


def test_a_server_refuses_plaintext_tokens_off_loopback(tmp_path: Path) -> None:
    access = Access.load(write_access(tmp_path))
    servicer = EchoO1()
    with pytest.raises(FieldError) as err:
        build_server(0, ServerSecurity(None, access), [registration(servicer)], host="0.0.0.0")
    assert err.value.field == "security.tls" and "allow_plaintext_tokens" in err.value.reason
    lt = EventLoopThread("test-aio")
    try:

        async def go() -> None:
            await build_aio_server(
                0, ServerSecurity(None, access), [registration(servicer)], host="0.0.0.0"
            )

        with pytest.raises(FieldError):
            lt.run(go(), TIMEOUT)
    finally:
        lt.stop()
    server, _ = build_server(
        0,
        ServerSecurity(None, access, allow_plaintext_tokens=True),
        [registration(servicer)],
        host="0.0.0.0",
    )
    server.stop(None)
