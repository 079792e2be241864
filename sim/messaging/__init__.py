"""The message-broker model and the messaging patterns built on it.

* :mod:`~sim.messaging.topology`: exchanges, queues (x-arguments), bindings as data;
* :mod:`~sim.messaging.broker`: the pure broker state machine (RabbitMQ 3.10 semantics);
* :mod:`~sim.messaging.protocol`: the ``messaging`` protocol (broker, publisher,
  consumer and downstream nodes on the simulated network);
* :mod:`~sim.messaging.retry`, :mod:`~sim.messaging.idempotency`: consumer patterns;
* :mod:`~sim.messaging.history`: the message-event table;
* :func:`run_messaging`: run a scenario, get the events and the delivery report
  (:mod:`sim.checkers.delivery`).
"""

from .broker import Broker, ChannelClosed, Confirm, Delivery, Message, Returned, XDeath
from .history import EVENT_COLUMNS, MessageLog
from .idempotency import DedupStore, IdempotencySpec
from .protocol import ConsumerSpec, DownstreamSpec, MessagingConfig, PublisherSpec
from .retry import RetryPolicy, dead_letter_fraction, decision_uniform, mean_attempts
from .routing import route, topic_matches
from .run import MessagingResult, delivery_report, run_messaging
from .topology import BindingSpec, ExchangeSpec, QueueSpec, Topology

__all__ = [
    "Broker",
    "Message",
    "XDeath",
    "Delivery",
    "Confirm",
    "Returned",
    "ChannelClosed",
    "MessageLog",
    "EVENT_COLUMNS",
    "DedupStore",
    "IdempotencySpec",
    "MessagingConfig",
    "PublisherSpec",
    "ConsumerSpec",
    "DownstreamSpec",
    "RetryPolicy",
    "decision_uniform",
    "dead_letter_fraction",
    "mean_attempts",
    "route",
    "topic_matches",
    "run_messaging",
    "MessagingResult",
    "delivery_report",
    "Topology",
    "ExchangeSpec",
    "QueueSpec",
    "BindingSpec",
]
