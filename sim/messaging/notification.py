"""Best-effort notification: the provider notifies the initiator on a bounded schedule, then gives up.

Roles: one **provider** (e.g. a payment service) and **merchants** (initiators).
A merchant creates orders at its arrival rate, each stored durably, and sends
the provider a ``PayRequest`` (resent every ``request_timeout`` until the
provider answers ``PayAccepted``; the provider deduplicates by transaction
id). The provider fixes the result (success with probability
``success_probability``, seeded per transaction) and makes it durable;
``processing_time`` later the result is *ready* and the provider starts
notifying: attempt ``k`` goes ``schedule[k]`` ms after attempt ``k - 1`` (the
first ``schedule[0]`` after the result is ready). It stops at the first
``NotifyAck`` or after the last attempt. The merchant acknowledges every
notification it receives, even a repeat. The notification state is durable: a
provider that crashes resumes its schedule when it recovers (attempts that fell
due meanwhile go out at once).

Reconciliation (``reconcile = true``): every ``reconcile_interval`` the merchant
queries the provider about each order that has waited ``reconcile_delay`` or
more without a result; the provider answers with the result once it is ready.

The network may lose and duplicate any of these messages (``[network]``,
``[faults]``); merchants and the provider may crash. :func:`notification_oracle`
gives the closed form for the never-notified fraction and the duplicates under
independent loss, and :mod:`sim.checkers.notification` classifies each result
(in time, late, reconciled, never known). A scenario::

    [cluster]
    nodes = ["pay", "shop1", "shop2"]

    [workload]
    clients = 0

    [network]
    loss = 0.2
    duplicate = 0.05

    [run]
    duration = "3min"

    [protocol]
    name = "notification"
    provider = "pay"
    processing_time = { dist = "exponential", mean = "200ms" }
    schedule = [0, "1s", "2s", "10s", "1min"]
    deadline = "5s"

    [[protocol.merchants]]
    node = "shop1"
    arrivals = { rate = 5, stop = "60s" }
    reconcile_delay = "30s"
    reconcile_interval = "10s"

    [[protocol.merchants]]
    node = "shop2"
    arrivals = { rate = 5, stop = "60s" }
    reconcile = false
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from ..checkers.notification import NotificationReport, check_notifications
from ..config import Duration, fld, nonneg, positive, prob
from ..dists import Constant, Dist, buffered_sampler
from ..errors import ScenarioError
from ..kernel.node import Host, Node
from ..kernel.world import World
from ..protocol import ProtocolConfig, register_protocol
from ..report import line, pairs, verdict_line
from ..workload.arrivals import Arrivals, ArrivalSpec
from .patterns import check_roles, percentiles
from .retry import decision_uniform

if TYPE_CHECKING:
    from ..result import Result

__all__ = ["NotificationConfig", "MerchantSpec", "ProviderNode", "MerchantNode", "PayRequest", "PayAccepted",
           "Notify", "NotifyAck", "Query", "QueryReply", "NotificationState", "notification_oracle",
           "DEFAULT_SCHEDULE"]

DEFAULT_SCHEDULE = (0.0, 1000.0, 2000.0, 10_000.0, 60_000.0, 600_000.0)


# -- messages --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PayRequest:
    txn: str


@dataclass(frozen=True, slots=True)
class PayAccepted:
    txn: str


@dataclass(frozen=True, slots=True)
class Notify:
    """Provider -> merchant: the result of ``txn`` (``attempt`` 1 = the first notification)."""

    txn: str
    success: bool
    attempt: int


@dataclass(frozen=True, slots=True)
class NotifyAck:
    txn: str


@dataclass(frozen=True, slots=True)
class Query:
    txn: str


@dataclass(frozen=True, slots=True)
class QueryReply:
    """``known`` False: no result yet (or no such transaction)."""

    txn: str
    known: bool
    success: bool


# -- config ------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class MerchantSpec:
    """An initiator on ``node`` creating orders at ``arrivals``; reconciles when ``reconcile``."""

    node: str = fld()
    arrivals: ArrivalSpec = fld(ArrivalSpec())
    request_timeout: Duration = fld(500.0, check=positive)
    reconcile: bool = fld(True)
    reconcile_delay: Duration = fld(30_000.0, check=nonneg)
    reconcile_interval: Duration = fld(10_000.0, check=positive, every="node")


@register_protocol
@dataclass(frozen=True, kw_only=True)
class NotificationConfig(ProtocolConfig["NotificationState"]):
    """A provider notifying merchants of results (see the module docstring)."""

    tag: ClassVar[str] = "notification"
    provider: str = fld("provider")
    merchants: tuple[MerchantSpec, ...] = fld()
    processing_time: Dist = fld(Constant(100.0))
    success_probability: float = fld(0.9, check=prob)
    schedule: tuple[Duration, ...] = fld(DEFAULT_SCHEDULE)
    deadline: Duration = fld(5000.0, check=nonneg)

    def _validate(self, path: str) -> None:
        if not self.merchants:
            raise ScenarioError(f"{path}.merchants", "must list at least one merchant")
        if not self.schedule:
            raise ScenarioError(f"{path}.schedule", "must list at least one attempt delay (0 = at once)")
        for i, d in enumerate(self.schedule):
            if d < 0:
                raise ScenarioError(f"{path}.schedule[{i}]", f"must be >= 0, got {d}")

    def node_refs(self) -> list[tuple[str, str]]:
        return [("provider", self.provider)] + [(f"merchants[{i}].node", m.node) for i, m in enumerate(self.merchants)]

    def check_scenario(self, scenario: Any, path: str) -> None:
        check_roles(scenario, self.node_refs(), path, "notification")

    def new_state(self, world: Host) -> NotificationState:
        return NotificationState(world)

    def build_nodes(self, world: Host, state: NotificationState) -> dict[str, Node]:
        nodes: dict[str, Node] = {self.provider: ProviderNode(world, self.provider, self, state)}
        for m in self.merchants:
            nodes[m.node] = MerchantNode(world, m.node, self, m, state)
        return nodes

    def finish(self, world: World, state: NotificationState) -> None:
        state.report = notification_report(world, self)

    def summary(self, world: World, state: NotificationState) -> dict[str, Any]:
        assert state.report is not None
        return _summary(state.report)

    def tables(self, world: World, state: NotificationState) -> dict[str, pd.DataFrame]:
        assert state.report is not None
        return {"notifications": state.report.transactions, **world.events.frames()}

    def verdicts(self, world: World, state: NotificationState) -> dict[str, Any]:
        return {"notification": state.report}

    def report(self, result: Result) -> list[str]:
        s = result.summary
        return [
            line("results", pairs((k.replace("_", " "), s[f"notify.{k}"]) for k in (
                "results", "notified_in_time", "notified_late", "reconciled", "never_known", "mismatched"))),
            line("  notifications", pairs((k.replace("_", " "), s[f"notify.{k}"]) for k in (
                "attempts", "notifications_received", "duplicates", "gave_up"))),
            line("  delay", "ready to known, ms: " + pairs((k, s[f"notify.delay.{k}"]) for k in ("p50", "p99"))),
            verdict_line("notification", result.verdicts.get("notification"),
                         "every initiator learned its result, none wrongly"),
        ]


class NotificationState:
    """The observer's record of one run: events for timelines, and the report at the end.

    Events (channel ``notification_events``): ``order`` (merchant), ``accept``, ``ready``,
    ``notify`` (an attempt sent), ``acked`` (provider); ``notified`` (a notification
    received), ``query``, ``learned_by_notify`` / ``learned_by_reconcile`` (merchant).
    """

    EVENT_COLUMNS = ("time", "txn", "node", "event", "attempt")

    def __init__(self, world: Host) -> None:
        self.events = world.events.channel("notification_events", self.EVENT_COLUMNS)
        self.report: NotificationReport | None = None

    def event(self, t: float, txn: str, node: str, event: str, attempt: int = 0) -> None:
        self.events.record(t, txn, node, event, attempt)


# -- nodes ---------------------------------------------------------------------------------
class _Result:
    __slots__ = ("merchant", "success", "ready")

    def __init__(self, merchant: str, success: bool, ready: float) -> None:
        self.merchant = merchant
        self.success = success
        self.ready = ready


class _Notice:
    """The provider's durable notification task of one transaction."""

    __slots__ = ("attempts", "next_at", "acked", "gave_up")

    def __init__(self, next_at: float) -> None:
        self.attempts = 0
        self.next_at = next_at
        self.acked = False
        self.gave_up = False


class ProviderNode(Node):
    """Accepts payments, produces their results and notifies merchants on the schedule."""

    def __init__(self, world: Host, name: str, cfg: NotificationConfig, runtime: NotificationState) -> None:
        super().__init__(world, name)
        self.cfg = cfg
        self.runtime = runtime
        self.seed = world.seed
        self._work = buffered_sampler(cfg.processing_time, world.streams[f"notification/{name}"])

    def boot(self) -> None:
        self.results: dict[str, _Result] = self.disk.setdefault("results", {})
        self.notices: dict[str, _Notice] = self.disk.setdefault("notices", {})
        for txn, res in self.results.items():
            notice = self.notices.get(txn)
            if notice is None:
                self.set_timer(max(res.ready - self.now, 0.0), self._ready, txn)
            elif not (notice.acked or notice.gave_up):
                self.set_timer(max(notice.next_at - self.now, 0.0), self._attempt, txn)

    def handle_PayRequest(self, msg: PayRequest, src: str) -> None:
        if msg.txn not in self.results:
            success = decision_uniform(self.seed, "payment", msg.txn, 0) < self.cfg.success_probability
            res = _Result(src, success, self.now + float(self._work()))
            self.results[msg.txn] = res
            self.runtime.event(self.now, msg.txn, self.name, "accept")
            self.set_timer(res.ready - self.now, self._ready, msg.txn)
        self.send(src, PayAccepted(msg.txn))

    def _ready(self, txn: str) -> None:
        if txn not in self.notices:
            self.runtime.event(self.now, txn, self.name, "ready")
            self.notices[txn] = _Notice(self.now + self.cfg.schedule[0])
            self.set_timer(self.cfg.schedule[0], self._attempt, txn)

    def _attempt(self, txn: str) -> None:
        notice = self.notices[txn]
        if notice.acked or notice.gave_up:
            return
        notice.attempts += 1
        res = self.results[txn]
        self.send(res.merchant, Notify(txn, res.success, notice.attempts))
        self.runtime.event(self.now, txn, self.name, "notify", notice.attempts)
        if notice.attempts < len(self.cfg.schedule):
            delay = self.cfg.schedule[notice.attempts]
            notice.next_at = self.now + delay
            self.set_timer(delay, self._attempt, txn)
        else:
            notice.gave_up = True

    def handle_NotifyAck(self, msg: NotifyAck, src: str) -> None:
        notice = self.notices.get(msg.txn)
        if notice is not None and not notice.acked:
            notice.acked = True
            self.runtime.event(self.now, msg.txn, self.name, "acked", notice.attempts)

    def handle_Query(self, msg: Query, src: str) -> None:
        res = self.results.get(msg.txn)
        known = res is not None and msg.txn in self.notices  # the result is ready
        self.send(src, QueryReply(msg.txn, known, res.success if res is not None and known else False))


class _Order:
    """A merchant's durable order: what it knows of the result, and how it learned it."""

    __slots__ = ("created", "accepted", "success", "learned", "source", "notifications", "first_notified")

    def __init__(self, created: float) -> None:
        self.created = created
        self.accepted = False
        self.success: bool | None = None
        self.learned = math.nan
        self.source = ""
        self.notifications = 0
        self.first_notified = math.nan


class MerchantNode(Node):
    """Creates orders, asks the provider to pay them, records results, reconciles."""

    def __init__(self, world: Host, name: str, cfg: NotificationConfig, spec: MerchantSpec,
                 runtime: NotificationState) -> None:
        super().__init__(world, name)
        self.cfg = cfg
        self.spec = spec
        self.runtime = runtime
        self.arrivals = Arrivals(spec.arrivals, world.streams[f"notification/{name}"], world.scenario.run.duration)

    def boot(self) -> None:
        self.orders: dict[str, _Order] = self.disk.setdefault("orders", {})
        self.arrivals.resume(self, self._create)
        for txn, order in self.orders.items():
            if not order.accepted:
                self._request(txn)
        if self.spec.reconcile:
            self.set_timer(self.spec.reconcile_interval, self._reconcile)

    def _create(self, i: int) -> None:
        txn = f"{self.name}-{i}"
        self.orders[txn] = _Order(self.now)
        self.runtime.event(self.now, txn, self.name, "order")
        self._request(txn)

    def _request(self, txn: str) -> None:
        self.send(self.cfg.provider, PayRequest(txn))
        self.set_timer(self.spec.request_timeout, self._request_timeout, txn)

    def _request_timeout(self, txn: str) -> None:
        if not self.orders[txn].accepted:
            self._request(txn)

    def handle_PayAccepted(self, msg: PayAccepted, src: str) -> None:
        self.orders[msg.txn].accepted = True

    def handle_Notify(self, msg: Notify, src: str) -> None:
        order = self.orders[msg.txn]
        order.notifications += 1
        if order.notifications == 1:
            order.first_notified = self.now
        self.runtime.event(self.now, msg.txn, self.name, "notified", msg.attempt)
        self._learn(msg.txn, order, msg.success, "notify")
        self.send(src, NotifyAck(msg.txn))

    def _reconcile(self) -> None:
        for txn, order in self.orders.items():
            if order.success is None and self.now - order.created >= self.spec.reconcile_delay:
                self.send(self.cfg.provider, Query(txn))
                self.runtime.event(self.now, txn, self.name, "query")
        self.set_timer(self.spec.reconcile_interval, self._reconcile)

    def handle_QueryReply(self, msg: QueryReply, src: str) -> None:
        if msg.known:
            self._learn(msg.txn, self.orders[msg.txn], msg.success, "reconcile")

    def _learn(self, txn: str, order: _Order, success: bool, source: str) -> None:
        if order.success is None:
            order.success = success
            order.learned = self.now
            order.source = source
            self.runtime.event(self.now, txn, self.name, "learned_by_" + source)


# -- results -------------------------------------------------------------------------------
def notification_oracle(loss: float, attempts: int, duplicate: float = 0.0) -> dict[str, float]:
    """Closed forms for one result, with every message lost independently with probability ``loss``
    and, when not lost, duplicated with probability ``duplicate``; the merchant always up, acks
    arriving before the next attempt, no reconciliation.

    * ``p_never_notified`` = loss ** attempts (every attempt lost);
    * ``mean_received``: notifications received. Attempt j happens if no earlier attempt was
      acknowledged; an attempt is acknowledged when it arrives (1 - loss) and one of the acks
      for its 1 or 2 copies arrives, so P(go on) = s = loss + (1 - loss)((1 - d) loss + d loss^2)
      and mean_received = (1 - loss)(1 + d) (1 + s + ... + s^(attempts - 1));
    * ``mean_duplicates`` = mean_received - P(notified at least once).
    """
    q, d, k = float(loss), float(duplicate), int(attempts)
    s = q + (1 - q) * ((1 - d) * q + d * q * q)
    mean_received = (1 - q) * (1 + d) * sum(s**j for j in range(k))
    p_never = q**k
    return {"p_never_notified": p_never, "mean_received": mean_received,
            "mean_duplicates": mean_received - (1 - p_never)}


def notification_report(world: World, cfg: NotificationConfig) -> NotificationReport:
    """Join the provider's and the merchants' durable records and classify them."""
    provider = world.nodes[cfg.provider]
    results = provider.disk.get("results", {})
    notices = provider.disk.get("notices", {})
    rows = []
    for spec in cfg.merchants:
        for txn, o in world.nodes[spec.node].disk.get("orders", {}).items():
            res = results.get(txn)
            notice = notices.get(txn)
            ready = res.ready if res is not None and notice is not None else math.nan
            rows.append((txn, spec.node, o.created, ready, res.success if res is not None else None, o.learned,
                         o.source, o.success, o.notifications, o.first_notified,
                         notice.attempts if notice is not None else 0, bool(notice is not None and notice.acked),
                         bool(notice is not None and notice.gave_up and not notice.acked)))
    table = pd.DataFrame(rows, columns=["txn", "merchant", "created", "ready", "success", "learned", "source",
                                        "known_success", "notifications", "first_notified", "attempts", "acked",
                                        "gave_up"])
    table = table.astype({"created": "float64", "ready": "float64", "learned": "float64", "notifications": "int64",
                          "first_notified": "float64", "attempts": "int64", "acked": "bool",
                          "gave_up": "bool"})
    table["delay"] = table["learned"] - table["ready"]
    return check_notifications(table, cfg.deadline)


def _summary(report: NotificationReport) -> dict[str, Any]:
    out: dict[str, Any] = {f"notify.{k}": v for k, v in report.counts.items()}
    t = report.transactions
    out["notify.attempts"] = int(t["attempts"].sum())
    out["notify.gave_up"] = int(t["gave_up"].sum())
    out.update(percentiles(t["delay"], "notify.delay"))
    return out
