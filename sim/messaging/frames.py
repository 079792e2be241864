"""Messages on the simulated network between publishers, consumers, the broker and downstreams.

They mirror the AMQP 0-9-1 methods capsim models (one channel per
connection). AMQP runs over TCP, which never duplicates, keeps order and
retransmits what is lost, so the AMQP frames declare ``transport =
"connection"``: by default they travel on the network's connections
(:mod:`sim.kernel.transport`), and a connection that breaks (its timeout, a
reset, or the AMQP heartbeat giving up on it) is what the broker requeues on.
``Call`` and ``CallReply`` (a consumer's request to a downstream service) stay
datagrams.

A scenario may still send the frames as datagrams (``network.transport``), as
capsim did before it had connections. The endpoints then compensate: frames
whose duplication would change the broker's state (publish, ack, nack) carry a
per-connection ``frame`` number and the broker drops a repeat; a client resends
``ConnectionOpen`` and ``BasicConsume`` until answered; a publisher may
republish after ``confirm_timeout``; and the broker's ``consumer_timeout``
eventually requeues deliveries whose frame or ack was lost. On connections these
guards are never needed, and cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .broker import Message

__all__ = [
    "FRAME_TYPES",
    "ConnectionOpen",
    "ConnectionOpenOk",
    "ConnectionClose",
    "ConnectionClosed",
    "Heartbeat",
    "BasicPublish",
    "BasicConsume",
    "BasicConsumeOk",
    "BasicDeliver",
    "BasicAck",
    "BasicNack",
    "PublishConfirm",
    "BasicReturn",
    "Call",
    "CallReply",
]


@dataclass(frozen=True, slots=True)
class ConnectionOpen:
    """Client -> broker: open connection ``conn`` (an id unique in the run) with one channel."""

    transport: ClassVar[str] = "connection"

    conn: str


@dataclass(frozen=True, slots=True)
class ConnectionOpenOk:
    transport: ClassVar[str] = "connection"

    conn: str


@dataclass(frozen=True, slots=True)
class ConnectionClose:
    """Client -> broker: the connection is closed (also sent by the OS when the client process dies)."""

    transport: ClassVar[str] = "connection"

    conn: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """Broker -> client: the connection is gone (channel error, or unknown to a restarted broker)."""

    transport: ClassVar[str] = "connection"

    conn: str
    reason: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    transport: ClassVar[str] = "connection"

    conn: str


@dataclass(frozen=True, slots=True)
class BasicPublish:
    """``seq`` is the publisher-confirm sequence number (``None``: no confirm wanted)."""

    transport: ClassVar[str] = "connection"

    conn: str
    frame: int
    seq: int | None
    exchange: str
    routing_key: str
    message: Message
    mandatory: bool = False


@dataclass(frozen=True, slots=True)
class BasicConsume:
    transport: ClassVar[str] = "connection"

    conn: str
    queue: str
    consumer_tag: str
    prefetch: int
    auto_ack: bool


@dataclass(frozen=True, slots=True)
class BasicConsumeOk:
    transport: ClassVar[str] = "connection"

    conn: str
    consumer_tag: str


@dataclass(frozen=True, slots=True)
class BasicDeliver:
    transport: ClassVar[str] = "connection"

    conn: str
    consumer_tag: str
    delivery_tag: int
    queue: str
    message: Message
    redelivered: bool
    delivery_count: int


@dataclass(frozen=True, slots=True)
class BasicAck:
    transport: ClassVar[str] = "connection"

    conn: str
    frame: int
    delivery_tag: int
    multiple: bool = False


@dataclass(frozen=True, slots=True)
class BasicNack:
    transport: ClassVar[str] = "connection"

    conn: str
    frame: int
    delivery_tag: int
    requeue: bool
    multiple: bool = False


@dataclass(frozen=True, slots=True)
class PublishConfirm:
    transport: ClassVar[str] = "connection"

    conn: str
    seq: int
    ack: bool


@dataclass(frozen=True, slots=True)
class BasicReturn:
    transport: ClassVar[str] = "connection"

    conn: str
    seq: int | None
    message: Message
    reply_code: int
    reply_text: str


@dataclass(frozen=True, slots=True)
class Call:
    """Consumer -> downstream service: one processing attempt's request."""

    call_id: int
    msg_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class CallReply:
    call_id: int
    ok: bool


FRAME_TYPES: tuple[type, ...] = (
    ConnectionOpen, ConnectionOpenOk, ConnectionClose, ConnectionClosed, Heartbeat, BasicPublish, BasicConsume,
    BasicConsumeOk, BasicDeliver, BasicAck, BasicNack, PublishConfirm, BasicReturn, Call, CallReply,
)
"""Every message class of the messaging protocol (what ``network.message_latency`` and ``network.transport`` name)."""
