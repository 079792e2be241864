"""pytest fixtures for tests that need a live broker (import them into a test module to use them).

``rabbitmq``           the connection settings of the broker the tests use
                       (``CAPSIM_AMQP_URL`` or ``amqp://guest:guest@127.0.0.1:5672/%2F``).
``local_broker_node``  a :class:`~sim.rabbitmq.node.LocalBrokerNode` of the test module's own,
                       for broker restarts; stopped (and its directory deleted) afterwards.

:func:`with_events` rebuilds a run's result around changed message events, for tests that
check that a comparison notices a change.

When the broker cannot be reached (or pika is missing, or no node can be
started) the test is skipped with the reason, except under ``CI=true``, where
it fails: in CI the broker tests must run, never be skipped silently.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import pandas as pd
import pytest

from ..checkers.delivery import check_delivery
from ..messaging.protocol import messaging_config
from ..result import Result
from .amqp import broker_info
from .errors import AdapterError
from .node import LocalBrokerNode
from .settings import AmqpSettings

__all__ = ["rabbitmq", "local_broker_node", "unavailable", "with_events"]


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


def with_events(result: Result, events: pd.DataFrame) -> Result:
    """``result`` with its message events replaced and its delivery verdict and messages table recomputed."""
    report = check_delivery(events, messaging_config(result.scenario).dlq_names())
    return dataclasses.replace(result, tables={**result.tables, "message_events": events, "messages": report.messages},
                               verdicts={**result.verdicts, "delivery": report})
