"""An AMQP client that publishes each message until the broker confirms it (at-least-once publishing).

:class:`ReliablePublisher` keeps the messages it still owes the broker in
``self.outgoing`` (message id -> message): it publishes them with publisher
confirms, republishes one that is nacked, unconfirmed after ``confirm_timeout``
or unconfirmed when the connection drops, and forgets it once confirmed (then
calls :meth:`~ReliablePublisher.on_confirmed`). ``outgoing`` is volatile: a
subclass that must not lose messages in a crash keeps them somewhere durable
(an outbox table, a half-message store) and hands them back after recovery.
A republished message may reach the broker twice: consumers deduplicate.
Publishes are recorded in the run's message log (``publish``, ``confirm``,
``publish_nack``), so :mod:`sim.checkers.delivery` reads them as usual.
"""

from __future__ import annotations

from .broker import Message
from .clients import AmqpClient
from .frames import BasicPublish, BasicReturn, PublishConfirm

__all__ = ["ReliablePublisher"]


class ReliablePublisher(AmqpClient):
    """Publishes messages with confirms until each is confirmed; subclasses hook in after each publish."""

    #: set False in a subclass instance that never talks to the broker
    uses_broker = True
    confirm_timeout = 1000.0
    republish_delay = 100.0

    def boot(self) -> None:
        self.outgoing: dict[str, tuple[Message, int]] = {}  # message id -> (message, publishes so far)
        self.inflight: dict[int, str] = {}  # confirm sequence number -> message id, on this connection
        self.pub_seq = 0
        if self.uses_broker:
            super().boot()
        else:
            self.conn = None
            self._opening = None

    def publish_reliably(self, msg: Message) -> None:
        """Owe ``msg`` to the broker until it is confirmed (no-op if already owed)."""
        if msg.msg_id in self.outgoing:
            return
        self.outgoing[msg.msg_id] = (msg, 0)
        if self.conn is not None:
            self._publish(msg.msg_id)

    def _publish(self, msg_id: str) -> None:
        conn = self.conn
        assert conn is not None, "published only on an open connection"
        msg, attempt = self.outgoing[msg_id]
        attempt += 1
        self.outgoing[msg_id] = (msg, attempt)
        self.pub_seq += 1
        self.inflight[self.pub_seq] = msg_id
        self.log.record(self.now, "publish", msg_id, self.name, exchange=msg.exchange, routing_key=msg.routing_key,
                        attempt=attempt)
        self.send(self.broker_name, BasicPublish(conn, self.next_frame(), self.pub_seq, msg.exchange,
                                                 msg.routing_key, msg, False))
        self.set_timer(self.confirm_timeout, self._confirm_timeout, conn, self.pub_seq)
        self.after_publish(msg_id)

    def _confirm_timeout(self, conn: str, seq: int) -> None:
        if conn == self.conn and seq in self.inflight:
            msg_id = self.inflight.pop(seq)
            if msg_id in self.outgoing:
                self.log.record(self.now, "publish_nack", msg_id, self.name, reason="timeout")
                self._publish(msg_id)

    def _republish(self, conn: str, msg_id: str) -> None:
        if conn == self.conn and msg_id in self.outgoing and msg_id not in self.inflight.values():
            self._publish(msg_id)

    def on_connected(self) -> None:
        self.pub_seq = 0
        self.inflight = {}
        for msg_id in list(self.outgoing):
            if not self.alive or self.conn is None:
                return
            if msg_id in self.outgoing:
                self._publish(msg_id)

    def on_connection_lost(self, conn: str, reason: str) -> None:
        self.inflight = {}  # everything still owed is republished on the next connection

    def handle_PublishConfirm(self, msg: PublishConfirm, src: str) -> None:
        if not self.heard(msg.conn):
            return
        msg_id = self.inflight.pop(msg.seq, None)
        if msg_id is None or msg_id not in self.outgoing:
            return
        if msg.ack:
            self.log.record(self.now, "confirm", msg_id, self.name, attempt=self.outgoing.pop(msg_id)[1])
            self.on_confirmed(msg_id)
        else:
            self.log.record(self.now, "publish_nack", msg_id, self.name, reason="nack")
            self.set_timer(self.republish_delay, self._republish, self.conn, msg_id)

    def handle_BasicReturn(self, msg: BasicReturn, src: str) -> None:
        self.heard(msg.conn)

    # -- hooks -------------------------------------------------------------------------
    def after_publish(self, msg_id: str) -> None:
        """Called right after each publish of ``msg_id`` leaves (a place to crash)."""

    def on_confirmed(self, msg_id: str) -> None:
        """The broker confirmed ``msg_id``: it is in every queue it routes to."""
