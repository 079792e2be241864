"""Readable text tables of a run's summary, for the CLI and for notebooks.

:func:`format_summary` prints the lines every run has (scenario, faults, client
operations when there are clients, network messages), then the protocol's own
lines (:meth:`sim.protocol.ProtocolConfig.report`), which use :func:`fmt`,
:func:`line` and :func:`pairs` to look alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .units import format_duration

if TYPE_CHECKING:
    from .result import Result

__all__ = ["format_summary", "fmt", "line", "pairs", "verdict_line"]

LABEL_WIDTH = 22


def fmt(value: Any, kind: str = "") -> str:
    """``value`` for a table: ``-`` when missing, ``pct`` as a percentage, ``ms`` with its unit."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "ms":
        return f"{value:.2f} ms"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def line(label: str, text: str) -> str:
    """One report line: a left-aligned label, then the text."""
    return f"{label:<{LABEL_WIDTH}}{text}"


def pairs(items: Iterable[tuple[str, Any]], kind: str = "") -> str:
    """``name value  name value ...``."""
    return "  ".join(f"{name} {fmt(value, kind)}" for name, value in items)


def verdict_line(name: str, verdict: Any, holds: str, why: str = "") -> str:
    """``verdict  <name>: ok (<holds>)``, or ``VIOLATED`` with ``why`` (default: the verdict's explanation)."""
    if verdict is None:
        return line("verdict", f"{name}: not checked")
    if verdict.ok:
        return line("verdict", f"{name}: ok ({holds})")
    why = why or getattr(verdict, "explanation", "") or "see the verdict's evidence"
    return line("verdict", f"{name}: VIOLATED: {why}")


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
    ]
    if sc.workload.clients:
        lines += _operations(s) + [""]
        counter = result.verdicts.get("counter")
        if counter is not None:  # workload.pattern = "counter"
            lines += [verdict_line("counter", counter, counter.explanation), ""]
    dropped = {k.rsplit(".", 1)[1]: v for k, v in s.items() if k.startswith("messages.dropped.") and v}
    drops = ", ".join(f"{k} {v}" for k, v in dropped.items()) or "none"
    lines.append(line("network messages", f"sent {s['messages.sent']}  delivered {s['messages.delivered']}  "
                      f"duplicated {s['messages.duplicated']}  dropped: {drops}"))
    broken = {r: s.get(f"connections.broken.{r}", 0) for r in ("timeout", "heartbeat", "reset")}
    if s.get("messages.retransmitted") or any(broken.values()):
        causes = ", ".join(f"{r} {n}" for r, n in broken.items())
        lines.append(line("connections", f"retransmitted {s['messages.retransmitted']}  broken: {causes}  "
                          f"messages lost with them {s['messages.lost_on_broken_connections']}"))
    extra = [(k.split(".", 1)[1], v) for k, v in s.items() if k.startswith("protocol.")]
    for i, chunk in enumerate(_wrapped(extra)):
        lines.append(line("protocol" if i == 0 else "", chunk))
    own = sc.protocol.report(result)
    if own:
        lines += ["", *own]
    return "\n".join(lines)


def _wrapped(items: list[tuple[str, Any]], width: int = 96) -> list[str]:
    """``name value`` pairs on as few lines of at most ``width`` characters as fit."""
    out: list[str] = []
    for name, value in items:
        pair = f"{name} {fmt(value)}"
        if out and len(out[-1]) + 2 + len(pair) <= width:
            out[-1] += "  " + pair
        else:
            out.append(pair)
    return out


def _operations(s: dict[str, Any]) -> list[str]:
    lines = [
        f"{'operations':<22}{s['ops']:>10}   ok {s['ok']}  fail {s['fail']}  info {s['info']}",
        f"{'availability':<22}{fmt(s['availability'], 'pct'):>10}",
    ]
    for side in ("none", "majority", "minority"):
        if s.get(f"ops.{side}"):
            label = "  no partition" if side == "none" else f"  {side} side"
            lines.append(f"{label:<22}{fmt(s[f'availability.{side}'], 'pct'):>10}   ({s[f'ops.{side}']} ops)")
    lines.append(f"{'throughput':<22}{fmt(s['throughput']):>10} ok ops/s")
    if "retry.attempts" in s:
        lines.append(line("retries", pairs((k.replace("_", " "), s[f"retry.{k}"]) for k in (
            "attempts", "attempts_per_op", "retried_ops", "budget_denied"))))
    lines.append("")
    lines.append(f"{'latency (ok ops), ms':<22}{'count':>8}{'p50':>10}{'p95':>10}{'p99':>10}{'p99.9':>10}{'mean':>10}")
    for op in ("read", "write", "cas"):
        if f"latency.{op}.count" not in s:
            continue  # cas: only when the workload issued any
        row = f"  {op:<20}{s[f'latency.{op}.count']:>8}"
        for q in ("p50", "p95", "p99", "p999", "mean"):
            row += f"{fmt(s[f'latency.{op}.{q}']):>10}"
        lines.append(row)
    return lines
