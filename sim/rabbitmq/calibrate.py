"""Calibrating the simulated network from a short ping run on the real broker.

:func:`calibrate` runs a tiny scenario through the adapter itself (one
publisher at a low, periodic rate; one consumer with zero processing time and
prefetch 1; a classic queue) and measures, per message, the time from
``publish`` to the consumer's ``receive``. In the simulation that path is two
network hops (publisher -> broker -> consumer), so the calibrated per-hop
latency is *half* of each measured time, resampled (an ``empirical``
distribution). It includes the broker's routing work and the adapter's own
overhead, which is what the simulated latency stands for. The first
``warmup`` pings (5 by default) are left out: the first messages through a new
queue and connection are several times slower than the rest, and one such
outlier among a hundred samples would give every simulated hop a 1% chance of
it. The same run also
measures the confirm round trip and the consumer's per-message overhead
(``receive`` to ``ack`` with nothing to process), which the simulation does
not model and the report states.

It also opens ten connections one after the other and times what a consumer
that restarts waits before its first delivery: TCP, the AMQP handshake, a
channel, ``basic.qos`` and ``basic.consume`` (8-10 ms on a loaded machine,
7 round trips). The simulation opens a connection and starts consuming in
four hops, so :meth:`Calibration.apply` lengthens each consumer's
``restart_after`` and the scenario's ``reconnect_delay`` by the difference of
the medians: without it a consumer that crashes is back consuming several
milliseconds early, and at the consumer-crash example's load that halved the
simulated median latency.

:meth:`Calibration.pooled` merges several ping runs: a validation interleaves
them with its broker runs (:mod:`sim.rabbitmq.validate`), so that the
simulated latency stands for the whole time the broker was measured, not for
the moment of one ping run (on a loaded machine one ping run's median hop
ranged from 0.35 to 2.1 ms).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..config import build
from ..dists import Empirical
from ..messaging.protocol import messaging_config
from ..messaging.topology import Topology
from ..scenario import Scenario
from .amqp import close_quietly, connect_blocking
from .lease import Lease
from .runner import run_rabbitmq
from .settings import AmqpSettings
from .topology import declared_topology

__all__ = ["Calibration", "calibrate", "ping_scenario", "connection_setups", "SIMULATED_SETUP_HOPS"]

SIMULATED_SETUP_HOPS = 4  # connection.open, open-ok, basic.consume, the first delivery


def _stats(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"count": 0.0, "p50": math.nan, "p95": math.nan, "p99": math.nan, "mean": math.nan}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"count": float(len(values)), "p50": float(p50), "p95": float(p95), "p99": float(p99),
            "mean": float(values.mean())}


@dataclass(frozen=True)
class Calibration:
    """Measured latencies of a ping run and the per-hop latency they give the simulation (ms)."""

    hop_samples: tuple[float, ...]
    publish_to_receive: dict[str, float]
    publish_to_confirm: dict[str, float]
    consumer_overhead: dict[str, float]
    messages: int
    rate: float
    queue_type: str = "classic"
    warmup: int = 0
    broker: dict[str, Any] = field(default_factory=dict)
    confirm_samples: tuple[float, ...] = field(default=(), repr=False)
    overhead_samples: tuple[float, ...] = field(default=(), repr=False)
    setup_samples: tuple[float, ...] = field(default=(), repr=False)
    runs: int = 1
    stalled: int = 0  # pings left out of hop_samples: inside a stall of the broker or the machine (stall_mask)

    @classmethod
    def pooled(cls, calibrations: Sequence[Calibration]) -> Calibration:
        """Several ping runs as one: every sample of each, the statistics recomputed over all of them."""
        if not calibrations:
            raise ValueError("pooled needs at least one calibration")
        hops = tuple(h for c in calibrations for h in c.hop_samples)
        confirms = np.array([x for c in calibrations for x in c.confirm_samples])
        overheads = np.array([x for c in calibrations for x in c.overhead_samples])
        setups = tuple(x for c in calibrations for x in c.setup_samples)
        return replace(calibrations[0], hop_samples=hops, publish_to_receive=_stats(2.0 * np.asarray(hops)),
                       publish_to_confirm=_stats(confirms), consumer_overhead=_stats(overheads),
                       confirm_samples=tuple(confirms), overhead_samples=tuple(overheads), setup_samples=setups,
                       messages=sum(c.messages for c in calibrations), runs=sum(c.runs for c in calibrations),
                       stalled=sum(c.stalled for c in calibrations))

    def latency_dist(self) -> Empirical:
        """The simulated per-hop latency: the measured half round trips, resampled."""
        return Empirical(self.hop_samples)

    def apply(self, scenario: Scenario, *, spread: bool = True) -> Scenario:
        """``scenario`` with ``network.latency`` set to the calibrated distribution, or (``spread=False``) to its
        median as a constant; consumers restart and clients reconnect :attr:`setup_extra_ms` later.

        The constant is for comparing semantics. One AMQP connection is a TCP stream, which never reorders
        messages; the AMQP frames travel on the simulated network's connections by default, which keep them in
        order too, but a frame's arrival time still depends on the draw, so which message a broker restart
        catches in flight would then depend on the calibration's draw. (Sent as datagrams, with
        ``network.transport.mode = "datagram"``, a spread wider than the gap between two publications, 1 ms
        at 1000 messages/s, would even deliver them out of order.)
        """
        latency = ({"dist": "empirical", "samples": list(self.hop_samples)} if spread
                   else {"dist": "constant", "value": self.hop["p50"]})
        changes: dict[str, Any] = {"network.latency": latency}
        extra = self.setup_extra_ms
        if extra > 0:
            cfg = messaging_config(scenario)
            changes["protocol.reconnect_delay"] = cfg.reconnect_delay + extra
            for i, c in enumerate(cfg.consumers):
                changes[f"protocol.consumers[{i}].restart_after"] = c.restart_after + extra
        return scenario.variant(changes)

    @property
    def connection_setup(self) -> dict[str, float]:
        """Statistics of the measured connection set-ups (ms)."""
        return _stats(np.asarray(self.setup_samples))

    @property
    def setup_extra_ms(self) -> float:
        """How much longer a real consumer takes to consume again than the simulated one's four hops (median, ms)."""
        if not self.setup_samples:
            return 0.0
        return max(0.0, self.connection_setup["p50"] - SIMULATED_SETUP_HOPS * self.hop["p50"])

    @property
    def hop(self) -> dict[str, float]:
        return _stats(np.asarray(self.hop_samples))

    def describe(self) -> str:
        """One paragraph stating how the simulation was calibrated."""
        h, r, c, o = self.hop, self.publish_to_receive, self.publish_to_confirm, self.consumer_overhead
        version = self.broker.get("version", "?")
        runs = f" in {self.runs} ping runs" if self.runs > 1 else ""
        return (f"Calibration: {self.messages} pings{runs} (after {self.warmup} warm-up pings each) at {self.rate:g}/s "
                f"through a {self.queue_type} queue on RabbitMQ {version}; "
                f"publish->receive p50 {r['p50']:.3f} ms, p95 {r['p95']:.3f} ms. The simulated network latency per "
                f"hop is half of each measured time, resampled (empirical; p50 {h['p50']:.3f} ms, p95 "
                f"{h['p95']:.3f} ms); the simulation whose semantics are compared uses the median as a constant, since "
                "a TCP connection does not reorder messages. Measured but not simulated: confirm round trip p50 "
                f"{c['p50']:.3f} ms; the "
                f"consumer's own overhead per message (receive->ack, nothing to process) p50 {o['p50']:.3f} ms, "
                "which adds to every real processing time." + self._describe_stalls() + self._describe_setup())

    def _describe_stalls(self) -> str:
        if not self.stalled:
            return ""
        return (f" {self.stalled} pings inside stalls ({STALL_RUN} or more in a row, each over {STALL_FACTOR:g} x the "
                f"median and {STALL_FLOOR_MS:g} ms) are left out of the hop latency: a stall holds up a stretch of "
                "one run, and resampled per hop it would slow every message.")

    def _describe_setup(self) -> str:
        if not self.setup_samples:
            return ""
        s = self.connection_setup
        return (f" A new consuming connection (TCP, handshake, channel, qos, consume) took p50 {s['p50']:.3f} ms "
                f"({len(self.setup_samples)} measured) where the simulation takes {SIMULATED_SETUP_HOPS} hops: "
                f"consumers restart and clients reconnect {self.setup_extra_ms:.3f} ms later in the simulation.")

    def to_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "runs": self.runs, "warmup": self.warmup, "rate": self.rate,
                "queue_type": self.queue_type,
                "hop": self.hop,
                "publish_to_receive": self.publish_to_receive, "publish_to_confirm": self.publish_to_confirm,
                "consumer_overhead": self.consumer_overhead, "connection_setup": self.connection_setup,
                "setup_extra_ms": self.setup_extra_ms, "broker": self.broker,
                "stalled": self.stalled, "hop_samples": list(self.hop_samples)}


def ping_scenario(messages: int = 100, rate: float = 200.0, queue_type: str = "classic") -> Scenario:
    """The calibration run: one publisher, one consumer, one queue of ``queue_type``, nothing to process."""
    return Scenario.from_dict({
        "name": "calibration",
        "cluster": {"nodes": ["broker", "ping", "pong"]},
        "workload": {"clients": 0},
        "protocol": {
            "name": "messaging",
            "topology": {"queues": [{"name": "ping", "type": queue_type}]},
            "publishers": [{"node": "ping", "exchange": "", "routing_keys": ["ping"], "rate": rate,
                            "arrivals": "periodic", "count": messages}],
            "consumers": [{"node": "pong", "queue": "ping", "prefetch": 1, "processing_time": 0}],
        },
        "run": {"duration": messages / rate * 1000.0 + 1000.0, "seed": 1},
    })


def connection_setups(settings: AmqpSettings, count: int = 10, queue_type: str = "classic") -> np.ndarray:
    """Times (ms) to open a connection and a channel, set the prefetch and start consuming, one after the other.

    The queue is the run's own (declared, leased and deleted like any run's); the first set-up, which also
    warms up the client library, is left out.
    """
    topo = build(Topology, {"queues": [{"name": "setup", "type": queue_type}]}, "setup")
    times = []
    with declared_topology(settings, topo, label="calibration-setup", lease=Lease(lifetime_ms=60_000.0)) as names:
        for _ in range(count + 1):
            t0 = time.perf_counter()
            conn = connect_blocking(settings)
            try:
                channel = conn.channel()
                channel.basic_qos(prefetch_count=1)
                channel.basic_consume(names.real("setup"), lambda *_args: None)
                times.append((time.perf_counter() - t0) * 1000.0)
            finally:
                close_quietly(conn)
    return np.asarray(times[1:])


#: a stall: at least STALL_RUN consecutive pings, each slower than STALL_FACTOR x the median and STALL_FLOOR_MS
STALL_RUN, STALL_FACTOR, STALL_FLOOR_MS = 3, 10.0, 5.0


def stall_mask(times: np.ndarray) -> np.ndarray:
    """True for the pings (in publish order) inside a stall of the broker or the machine.

    A stall holds up every ping of a stretch at once (seen on a loaded machine: 15 pings in a row at 44-57 ms
    where the rest took 0.4-3 ms); a single slow ping is ordinary spread and stays, and so does a machine that
    is slow throughout (the median moves with it).
    """
    times = np.asarray(times, dtype=float)
    if len(times) == 0:
        return np.zeros(0, dtype=bool)
    slow = times > max(STALL_FLOOR_MS, STALL_FACTOR * float(np.median(times)))
    mask = np.zeros(len(times), dtype=bool)
    i = 0
    while i < len(times):
        if slow[i]:
            j = i
            while j < len(times) and slow[j]:
                j += 1
            if j - i >= STALL_RUN:
                mask[i:j] = True
            i = j
        else:
            i += 1
    return mask


def calibrate(settings: AmqpSettings | None = None, *, url: str | None = None, messages: int = 100,
              rate: float = 200.0, queue_type: str = "classic", warmup: int = 5, setups: int = 10) -> Calibration:
    """Run the ping scenario on the broker and time ``setups`` connection set-ups (see the module docstring)."""
    if not 0 <= warmup < messages:
        raise ValueError(f"warmup must be in [0, messages), got {warmup}")
    settings = settings or AmqpSettings.resolve(url)
    result = run_rabbitmq(ping_scenario(messages + warmup, rate, queue_type), settings=settings)
    ev = result.tables["message_events"]
    ev = ev[~ev["msg_id"].isin([f"ping-{i}" for i in range(warmup)])]
    first = ev.groupby(["event", "msg_id"], sort=False)["time"].min()

    def span(a: str, b: str) -> np.ndarray:
        both = first[a].to_frame("a").join(first[b].to_frame("b"), how="inner")
        return (both["b"] - both["a"]).to_numpy(dtype=float)

    to_receive, to_confirm, overhead = span("publish", "receive"), span("publish", "confirm"), span("receive", "ack")
    stalled = stall_mask(to_receive)
    return Calibration(
        hop_samples=tuple(float(x) for x in np.round(to_receive[~stalled] / 2.0, 4)),
        stalled=int(stalled.sum()),
        publish_to_receive=_stats(to_receive),
        publish_to_confirm=_stats(to_confirm),
        consumer_overhead=_stats(overhead),
        messages=messages,
        rate=rate,
        queue_type=queue_type,
        warmup=warmup,
        broker={k: v for k, v in result.meta["broker"].items() if k in ("product", "version", "url")},
        confirm_samples=tuple(float(x) for x in to_confirm),
        overhead_samples=tuple(float(x) for x in overhead),
        setup_samples=tuple(float(x) for x in np.round(connection_setups(settings, setups, queue_type), 4))
        if setups > 0 else (),
    )
