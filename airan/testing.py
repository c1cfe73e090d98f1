"""An in-process node for testing xApps without a RAN: :class:`FakeNode`.

A live simulated node (:meth:`airan.node.Node.simulated`: the MAC schedules every slot,
AI tenants use the slack, the arbiter runs in real time on a simulated device) with its
E2-style agent (O-RAN.WG3.E2AP, :mod:`airan.ric.e2`) and, when available, its O1-style
service (:mod:`airan.ric.o1`) served together on one loopback port::

    from airan.testing import FakeNode
    from airan.ric.xapp import E2Client

    with FakeNode(seed=1) as fake, E2Client(fake.e2_target) as e2:
        with e2.kpm.subscribe(["airan.AiBusy"], period_ms=50) as sub:
            print(next(iter(sub)).values)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from airan.ric.e2 import E2Agent, E2Server, serve_e2
from airan.ric.security import ServerSecurity
from airan.ric.server import ServiceRegistration

if TYPE_CHECKING:
    from airan.node import Node, NodeConfig

__all__ = ["FakeNode"]


class FakeNode:
    """A simulated node serving E2 (and O1) on ``host``:``port`` (``0``: a free port).

    ``config``/``seed``: passed to :meth:`Node.simulated`; ``security``: TLS and access
    policy of the port (:class:`~airan.ric.security.ServerSecurity`; ``None``: plaintext,
    no tokens; tokens without TLS only on a loopback ``host``, or with
    ``allow_plaintext_tokens=True``); ``o1``: also host the O1 service; ``o1_state``: the
    O1 service's state file (``None``: not persisted) — a saved configuration is
    restored at start, and every change (O1 Set or E2 control) is saved;
    ``agent_kwargs``: passed to :func:`~airan.ric.e2.serve_e2` and :class:`~airan.ric.e2.E2Agent`
    (``max_subscriptions``, ``max_queue``, ``aio=False`` for the sync gRPC server, ...).

    ``start()`` / ``stop()`` or a ``with`` block; :attr:`e2_target` / :attr:`o1_target`
    are the ``host:port`` to connect to. Stopping sends every E2 subscriber a deletion
    notice (``misc/om-intervention``) before the server goes away.
    """

    def __init__(
        self,
        config: NodeConfig | None = None,
        seed: int = 0,
        *,
        security: ServerSecurity | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        o1: bool = True,
        o1_state: Path | None = None,
        seconds: float = 86_400.0,
        **agent_kwargs: Any,
    ) -> None:
        from airan.node import Node

        self.node: Node = Node.simulated(config, seed=seed)
        self.security = security
        self.host = host
        self.port = port
        self.seconds = seconds
        self._want_o1 = o1
        self._o1_state = None if o1_state is None else Path(o1_state)
        self._agent_kwargs = agent_kwargs
        self.o1: Any = None
        self.e2: E2Server | None = None

    @property
    def agent(self) -> E2Agent:
        if self.e2 is None:
            raise RuntimeError("the FakeNode is not started")
        return self.e2.agent

    @property
    def e2_target(self) -> str:
        """``host:port`` of the E2 service."""
        if self.e2 is None:
            raise RuntimeError("the FakeNode is not started")
        return self.e2.target

    @property
    def o1_target(self) -> str | None:
        """``host:port`` of the O1 service (the same port), ``None`` without O1."""
        return None if self.o1 is None else self.e2_target

    def start(self) -> FakeNode:
        extra: list[ServiceRegistration] = []
        if self._want_o1:
            from airan.ric.o1 import O1Service

            self.o1 = O1Service(self.node, self._o1_state, measurement_s=0)
            extra.append(self.o1.registration())
        self.node.start(self.seconds)
        try:
            self.e2 = serve_e2(
                self.node,
                self.port,
                self.security,
                self.host,
                extra_services=extra,
                **self._agent_kwargs,
            )
        except BaseException:
            self._stop_rest()
            raise
        if self.o1 is not None:  # the E2 counters (drops, stalls) in every O1 heartbeat
            self.o1.add_heartbeat_source("e2", self.e2.agent.stats)
        return self

    def stop(self, grace_s: float = 2.0) -> None:
        """Deletion notices to E2 subscribers, stop the server, the O1 service, the node."""
        if self.e2 is not None:
            self.e2.stop(grace_s)
        self._stop_rest()

    def _stop_rest(self) -> None:
        if self.o1 is not None:
            self.o1.close()
        self.node.stop()

    def __enter__(self) -> FakeNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
