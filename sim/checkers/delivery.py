"""Delivery checker: what happened to every message, from the message-event table.

Input: the table of :mod:`sim.messaging.history` (from the simulation or from
the real-broker adapter) and the names of the dead-letter queues. Each
published message id gets one final status, the first that applies:

``processed``       a consumer completed its side effect at least once;
``dead_lettered``   it reached a dead-letter queue (enqueued, received or left there);
``remaining``       still in some queue when the run ended (ready or unacked);
``dropped``         discarded by a configured policy: TTL or max-length without a DLX,
                    unroutable, rejected without a DLX, dead-letter dropped (at-most-once);
``lost``            *confirmed* to its publisher, yet none of the above: the broker or a
                    consumer lost it (a non-persistent message in a broker crash, an
                    auto-acked message in a consumer crash);
``unconfirmed``     never confirmed and none of the above (the publisher gave up or crashed).

Duplicates: ``duplicate_deliveries`` counts deliveries of a message after its
first side effect (what at-least-once delivery costs); ``duplicate_side_effects``
counts side effects beyond the first (what an idempotent consumer removes).
Out-of-order: first receptions whose publisher sequence number is below the
highest already received from the same publisher on the same queue.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["DeliveryReport", "check_delivery", "load_timeline", "backlog_timeline", "drain_time", "STATUSES"]

STATUSES = ("processed", "dead_lettered", "remaining", "dropped", "lost", "unconfirmed")
PERCENTILES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9))
_DROP_EVENTS = ("drop", "unroutable")


@dataclass
class DeliveryReport:
    """Counts, the per-message table and the evidence (lost message ids)."""

    counts: dict[str, int]
    latency: dict[str, float]
    attempts: dict[str, float]
    messages: pd.DataFrame
    lost_ids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The at-least-once verdict: no confirmed message was lost."""
        return self.counts["lost"] == 0

    def __getitem__(self, key: str) -> int:
        return self.counts[key]

    def summary(self) -> dict[str, Any]:
        """Flat numbers: counts, ``attempts.*`` and ``latency.*`` (end-to-end, ms)."""
        out: dict[str, Any] = dict(self.counts)
        out.update({f"attempts.{k}": v for k, v in self.attempts.items()})
        out.update({f"latency.{k}": v for k, v in self.latency.items()})
        return out


class _Msg:
    __slots__ = ("publisher", "seq", "published", "confirmed", "deliveries", "attempts", "side_effects",
                 "first_effect", "dead", "remain", "dropped")

    def __init__(self, publisher: str, seq: int, published: float) -> None:
        self.publisher = publisher
        self.seq = seq
        self.published = published
        self.confirmed = False
        self.deliveries = 0
        self.attempts = 0
        self.side_effects = 0
        self.first_effect = math.nan
        self.dead = False
        self.remain = False
        self.dropped = False

    def status(self) -> str:
        if self.side_effects:
            return "processed"
        if self.dead:
            return "dead_lettered"
        if self.remain:
            return "remaining"
        if self.dropped:
            return "dropped"
        return "lost" if self.confirmed else "unconfirmed"


def check_delivery(events: pd.DataFrame, dead_letter_queues: Iterable[str] = ()) -> DeliveryReport:
    """Classify every published message and measure duplicates, order, attempts and latency."""
    if len(events) and not events["time"].is_monotonic_increasing:
        events = events.sort_values("time", kind="stable")
    replay = _Replay(frozenset(dead_letter_queues))  # a frozenset: membership tests only
    replay.run(events)
    ids = list(replay.msgs)
    table = _message_table(ids, list(replay.msgs.values()))
    status = table["status"].to_numpy()
    counts = _counts(replay, table)
    for name in STATUSES:
        counts[name] = int((status == name).sum())
    lost_ids = [i for i, s in zip(ids, status) if s == "lost"]
    settled = table[(status == "processed") | (status == "dead_lettered")]
    attempts = {
        "mean": float(settled["attempts"].mean()) if len(settled) else math.nan,
        "max": float(settled["attempts"].max()) if len(settled) else math.nan,
    }
    latency = table["latency"].to_numpy()
    return DeliveryReport(counts, _latency(latency[~np.isnan(latency)]), attempts, table, lost_ids)


class _Replay:
    """The message-event table replayed in time order: a :class:`_Msg` per published id, and tallies.

    A message is identified by its first ``publish``; events of ids never
    published are ignored. Publisher sequence numbers are given in order of
    first publication, per publisher, so order is judged as each publisher
    issued its messages.
    """

    def __init__(self, dlqs: frozenset[str]) -> None:
        self.dlqs = dlqs
        self.msgs: dict[str, _Msg] = {}
        self.per_publisher: dict[str, int] = {}  # next sequence number per publisher
        self.running: dict[tuple[str, str], int] = {}  # highest sequence number received per (publisher, queue)
        self.c = dict.fromkeys(("publish_attempts", "deliveries", "redeliveries", "duplicate_deliveries",
                                "dedup_skips", "out_of_order"), 0)
        # ids, in order of first occurrence (dicts as ordered sets)
        self.nacked: dict[str, None] = {}
        self.returned: dict[str, None] = {}
        self.received: dict[str, None] = {}

    def run(self, events: pd.DataFrame) -> None:
        """Replay ``events`` (already in time order)."""
        dlqs, msgs = self.dlqs, self.msgs
        cols = [events[k].tolist() for k in ("time", "event", "msg_id", "node", "queue", "redelivered")]
        for t, e, mid, node, queue, redelivered in zip(*cols):
            m = msgs.get(mid)
            if e == "publish":
                self.c["publish_attempts"] += 1
                if m is None:
                    self._first_publish(t, mid, node)
                continue
            if m is None:
                continue
            if e == "receive":
                self._receive(m, t, mid, queue, redelivered)
            elif e == "process":
                m.attempts += 1
            elif e == "side_effect":
                if not m.side_effects:
                    m.first_effect = t
                m.side_effects += 1
            elif e == "confirm":
                m.confirmed = True
            elif e == "publish_nack":
                self.nacked[mid] = None
            elif e == "return":
                self.returned[mid] = None
            elif e == "dedup_skip":
                self.c["dedup_skips"] += 1
            elif e == "enqueue":
                if queue in dlqs:
                    m.dead = True
            elif e == "remain":
                if queue in dlqs:
                    m.dead = True
                else:
                    m.remain = True
            elif e in _DROP_EVENTS:
                m.dropped = True

    def _first_publish(self, t: float, mid: str, node: str) -> None:
        """A new message: it takes its publisher's next sequence number (republishing keeps the first)."""
        seq = self.per_publisher.get(node, 0)
        self.per_publisher[node] = seq + 1
        self.msgs[mid] = _Msg(node, seq, t)

    def _receive(self, m: _Msg, t: float, mid: str, queue: str, redelivered: Any) -> None:
        """A delivery: a duplicate if after the first side effect; out of order if first received
        behind a later message of the same publisher on the same queue."""
        c = self.c
        m.deliveries += 1
        c["deliveries"] += 1
        c["redeliveries"] += bool(redelivered)
        if t > m.first_effect:
            c["duplicate_deliveries"] += 1
        if queue in self.dlqs:
            m.dead = True
        if mid not in self.received:
            self.received[mid] = None
            key = (m.publisher, queue)
            top = self.running.get(key, -1)
            if m.seq < top:
                c["out_of_order"] += 1
            else:
                self.running[key] = m.seq


def _message_table(ids: list[str], recs: list[_Msg]) -> pd.DataFrame:
    """One row per published message, with its final status and end-to-end latency (NaN if never processed)."""
    return pd.DataFrame({
        "msg_id": pd.Series(ids, dtype=object),
        "publisher": pd.Series([r.publisher for r in recs], dtype=object),
        "seq": pd.Series([r.seq for r in recs], dtype="int64"),
        "published": pd.Series([r.published for r in recs], dtype="float64"),
        "confirmed": pd.Series([r.confirmed for r in recs], dtype="bool"),
        "deliveries": pd.Series([r.deliveries for r in recs], dtype="int64"),
        "attempts": pd.Series([r.attempts for r in recs], dtype="int64"),
        "side_effects": pd.Series([r.side_effects for r in recs], dtype="int64"),
        "latency": pd.Series([r.first_effect - r.published for r in recs], dtype="float64"),
        "status": pd.Series([r.status() for r in recs], dtype=object),
    })


def _counts(replay: _Replay, table: pd.DataFrame) -> dict[str, int]:
    """The report's counts, before the per-status ones."""
    c = replay.c
    effects = table["side_effects"].to_numpy()
    return {
        "published": len(table),
        "publish_attempts": c["publish_attempts"],
        "confirmed": int(table["confirmed"].sum()),
        "publish_nacked": len(replay.nacked),
        "returned": len(replay.returned),
        "delivered": len(replay.received),
        "deliveries": c["deliveries"],
        "redeliveries": c["redeliveries"],
        "duplicate_deliveries": c["duplicate_deliveries"],
        "side_effects": int(effects.sum()),
        "duplicate_side_effects": int(np.clip(effects - 1, 0, None).sum()),
        "duplicated_messages": int((effects > 1).sum()),
        "dedup_skips": c["dedup_skips"],
        "out_of_order": c["out_of_order"],
    }


def _latency(lat: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {"count": float(len(lat))}
    if len(lat) == 0:
        out.update({name: math.nan for name, _ in PERCENTILES})
        out["mean"] = math.nan
        return out
    qs = np.percentile(lat, [q for _, q in PERCENTILES])
    out.update({name: float(v) for (name, _), v in zip(PERCENTILES, qs)})
    out["mean"] = float(lat.mean())
    return out


def load_timeline(events: pd.DataFrame, window: float, end: float | None = None) -> pd.DataFrame:
    """Downstream load per time window: calls (attempts) per second and how many were served.

    Uses the downstream's ``call``/``serve`` events, or the consumers'
    ``process``/``side_effect`` events when no downstream service is modelled.
    """
    calls = events[events["event"] == "call"]
    done = events[events["event"] == "serve"]
    if calls.empty:
        calls = events[events["event"] == "process"]
        done = events[events["event"] == "side_effect"]
    stop = end if end is not None else (float(events["time"].max()) if len(events) else window)
    edges = np.arange(0.0, stop + window, window)
    n_calls = np.histogram(calls["time"].to_numpy(dtype=float), edges)[0]
    n_done = np.histogram(done["time"].to_numpy(dtype=float), edges)[0]
    return pd.DataFrame({"start": edges[:-1], "end": edges[1:], "calls": n_calls, "served": n_done,
                         "rate": n_calls * 1000.0 / window})


def _backlog_steps(events: pd.DataFrame, dead_letter_queues: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """Times and +1/-1 steps: a message enters the backlog when first published and leaves
    at its first side effect, arrival in a dead-letter queue, or drop."""
    dlqs = list(dead_letter_queues)
    ev = events
    enter = ev[ev["event"] == "publish"].groupby("msg_id", sort=False)["time"].min()
    leaving = ev[(ev["event"] == "side_effect") | ev["event"].isin(_DROP_EVENTS)
                 | (ev["queue"].isin(dlqs) & (ev["event"] == "enqueue"))]
    leave = leaving.groupby("msg_id", sort=False)["time"].min().reindex(enter.index).dropna()
    times = np.concatenate([enter.to_numpy(), leave.to_numpy()])
    steps = np.concatenate([np.ones(len(enter)), -np.ones(len(leave))])
    order = np.lexsort((steps, times))  # at equal times, leaving first
    return times[order], np.cumsum(steps[order])


def backlog_timeline(events: pd.DataFrame, window: float, dead_letter_queues: Iterable[str] = (),
                     end: float | None = None) -> pd.DataFrame:
    """Messages published and not yet settled, sampled at the end of each window."""
    times, backlog = _backlog_steps(events, dead_letter_queues)
    stop = end if end is not None else (float(times[-1]) if len(times) else window)
    edges = np.arange(window, stop + window, window)
    idx = np.searchsorted(times, edges, side="right") - 1
    values = np.where(idx >= 0, backlog[np.clip(idx, 0, None)] if len(backlog) else 0, 0)
    return pd.DataFrame({"time": edges, "backlog": values.astype(int)})


def drain_time(events: pd.DataFrame, after: float, threshold: float, dead_letter_queues: Iterable[str] = ()) -> float:
    """Time from ``after`` until the backlog first falls to ``threshold`` or below (NaN if never)."""
    times, backlog = _backlog_steps(events, dead_letter_queues)
    before = np.searchsorted(times, after, side="right") - 1
    if before < 0 or backlog[before] <= threshold:
        return 0.0
    later = np.nonzero((times > after) & (backlog <= threshold))[0]
    return float(times[later[0]] - after) if len(later) else math.nan
