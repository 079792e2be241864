"""The real-RabbitMQ adapter: run a messaging scenario on a live broker and compare with the simulation.

* :func:`run_rabbitmq`: a scenario on a broker -> a :class:`sim.Result` with the same
  tables and delivery verdict as :func:`sim.run` gives for the simulation (:mod:`~sim.rabbitmq.runner`);
* :func:`compare` -> :class:`Comparison`: counts, attempts, latency and retry-delay
  percentiles side by side, an exact verdict on semantics, a statistical verdict on
  timing (:class:`TimingRule`) and a CDF figure (:mod:`~sim.rabbitmq.compare`);
* :func:`validate`: repeated calibration and broker runs + simulation + requeue probes +
  comparison, what ``capsim validate rabbitmq`` runs (:mod:`~sim.rabbitmq.validate`);
* :func:`calibrate`: the ping run (and connection set-ups) that set the simulated network
  latency and reconnection time;
* :func:`requeue_orders`: the requeue-order probes on both brokers;
* :class:`AmqpSettings`: ``amqp://`` URL or ``CAPSIM_AMQP_URL``, password always redacted;
* :func:`declared_topology`: the scenario's topology under run-unique names, always deleted;
* :class:`Lease`: how long a killed run's names stay on the broker before it removes them;
* :class:`LocalBrokerNode`: a RabbitMQ node of one's own, for broker restarts.

pika is imported only when a broker is contacted, so this package imports
without it (install it with ``pip install 'pika>=1.3,<2'``).
"""

from .calibrate import Calibration, calibrate
from .compare import Comparison, compare
from .errors import AdapterError, BrokerUnreachable, PikaMissing, UnsupportedScenario
from .lease import Lease
from .names import RunNames
from .node import LocalBrokerNode
from .probes import requeue_orders
from .runner import run_rabbitmq
from .settings import DEFAULT_URL, ENV_VAR, AmqpSettings
from .timing import TimingRule
from .topology import declared_topology
from .validate import Validation, validate

__all__ = [
    "AmqpSettings",
    "ENV_VAR",
    "DEFAULT_URL",
    "RunNames",
    "declared_topology",
    "Lease",
    "run_rabbitmq",
    "compare",
    "Comparison",
    "TimingRule",
    "validate",
    "Validation",
    "calibrate",
    "Calibration",
    "requeue_orders",
    "LocalBrokerNode",
    "AdapterError",
    "BrokerUnreachable",
    "PikaMissing",
    "UnsupportedScenario",
]
