"""One AI-RAN node: the arbiter, the DU workload and the AI tenants, behind the
thread-safe control and measurement surface that the E2 agent and O1 service use.

The arbiter's loop runs in a thread of its own; everything here may be called from any
other thread (gRPC handlers). Changes are handed to the loop, never made under it:
a policy goes through :meth:`Arbiter.request_policy` and is applied at the loop's
next decision; slice PRB quotas replace one immutable object the MAC reads once per
slot. A change is validated as a whole first and is all-or-nothing: on any error
nothing is applied (or what was applied is rolled back) and a
:class:`~airan.core.errors.FieldError` names the field.

Measurements are cumulative counters (:meth:`Node.snapshot`); two snapshots give the
figures of the period between them (:meth:`Node.measurements`), so any number of
subscribers with different reporting periods share the same counters.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from airan.core.errors import FieldError
from airan.core.faults import ALARM_SOURCE, FaultPlan
from airan.core.policy import TENANT_NAME, CheckedModel, Policy, TenantPolicy
from airan.core.report import Percentiles, RunReport
from airan.core.rrm import SliceQuota, check_quotas
from airan.ran.config import RanConfig
from airan.ran.du import DuCounters, DuWorkload, du_period_figures
from airan.sched.arbiter import (
    Arbiter,
    ControlTicket,
    ControlTimeoutError,
    Counters,
    period_figures,
)

if TYPE_CHECKING:
    from airan.ai.engine import DecoderEngine
    from airan.backend import Backend
    from airan.sched.faults import FaultInjector

log = logging.getLogger(__name__)


class AlarmConfig(CheckedModel):
    """When the node raises O1 alarms (3GPP TS 28.532 §11.2 fault supervision)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _where: ClassVar[str] = "alarms"

    miss_ratio_threshold: float = Field(
        1e-3, ge=0.0, le=1.0, description="Deadline-miss ratio over window_s that raises."
    )
    window_s: float = Field(1.0, ge=0.01, le=3600.0)
    l2_silence_ms: float = Field(
        100.0, ge=1.0, le=600_000.0, description="No FAPI request from the L2 this long."
    )
    heartbeat_s: float = Field(10.0, ge=0.1, le=86_400.0)


class NodeConfig(CheckedModel):
    """The node's configuration tree (what O1 ``Get``/``Set`` read and write)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _where: ClassVar[str] = "node"

    node_id: str = Field("airan-node-1", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    policy: Policy = Field(default_factory=Policy)
    ran: RanConfig = Field(default_factory=RanConfig)
    alarms: AlarmConfig = Field(default_factory=AlarmConfig)


AiTenantKind = Literal["transformer", "synthetic"]


class AiTenantConfig(CheckedModel):
    """One AI tenant of a node on a real device (:meth:`Node.on_device`).

    ``kind``: ``transformer``, the built-in GPT-style decoder (seeded weights, sized for
    the device by :func:`airan.runner.demo_model_config`) serving a closed-loop chat
    load through a :class:`~airan.ai.engine.DecoderEngine` (continuous batching, chunked
    prefill, slices cut by layers); or ``synthetic``, the synthetic decoder's calibrated
    matrix products. ``priority``: the job's priority class (higher first).
    ``max_batch``: the transformer's batch (``None``: 32 on a GPU, 8 on a CPU).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    _where: ClassVar[str] = "ai.tenant"

    kind: AiTenantKind = "transformer"
    priority: int = Field(0, ge=0, le=1000)
    max_batch: int | None = Field(None, ge=1, le=4096)


#: the dotted fields a running node applies at once; every other change is stored
#: and takes effect at the next start
LIVE_FIELDS: tuple[str, ...] = ("policy", "alarms", "ran.slice_quotas")

#: co-scheduling measurements: (measurement name, key of :func:`period_figures`)
_ARBITER_MEASUREMENTS: tuple[tuple[str, str], ...] = (
    ("airan.DeadlineMetRatio", "deadline_met_ratio"),
    ("airan.RadioBusy", "radio_busy"),
    ("airan.AiBusy", "ai_busy"),
    ("airan.HarvestRatio", "harvest_ratio"),
    ("airan.RadioSlackLowUs", "radio_slack_low_us"),
    ("airan.AiTokensPerS", "ai_tokens_per_s"),
    ("airan.RadioTasks", "radio_tasks"),
    ("airan.RadioMisses", "radio_misses"),
)


@dataclass(frozen=True, slots=True)
class Fault:
    """Something that went wrong in the node: ``source`` (``executor``, ``ai``, ...)."""

    source: str
    text: str
    t_ns: int


@dataclass(frozen=True, slots=True)
class Health:
    """What an alarm monitor polls."""

    running: bool
    faults: tuple[Fault, ...]
    last_l2_message_ns: int | None  # perf_counter_ns of the last request from the L2
    tasks: int
    misses: int


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """The node's cumulative counters at one instant."""

    t_ns: int
    arbiter: Counters
    du: DuCounters


@dataclass(frozen=True, slots=True)
class Measurements:
    """The figures of one period: node-level, and per UE (keyed by UE index)."""

    node: dict[str, float]
    ues: dict[int, dict[str, float]] = field(default_factory=dict)


class Node:
    """A live node. Build one with :meth:`simulated` (real time, simulated device) or
    from an :class:`Arbiter` and a :class:`DuWorkload` on a real executor."""

    def __init__(self, config: NodeConfig, arbiter: Arbiter, du: DuWorkload) -> None:
        if not isinstance(config, NodeConfig):
            raise FieldError("config", f"must be a NodeConfig, got {config!r}")
        self._config = config
        self.arbiter = arbiter
        self.du = du
        self._apply_lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._faults: deque[Fault] = deque(maxlen=256)
        self._seen_job_errors: set[int] = set()
        self._seen_fault: tuple[int, int] = (0, 0)  # (id of the arbiter's log, last id)
        self._seen_stall: int = 0  # issue time of the slice the watchdog last reported
        self._listeners: list[Callable[[NodeConfig, NodeConfig], None]] = []
        #: the seed the node was built with (for its report), if known
        self.seed: int | None = None
        #: the transformer tenants' serving engines, by tenant (:meth:`on_device`)
        self.engines: dict[str, DecoderEngine] = {}
        #: the AI tenants' kinds, by tenant
        self.ai_kinds: dict[str, str] = {}
        #: when slot 0 of the current (or last) run starts, on the executor's clock
        self.first_slot_ns: int | None = None
        #: why the loop died, if it did (a contained fault does not end it)
        self.loop_error: str | None = None
        arbiter.request_policy(config.policy).wait()
        du.set_slice_quotas(config.ran.slice_quotas)

    # -- construction ------------------------------------------------------------
    @classmethod
    def simulated(cls, config: NodeConfig | None = None, seed: int = 0, *, ai: bool = True) -> Node:
        """A live node in real time on a simulated device: the MAC schedules every slot,
        each slot's L1 work becomes radio tasks whose durations are drawn from the
        DU's cost model, and the clock is paced to the wall clock. With ``ai``, a
        synthetic decoder per tenant of the policy (or one, ``llm``) uses the slack."""
        from airan.sched.executors import PacedSimExecutor
        from airan.synthetic import SyntheticWorkload

        cfg = config if config is not None else NodeConfig()
        du = DuWorkload(cfg.ran, seed=seed)
        wl = SyntheticWorkload(seed=seed)  # its AI decoder's durations, if ai
        executor = PacedSimExecutor(wl.profile() if ai else {}, seed=seed, model=du.cost_model)
        arb = Arbiter(executor, cfg.policy, queue_capacity=1 << 14)
        node = cls(cfg, arb, du)
        node.seed = seed
        if ai:
            from airan.core.slices import AiJob

            for tenant in cfg.policy.tenants or {"llm": TenantPolicy()}:
                arb.add_job(AiJob(wl.decoder(arb.fits_ai_slice), tenant=tenant))
                node.ai_kinds[tenant] = "synthetic"
        return node

    @classmethod
    def on_device(
        cls,
        config: NodeConfig | None = None,
        backend: Backend | None = None,
        seed: int = 0,
        *,
        ai: Mapping[str, AiTenantConfig] | None = None,
        test_vectors: int = 8,
    ) -> Node:
        """A live node on a real device: the DU's MAC in-process and its real L1 kernels
        (:class:`~airan.ran.l1.L1Work`, one per cell) on ``backend`` (``None``: the best
        found, :func:`~airan.backend.select_backend`), the executor of
        :func:`~airan.backend.make_executor`, and the AI tenants ``ai`` (tenant name →
        :class:`AiTenantConfig`; ``None``: a transformer for each tenant the policy
        declares, or one named ``llm``; empty: no AI).

        ``config`` is used as given: the per-device cell and policy defaults
        (:func:`airan.runner.ran_defaults`, :func:`~airan.runner.device_defaults`) are
        the caller's to merge (``airan serve`` does). Set-up calibrates the L1 and the
        model on the device (a second on a CPU, more on a GPU). Every bad input raises
        :class:`FieldError` before anything is built on the device."""
        import re

        from airan.backend import device_sync, make_executor, select_backend

        cfg = config if config is not None else NodeConfig()
        if not isinstance(cfg, NodeConfig):
            raise FieldError("config", f"must be a NodeConfig, got {cfg!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise FieldError("seed", f"must be an integer in [0, 2**63), got {seed!r}")
        if ai is None:
            tenants: dict[str, AiTenantConfig] = {
                name: AiTenantConfig() for name in cfg.policy.tenants or ("llm",)
            }
        elif isinstance(ai, Mapping):
            tenants = dict(ai)
        else:
            raise FieldError("ai", f"must map tenant names to AiTenantConfig, got {ai!r}")
        declared = cfg.policy.tenants
        for name, spec in tenants.items():
            if not isinstance(name, str) or not re.fullmatch(TENANT_NAME, name):
                raise FieldError(
                    "ai", f"tenant name {name!r} must be 1 to 64 letters, digits or ._:-"
                )
            if not isinstance(spec, AiTenantConfig):
                raise FieldError(f"ai.{name}", f"must be an AiTenantConfig, got {spec!r}")
            if declared and name not in declared:
                raise FieldError(
                    f"ai.{name}",
                    f"the policy declares the tenants {', '.join(sorted(declared))}: "
                    "declare this one in policy.tenants too",
                )
        be = backend if backend is not None else select_backend("auto")
        sync = device_sync(be)
        from airan.ran.l1 import L1Work

        l1 = [
            L1Work(cfg.ran, be.xp, seed=seed, cell=c, sync=sync, test_vectors=test_vectors)
            for c in range(cfg.ran.cells)
        ]
        du = DuWorkload(cfg.ran, seed=seed, l1=l1)
        executor = make_executor(be)
        try:
            arb = Arbiter(executor, cfg.policy, queue_capacity=1 << 14)
            node = cls(cfg, arb, du)
            node.seed = seed
            for i, (name, spec) in enumerate(sorted(tenants.items())):
                node._add_device_tenant(be, sync, name, spec, seed + 1009 * i)
        except BaseException:
            executor.close()
            raise
        return node

    def _add_device_tenant(
        self, backend: Backend, sync: Callable[[], None], name: str, spec: AiTenantConfig, seed: int
    ) -> None:
        """Build one AI tenant's job on ``backend`` and give it to the arbiter."""
        from airan.core.slices import AiJob

        arb = self.arbiter
        if spec.kind == "transformer":
            from airan.runner import demo_engine

            engine = demo_engine(backend, arb, sync, seed, name, spec.max_batch)
            arb.add_job(AiJob(engine, tenant=name, priority=spec.priority))
            self.engines[name] = engine
        else:
            from airan.synthetic import SyntheticWorkload, array_work_factory

            wl = SyntheticWorkload(None, seed=seed, work=array_work_factory(backend.xp, sync))
            arb.add_job(AiJob(wl.decoder(arb.fits_ai_slice), tenant=name, priority=spec.priority))
        self.ai_kinds[name] = spec.kind

    # -- lifetime ------------------------------------------------------------------
    def start(self, seconds: float = 86_400.0) -> None:
        """Run the node's loop in a background thread for ``seconds`` (or until
        :meth:`stop`)."""
        if self._thread is not None and self._thread.is_alive():
            raise FieldError("node", "is already running")
        if not 0 < seconds <= 365 * 86_400:
            raise FieldError("seconds", f"must be in (0, 1 year], got {seconds!r}")
        ex = self.arbiter.executor
        slot_ns = self.du.slot_ns
        slots = max(1, int(seconds * 1e9 // slot_ns))
        started = threading.Event()
        self.loop_error = None

        def loop() -> None:
            start = ex.clock.now_ns() + 2 * slot_ns
            self.first_slot_ns = start
            rec = self.arbiter.recorder
            if rec is not None:  # slot boundaries in the trace: this run's slots
                rec.slot_ns = slot_ns
                rec.first_slot_ns = start
            started.set()
            try:
                self.arbiter.run(
                    self.du.radio_tasks(start, slots),
                    start - ex.clock.now_ns() + slots * slot_ns,
                )
            except Exception as exc:  # the node reports, it does not die silently
                self.loop_error = f"{type(exc).__name__}: {exc}"
                self._faults.append(
                    Fault("executor", f"the loop died: {self.loop_error}", time.perf_counter_ns())
                )

        self._thread = threading.Thread(target=loop, name=f"airan-node-{self.node_id}", daemon=True)
        self._thread.start()
        started.wait()
        # return once the loop runs: controls from now on go through its mailbox
        while not self.arbiter.running and self._thread.is_alive():
            time.sleep(0.0005)

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the run (radio work already released finishes) and wait for the loop."""
        t = self._thread
        if t is None:
            return
        while t.is_alive():
            self.arbiter.request_stop()
            t.join(0.05)
            timeout_s -= 0.05
            if timeout_s <= 0:
                raise FieldError("node", "the loop did not stop in time")
        self._thread = None

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the loop (as :meth:`stop`) and release the device: the executor's
        streams and events. The node cannot run again after this."""
        self.stop(timeout_s)
        self.arbiter.executor.close()

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- configuration -----------------------------------------------------------
    def add_config_listener(self, fn: Callable[[NodeConfig, NodeConfig], None]) -> None:
        """Call ``fn(old, new)`` after every configuration change, whatever its path (O1
        set, E2 control): e.g. to persist it. Called in order, under the node's
        configuration lock: keep it short; an exception is logged, not raised."""
        self._listeners.append(fn)

    def _changed(self, old: NodeConfig) -> None:
        new = self._config
        if new == old:
            return
        for fn in list(self._listeners):
            try:
                fn(old, new)
            except Exception:
                log.exception("node %s: configuration listener %r failed", self.node_id, fn)

    @property
    def node_id(self) -> str:
        return self._config.node_id

    @property
    def config(self) -> NodeConfig:
        """The configuration now (an immutable snapshot)."""
        return self._config

    def set_policy(self, policy: Policy, timeout_s: float = 5.0) -> ControlTicket:
        """Hand ``policy`` to the arbiter; return once applied (the ticket says when).

        Raises :class:`FieldError` if the arbiter refuses it; nothing is applied then."""
        with self._apply_lock:
            ticket = self._set_policy(policy, timeout_s)
            old = self._config
            self._config = old.model_copy(update={"policy": policy})
            self._changed(old)
        return ticket

    def _set_policy(self, policy: Policy, timeout_s: float) -> ControlTicket:
        if not isinstance(policy, Policy):
            raise FieldError("policy", f"must be a Policy, got {policy!r}")
        ticket = self.arbiter.request_policy(policy)
        if not ticket.wait(timeout_s) and ticket.cancel():  # withdrawn: it never applies
            raise ControlTimeoutError(
                "policy", f"the arbiter did not take it within {timeout_s} s; not applied"
            )
        if ticket.error is not None:
            raise ticket.error
        return ticket

    def set_tenant_paused(self, tenant: str, paused: bool, timeout_s: float = 5.0) -> ControlTicket:
        """Pause or resume one AI tenant."""
        with self._apply_lock:
            return self._set_tenant_paused(tenant, paused, timeout_s)

    def _set_tenant_paused(self, tenant: str, paused: bool, timeout_s: float) -> ControlTicket:
        known = set(self._config.policy.tenants) | set(self.arbiter.tenants)
        if tenant not in known:
            raise FieldError(
                "tenant", f"unknown tenant {tenant!r}; known: {', '.join(sorted(known)) or '-'}"
            )
        pol = self._config.policy
        tenants = dict(pol.tenants)
        tp = tenants.get(tenant, TenantPolicy())
        tenants[tenant] = tp.model_copy(update={"paused": bool(paused)})
        if not pol.tenants:  # declaring one tenant means declaring all that have jobs
            for name in self.arbiter.tenants:
                tenants.setdefault(name, TenantPolicy())
        new = Policy.parse(
            {**pol.model_dump(), "tenants": {k: v.model_dump() for k, v in tenants.items()}}
        )
        return self.set_policy(new, timeout_s)

    def set_slice_quotas(self, quotas: Sequence[SliceQuota]) -> None:
        """Replace the slice PRB quotas (E2SM-RC style 2 action 6), all or nothing."""
        with self._apply_lock:
            qs = check_quotas(quotas)
            ran = RanConfig.parse(
                {**self._config.ran.model_dump(), "slice_quotas": [q.model_dump() for q in qs]},
                where="ran",
            )
            self.du.set_slice_quotas(ran.slice_quotas)
            old = self._config
            self._config = old.model_copy(update={"ran": ran})
            self._changed(old)

    def update_config(
        self, change: Callable[[NodeConfig], NodeConfig], timeout_s: float = 5.0
    ) -> tuple[NodeConfig, list[str]]:
        """Read-modify-write: ``change(current)`` gives the new tree, applied as by
        :meth:`apply_config`, all under the configuration lock, so that concurrent
        changes (an O1 set, an E2 control) never undo each other. Returns the tree
        applied and the fields that need a restart."""
        with self._apply_lock:
            new = change(self._config)
            return new, self.apply_config(new, timeout_s)

    def apply_config(self, new: NodeConfig, timeout_s: float = 5.0) -> list[str]:
        """Apply a whole new configuration tree atomically; return the dotted fields that
        changed but take effect only at the next start.

        Steps: the policy (through the arbiter), then the slice quotas (the MAC), then
        the rest. If a step fails, the steps already taken are undone and the
        :class:`FieldError` is raised: the node is left as it was."""
        if not isinstance(new, NodeConfig):
            raise FieldError("config", f"must be a NodeConfig, got {new!r}")
        with self._apply_lock:
            old = self._config
            restart = restart_fields(old, new)
            policy_done = False
            try:
                if new.policy != old.policy:
                    self._set_policy(new.policy, timeout_s)
                    policy_done = True
                if new.ran.slice_quotas != old.ran.slice_quotas:
                    self.du.set_slice_quotas(new.ran.slice_quotas)
            except Exception:
                if policy_done:
                    self._set_policy(old.policy, timeout_s)
                raise
            self._config = new
            self._changed(old)
            return restart

    # -- measurements --------------------------------------------------------------
    def snapshot(self) -> NodeSnapshot:
        """The cumulative counters now."""
        return NodeSnapshot(time.perf_counter_ns(), self.arbiter.counters(), self.du.counters())

    #: node-level measurement names (per-tenant ones, ``airan.Tenant.<name>.Busy``, too)
    NODE_MEASUREMENTS: ClassVar[tuple[str, ...]] = (
        *DuWorkload.NODE_MEASUREMENTS,
        *(name for name, _ in _ARBITER_MEASUREMENTS),
    )
    #: per-UE measurement names
    UE_MEASUREMENTS: ClassVar[tuple[str, ...]] = DuWorkload.UE_MEASUREMENTS

    @staticmethod
    def measurements(a: NodeSnapshot, b: NodeSnapshot) -> Measurements:
        """The figures of the period from ``a`` to ``b``."""
        arb = period_figures(a.arbiter, b.arbiter)
        node: dict[str, float] = {name: arb[key] for name, key in _ARBITER_MEASUREMENTS}
        for key, value in arb.items():
            if key.startswith("tenant.") and key.endswith(".busy"):
                node[f"airan.Tenant.{key[7:-5]}.Busy"] = value
        du_node, du_ues = du_period_figures(a.du, b.du)
        node.update(du_node)
        return Measurements(node=node, ues=du_ues)

    def report(self, wall_time_s: float = 0.0) -> RunReport:
        """The :class:`RunReport` of the last run (call it once the loop has stopped):
        the arbiter's figures, the DU's cell and L1 CRC counts, the AI tenants' kinds and,
        for the transformer tenants, completed requests and time to first token."""
        if self.running:
            raise FieldError("node", "is running: stop it before taking its report")
        arb = self.arbiter
        slots = max(1, arb.elapsed_ns // self.du.slot_ns)
        report = arb.report(
            seed=self.seed, slots=slots, workload=self.du.describe(), wall_time_s=wall_time_s
        )
        report.workload["node_id"] = self.node_id
        report.workload["l1_crc_ok"] = self.du.l1_crc_ok
        report.workload["l1_crc_total"] = self.du.l1_crc_total
        report.workload["ai"] = dict(self.ai_kinds)
        ttft: list[int] = []
        for engine in self.engines.values():
            report.ai.requests += engine.completed_total
            ttft.extend(engine.ttft_ns())
        if ttft:
            ttft.sort()
            report.ai.ttft_ms = Percentiles(
                p50=ttft[len(ttft) // 2] / 1e6,
                p99=ttft[min(len(ttft) - 1, len(ttft) * 99 // 100)] / 1e6,
            )
        if self.engines:
            report.workload["model"] = next(iter(self.engines.values())).cfg.model_dump()
        return report

    def install_faults(self, plan: FaultPlan) -> FaultInjector:
        """Plant the faults of ``plan`` (tests, ``airan serve``'s ``[[faults]]``) in this
        node's next run: the arbiter's slices and jobs, and the in-process L2. Before
        :meth:`start`."""
        from airan.sched.faults import FaultInjector

        if self.running:
            raise FieldError("faults", "cannot be installed while the node runs")
        injector = FaultInjector(plan, self.arbiter.executor)
        self.arbiter.install_faults(injector)
        self.du.install_faults(injector)
        return injector

    def health(self) -> Health:
        """Faults so far, the L2's last sign of life, and the miss counters.

        Faults are the AI jobs that failed, the faults the arbiter detected
        (:mod:`airan.core.faults`: source ``radio`` for an overrun, ``ai`` for a hang,
        ``executor`` for an executor error), and the watchdog's: a slice on the device
        past ``overrun_factor`` times its prediction *now*, reported while it lasts."""
        now = time.perf_counter_ns()
        arb = self.arbiter
        for job in list(arb.jobs):
            if job.error is not None and id(job) not in self._seen_job_errors:
                self._seen_job_errors.add(id(job))
                self._faults.append(Fault("ai", f"tenant {job.tenant}: {job.error}", now))
        log_id, last = self._seen_fault
        flog = arb.fault_log
        if id(flog) != log_id:  # a new run: its ids start at 1 again
            log_id, last = id(flog), 0
        for f in tuple(flog):
            if f.fault_id > last:
                last = f.fault_id
                text = f"{f.kind.value} (fault {f.fault_id}): {f.detail}"
                self._faults.append(Fault(ALARM_SOURCE[f.kind], text, now))
        self._seen_fault = (log_id, last)
        cur = arb.inflight
        if cur is not None and cur[0] != self._seen_stall:
            stall = arb.stalled(now)
            if stall is not None:
                self._seen_stall = cur[0]
                kind, what = stall
                self._faults.append(Fault(ALARM_SOURCE[kind], f"watchdog: {what}", now))
        c = arb.counters()
        return Health(
            running=self.running,
            faults=tuple(self._faults),
            last_l2_message_ns=self.du.last_l2_message_ns(),
            tasks=c.tasks,
            misses=c.misses,
        )


def restart_fields(old: NodeConfig, new: NodeConfig) -> list[str]:
    """The dotted fields that differ between ``old`` and ``new`` and are not live."""
    out: list[str] = []

    def walk(prefix: str, a: Any, b: Any) -> None:
        if prefix in LIVE_FIELDS or a == b:
            return
        if isinstance(a, Mapping) and isinstance(b, Mapping) and prefix.count(".") < 1:
            for k in sorted(set(a) | set(b)):
                walk(f"{prefix}.{k}" if prefix else str(k), a.get(k), b.get(k))
            return
        out.append(prefix)

    walk("", old.model_dump(), new.model_dump())
    return out
