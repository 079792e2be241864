"""The message-broker model and the messaging patterns built on it.

* :mod:`~sim.messaging.topology`: exchanges, queues (x-arguments), bindings as data;
* :mod:`~sim.messaging.broker`: the pure broker state machine (RabbitMQ 3.10 semantics);
* :mod:`~sim.messaging.queues`: the messages and one queue's rules (order, TTL,
  max-length, requeue position, dead-letter copies);
* :mod:`~sim.messaging.protocol`: the ``messaging`` protocol (broker, publisher,
  consumer and downstream nodes on the simulated network);
* :mod:`~sim.messaging.retry`, :mod:`~sim.messaging.idempotency`: consumer patterns;
* :mod:`~sim.messaging.history`: the message-event table (``result.tables["message_events"]``),
  checked by :mod:`sim.checkers.delivery` (``result.verdicts["delivery"]``);
* :mod:`~sim.messaging.cluster_model` (with :mod:`~sim.messaging.cluster_scenario`): a RabbitMQ
  cluster's queues (classic, mirrored, quorum) under partitions and the three partition handling
  modes, an event loop of its own that writes the real cluster's history shape
  (:mod:`sim.checkers.cluster_history`).

Patterns with their own protocols and checkers (all run with :func:`sim.run`):

* :mod:`~sim.messaging.saga` (``saga``): an orchestrated saga with compensations,
  a durable saga log and idempotent services (:mod:`sim.checkers.saga`);
* :mod:`~sim.messaging.notification` (``notification``): best-effort notification
  with a retry schedule and reconciliation queries (:mod:`sim.checkers.notification`);
* :mod:`~sim.messaging.txmsg` (``transactional_messages``): half messages with
  check-back (the store in front of the broker: :mod:`~sim.messaging.halfmsg`), the
  transactional outbox, and the naive dual writes (:mod:`sim.checkers.txmsg`);
* :mod:`~sim.messaging.patterns` (roles, percentiles) and
  :mod:`~sim.messaging.reliable` (publishing until confirmed) are what they share.
"""

from .broker import Broker, ChannelClosed, Confirm, Delivery, Message, Returned, XDeath
from .history import EVENT_COLUMNS, MessageLog
from .idempotency import DedupStore, IdempotencySpec
from .notification import MerchantSpec, NotificationConfig, notification_oracle
from .protocol import ConsumerSpec, DownstreamSpec, MessagingConfig, MessagingState, PublisherSpec
from .reliable import ReliablePublisher
from .retry import RetryPolicy, dead_letter_fraction, decision_uniform, mean_attempts
from .routing import route, topic_matches
from .saga import SagaConfig, SagaStep
from .topology import BindingSpec, ExchangeSpec, QueueSpec, Topology
from .txmsg import TxMsgConfig, TxProducerSpec

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
    "MessagingState",
    "PublisherSpec",
    "ConsumerSpec",
    "DownstreamSpec",
    "RetryPolicy",
    "decision_uniform",
    "dead_letter_fraction",
    "mean_attempts",
    "route",
    "topic_matches",
    "Topology",
    "ExchangeSpec",
    "QueueSpec",
    "BindingSpec",
    "ReliablePublisher",
    "SagaConfig",
    "SagaStep",
    "NotificationConfig",
    "MerchantSpec",
    "notification_oracle",
    "TxMsgConfig",
    "TxProducerSpec",
]
