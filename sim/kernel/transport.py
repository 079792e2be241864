"""Connections: per-pair FIFO delivery with retransmission, as TCP gives AMQP.

A message class travels as a datagram or on a connection, as
:class:`~sim.netconfig.TransportConfig` says. On a connection:

* **One connection per pair** of endpoints at a time, carrying both
  directions. The first message either end sends opens it (the handshake is
  not modelled: it rides on that first segment); the other end joins when the
  first segment reaches it, or when it sends first itself.
* **In order, exactly once.** Each end numbers what it sends 0, 1, 2, ...; the
  receiver hands messages to the protocol in that order, holds a message that
  arrives early until the gap before it fills, drops copies (network
  duplicates, retransmissions of what had arrived), and acknowledges every
  segment with the next number it expects.
* **Segments and acks are datagrams**, with the latency, loss, duplication,
  reordering and partitions of any message between the pair (a segment takes
  its message's latency by class).
* **Retransmission.** What is not acknowledged is sent again after ``rto``,
  which doubles on every retransmission up to ``rto_max`` and goes back to
  ``rto`` when an ack makes progress (RFC 6298's back-off); an ack showing that
  the receiver holds a later segment makes the sender resend the missing ones
  at once (fast retransmit). A message sent during a partition therefore
  arrives late, after the heal, rather than never.
* **Breaking.** An end whose oldest unacknowledged data has seen no progress
  for ``timeout`` gives the connection up (TCP's user timeout); a protocol also
  closes it with :meth:`~sim.kernel.node.Endpoint.disconnect` (an AMQP client
  whose heartbeats stopped closes its socket). What the broken end had not had
  acknowledged is lost, and its protocol is told:
  ``on_connection_broken(peer, reason)`` with ``"timeout"``, ``"heartbeat"`` or ``"reset"``
  (not for its own ``disconnect``). A later message opens a new connection.
* **Heartbeats** (``heartbeat`` set): each end sends a heartbeat every
  ``heartbeat / 2`` and breaks the connection (``"heartbeat"``) when it has
  heard nothing from the peer for ``heartbeat`` (RabbitMQ's two missed
  heartbeats), so an idle connection across a partition or to a dead peer
  breaks too; without them only unacknowledged data can time out, as on TCP.
* **Reset.** A segment of a connection its receiver does not have (closed
  there, or the receiver's process restarted since) is answered with a reset,
  and the end that gets the reset breaks (``"reset"``). A new connection from
  a peer replaces the one the receiver still had with it, which breaks
  (``"reset"``) just before the new one's first message is delivered: the old
  connection's next segment would have been reset by the peer anyway.
* **Crashes.** A crashed endpoint's connections die with it; it is told
  nothing (it is down), and messages it had not had acknowledged are lost with
  its volatile state (segments already on the wire still arrive). While it is
  down nothing answers (the host is down: no reset), so a peer notices by its
  ``timeout`` or by the protocol's heartbeats; once it has recovered, the
  first segment of an old connection that reaches it is reset and the peer
  learns at once (the host is up, the process that owned the socket is gone).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from simpy.events import NORMAL

if TYPE_CHECKING:
    from ..netconfig import TransportConfig
    from .network import Network

__all__ = ["Transport", "BREAK_REASONS"]

BREAK_REASONS = ("timeout", "heartbeat", "reset", "closed")

_PENDING, _OPEN, _CLOSED = 0, 1, 2


class _Sender:
    """One end's outgoing half: numbering, unacknowledged segments, the retransmission timer."""

    __slots__ = ("next_seq", "unacked", "rto", "since", "timer", "resent_upto")

    def __init__(self, rto: float) -> None:
        self.next_seq = 0
        self.unacked: dict[int, Any] = {}  # seq -> message, in seq order
        self.rto = rto
        self.since = 0.0  # last progress while data was outstanding
        self.timer: _Wake | None = None
        self.resent_upto = 0  # fast retransmit: segments below this were already resent for a gap


class _Receiver:
    __slots__ = ("expected", "early")

    def __init__(self) -> None:
        self.expected = 0
        self.early: dict[int, Any] = {}


class _Conn:
    """A connection between endpoints ``a`` and ``b``: each end's state, epoch and halves."""

    __slots__ = ("cid", "ends", "epoch", "out", "inb", "heard")

    def __init__(self, cid: int, a: str, b: str, rto: float) -> None:
        self.cid = cid
        self.ends = {a: _PENDING, b: _PENDING}
        self.epoch = {a: -1, b: -1}
        self.heard = {a: 0.0, b: 0.0}  # when each end last heard from the other (heartbeats)
        self.out = {a: _Sender(rto), b: _Sender(rto)}
        self.inb = {a: _Receiver(), b: _Receiver()}


class _Segment:
    __slots__ = ("conn", "seq", "msg")

    def __init__(self, conn: _Conn, seq: int, msg: Any) -> None:
        self.conn = conn
        self.seq = seq
        self.msg = msg


class _Ack:
    """The receiver's next expected number, and the number of the segment that made it ack (for gaps)."""

    __slots__ = ("conn", "expected", "got")

    def __init__(self, conn: _Conn, expected: int, got: int) -> None:
        self.conn = conn
        self.expected = expected
        self.got = got


class _Heartbeat:
    __slots__ = ("conn",)

    def __init__(self, conn: _Conn) -> None:
        self.conn = conn


class _Reset:
    __slots__ = ("conn",)

    def __init__(self, conn: _Conn) -> None:
        self.conn = conn


class _Wake:
    """A retransmission timer: one SimPy heap entry; a stale one (``cancelled``) does nothing."""

    __slots__ = ("callbacks", "_ok", "cancelled")

    def __init__(self, env: Any, delay: float, fn: Callable[[], None]) -> None:
        self._ok = True
        self.cancelled = False
        self.callbacks = [lambda _event: None if self.cancelled else fn()]
        env.schedule(self, NORMAL, delay)


class Transport:
    """The connections of one :class:`~sim.kernel.network.Network` (see the module docstring)."""

    def __init__(self, network: Network, config: TransportConfig) -> None:
        self.net = network
        self.env = network.env
        self.cfg = config
        self._pairs: dict[tuple[str, str], _Conn] = {}  # (min, max) name -> the pair's newest connection
        self._ends: dict[tuple[str, str], _Conn] = {}  # (end, peer) -> the connection that end has open
        self._next_cid = 0
        self.retransmitted = 0
        self.duplicates_dropped = 0
        self.broken: dict[str, int] = dict.fromkeys(BREAK_REASONS, 0)
        self.lost = 0  # messages a broken end had not had acknowledged

    # -- the ends -------------------------------------------------------------------------
    def _open(self, end: str, peer: str) -> _Conn | None:
        """The connection ``end`` has open with ``peer`` (None if none, or if ``end`` crashed since)."""
        conn = self._ends.get((end, peer))
        if conn is not None and conn.epoch[end] != self.net.endpoints[end].epoch:
            del self._ends[(end, peer)]  # it died with the crash
            self._stop_timer(conn.out[end])
            return None
        return conn

    def _join(self, conn: _Conn, end: str, peer: str) -> None:
        if conn.ends[end] == _OPEN:
            return
        conn.ends[end] = _OPEN
        conn.epoch[end] = self.net.endpoints[end].epoch
        conn.heard[end] = self.env.now
        self._ends[(end, peer)] = conn
        if self.cfg.heartbeat is not None:
            _Wake(self.env, self.cfg.heartbeat / 2, lambda: self._on_heartbeat(conn, end, peer))

    def _on_heartbeat(self, conn: _Conn, end: str, peer: str) -> None:
        """Every ``heartbeat / 2`` while ``end`` has ``conn`` open: give up on a silent peer, else beat."""
        heartbeat = self.cfg.heartbeat
        assert heartbeat is not None
        if self._open(end, peer) is not conn:
            return
        if self.env.now - conn.heard[end] > heartbeat:
            self._break(conn, end, peer, "heartbeat")
            return
        self.net.transmit(end, peer, _Heartbeat(conn), _Heartbeat, self._on_beat)
        _Wake(self.env, heartbeat / 2, lambda: self._on_heartbeat(conn, end, peer))

    def _on_beat(self, src: str, dst: str, beat: _Heartbeat) -> None:
        conn = beat.conn
        if self._open(dst, src) is conn:
            conn.heard[dst] = self.env.now
        elif conn.ends[dst] != _PENDING:  # a connection ``dst`` does not have (any more)
            self.net.transmit(dst, src, _Reset(conn), _Reset, self._on_reset)

    def _connect(self, src: str, dst: str) -> _Conn:
        key = _key(src, dst)
        conn = self._pairs.get(key)
        if conn is None or conn.ends[src] != _PENDING:
            self._next_cid += 1
            conn = self._pairs[key] = _Conn(self._next_cid, src, dst, self.cfg.rto)
        self._join(conn, src, dst)
        return conn

    def _break(self, conn: _Conn, end: str, peer: str, reason: str) -> None:
        conn.ends[end] = _CLOSED
        if self._ends.get((end, peer)) is conn:
            del self._ends[(end, peer)]
        out = conn.out[end]
        self._stop_timer(out)
        self.lost += len(out.unacked)
        out.unacked.clear()
        conn.inb[end].early.clear()
        self.broken[reason] += 1
        ep = self.net.endpoints[end]
        if reason != "closed" and ep.alive:
            hook = getattr(ep, "on_connection_broken", None)
            if hook is not None:
                hook(peer, reason)

    def disconnect(self, end: str, peer: str) -> None:
        """``end`` closes its connection with ``peer`` (a protocol closing its socket); nothing is sent."""
        conn = self._open(end, peer)
        if conn is not None:
            self._break(conn, end, peer, "closed")

    # -- sending ----------------------------------------------------------------------------
    def send(self, src: str, dst: str, msg: Any) -> None:
        conn = self._open(src, dst)
        if conn is None:
            conn = self._connect(src, dst)
        out = conn.out[src]
        seq = out.next_seq
        out.next_seq += 1
        if not out.unacked:
            out.since = self.env.now
            out.rto = self.cfg.rto
        out.unacked[seq] = msg
        self.net.transmit(src, dst, _Segment(conn, seq, msg), msg.__class__, self._on_segment, msg)
        if out.timer is None:
            self._arm(conn, src, dst, out)

    def _arm(self, conn: _Conn, src: str, dst: str, out: _Sender) -> None:
        deadline = out.since + self.cfg.timeout
        delay = min(out.rto, deadline - self.env.now)
        out.timer = _Wake(self.env, max(delay, 0.0), lambda: self._on_rto(conn, src, dst))

    @staticmethod
    def _stop_timer(out: _Sender) -> None:
        if out.timer is not None:
            out.timer.cancelled = True
            out.timer = None

    def _on_rto(self, conn: _Conn, src: str, dst: str) -> None:
        out = conn.out[src]
        out.timer = None
        if self._open(src, dst) is not conn or not self.net.endpoints[src].alive or not out.unacked:
            return
        if self.env.now >= out.since + self.cfg.timeout:
            self._break(conn, src, dst, "timeout")
            return
        for seq, msg in out.unacked.items():
            self.retransmitted += 1
            self.net.transmit(src, dst, _Segment(conn, seq, msg), msg.__class__, self._on_segment, msg)
        out.rto = min(out.rto * 2.0, self.cfg.rto_max)
        self._arm(conn, src, dst, out)

    # -- arriving ---------------------------------------------------------------------------
    def _on_segment(self, src: str, dst: str, seg: _Segment) -> None:
        """Segment ``seg`` from ``src`` reaches ``dst`` (alive, and not restarted since it was sent)."""
        conn = seg.conn
        mine = self._open(dst, src)
        if mine is not conn:
            if conn.ends[dst] != _PENDING or self._pairs.get(_key(src, dst)) is not conn:
                self.net.transmit(dst, src, _Reset(conn), _Reset, self._on_reset)
                return
            if mine is not None:  # the peer opened a new connection: the old one is dead
                self._break(mine, dst, src, "reset")
            self._join(conn, dst, src)
        conn.heard[dst] = self.env.now
        inb = conn.inb[dst]
        seq = seg.seq
        if seq < inb.expected or seq in inb.early:
            self.duplicates_dropped += 1
        elif seq > inb.expected:
            inb.early[seq] = seg.msg
        else:
            ready = [seg.msg]
            inb.expected += 1
            early = inb.early
            while inb.expected in early:
                ready.append(early.pop(inb.expected))
                inb.expected += 1
            self._ack(conn, dst, src, seq)  # acknowledged by the receiving host before its process reads them
            ep = self.net.endpoints[dst]
            epoch = ep.epoch
            for msg in ready:
                if not (ep.alive and ep.epoch == epoch and conn.ends[dst] == _OPEN):
                    break  # the process died or closed the connection while reading
                self.net.hand_over(ep, src, msg)
            return
        self._ack(conn, dst, src, seq)

    def _ack(self, conn: _Conn, dst: str, src: str, got: int) -> None:
        self.net.transmit(dst, src, _Ack(conn, conn.inb[dst].expected, got), _Ack, self._on_ack)

    def _on_ack(self, src: str, dst: str, ack: _Ack) -> None:
        """``ack`` from ``src`` (the receiver) reaches ``dst`` (the sender)."""
        conn = ack.conn
        if self._open(dst, src) is not conn:
            return
        conn.heard[dst] = self.env.now
        out = conn.out[dst]
        unacked = out.unacked
        progressed = False
        while unacked:
            first = next(iter(unacked))
            if first >= ack.expected:
                break
            del unacked[first]
            progressed = True
        if progressed:
            out.since = self.env.now
            out.rto = self.cfg.rto
            self._stop_timer(out)
            if unacked:
                self._arm(conn, dst, src, out)
        if ack.got > ack.expected and unacked:  # the receiver holds a later segment: resend the gap
            start = max(ack.expected, out.resent_upto)
            for seq in range(start, ack.got):
                msg = unacked.get(seq)
                if msg is not None:
                    self.retransmitted += 1
                    self.net.transmit(dst, src, _Segment(conn, seq, msg), msg.__class__, self._on_segment, msg)
            out.resent_upto = max(out.resent_upto, ack.got)

    def _on_reset(self, src: str, dst: str, reset: _Reset) -> None:
        conn = reset.conn
        if self._open(dst, src) is conn:
            self._break(conn, dst, src, "reset")


def _key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)
