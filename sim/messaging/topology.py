"""The broker topology as data: exchanges, queues with their x-arguments, bindings.

One :class:`Topology` describes what a messaging scenario declares. The
simulated broker (:mod:`sim.messaging.broker`) builds its state from it, and the
real-RabbitMQ adapter declares exactly the same entities from it:
:meth:`QueueSpec.arguments` gives the AMQP 0-9-1 ``x-arguments`` table of a
``queue.declare``. In TOML (under ``[protocol.topology]``)::

    [[protocol.topology.exchanges]]
    name = "orders"
    type = "topic"                      # direct | topic | fanout

    [[protocol.topology.queues]]
    name = "orders.work"
    type = "quorum"                     # classic | quorum
    dead_letter_exchange = "orders.dlx"
    delivery_limit = 3

    [[protocol.topology.bindings]]
    exchange = "orders"
    queue = "orders.work"
    routing_key = "order.*"

The default exchange ``""`` exists implicitly (it routes a message to the queue
named by its routing key), as in RabbitMQ. Only what RabbitMQ 3.10 accepts is
accepted: quorum queues are durable, have no ``max_priority`` and no
``reject-publish-dlx`` overflow; ``delivery_limit`` is a quorum-queue argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..config import Duration, at_least, fld, nonneg
from ..errors import ScenarioError

__all__ = ["ExchangeSpec", "QueueSpec", "BindingSpec", "Topology", "DEFAULT_EXCHANGE"]

DEFAULT_EXCHANGE = ""


def _check_name(name: str, path: str, what: str) -> None:
    if not name:
        raise ScenarioError(path, f"{what} name must not be empty")
    if name.startswith("amq."):
        raise ScenarioError(path, f"{what} names starting with 'amq.' are reserved by the broker, got {name!r}")
    if len(name.encode()) > 255:
        raise ScenarioError(path, f"{what} name must be at most 255 bytes, got {len(name.encode())}")


@dataclass(frozen=True, kw_only=True)
class ExchangeSpec:
    """An exchange: ``direct`` (binding key == routing key), ``topic`` (``*``/``#`` patterns), ``fanout``."""

    name: str = fld()
    type: Literal["direct", "topic", "fanout"] = fld("direct")
    durable: bool = fld(True)

    def _validate(self, path: str) -> None:
        _check_name(self.name, f"{path}.name", "exchange")


@dataclass(frozen=True, kw_only=True)
class QueueSpec:
    """A queue and its optional arguments (``None``: the argument is not set).

    ``message_ttl`` (x-message-ttl), ``max_length`` (x-max-length, counts ready
    messages only) with ``overflow`` (x-overflow), ``dead_letter_exchange`` /
    ``dead_letter_routing_key`` (x-dead-letter-*), ``delivery_limit``
    (x-delivery-limit, quorum only), ``max_priority`` (x-max-priority, classic only).
    """

    name: str = fld()
    type: Literal["classic", "quorum"] = fld("classic")
    durable: bool = fld(True)
    message_ttl: Duration | None = fld(None, check=nonneg)
    max_length: int | None = fld(None, check=at_least(0))
    overflow: Literal["drop-head", "reject-publish", "reject-publish-dlx"] = fld("drop-head")
    dead_letter_exchange: str | None = fld(None)
    dead_letter_routing_key: str | None = fld(None)
    delivery_limit: int | None = fld(None, check=at_least(0))
    max_priority: int | None = fld(None, check=at_least(1))

    def _validate(self, path: str) -> None:
        _check_name(self.name, f"{path}.name", "queue")
        if self.type == "quorum":
            if not self.durable:
                raise ScenarioError(f"{path}.durable", "quorum queues are always durable; set durable = true")
            if self.max_priority is not None:
                raise ScenarioError(f"{path}.max_priority", "quorum queues do not support priorities in RabbitMQ 3.10")
            if self.overflow == "reject-publish-dlx":
                raise ScenarioError(f"{path}.overflow", "quorum queues accept 'drop-head' or 'reject-publish' only")
        elif self.delivery_limit is not None:
            raise ScenarioError(f"{path}.delivery_limit",
                                "x-delivery-limit is a quorum-queue argument; set type = 'quorum'")
        if self.max_priority is not None and self.max_priority > 255:
            raise ScenarioError(f"{path}.max_priority", f"must be in [1, 255], got {self.max_priority}")
        if self.dead_letter_routing_key is not None and self.dead_letter_exchange is None:
            raise ScenarioError(f"{path}.dead_letter_routing_key", "needs dead_letter_exchange")

    @property
    def is_quorum(self) -> bool:
        return self.type == "quorum"

    def arguments(self) -> dict[str, Any]:
        """The ``x-arguments`` of this queue's ``queue.declare`` (TTL in integer ms)."""
        args: dict[str, Any] = {"x-queue-type": self.type}
        if self.message_ttl is not None:
            args["x-message-ttl"] = int(round(self.message_ttl))
        if self.max_length is not None:
            args["x-max-length"] = self.max_length
            args["x-overflow"] = self.overflow
        if self.dead_letter_exchange is not None:
            args["x-dead-letter-exchange"] = self.dead_letter_exchange
        if self.dead_letter_routing_key is not None:
            args["x-dead-letter-routing-key"] = self.dead_letter_routing_key
        if self.delivery_limit is not None:
            args["x-delivery-limit"] = self.delivery_limit
        if self.max_priority is not None:
            args["x-max-priority"] = self.max_priority
        return args


@dataclass(frozen=True, kw_only=True)
class BindingSpec:
    """Route messages from ``exchange`` to ``queue`` when ``routing_key`` matches (ignored by fanout)."""

    exchange: str = fld()
    queue: str = fld()
    routing_key: str = fld("")


@dataclass(frozen=True, kw_only=True)
class Topology:
    """Exchanges, queues and bindings, in declaration order (which is also routing order)."""

    exchanges: tuple[ExchangeSpec, ...] = fld(())
    queues: tuple[QueueSpec, ...] = fld(())
    bindings: tuple[BindingSpec, ...] = fld(())

    def _validate(self, path: str) -> None:
        seen: dict[str, int] = {}
        for i, ex in enumerate(self.exchanges):
            if ex.name in seen:
                raise ScenarioError(f"{path}.exchanges[{i}].name", f"duplicate exchange {ex.name!r}")
            seen[ex.name] = i
        qseen: dict[str, int] = {}
        for i, q in enumerate(self.queues):
            if q.name in qseen:
                raise ScenarioError(f"{path}.queues[{i}].name", f"duplicate queue {q.name!r}")
            qseen[q.name] = i
            dlx = q.dead_letter_exchange
            if dlx is not None and dlx != DEFAULT_EXCHANGE and dlx not in seen:
                raise ScenarioError(f"{path}.queues[{i}].dead_letter_exchange",
                                    f"unknown exchange {dlx!r}; exchanges are {self._names(self.exchanges)}")
        for i, b in enumerate(self.bindings):
            if b.exchange == DEFAULT_EXCHANGE:
                raise ScenarioError(f"{path}.bindings[{i}].exchange", "the default exchange cannot be bound explicitly")
            if b.exchange not in seen:
                raise ScenarioError(f"{path}.bindings[{i}].exchange",
                                    f"unknown exchange {b.exchange!r}; exchanges are {self._names(self.exchanges)}")
            if b.queue not in qseen:
                raise ScenarioError(f"{path}.bindings[{i}].queue",
                                    f"unknown queue {b.queue!r}; queues are {self._names(self.queues)}")

    @staticmethod
    def _names(items: tuple[Any, ...]) -> str:
        return ", ".join(repr(x.name) for x in items) or "(none)"

    # -- lookups ------------------------------------------------------------------
    def has_exchange(self, name: str) -> bool:
        return name == DEFAULT_EXCHANGE or any(ex.name == name for ex in self.exchanges)

    def exchange(self, name: str) -> ExchangeSpec:
        for ex in self.exchanges:
            if ex.name == name:
                return ex
        raise KeyError(name)

    def queue(self, name: str) -> QueueSpec:
        for q in self.queues:
            if q.name == name:
                return q
        raise KeyError(name)

    def queue_names(self) -> list[str]:
        return [q.name for q in self.queues]

    def bindings_of(self, exchange: str) -> list[BindingSpec]:
        return [b for b in self.bindings if b.exchange == exchange]
