"""From a history (and the fault record) to the numbers of DESIGN.md section 4.

Only operations invoked in ``[warmup, duration)`` count. Availability is the
fraction of operations issued to a node that was up that completed ``ok``
within the client's timeout; it is also split by the client's partition side
at invoke (``none``: no partition active; ``majority``; ``minority``). A
compare-and-set that found another value (``fail`` with ``"precondition
failed"``) was answered by an available system, so it counts as available.
Latency is reported for reads and writes, and for compare-and-sets when the
history has any (``ok`` ones: applied).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .kernel.messages import CAS_MISMATCH

__all__ = ["measured", "answered", "availability", "latency_stats", "timeline", "summarize", "PERCENTILES"]

PERCENTILES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9))
SIDES = ("none", "majority", "minority")


def measured(history: pd.DataFrame, warmup: float, duration: float) -> pd.DataFrame:
    """The operations that count: invoked in ``[warmup, duration)``."""
    inv = history["invoke"]
    return history[(inv >= warmup) & (inv < duration)]


def answered(ops: pd.DataFrame) -> np.ndarray:
    """Which operations count as available: ``ok``, or a cas that failed finding another value than expected.

    A cas whose retry found another value after an earlier attempt timed out
    ends ``info`` (the earlier attempt may have applied it): not counted.
    """
    outcome = ops["outcome"]
    done = (outcome == "ok").to_numpy(dtype=bool)
    if "error" in ops.columns and "op" in ops.columns:
        done = done | ((ops["op"] == "cas") & (outcome == "fail")
                       & (ops["error"] == CAS_MISMATCH)).to_numpy(dtype=bool)
    return done


def availability(ops: pd.DataFrame) -> float:
    """Fraction of operations to an up node that were answered (:func:`answered`; NaN if there are none)."""
    up = ops["node_up"].to_numpy(dtype=bool)
    if not up.any():
        return math.nan
    return float(answered(ops)[up].mean())


def latency_stats(ops: pd.DataFrame) -> dict[str, float]:
    """Percentiles and mean of invoke-to-complete time of ``ok`` operations (ms)."""
    ok = ops[ops["outcome"] == "ok"]
    lat = (ok["complete"] - ok["invoke"]).to_numpy(dtype=float)
    out: dict[str, float] = {"count": int(len(lat))}
    if len(lat) == 0:
        out.update({name: math.nan for name, _ in PERCENTILES})
        out["mean"] = math.nan
        return out
    qs = np.percentile(lat, [q for _, q in PERCENTILES])
    out.update({name: float(v) for (name, _), v in zip(PERCENTILES, qs)})
    out["mean"] = float(lat.mean())
    return out


def _covered(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of ``[lo, hi)`` covered by the union of ``intervals``."""
    total = 0.0
    current: tuple[float, float] | None = None
    for a, b in sorted((max(a, lo), min(b, hi)) for a, b in intervals):
        if b <= a:
            continue
        if current is None or a > current[1]:
            if current is not None:
                total += current[1] - current[0]
            current = (a, b)
        else:
            current = (current[0], max(current[1], b))
    if current is not None:
        total += current[1] - current[0]
    return total


def timeline(history: pd.DataFrame, faults: pd.DataFrame, duration: float, window: float) -> pd.DataFrame:
    """Per time window: operations, outcomes, availability (overall and per side), and
    the fraction of the window spent partitioned and with some node crashed."""
    edges = np.arange(0.0, duration, window)
    edges = np.append(edges, duration)
    nbins = len(edges) - 1
    inv = history["invoke"].to_numpy(dtype=float)
    keep = inv < duration
    idx = np.searchsorted(edges, inv[keep], side="right") - 1
    outcome = history["outcome"].to_numpy()[keep]
    up = history["node_up"].to_numpy(dtype=bool)[keep]
    side = history["side"].to_numpy()[keep]
    ok = outcome == "ok"
    done = answered(history)[keep]

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(idx[mask], minlength=nbins)[:nbins]

    def avail(mask: np.ndarray) -> np.ndarray:
        eligible = count(mask & up)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(eligible > 0, count(mask & up & done) / np.maximum(eligible, 1), np.nan)

    everything = np.ones(len(idx), dtype=bool)
    out = pd.DataFrame({
        "start": edges[:-1],
        "end": edges[1:],
        "ops": count(everything),
        "ok": count(ok),
        "fail": count(outcome == "fail"),
        "info": count(outcome == "info"),
        "availability": avail(everything),
    })
    for name in SIDES[1:]:
        out[f"availability_{name}"] = avail(side == name)
    spans = list(zip(faults["kind"], faults["start"].astype(float), faults["end"].astype(float)))
    parts = [(a, b) for k, a, b in spans if k == "partition"]
    crashes = [(a, b) for k, a, b in spans if k == "crash"]
    width = out["end"] - out["start"]
    out["partitioned"] = [_covered(parts, lo, hi) for lo, hi in zip(out["start"], out["end"])] / width
    out["crashed"] = [_covered(crashes, lo, hi) for lo, hi in zip(out["start"], out["end"])] / width
    return out


def summarize(history: pd.DataFrame, *, warmup: float, duration: float, network: Any,
              faults: pd.DataFrame, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The flat summary dict of one run (keys like ``latency.read.p99``)."""
    ops = measured(history, warmup, duration)
    s: dict[str, Any] = {
        "ops": int(len(ops)),
        "ok": int((ops["outcome"] == "ok").sum()),
        "fail": int((ops["outcome"] == "fail").sum()),
        "info": int((ops["outcome"] == "info").sum()),
        "availability": availability(ops),
    }
    for side in SIDES:
        on_side = ops[ops["side"] == side]
        s[f"ops.{side}"] = int(len(on_side))
        s[f"availability.{side}"] = availability(on_side)
    span_s = (duration - warmup) / 1000.0
    s["throughput"] = s["ok"] / span_s if span_s > 0 else math.nan
    kinds = ("read", "write", "cas") if (history["op"] == "cas").any() else ("read", "write")
    for op in kinds:
        for k, v in latency_stats(ops[ops["op"] == op]).items():
            s[f"latency.{op}.{k}"] = v
    s["messages.sent"] = int(network.sent)
    s["messages.delivered"] = int(network.delivered)
    s["messages.duplicated"] = int(network.duplicated)
    for reason in ("partition", "loss", "sender_crashed", "receiver_crashed"):
        s[f"messages.dropped.{reason}"] = int(network.dropped.get(reason, 0))
    s["messages.per_op"] = network.sent / len(history) if len(history) else math.nan
    transport = getattr(network, "transport", None)  # connections (sim.kernel.transport)
    s["messages.retransmitted"] = int(transport.retransmitted) if transport is not None else 0
    for reason in ("timeout", "heartbeat", "reset"):
        s[f"connections.broken.{reason}"] = int(transport.broken[reason]) if transport is not None else 0
    s["messages.lost_on_broken_connections"] = int(transport.lost) if transport is not None else 0
    s["faults"] = int(len(faults))
    if extra:
        s.update(extra)
    return s
