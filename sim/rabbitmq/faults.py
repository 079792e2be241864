"""The scenario's fault schedule, applied to the real run.

What the adapter can do to a real broker and its clients:

``crash`` of the broker node,  a clean broker restart through a :class:`BrokerControl` such
with ``clean = true``          as :class:`~sim.rabbitmq.node.LocalBrokerNode` (``stop_app`` at
                               the fault's start, ``start_app`` once it ends); the
                               real broker is down at least as long as in the scenario, and
                               longer when starting takes longer (the run's end moves by
                               the difference). Non-durable queues are re-declared once it
                               is back, as the simulation assumes.
``crash`` of a client node     the process dies: its socket closes at once, its in-memory
                               state is lost; it restarts (new connection) at the fault's end.
``partition`` / ``isolate``    every client node cut off from the broker loses its
                               connection at the start (an abrupt close: a connection
                               drop) and cannot reconnect until the end.

Anything else (message loss, duplication, latency spikes, clock skew, random
faults) needs control over the network and raises :class:`UnsupportedScenario`;
so does a hard kill of the broker (``crash`` without ``clean = true``): the
adapter cannot kill a broker the way the model does (:mod:`sim.rabbitmq.node`
says why), and performing a clean restart instead would compare a different
fault.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..faultspec import Crash, Isolate, Partition
from ..messaging.protocol import messaging_config
from ..scenario import Scenario
from .errors import UnsupportedScenario

__all__ = ["BrokerControl", "FaultPlan", "BrokerRestarter"]


class BrokerControl(Protocol):
    """Something that can take down and bring back the broker the run talks to."""

    def broker_down(self) -> None: ...

    def broker_up(self) -> None: ...


@dataclass
class FaultPlan:
    """Faults of a scenario in the adapter's terms (times in ms from the run's time 0)."""

    broker_restarts: list[tuple[float, float]] = field(default_factory=list)
    crashes: list[tuple[str, float, float]] = field(default_factory=list)
    cuts: list[tuple[str, float, float]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_scenario(cls, scenario: Scenario, *, broker_control: bool) -> FaultPlan:
        cfg = messaging_config(scenario)
        broker = cfg.broker
        clients = [n for n in scenario.nodes if n != broker]
        plan = cls()
        if scenario.faults.random is not None:
            raise UnsupportedScenario("faults.random", "random faults are not supported by the RabbitMQ adapter; "
                                      "list the faults in faults.schedule")
        for i, f in enumerate(scenario.faults.schedule):
            path = f"faults.schedule[{i}]"
            if isinstance(f, Crash):
                if f.node == broker:
                    if not broker_control:
                        raise UnsupportedScenario(f"{path}.node", "a broker restart needs a broker the adapter "
                                                  "controls: capsim validate --local-node, or "
                                                  "run_rabbitmq(..., broker=LocalBrokerNode())")
                    if not f.clean:
                        raise UnsupportedScenario(f"{path}.clean", "the adapter restarts a real broker cleanly "
                                                  "(stop_app/start_app) and cannot kill it as the model's hard "
                                                  "kill does; set clean = true for a clean broker restart")
                    if not math.isfinite(f.end):
                        raise UnsupportedScenario(f"{path}.end", "a broker crash must end (the run needs it back)")
                    plan.broker_restarts.append((f.start, f.end))
                    plan.rows.append({"kind": "broker_restart", "start": f.start, "end": f.end, "detail": broker})
                else:
                    plan.crashes.append((f.node, f.start, f.end))
                    plan.rows.append({"kind": "crash", "start": f.start, "end": f.end, "detail": f.node})
            elif isinstance(f, Partition):
                if f.one_way:
                    raise UnsupportedScenario(f"{path}.one_way", "one-way partitions are not supported by the adapter")
                with_broker = next((set(g) for g in f.groups if broker in g), None)
                named = {n for g in f.groups for n in g}
                if with_broker is None:  # the broker is in the implicit group of unnamed nodes
                    with_broker = {n for n in scenario.nodes if n not in named}
                for n in clients:
                    if n not in with_broker:
                        plan.cuts.append((n, f.start, f.end))
                        plan.rows.append({"kind": "connection_drop", "start": f.start, "end": f.end, "detail": n})
            elif isinstance(f, Isolate):
                cut = clients if f.node == broker else [f.node]
                for n in cut:
                    plan.cuts.append((n, f.start, f.end))
                    plan.rows.append({"kind": "connection_drop", "start": f.start, "end": f.end, "detail": n})
            else:
                raise UnsupportedScenario(f"{path}.kind", f"fault kind {f.tag!r} needs control over the network; the "
                                          "adapter supports crash, partition and isolate")
        return plan

    @property
    def last_change(self) -> float:
        """When the last fault starts or (finitely) ends: after it, the faults change nothing more."""
        starts = [st for st, _e in self.broker_restarts] + [st for _n, st, _e in self.crashes + self.cuts]
        return max([self.last_end, *starts])

    @property
    def last_end(self) -> float:
        ends = [e for _s, e in self.broker_restarts] + [e for _n, _s, e in self.crashes + self.cuts]
        finite = [e for e in ends if math.isfinite(e)]
        return max(finite, default=0.0)


class BrokerRestarter:
    """Runs broker restarts in a worker thread (they block for seconds) and reports back to the loop.

    ``on_event(name)`` is called in the loop's thread with ``broker_down``,
    ``broker_up`` or ``broker_error: ...``; :attr:`overrun_ms` is how much longer
    the real broker stayed down than the scenario's faults said.
    """

    def __init__(self, control: BrokerControl, ioloop: Any, on_event: Any, redeclare: Any) -> None:
        self.control = control
        self.ioloop = ioloop
        self.on_event = on_event
        self.redeclare = redeclare
        self.busy = False
        self.overrun_ms = 0.0
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def restart(self, down_ms: float) -> None:
        self.busy = True
        self._thread = threading.Thread(target=self._work, args=(down_ms,), name="capsim-broker-restart", daemon=True)
        self._thread.start()

    def _work(self, down_ms: float) -> None:
        t0 = time.monotonic()
        try:
            self.control.broker_down()
            self._tell("broker_down")
            rest = down_ms / 1000.0 - (time.monotonic() - t0)
            if rest > 0:
                time.sleep(rest)
            self.control.broker_up()
            self.redeclare()
            self.overrun_ms += max(0.0, (time.monotonic() - t0) * 1000.0 - down_ms)
            self._tell("broker_up")
        except BaseException as exc:
            self.error = exc
            self._tell(f"broker_error: {exc}")
        finally:
            self.busy = False

    def _tell(self, event: str) -> None:
        self.ioloop.add_callback_threadsafe(lambda: self.on_event(event))

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)
