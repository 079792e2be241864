"""Reading a Jepsen-shaped publish/consume history of a broker cluster: the same checks for the model and the real one.

A history is a DataFrame with one row per client event (:data:`HISTORY_COLUMNS`):
``time`` (ms), ``client``, ``node`` (the node the client is connected to),
``msg_id``, ``event`` (:data:`EVENTS`), ``type`` (Jepsen's ``invoke``/``ok``/
``fail``/``info``), ``redelivered`` and ``detail``. A publish is one ``published``
row and at most one outcome per attempt: ``confirmed`` (``ok``), ``nacked``
(``fail``) or ``unknown`` (``info``: confirm timeout or connection lost); a
confirm that arrives after the message was recorded unknown is still recorded,
with ``detail = "late"``. Consumers record ``delivered`` and ``acked``. Both the
real cluster's clients (:mod:`sim.rabbitmq.cluster_clients`) and the broker-cluster
model (:mod:`sim.messaging.cluster_model`) write this shape.

* :func:`message_outcomes`: one row per message (its publish outcome, deliveries);
* :func:`check_confirmed_delivered`: the at-least-once verdict (every confirmed
  message delivered, nothing delivered that was never published);
* :func:`partition_report`: the numbers issue-style comparisons need, each with a
  stated meaning: ``lost`` (confirmed, never delivered), ``duplicates`` (messages
  delivered more than once), ``unconfirmed_delivered`` (nacked, unknown or pending,
  yet delivered: allowed, a publisher must treat ``info`` as maybe), publish
  availability per partition side (the fraction of ``bin``-ms windows of the
  partition in which a publisher on that side published a message that was
  confirmed in time, i.e. not ``late``, and before the heal) and the time to recover after the heal: for
  each publisher, from the heal to its first publish confirmed in time after its last
  trouble (a publish not confirmed in time, or a silence longer than ``gap`` ms, by
  default 3 x its median interval between publishes: no connection) after the heal;
  the longest over publishers, NaN if one never recovered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = ["EVENTS", "HISTORY_COLUMNS", "message_outcomes", "DeliveryVerdict", "check_confirmed_delivered",
           "PartitionReport", "partition_report", "check_history"]

EVENTS = {"published": "invoke", "confirmed": "ok", "nacked": "fail", "unknown": "info",
          "delivered": "ok", "acked": "ok"}
HISTORY_COLUMNS = ["time", "client", "node", "msg_id", "event", "type", "redelivered", "detail"]


def check_history(history: pd.DataFrame) -> None:
    """Raise ``ValueError`` naming what is wrong if ``history`` is not a cluster history."""
    missing = [c for c in HISTORY_COLUMNS if c not in history.columns]
    if missing:
        raise ValueError(f"history lacks the column(s) {', '.join(missing)}; a cluster history has "
                         f"{', '.join(HISTORY_COLUMNS)}")
    unknown = sorted(set(history["event"]) - set(EVENTS))
    if unknown:
        raise ValueError(f"history.event: unknown event(s) {unknown}; accepted: {', '.join(EVENTS)}")


def message_outcomes(history: pd.DataFrame) -> pd.DataFrame:
    """One row per message id: ``publish`` (confirmed > nacked > unknown > pending; ``""`` if never published),
    ``deliveries``, ``redeliveries``, ``acks``, ``publisher`` and ``node`` (where it was published)."""
    rows: dict[str, dict[str, Any]] = {}
    for r in history.itertuples(index=False):
        row = rows.setdefault(str(r.msg_id), {"msg_id": r.msg_id, "publisher": "", "node": "", "publish": "",
                                              "deliveries": 0, "redeliveries": 0, "acks": 0, "_seen": set()})
        if r.event == "published":
            row["publisher"], row["node"] = r.client, r.node
        elif r.event in ("confirmed", "nacked", "unknown"):
            row["_seen"].add(r.event)
        elif r.event == "delivered":
            row["deliveries"] += 1
            row["redeliveries"] += bool(r.redelivered)
        elif r.event == "acked":
            row["acks"] += 1
    out = []
    for row in rows.values():
        seen = row.pop("_seen")
        if row["publisher"]:
            row["publish"] = next((e for e in ("confirmed", "nacked", "unknown") if e in seen), "pending")
        out.append(row)
    columns = ["msg_id", "publisher", "node", "publish", "deliveries", "redeliveries", "acks"]
    return pd.DataFrame(out, columns=columns)


@dataclass
class DeliveryVerdict:
    """At-least-once on a cluster: ``lost`` = confirmed, never delivered; ``phantom`` = delivered,
    never published."""

    ok: bool
    counts: dict[str, int]
    lost: list[str]
    phantom: list[str]


def check_confirmed_delivered(history: pd.DataFrame) -> DeliveryVerdict:
    """Every confirmed message was delivered at least once, and nothing unpublished was delivered."""
    m = message_outcomes(history)
    lost = sorted(m.loc[(m["publish"] == "confirmed") & (m["deliveries"] == 0), "msg_id"])
    phantom = sorted(m.loc[(m["publish"] == "") & (m["deliveries"] > 0), "msg_id"])
    counts = {k: int((m["publish"] == k).sum()) for k in ("confirmed", "nacked", "unknown", "pending")}
    counts["delivered"] = int((m["deliveries"] > 0).sum())
    counts["lost"], counts["phantom"] = len(lost), len(phantom)
    return DeliveryVerdict(not lost and not phantom, counts, lost, phantom)


@dataclass
class PartitionReport:
    """What one run under one partition did to its messages (meanings: module docstring)."""

    counts: dict[str, int]
    lost: list[str]
    duplicated: list[str]
    unconfirmed_delivered: list[str]
    availability: dict[str, float] = field(default_factory=dict)
    """side -> fraction of the partition's windows with a publish confirmed in time before the heal
    (NaN: no publisher there)"""
    recovery: float = math.nan
    """ms from the heal until every publisher publishes and is confirmed in time again (NaN: never)"""

    def row(self) -> dict[str, Any]:
        """The report as one flat row (for a table of configurations)."""
        out: dict[str, Any] = dict(self.counts)
        out.update({f"availability_{side}": v for side, v in sorted(self.availability.items())})
        out["recovery_ms"] = self.recovery
        return out


def partition_report(history: pd.DataFrame, *, start: float, end: float, sides: Mapping[str, str],
                     bin: float = 250.0, gap: float | None = None) -> PartitionReport:
    """The numbers of a run with one partition from ``start`` to ``end`` (ms); ``sides`` maps every node
    a publisher used to its side's label (e.g. ``majority`` / ``minority``)."""
    check_history(history)
    if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
        raise ValueError(f"partition: end must be a finite time after start, got start={start}, end={end}")
    if not bin > 0:
        raise ValueError(f"bin must be > 0 ms, got {bin}")
    if gap is not None and not gap > 0:
        raise ValueError(f"gap must be > 0 ms or None (3 x each publisher's median interval), got {gap}")
    m = message_outcomes(history)
    lost = sorted(m.loc[(m["publish"] == "confirmed") & (m["deliveries"] == 0), "msg_id"])
    duplicated = sorted(m.loc[m["deliveries"] > 1, "msg_id"])
    unconfirmed = sorted(m.loc[m["publish"].isin(["nacked", "unknown", "pending"]) & (m["deliveries"] > 0), "msg_id"])
    counts = {"published": int((m["publish"] != "").sum())}
    counts.update({k: int((m["publish"] == k).sum()) for k in ("confirmed", "nacked", "unknown", "pending")})
    counts.update({"delivered": int((m["deliveries"] > 0).sum()), "lost": len(lost), "duplicates": len(duplicated),
                   "unconfirmed_delivered": len(unconfirmed)})

    pub = history[history["event"] == "published"]
    for node in sorted(set(pub["node"])):
        if node not in sides:
            raise ValueError(f"sides: node {node!r} (a publisher's node) has no side; sides given for "
                             f"{', '.join(sorted(sides)) or 'no node'}")
    confirms = history[(history["event"] == "confirmed") & (history["detail"] != "late")]
    on_time = set(confirms["msg_id"])
    during = set(confirms.loc[confirms["time"] < end, "msg_id"])
    nbins = max(1, math.ceil((end - start) / bin))
    availability: dict[str, float] = {}
    for side in sorted(set(sides.values())):
        nodes = {n for n, s in sides.items() if s == side}
        mine = pub[pub["node"].isin(nodes)]
        if mine.empty:
            availability[side] = math.nan
            continue
        ok = mine[mine["msg_id"].isin(during) & (mine["time"] >= start) & (mine["time"] < end)]
        bins = {min(int((t - start) // bin), nbins - 1) for t in ok["time"]}
        availability[side] = len(bins) / nbins
    recovery = 0.0
    for _client, rows in pub.groupby("client", sort=True):
        times = rows.loc[rows["time"] >= end, "time"].to_numpy()
        good = rows.loc[rows["time"] >= end, "msg_id"].isin(on_time).to_numpy()
        if not good.any():  # never published again, or nothing it published after the heal was confirmed in time
            recovery = math.nan
            break
        # the last trouble after the heal: a publish not confirmed in time, or a silence longer than `gap`
        every = rows["time"].to_numpy()
        silence = gap if gap is not None else math.inf
        if gap is None and len(every) > 2:
            silence = 3.0 * float(pd.Series(every).diff().median())
        trouble = end
        prev = end
        for t, fine in zip(times, good, strict=True):
            if t - prev > silence or not fine:
                trouble = t
            prev = t
        after = times[(times >= trouble) & good]
        if after.size == 0:
            recovery = math.nan
            break
        recovery = max(recovery, float(after.min()) - end)
    return PartitionReport(counts, lost, duplicated, unconfirmed, availability, recovery)
