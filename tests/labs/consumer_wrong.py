"""Lab 3 known-wrong solutions: each is a mistake real consumers make, and breaks one graded guarantee."""

from __future__ import annotations

from consumer_reference import ConsumerNode as Reference

from sim.labs.consumer import DLX, WORK
from sim.messaging.broker import Message
from sim.messaging.frames import BasicPublish


class NoIdempotencyKey(Reference):
    """Calls the ledger without a key: a retry after a lost reply, or a redelivery after a crash
    between the effect and the ack, applies the payment again."""

    def _key(self, d):
        return None


class LocalDedup(Reference):
    """Deduplicates in its own database instead of the ledger's: marks a message processed on its disk
    once the ledger said ``applied``. The mark is not atomic with the effect: a lost reply, a crash
    before the reply, or a redelivery to the other consumer still applies it twice."""

    def boot(self):
        super().boot()
        self.processed = self.disk.setdefault("processed", set())

    def on_delivery(self, d):
        if d.msg_id in self.processed:
            self.ack(d)
        else:
            super().on_delivery(d)

    def _key(self, d):
        return None

    def _succeeded(self, d):
        self.processed.add(d.msg_id)
        super()._succeeded(d)


class AckFirst(Reference):
    """Acks on delivery, then works; a message it gives up on is published to the dead-letter exchange.
    Without crashes nothing is lost; a crash while a message is being processed loses it."""

    def on_delivery(self, d):
        self.ack(d)
        super().on_delivery(d)

    def _succeeded(self, d):
        pass                                         # acked already

    def _give_up(self, d):
        if self.conn is not None:
            self.send(self.broker_name, BasicPublish(self.conn, self.next_frame(), None, DLX, WORK,
                                                     Message(d.msg_id, DLX, WORK)))


class ImmediateRetry(Reference):
    """Retries at once: the attempts of a failing message hit the ledger back to back (a retry storm)."""

    def _backoff(self, attempt):
        return 0.0


class NoRetry(Reference):
    """Dead-letters a message at its first failure: a transient error becomes a lost payment to re-drive."""

    def _failed(self, d, attempt):
        self._give_up(d)


class RetryForever(Reference):
    """Never dead-letters: backs off up to 100 ms and tries again, so a poison message is never settled."""

    def _failed(self, d, attempt):
        self.set_timer(min(self._backoff(attempt), 100.0), self._attempt, d, attempt + 1)
