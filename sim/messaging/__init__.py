"""The message-broker model and the messaging patterns built on it.

* :mod:`~sim.messaging.topology`: exchanges, queues (x-arguments), bindings as data;
* :mod:`~sim.messaging.broker`: the pure broker state machine (RabbitMQ 3.10 semantics);
* :mod:`~sim.messaging.queues`: the messages and one queue's rules (order, TTL,
  max-length, requeue position, dead-letter copies);
* :mod:`~sim.messaging.protocol`: the ``messaging`` protocol (broker, publisher,
  consumer and downstream nodes on the simulated network);
* :mod:`~sim.messaging.retry`, :mod:`~sim.messaging.idempotency`: consumer patterns;
* :mod:`~sim.messaging.history`: the message-event table;
* :func:`run_messaging`: run a scenario, get the events and the delivery report
  (:mod:`sim.checkers.delivery`).

Patterns with their own protocols, runners and checkers:

* :mod:`~sim.messaging.saga` (``saga``): an orchestrated saga with compensations,
  a durable saga log and idempotent services (:mod:`sim.checkers.saga`);
* :mod:`~sim.messaging.notification` (``notification``): best-effort notification
  with a retry schedule and reconciliation queries (:mod:`sim.checkers.notification`);
* :mod:`~sim.messaging.txmsg` (``transactional_messages``): half messages with
  check-back (the store in front of the broker: :mod:`~sim.messaging.halfmsg`), the
  transactional outbox, and the naive dual writes (:mod:`sim.checkers.txmsg`);
* :mod:`~sim.messaging.patterns` (arrivals, seeded process crashes) and
  :mod:`~sim.messaging.reliable` (publishing until confirmed) are what they share.
"""

from .broker import Broker, ChannelClosed, Confirm, Delivery, Message, Returned, XDeath
from .history import EVENT_COLUMNS, MessageLog
from .idempotency import DedupStore, IdempotencySpec
from .protocol import ConsumerSpec, DownstreamSpec, MessagingConfig, PublisherSpec
from .retry import RetryPolicy, dead_letter_fraction, decision_uniform, mean_attempts
from .routing import route, topic_matches
from .run import MessagingResult, delivery_report, run_messaging
from .topology import BindingSpec, ExchangeSpec, QueueSpec, Topology
from .patterns import ArrivalSpec
from .reliable import ReliablePublisher
from .saga import SagaConfig, SagaResult, SagaStep, run_saga
from .notification import MerchantSpec, NotificationConfig, NotificationResult, notification_oracle, run_notification
from .txmsg import TxMsgConfig, TxMsgResult, TxProducerSpec, run_txmsg

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
    "ArrivalSpec",
    "ReliablePublisher",
    "SagaConfig",
    "SagaStep",
    "SagaResult",
    "run_saga",
    "NotificationConfig",
    "MerchantSpec",
    "NotificationResult",
    "run_notification",
    "notification_oracle",
    "TxMsgConfig",
    "TxProducerSpec",
    "TxMsgResult",
    "run_txmsg",
]
