"""pytest fixtures for tests that need a live broker (import them into a test module to use them).

``rabbitmq``           the connection settings of the broker the tests use
                       (``CAPSIM_AMQP_URL`` or ``amqp://guest:guest@127.0.0.1:5672/%2F``).
``local_broker_node``  a :class:`~sim.rabbitmq.node.LocalBrokerNode` of the test module's own,
                       for broker restarts; stopped (and its directory deleted) afterwards.

When the broker cannot be reached (or pika is missing, or no node can be
started) the test is skipped with the reason, except under ``CI=true``, where
it fails: in CI the broker tests must run, never be skipped silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .amqp import broker_info
from .errors import AdapterError
from .node import LocalBrokerNode
from .settings import AmqpSettings

__all__ = ["rabbitmq", "local_broker_node", "unavailable"]


def unavailable(reason: str) -> None:
    """Fail under ``CI=true``, skip otherwise."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: broker tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def rabbitmq() -> AmqpSettings:
    settings = AmqpSettings.resolve()
    try:
        broker_info(settings)
    except AdapterError as exc:
        unavailable(f"RabbitMQ is needed: {exc}")
    return settings


@pytest.fixture(scope="module")
def local_broker_node() -> Iterator[LocalBrokerNode]:
    node = LocalBrokerNode()
    try:
        node.start()
    except AdapterError as exc:
        unavailable(f"cannot start a RabbitMQ node of the tests' own: {exc}")
    try:
        yield node
    finally:
        node.stop()
