"""Lab 3 reference solution: an idempotent consumer (kept out of the student material).

Each delivery is processed by a chain of attempts: ``Apply`` with the message
id as the idempotency key, so that the ledger records the key atomically with
the effect and every later attempt of the same message, from this consumer or
another, after a timeout, a crash or a redelivery, is answered
``already_applied``. ``applied`` or ``already_applied``: ack. ``unavailable``
or no reply within ``CALL_TIMEOUT``: wait ``d + U(0, d)`` with
``d = BACKOFF_MS * 2**(attempt-1)`` (exponential backoff, jitter up to as much
again), then try again; after ``ATTEMPTS`` failed attempts reject the delivery
(dead-letter). The ack comes only after the ledger confirmed the effect.
Request ids carry the epoch, so a reply to a request sent before a crash never
matches one sent after it; a late reply to an attempt already given up is ignored.
"""

from __future__ import annotations

from sim.labs.consumer import ATTEMPTS, BACKOFF_MS, Apply, ApplyReply, ConsumerBase, Delivery

CALL_TIMEOUT = 50.0


class ConsumerNode(ConsumerBase):
    def boot(self):
        self.calls = {}          # request id -> (delivery, attempt number) of the attempt awaiting its reply
        self.next_request = 0

    def on_delivery(self, d: Delivery):
        self._attempt(d, 1)

    def _key(self, d: Delivery):
        return d.msg_id

    def _attempt(self, d: Delivery, attempt: int):
        self.next_request += 1
        rid = (self.epoch, self.next_request)
        self.calls[rid] = (d, attempt)
        self.send(self.ledger, Apply(rid, d.msg_id, self._key(d)))
        self.set_timer(CALL_TIMEOUT, self._timeout, rid)

    def handle_ApplyReply(self, msg: ApplyReply, src: str):
        call = self.calls.pop(msg.request_id, None)
        if call is None:
            return                                   # a late or repeated reply
        d, attempt = call
        if msg.ok:
            self._succeeded(d)
        else:
            self._failed(d, attempt)

    def _timeout(self, rid):
        call = self.calls.pop(rid, None)
        if call is not None:
            self._failed(*call)

    def _succeeded(self, d: Delivery):
        self.ack(d)

    def _failed(self, d: Delivery, attempt: int):
        if attempt >= ATTEMPTS:
            self._give_up(d)
            return
        self.set_timer(self._backoff(attempt), self._attempt, d, attempt + 1)

    def _backoff(self, attempt: int) -> float:
        d = BACKOFF_MS * 2 ** (attempt - 1)
        return d + float(self.rng.uniform(0.0, d))

    def _give_up(self, d: Delivery):
        self.reject(d)
