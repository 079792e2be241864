"""Lab 3: a queue consumer that retries with backoff, dead-letters, and applies each payment exactly once.

Two consumers (c1, c2) take payment messages from the queue `work` of a RabbitMQ-like
broker, which delivers each message at least once: again after a consumer crash,
a lost connection or a lost ack, and twice when the publisher republished it. For
each message, ask the ledger to apply the payment (send it an Apply); the ledger
fails transiently (ApplyReply status "unavailable") and a few messages are poison
(every attempt fails). Retry with exponential backoff, give up after ATTEMPTS
attempts (reject: the broker dead-letters the message to `dlq`), and make sure each
payment is applied exactly once. The statement, the tests and the API are in
labs/README.md (section "Lab 3"); grade with

    capsim lab grade lab3 lab3_consumer.py

Hints: the broker will deliver the same message again, to you or to the other
consumer, and a crash can fall between any two steps. Where can "already done"
be recorded so that it is true exactly when the payment is? Look at Apply.key.
A timeout is not a failure: the payment may have been applied and only the
reply lost.
"""

from __future__ import annotations

# ATTEMPTS, BACKOFF_MS and Apply are for the code you write
from sim.labs.consumer import ATTEMPTS, BACKOFF_MS, Apply, ApplyReply, ConsumerBase, Delivery  # noqa: F401

CALL_TIMEOUT = 50.0   # ms to wait for the ledger's reply before treating the attempt as failed


class ConsumerNode(ConsumerBase):
    """One consumer of the queue `work`.

    Available: self.name, self.ledger (the ledger's node name), self.disk, self.epoch
    (changes at each crash and recovery), self.rng (a numpy Generator, for jitter),
    self.send(dst, msg), self.set_timer(ms, fn, *args), self.now,
    self.ack(d) and self.reject(d) (settle a Delivery once; both return False if
    its connection is gone: the broker will deliver the message again).
    """

    def boot(self):
        # Runs at start and after every recovery. self.disk survives crashes; nothing else does.
        self.calls = {}          # request id -> (delivery, attempt number) of an attempt awaiting its reply
        self.next_request = 0

    def on_delivery(self, d: Delivery):
        # TODO: the broker delivered d: make its first attempt.
        raise NotImplementedError("TODO: on_delivery")

    def send_attempt(self, d: Delivery, attempt: int):
        """Attempt number `attempt` (1 = the first) of delivery `d`: one Apply to the ledger."""
        # TODO: pick a request id that never repeats, even across crashes (self.epoch helps);
        # remember (d, attempt) under it; self.send(self.ledger, Apply(request_id, d.msg_id, key=...));
        # set a timer of CALL_TIMEOUT ms in case no reply comes.
        raise NotImplementedError("TODO: send_attempt")

    def handle_ApplyReply(self, msg: ApplyReply, src: str):
        # TODO: find the attempt by msg.request_id (a reply may come late, or twice: ignore one you no
        # longer wait for). msg.ok ("applied" or "already_applied"): the payment is in the ledger,
        # ack the delivery. "unavailable": the attempt failed.
        raise NotImplementedError("TODO: handle_ApplyReply")

    def attempt_failed(self, d: Delivery, attempt: int):
        """Attempt `attempt` of `d` failed: the ledger was unavailable, or no reply came in time."""
        # TODO: after attempt ATTEMPTS, reject d (the broker dead-letters it). Before that, wait at
        # least BACKOFF_MS * 2**(attempt-1) ms, plus random jitter from self.rng, then try again.
        raise NotImplementedError("TODO: attempt_failed")
