"""The lines ``capsim run`` prints about message delivery (messaging and transactional messages)."""

from __future__ import annotations

from typing import Any

from ..drain import Span
from ..report import line, pairs, verdict_line

__all__ = ["delivery_lines"]

_ROWS = (
    ("messages", ("published", "confirmed", "publish_nacked", "returned")),
    ("  outcome", ("processed", "dead_lettered", "remaining", "dropped", "lost", "unconfirmed")),
    ("  deliveries", ("deliveries", "redeliveries", "duplicate_deliveries", "out_of_order")),
    ("  side effects", ("side_effects", "duplicate_side_effects", "dedup_skips")),
)


def delivery_lines(summary: dict[str, Any], prefix: str, verdict: Any) -> list[str]:
    """Outcomes per message, duplicates, attempts and end-to-end latency from the ``<prefix>*`` numbers."""
    s = {k[len(prefix):]: v for k, v in summary.items() if k.startswith(prefix)}
    if not s:
        return []
    out = [line(label, pairs((k.replace("_", " "), s[k]) for k in keys)) for label, keys in _ROWS]
    out.append(line("  attempts", pairs((k, s[f"attempts.{k}"]) for k in ("mean", "max"))))
    latency = pairs((k, s[f"latency.{k}"]) for k in ("p50", "p95", "p99"))
    out.append(line("  latency", f"publish to first effect, ms: {latency}"))
    span = Span.from_summary(summary, prefix)
    if span is not None:
        out.append(line("  span", span.describe()))
    out.append(verdict_line("at-least-once", verdict, "no confirmed message was lost",
                            f"{s['lost']} confirmed message(s) lost"))
    if verdict is not None and not verdict.ok:
        shown = ", ".join(verdict.lost_ids[:10]) + (" ..." if len(verdict.lost_ids) > 10 else "")
        out.append(line("", f"lost: {shown}"))
    return out
