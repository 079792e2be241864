"""Readable text tables of a run's summary, for the CLI and for notebooks."""

from __future__ import annotations

import math
from typing import Any

from .result import Result
from .units import format_duration

__all__ = ["format_summary"]


def _fmt(value: Any, kind: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "ms":
        return f"{value:.2f} ms"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def format_summary(result: Result) -> str:
    """A short multi-section table of the run's key numbers."""
    s = result.summary
    sc = result.scenario
    lines = [
        f"scenario   {sc.name}  (protocol {sc.protocol.tag}, {len(sc.nodes)} nodes, "
        f"{sc.workload.clients} clients, seed {result.seed})",
        f"simulated  {format_duration(sc.run.duration)} (warm-up {format_duration(sc.run.warmup)}) "
        f"in {result.runtime:.2f} s wall",
        f"faults     {s['faults']}",
        "",
        f"{'operations':<22}{s['ops']:>10}   ok {s['ok']}  fail {s['fail']}  info {s['info']}",
        f"{'availability':<22}{_fmt(s['availability'], 'pct'):>10}",
    ]
    for side in ("none", "majority", "minority"):
        if s.get(f"ops.{side}"):
            label = "  no partition" if side == "none" else f"  {side} side"
            lines.append(f"{label:<22}{_fmt(s[f'availability.{side}'], 'pct'):>10}   ({s[f'ops.{side}']} ops)")
    lines.append(f"{'throughput':<22}{_fmt(s['throughput']):>10} ok ops/s")
    lines.append("")
    lines.append(f"{'latency (ok ops)':<22}{'count':>8}{'p50':>10}{'p95':>10}{'p99':>10}{'p99.9':>10}{'mean':>10}")
    for op in ("read", "write"):
        row = f"  {op:<20}{s[f'latency.{op}.count']:>8}"
        for q in ("p50", "p95", "p99", "p999", "mean"):
            row += f"{_fmt(s[f'latency.{op}.{q}']):>10}"
        lines.append(row)
    lines.append("")
    dropped = {k.rsplit('.', 1)[1]: v for k, v in s.items() if k.startswith("messages.dropped.") and v}
    drops = ", ".join(f"{k} {v}" for k, v in dropped.items()) or "none"
    lines.append(f"{'messages':<22}sent {s['messages.sent']}  delivered {s['messages.delivered']}  "
                 f"duplicated {s['messages.duplicated']}  dropped: {drops}")
    extra = {k: v for k, v in s.items() if k.startswith("protocol.")}
    if extra:
        lines.append(f"{'protocol':<22}" + "  ".join(f"{k.split('.', 1)[1]} {_fmt(v)}" for k, v in extra.items()))
    return "\n".join(lines)
