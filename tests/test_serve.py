"""``airan serve``: config file, metrics endpoint, E2/O1 wiring, graceful SIGTERM.

The end-to-end tests run ``airan serve`` as a real subprocess (small CPU cell, ports 0)
from the example config ``deploy/airan.toml`` with its ports, paths and backend
changed, scrape ``/metrics`` over HTTP, talk to it over E2 and O1, and stop it with
SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from airan.cli import main
from airan.core.errors import FieldError
from airan.core.report import RunReport
from airan.node import AiTenantConfig, Node, NodeConfig
from airan.sched.arbiter import SLACK_BUCKET_NS, SLACK_BUCKETS
from airan.serve import load_config
from airan.telemetry.metrics import (
    SERIES,
    SLACK_BOUNDS_S,
    MetricsServer,
    _slack_buckets,
    node_registry,
    series_names,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "airan.toml"
DASHBOARD = ROOT / "docs" / "grafana" / "airan-node.json"
SERVE_DOC = ROOT / "docs" / "serve.md"

# --------------------------------------------------------------------------- helpers


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] of a text exposition."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def _value(
    samples: dict[str, list[tuple[dict[str, str], float]]], series: str, /, **labels: str
) -> float:
    """The value of ``series`` with ``labels`` (a subset of its labels)."""
    for lab, v in samples[series]:
        if all(lab.get(k) == want for k, want in labels.items()):
            return v
    raise KeyError(f"{series}{labels}")


def _get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# ----------------------------------------------------------------- the config file


def test_the_example_config_is_valid() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.node.node_id == "airan-node-1"
    assert cfg.e2 is not None and cfg.e2.port == 50051
    assert cfg.o1 is not None and cfg.o1.port is None  # O1 shares the E2 port
    assert cfg.metrics.port == 9470
    assert cfg.ai.tenants == {"llm": AiTenantConfig(kind="transformer")}
    assert cfg.report is not None and cfg.report.path == "/var/lib/airan/report.json"


def test_per_device_defaults_fill_only_what_the_file_omits(tmp_path: Path) -> None:
    f = tmp_path / "n.toml"
    f.write_text('[device]\nbackend = "numpy"\n[node.policy]\nguard_us = 30.0\n'
                 "[node.ran]\nues = 3\n")  # fmt: skip
    cfg = load_config(f)
    # the CPU defaults of airan.runner: 0.5 ms AI slices, 1 ms lookahead, a 5 MHz µ=0 cell
    assert cfg.node.policy.max_ai_slice_us == 500.0 and cfg.node.policy.lookahead_us == 1000.0
    assert cfg.node.policy.guard_us == 30.0
    assert (cfg.node.ran.numerology, cfg.node.ran.bandwidth_mhz) == (0, 5)
    assert cfg.node.ran.ues == 3
    f.write_text('[device]\nbackend = "cupy"\n')  # a GPU's defaults (no GPU needed to read)
    gpu = load_config(f)
    assert (gpu.node.ran.numerology, gpu.node.ran.bandwidth_mhz) == (1, 100)
    assert gpu.node.policy.max_ai_slice_us == 200.0


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    f = tmp_path / "etc" / "n.json"
    f.write_text(json.dumps({"report": {"path": "out/r.json"}, "device": {"backend": "numpy"}}))
    cfg = load_config(f)
    assert cfg.report is not None
    assert Path(cfg.report.path) == tmp_path / "etc" / "out" / "r.json"


BAD_CONFIGS: list[tuple[str, str, str]] = [
    # (id, TOML text, the field the message must name)
    ("unknown top-level key", "[metrix]\nport = 1\n", "metrix"),
    ("unknown nested key", "[e2]\nprot = 5\n", "e2.prot"),
    ("bad port", "[e2]\nport = 70000\n", "e2.port"),
    ("negative port", "[metrics]\nport = -1\n", "metrics.port"),
    ("port as a string", '[metrics]\nport = "9470"\n', "metrics.port"),
    ("bad policy name", '[node.policy]\nname = "greedy"\n', "node.policy.name"),
    ("bad policy value", "[node.policy]\nguard_us = -5.0\n", "node.policy.guard_us"),
    ("guard over the slice", "[node.policy]\nguard_us = 900.0\n", "node.policy"),
    ("bad cell", "[node.ran]\nbandwidth_mhz = 7\n", "node.ran.bandwidth_mhz"),
    ("bad backend", '[device]\nbackend = "tpu"\n', "device.backend"),
    ("bad AI kind", '[ai.tenants.llm]\nkind = "diffusion"\n', "ai.tenants.llm.kind"),
    ("undeclared tenant", "[node.policy.tenants.a]\n[ai.tenants.b]\n", "ai.tenants.b"),
    ("two servers on one port", "[e2]\nport = 9470\n", "e2.port"),
    ("o1 without a port or e2", '[o1]\nstate = "s.json"\n', "o1.port"),
    ("bad address", '[metrics]\naddress = "not an address!"\n', "metrics.address"),
    ("a TOML date", "[node]\nnode_id = 2024-01-01\n", "node.node_id"),
    ("trace too small", '[trace]\npath = "t.json"\nmax_events = 5\n', "trace.max_events"),
    ("unknown fault", '[[faults]]\nkind = "meltdown"\n', "faults.0.kind"),
    ("fault option of another kind", '[[faults]]\nkind = "ai_raise"\nfactor = 2.0\n', "faults.0"),
    ("fault unknown key", '[[faults]]\nkind = "ai_hang"\nhangms = 2.0\n', "faults.0.hangms"),
    ("l2 flood in serve", '[[faults]]\nkind = "l2_flood"\n', "faults.0.kind"),
    ("repeat without period", '[[faults]]\nkind = "ai_hang"\ncount = 2\n', "faults.0"),
]


@pytest.mark.parametrize(
    ("text", "field"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_a_bad_config_is_refused_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, field: str
) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(('[device]\nbackend = "numpy"\n' if "[device]" not in text else "") + text)
    with pytest.raises(FieldError) as exc:
        load_config(f)
    assert exc.value.field == field, exc.value
    assert str(f) in exc.value.reason
    # the command line: exit 2, the field named, nothing started
    assert main(["serve", "--config", str(f)]) == 2
    err = capsys.readouterr().err
    assert f"airan serve: error: {field}" in err and str(f) in err


def test_an_unknown_key_lists_the_allowed_ones(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[e2]\nprot = 5\n")
    with pytest.raises(FieldError, match=r"unknown key \(allowed: address, tls, access"):
        load_config(f)


def test_missing_or_unreadable_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FieldError, match="does not exist") as exc:
        load_config(tmp_path / "nope.toml")
    assert exc.value.field == "--config"
    bad = tmp_path / "bad.toml"
    bad.write_text("[e2\nport = 1\n")
    with pytest.raises(FieldError, match=r"not valid TOML.*line 1") as exc:
        load_config(bad)
    assert exc.value.field == "--config"
    js = tmp_path / "bad.json"
    js.write_text('{"e2": {"port": NaN}}')
    with pytest.raises(FieldError, match="not valid JSON"):
        load_config(js)


def test_files_the_config_names_are_checked_before_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("")
    cases = [
        ('[e2]\nport = 0\n[e2.tls]\ncert = "nope.crt"\nkey = "nope.key"\n', "e2.tls.cert"),
        ('[e2]\nport = 0\naccess = "nope.json"\n', "e2.access"),
        ('[e2]\naddress = "0.0.0.0"\nport = 0\naccess = "acc.json"\n', "e2.tls"),
        ('[report]\npath = "afile/r.json"\n', "report.path"),
        ('[device]\nbackend = "numpy"\ncpus = [100000]\n', "device.cpus"),
    ]
    (tmp_path / "acc.json").write_text(
        json.dumps({"apps": [{"name": "x", "token_sha256": "a" * 64, "permission": "read"}]})
    )
    for text, field in cases:
        f = tmp_path / "c.toml"
        f.write_text(text if "[device]" in text else '[device]\nbackend = "numpy"\n' + text)
        assert main(["serve", "--config", str(f), "--check"]) == 2, text
        err = capsys.readouterr().err
        assert f"airan serve: error: {field}" in err, (text, err)
    ok = tmp_path / "ok.toml"
    ok.write_text('[device]\nbackend = "numpy"\n[report]\npath = "out/r.json"\n')
    assert main(["serve", "--config", str(ok), "--check"]) == 0
    assert "valid" in capsys.readouterr().out


@pytest.mark.parametrize("server", ["e2", "metrics"])
def test_a_port_in_use_is_refused_naming_it_and_nothing_stays_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], server: str
) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        other = "metrics" if server == "e2" else "e2"
        f = tmp_path / "c.toml"
        f.write_text(
            '[device]\nbackend = "numpy"\n[ai]\ntenants = {}\n'
            f"[{server}]\nport = {port}\n[{other}]\nport = 0\n"
        )
        threads = threading.active_count()
        assert main(["serve", "--config", str(f)]) == 2
        assert f"airan serve: error: {server}.port: cannot" in capsys.readouterr().err
    deadline = time.monotonic() + 5  # what was started is stopped again
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= threads


def test_on_device_refuses_a_tenant_the_policy_does_not_declare() -> None:
    cfg = NodeConfig.parse({"policy": {"tenants": {"llm": {}}}})
    with pytest.raises(FieldError) as exc:
        Node.on_device(cfg, ai={"other": AiTenantConfig(kind="synthetic")})
    assert exc.value.field == "ai.other"


# ----------------------------------------------------------------------- metrics


@given(st.lists(st.integers(0, 50), min_size=SLACK_BUCKETS, max_size=SLACK_BUCKETS))
def test_slack_histogram_buckets_are_cumulative_and_exact(hist: list[int]) -> None:
    buckets = _slack_buckets(tuple(hist))
    values = [v for _, v in buckets]
    assert values == sorted(values)
    assert buckets[-1] == ("+Inf", float(sum(hist)))
    for (le, v), bound in zip(buckets, SLACK_BOUNDS_S, strict=False):
        assert float(le) == bound
        # a slack s lands in bucket s // 10 µs: those below the bound are s < bound
        cut = round(bound * 1e9) // SLACK_BUCKET_NS
        assert v == sum(hist[:cut])


def test_collector_reads_a_live_node_with_e2_and_o1() -> None:
    from airan.testing import FakeNode

    with FakeNode(seed=3) as fake:
        reg = node_registry(fake.node, e2=fake.agent, o1=fake.o1, process=False)
        time.sleep(0.3)
        a = _samples(generate_latest(reg).decode())
        fake.node.set_tenant_paused("llm", True)
        time.sleep(0.3)
        b = _samples(generate_latest(reg).decode())
    documented = series_names() - {"airan_fapi_messages_total", "airan_o1_alarm_active"}
    documented -= {"airan_tenant_requests_total", "airan_tenant_requests_active",
                   "airan_tenant_requests_waiting"}  # fmt: skip  # transformer tenants only
    assert documented <= set(b), documented - set(b)
    assert _value(b, "airan_radio_tasks_total") > _value(a, "airan_radio_tasks_total") > 0
    assert _value(a, "airan_tenant_paused", tenant="llm") == 0.0
    assert _value(b, "airan_tenant_paused", tenant="llm") == 1.0
    assert _value(b, "airan_node_running") == 1.0
    inf = _value(b, "airan_radio_slack_seconds_bucket", le="+Inf")
    assert inf == _value(b, "airan_radio_tasks_total")


def test_metrics_server_paths_health_and_port_conflicts() -> None:
    from prometheus_client import CollectorRegistry

    healthy = [True]
    srv = MetricsServer(CollectorRegistry(), "127.0.0.1", 0, healthy=lambda: healthy[0])
    try:
        base = srv.url.removesuffix("/metrics")
        assert _get(srv.url)[0] == 200
        assert _get(base + "/healthz") == (200, "ok\n")
        healthy[0] = False
        assert _get(base + "/healthz")[0] == 503
        assert _get(base + "/other")[0] == 404
        with pytest.raises(FieldError) as exc:
            MetricsServer(CollectorRegistry(), "127.0.0.1", srv.port)
        assert exc.value.field == "port"
    finally:
        t0 = time.perf_counter()
        srv.stop()
        assert time.perf_counter() - t0 < 0.5


def test_fapi_counters_are_flattened_per_endpoint() -> None:
    from airan.telemetry.metrics import _fapi_counters

    nested = {"l1-cell0": {"dl_tti": 10, "late": 2, "name": "x", "ok": True}}
    assert _fapi_counters(nested) == {("l1-cell0", "dl_tti"): 10.0, ("l1-cell0", "late"): 2.0}
    assert _fapi_counters({"lost": 3}) == {("du", "lost"): 3.0}
    assert _fapi_counters({}) == {}


def test_every_documented_series_is_in_the_reference() -> None:
    doc = SERVE_DOC.read_text()
    for s in SERIES:
        assert f"`{s.name}`" in doc, s.name


def test_a_bounded_run_ends_by_itself_with_its_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "c.toml"
    f.write_text(
        '[device]\nbackend = "numpy"\n[ai.tenants.batch]\nkind = "synthetic"\n'
        '[metrics]\nport = 0\n[report]\npath = "r.json"\n'
    )
    before = signal.getsignal(signal.SIGTERM)
    t0 = time.monotonic()
    assert main(["serve", "--config", str(f), "--seconds", "1.5"]) == 0
    assert time.monotonic() - t0 < 60
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are put back
    out = capsys.readouterr().out
    assert "the run ended: stopped in" in out and "report written to" in out
    report = RunReport.model_validate_json((tmp_path / "r.json").read_text())
    assert report.duration_s == pytest.approx(1.5, abs=0.1)
    assert report.workload["ai"] == {"batch": "synthetic"}
    assert report.ai.tenants["batch"].slices > 0


def test_serve_injects_the_planned_faults_and_survives_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``[[faults]]`` in the config: each planned fault fires in the real node (NumPy L1,
    a synthetic AI tenant), is detected by the arbiter, and the node runs to its end
    and writes its report (docs/reliability.md)."""
    f = tmp_path / "c.toml"
    f.write_text(
        '[device]\nbackend = "numpy"\n[ai.tenants.batch]\nkind = "synthetic"\n'
        '[metrics]\nport = 0\n[report]\npath = "r.json"\n'
        '[[faults]]\nkind = "radio_overrun"\nat_s = 0.3\nfactor = 5.0\n'
        '[[faults]]\nkind = "ai_hang"\nat_s = 0.6\nhang_ms = 30.0\n'
        '[[faults]]\nkind = "executor_error"\nat_s = 0.9\ntarget = "radio"\n'
        '[[faults]]\nkind = "l2_silence"\nat_s = 1.0\nduration_ms = 200.0\n'
    )
    assert main(["serve", "--config", str(f), "--seconds", "2.0"]) == 0
    out = capsys.readouterr().out
    assert "fault injection: 4 planned fault(s)" in out
    report = RunReport.model_validate_json((tmp_path / "r.json").read_text())
    fired = sorted(j["kind"] for j in report.faults.injected)
    assert fired == ["ai_hang", "executor_error", "l2_silence", "radio_overrun"]
    detected = report.faults.detected
    assert detected.get("executor_error") == 1 and detected.get("ai_hang", 0) >= 1
    assert detected.get("radio_overrun", 0) >= 1
    assert report.ai.tenants["batch"].slices > 0 and report.ran.tasks > 0
    assert report.faults.shed_us > 0


def test_o1_on_a_port_of_its_own_with_tokens(tmp_path: Path) -> None:
    """O1 with its own port and access file, E2 on another; the service built around a
    simulated node (no device set-up), stopped gracefully with its report."""
    import grpc

    from airan.ric.o1 import O1Client, O1Error
    from airan.ric.security import ClientSecurity, hash_token, new_token
    from airan.ric.xapp import E2Client
    from airan.serve import NodeService, check_resources

    token = new_token()
    app = {"name": "ops", "token_sha256": hash_token(token), "permission": "read"}
    (tmp_path / "access.json").write_text(json.dumps({"apps": [app]}))
    f = tmp_path / "c.toml"
    f.write_text(
        '[device]\nbackend = "numpy"\n[e2]\nport = 0\n[metrics]\nport = 0\n'
        '[o1]\nport = 0\naccess = "access.json"\nstate = "state/o1.json"\n'
        '[report]\npath = "r.json"\n'
    )
    cfg = load_config(f)
    said: list[str] = []
    svc = NodeService(cfg, check_resources(cfg), say=said.append)
    svc.node = Node.simulated(cfg.node, seed=2)
    svc.start()
    try:
        o1_target = next(x for x in said if x.startswith("o1 listening on")).split()[-1]
        e2_target = next(x for x in said if x.startswith("e2 listening on")).split()[-1]
        assert o1_target != e2_target
        sec = ClientSecurity(token=token, allow_plaintext_token=True)
        with O1Client(o1_target, sec) as o1:
            assert o1.get("/node_id") == "airan-node-1"
            with pytest.raises(O1Error) as exc:  # a read-only application cannot Set
                o1.set("/policy/guard_us", 30.0)
            assert exc.value.code == grpc.StatusCode.PERMISSION_DENIED
        with O1Client(o1_target) as anonymous, pytest.raises(O1Error) as exc:
            anonymous.get("/node_id")
        assert exc.value.code == grpc.StatusCode.UNAUTHENTICATED
        with E2Client(e2_target) as e2:  # E2 has no access file: open on loopback
            assert e2.setup().functions
        time.sleep(0.3)
    finally:
        result = svc.stop()
    assert result.errors == [] and result.report == tmp_path / "r.json"
    report = RunReport.model_validate_json(result.report.read_text())
    assert 0.2 < report.duration_s < 30 and report.ran.tasks > 0
    assert svc.stop() is result  # once


# ------------------------------------------------------------ the real process


@dataclass
class Served:
    proc: subprocess.Popen[str]
    tmp: Path
    config: Path
    lines: list[str] = dc_field(default_factory=list)
    metrics_url: str = ""
    e2: str = ""
    o1: str = ""

    def scrape(self) -> tuple[str, dict[str, list[tuple[dict[str, str], float]]]]:
        status, text = _get(self.metrics_url)
        assert status == 200
        return text, _samples(text)


def _serve_config(tmp: Path) -> Path:
    """The example config, on the CPU with ports 0 and files under ``tmp`` (as JSON:
    the other format the command reads)."""
    doc: dict[str, Any] = tomllib.loads(EXAMPLE.read_text())
    doc["device"]["backend"] = "numpy"
    doc["e2"]["port"] = 0
    doc["metrics"] = {"address": "127.0.0.1", "port": 0}
    doc["o1"]["state"] = str(tmp / "o1-state.json")
    doc["o1"]["measurement_s"] = 0.5
    doc["report"]["path"] = str(tmp / "report.json")
    doc["trace"]["path"] = str(tmp / "trace.json")
    path = tmp / "node.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("serve")
    config = _serve_config(tmp)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "airan", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp,
    )
    s = Served(proc, tmp, config)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        s.lines.append(line.rstrip("\n"))
        if m := re.match(r"metrics listening on (http://\S+)$", line.strip()):
            s.metrics_url = m.group(1)
        elif m := re.match(r"e2 listening on (\S+)$", line.strip()):
            s.e2 = m.group(1)
        elif m := re.match(r"o1 listening on (\S+)$", line.strip()):
            s.o1 = m.group(1)
        elif line.startswith("airan serve: running"):
            break
    else:
        proc.kill()
    # keep reading the output so that the pipe never fills
    rest = threading.Thread(target=lambda: s.lines.extend(proc.stdout or ()), daemon=True)
    rest.start()
    try:
        assert s.metrics_url and s.e2 and s.o1, "\n".join(s.lines)
        yield s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_metrics_endpoint_exports_the_documented_series_and_they_move(served: Served) -> None:
    time.sleep(1.0)
    _, a = served.scrape()
    time.sleep(1.5)
    text, b = served.scrape()
    present = set(b)
    # everything documented, but what this node cannot have (a FAPI DU, raised alarms)
    expected = series_names() - {"airan_fapi_messages_total", "airan_o1_alarm_active"}
    assert expected <= present, sorted(expected - present)
    for name in (
        "process_resident_memory_bytes",
        "process_open_fds",
        "python_gc_objects_collected_total",
    ):
        assert name in present
    for name in (
        "airan_radio_tasks_total",
        "airan_node_run_seconds_total",
        "airan_mac_slots_total",
    ):
        assert _value(b, name) > _value(a, name) > 0, name
    assert _value(b, "airan_node_running") == 1.0
    assert _value(b, "airan_radio_slack_seconds_bucket", le="+Inf") == _value(
        b, "airan_radio_tasks_total"
    )
    info = dict(b["airan_node_info"][0][0])
    assert info["backend"] == "numpy" and info["node_id"] == "airan-node-1"
    assert _value(b, "airan_policy_info", name="airan") == 1.0
    assert _value(b, "airan_tenant_weight", tenant="llm") == 1.0
    assert "# TYPE airan_radio_slack_seconds histogram" in text
    status, body = _get(served.metrics_url.removesuffix("/metrics") + "/healthz")
    assert (status, body) == (200, "ok\n")


def _exprs(dash: dict[str, Any]) -> Iterator[str]:
    """Every PromQL expression of the dashboard: the panels' targets and the query
    variables."""
    for panel in dash["panels"]:
        for t in panel.get("targets", ()):
            yield t["expr"]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]
            yield q["query"] if isinstance(q, dict) else q


def test_grafana_dashboard_queries_series_the_endpoint_exports(served: Served) -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["schemaVersion"] >= 36 and dash["panels"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dash["panels"]:
        if panel.get("type") == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
    _, samples = served.scrape()
    exported = set(samples)
    exprs = list(_exprs(dash))
    assert len(exprs) >= 8
    referenced: set[str] = set()
    for expr in exprs:
        names = set(re.findall(r"\b((?:airan|process|python)_[a-z0-9_]+)", expr))
        assert names, expr
        referenced |= names
        missing = names - exported
        assert not missing, (expr, missing)
    for needed in ("airan_radio_deadline_misses_total", "airan_radio_slack_seconds_bucket",
                   "airan_radio_busy_seconds_total", "airan_ai_busy_seconds_total",
                   "airan_tenant_tokens_total", "airan_tenant_busy_seconds_total"):  # fmt: skip
        assert needed in referenced, needed


def test_e2_and_o1_control_the_served_node(served: Served) -> None:
    from airan.ric.o1 import O1Client
    from airan.ric.xapp import E2Client

    with E2Client(served.e2) as e2:
        assert e2.setup().functions
        with e2.kpm.subscribe(["airan.RadioTasks"], period_ms=100) as sub:
            report = next(iter(sub))
            assert "airan.RadioTasks" in report.values
            _, m = served.scrape()
            assert _value(m, "airan_e2_subscriptions") == 1.0
        result = e2.cosched.set_policy(guard_us=25.0)
        assert result.applied_ns >= result.requested_ns > 0
        assert result.applied["guard_us"] == 25.0
    _, m = served.scrape()
    assert _value(m, "airan_policy_guard_seconds") == pytest.approx(25e-6)
    with O1Client(served.o1) as o1:
        assert o1.get("/policy/guard_us") == 25.0
        o1.set("/policy/ai_share_cap", 0.5)
    _, m = served.scrape()
    assert _value(m, "airan_policy_ai_share_cap_ratio") == 0.5
    state = json.loads((served.tmp / "o1-state.json").read_text())
    assert state["config"]["policy"]["ai_share_cap"] == 0.5


def test_sigterm_stops_within_a_second_with_report_and_trace(served: Served) -> None:
    from airan.ric.xapp import E2Client

    assert served.proc.poll() is None
    with E2Client(served.e2) as e2:
        sub = e2.kpm.subscribe(["airan.RadioTasks"], period_ms=50)
        next(iter(sub))
        t0 = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        code = served.proc.wait(5)
        took = time.monotonic() - t0
        assert code == 0, "\n".join(served.lines)
        assert took < 1.0, took
        for _ in sub:  # the subscriber was told the node went away
            pass
        assert sub.ended is not None
    report = RunReport.model_validate_json((served.tmp / "report.json").read_text())
    assert report.backend == "numpy" and report.ran.tasks > 0
    assert report.workload["node_id"] == "airan-node-1"
    # the run's own length (not the length a never-ending run was started for)
    assert 1.0 < report.duration_s < 600.0
    assert report.policy["guard_us"] == 25.0  # the live change made over E2
    trace = json.loads((served.tmp / "trace.json").read_text())
    events = trace["traceEvents"]
    assert any(e.get("ph") == "X" and e.get("cat") == "radio" for e in events)
    assert any(e.get("name") == "stop requested" for e in events)
    assert not list(served.tmp.glob(".*.tmp"))  # written atomically: no temp file left
    assert any(line.startswith("report written to") for line in served.lines)


def test_a_bad_config_exits_2_from_the_real_command(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[e2]\nport = 70000\n")
    r = subprocess.run(
        [sys.executable, "-m", "airan", "serve", "--config", str(f)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "e2.port" in r.stderr and str(f) in r.stderr
