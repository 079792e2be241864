"""The lines ``capsim run`` prints for a two- or three-phase commit run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..report import line, pairs, verdict_line

if TYPE_CHECKING:
    from ..result import Result

__all__ = ["transaction_lines"]


def transaction_lines(result: Result) -> list[str]:
    """Outcomes, costs, blocking and the atomicity verdict from the ``txn.*`` numbers."""
    s = result.summary
    return [
        line("transactions", pairs((k, s[f"txn.{k}"]) for k in (
            "count", "committed", "aborted", "split", "undecided"))),
        line("  commit latency", "ms: " + pairs((k, s[f"txn.commit_latency.{k}"]) for k in ("p50", "p95", "p99"))),
        line("  cost per commit", pairs((("messages", s["txn.messages_per_commit"]),
                                          ("forced writes", s["txn.forced_writes_per_commit"])))),
        line("  blocked", pairs((("transactions", s["txn.blocked"]), ("fraction", s["txn.blocked_fraction"]),
                                 ("mean ms", s["txn.blocked_time.mean"]), ("unresolved", s["txn.unresolved"])))),
        line("  locks", pairs((("conflicts", s["txn.lock_conflicts"]),
                               ("with a blocked holder", s["txn.conflicts_with_blocked"])))),
        verdict_line("atomicity", result.verdicts.get("atomicity"),
                     "no transaction committed at one participant and aborted at another"),
    ]
