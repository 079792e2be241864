"""RocketMQ-style half messages: a durable store in front of the broker, resolved by End or check-back.

The producer sends a :class:`Half` message; :class:`HalfMessageStore` keeps it
durably and invisible to consumers and answers :class:`HalfAck`. The producer's
:class:`End` (commit or rollback, sent once) resolves it; a half message still
unresolved ``check_after`` ms after it was stored is checked back every
``check_interval`` (:class:`CheckBack`, answered with :class:`CheckReply`: commit,
rollback or unknown) and discarded after ``check_max`` checks (or never: ``"unlimited"``). Commit publishes the
message to the AMQP broker with confirms (:class:`~sim.messaging.reliable.ReliablePublisher`),
again after a crash of the store until confirmed; rollback discards it. A late or
repeated ``Half`` for a resolved transaction is refused (``HalfAck(ok=False)``) so
that a producer never commits after the store has rolled back. The store is a
separate node so that the RabbitMQ broker model is reused unchanged; in RocketMQ it
is part of the broker. :mod:`sim.messaging.txmsg` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..states import State
from .broker import Message
from .reliable import ReliablePublisher

if TYPE_CHECKING:
    from .protocol import MessagingConfig
    from .txmsg import TxMsgConfig, TxMsgState

__all__ = ["Half", "HalfAck", "End", "CheckBack", "CheckReply", "HalfMessageStore"]


@dataclass(frozen=True, slots=True)
class Half:
    """Producer -> store: hold ``message`` (id = transaction id) invisible until resolved."""

    message: Message


@dataclass(frozen=True, slots=True)
class HalfAck:
    """Store -> producer: stored (``ok``), or refused because already resolved."""

    txn: str
    ok: bool


@dataclass(frozen=True, slots=True)
class End:
    """Producer -> store: the local transaction committed (publish) or rolled back (discard)."""

    txn: str
    commit: bool


@dataclass(frozen=True, slots=True)
class CheckBack:
    txn: str


@dataclass(frozen=True, slots=True)
class CheckReply:
    """``state``: ``commit``, ``rollback`` or ``unknown`` (still in progress)."""

    txn: str
    state: Literal["commit", "rollback", "unknown"]


class HalfState(State):
    """A half message in the store."""

    HALF = "half"  # stored, invisible: waiting for End or a check-back
    COMMITTED = "committed"  # to be published
    PUBLISHED = "published"  # confirmed by the broker
    ROLLED_BACK = "rolled_back"
    DISCARDED = "discarded"  # given up after check_max unanswered check-backs


class _Half:
    __slots__ = ("msg", "producer", "stored", "state", "checks")

    def __init__(self, msg: Message, producer: str, stored: float) -> None:
        self.msg = msg
        self.producer = producer
        self.stored = stored
        self.state = HalfState.HALF
        self.checks = 0


class HalfMessageStore(ReliablePublisher):
    """Holds half messages durably, resolves them (End or check-back), publishes committed ones."""

    def __init__(self, world: Any, name: str, cfg: TxMsgConfig, mcfg: MessagingConfig, trace: TxMsgState) -> None:
        super().__init__(world, name, mcfg, trace.messaging)
        self.tcfg = cfg
        self.confirm_timeout = cfg.confirm_timeout
        self.trace = trace  # the observer's event record

    def boot(self) -> None:
        self.halves: dict[str, _Half] = self.disk.setdefault("halves", {})
        self.unresolved: dict[str, None] = self.disk.setdefault("unresolved", {})
        super().boot()
        for h in self.halves.values():
            if h.state == HalfState.COMMITTED:
                self.publish_reliably(h.msg)  # sent once connected
        self.set_timer(self.tcfg.check_interval, self._check)

    def handle_Half(self, msg: Half, src: str) -> None:
        txn = msg.message.msg_id
        h = self.halves.get(txn)
        if h is None:
            self.halves[txn] = _Half(msg.message, src, self.now)
            self.unresolved[txn] = None
            self.trace.event(self.now, txn, self.name, "half_stored")
        self.send(src, HalfAck(txn, h is None or h.state not in (HalfState.ROLLED_BACK, HalfState.DISCARDED)))

    def handle_End(self, msg: End, src: str) -> None:
        self._settle(msg.txn, msg.commit, "end")

    def handle_CheckReply(self, msg: CheckReply, src: str) -> None:
        if msg.state != "unknown":
            self._settle(msg.txn, msg.state == "commit", "check")

    def _settle(self, txn: str, commit: bool, how: str) -> None:
        h = self.halves.get(txn)
        if h is None or h.state != HalfState.HALF:
            return
        self.unresolved.pop(txn, None)
        h.state = HalfState.COMMITTED if commit else HalfState.ROLLED_BACK
        self.trace.event(self.now, txn, self.name, f"{h.state}_by_{how}")
        if commit:
            self.publish_reliably(h.msg)

    def _check(self) -> None:
        cfg = self.tcfg
        for txn in list(self.unresolved):
            h = self.halves[txn]
            if self.now - h.stored < cfg.check_after:
                break  # stored in order: the rest are younger
            if cfg.check_max != "unlimited" and h.checks >= cfg.check_max:
                h.state = HalfState.DISCARDED
                del self.unresolved[txn]
                self.trace.event(self.now, txn, self.name, "discarded")
                continue
            h.checks += 1
            self.send(h.producer, CheckBack(txn))
            self.trace.event(self.now, txn, self.name, "check_back")
        self.set_timer(cfg.check_interval, self._check)

    def on_confirmed(self, msg_id: str) -> None:
        h = self.halves.get(msg_id)
        if h is not None and h.state == HalfState.COMMITTED:
            h.state = HalfState.PUBLISHED

    def pending(self) -> tuple[list[str], list[str]]:
        """(committed halves not yet confirmed by the broker, unresolved halves)."""
        return [t for t, h in self.halves.items() if h.state == HalfState.COMMITTED], list(self.unresolved)
