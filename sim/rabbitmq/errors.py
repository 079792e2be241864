"""Errors of the real-RabbitMQ adapter.

Every message that names a broker uses the redacted URL (the password replaced
by ``***``): see :mod:`sim.rabbitmq.settings`.
"""

from __future__ import annotations

from ..errors import CapsimError, ScenarioError

__all__ = ["AdapterError", "BrokerUnreachable", "UnsupportedScenario", "PikaMissing"]


class AdapterError(CapsimError):
    """The adapter could not do its job against the broker (a protocol error, a timeout)."""


class BrokerUnreachable(AdapterError):
    """No AMQP connection could be opened (nothing listening, bad credentials, timeout)."""


class PikaMissing(AdapterError):
    """pika, the AMQP client the adapter uses, is not installed."""


class UnsupportedScenario(ScenarioError):
    """A valid scenario uses something the real broker adapter cannot reproduce."""
