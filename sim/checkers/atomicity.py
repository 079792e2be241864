"""Atomicity of distributed transactions: one outcome per transaction, applied everywhere.

The input is what the participants did, not what the protocol meant to do: one row
per state change (``gtid``, ``node``, ``time``, ``state``, states ``working``,
``prepared``, ``precommitted``, ``committed``, ``aborted``), the participant set of
every transaction, and optionally what each client was told (``ok``, ``fail``,
``info``). A participant's outcome is its last ``committed``/``aborted`` state; its
*final* state is its last state of any kind (``prepared`` after ``aborted`` means it
came back in doubt after a crash). Violations, one row each:

* ``split``: committed at some participants and aborted at others;
* ``flip``: one participant both committed and aborted the transaction;
* ``incomplete``: the transaction is decided but at the end some participant has not
  applied it. Committed (a participant committed, or the client was told ``ok``):
  a participant whose final state is not ``committed``. Aborted (a participant
  aborted, or the client was told ``fail``): a participant still holding its lock
  (final state ``working``, ``prepared`` or ``precommitted``); a participant with no
  record of an aborted transaction is fine (presumed abort: it never locked anything);
* ``client``: the client was told ``ok`` but some participant aborted, or told
  ``fail`` but some participant committed. ``info`` constrains nothing.

``split`` and ``flip`` break atomicity itself; ``incomplete`` means the run ended
before recovery finished (or never would); ``client`` breaks the ok/fail contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

__all__ = ["check_atomicity", "AtomicityResult", "VIOLATION_KINDS", "REQUIRED_COLUMNS"]

REQUIRED_COLUMNS = ("gtid", "node", "time", "state")
VIOLATION_KINDS = ("split", "flip", "incomplete", "client")
_HOLDING = ("working", "prepared", "precommitted")
_COLUMNS = ["gtid", "kind", "committed", "aborted", "pending", "detail"]


@dataclass(frozen=True, eq=False)
class AtomicityResult:
    """The verdict of :func:`check_atomicity` and its evidence.

    ``violations`` has one row per violation: ``gtid``, ``kind`` (one of
    :data:`VIOLATION_KINDS`), the participants that ``committed`` and ``aborted``
    (comma-separated), those still ``pending`` (no outcome, or in doubt), and a
    sentence of ``detail``.
    """

    transactions: int
    violations: pd.DataFrame
    explanation: str

    def count(self, kind: str) -> int:
        if kind not in VIOLATION_KINDS:
            raise ValueError(f"kind must be one of {', '.join(VIOLATION_KINDS)}, got {kind!r}")
        return int((self.violations["kind"] == kind).sum())

    @property
    def atomic(self) -> bool:
        """No transaction committed at one participant and aborted at another (or flipped)."""
        return self.count("split") == 0 and self.count("flip") == 0

    @property
    def complete(self) -> bool:
        """Every decided transaction was applied at every participant by the end."""
        return self.count("incomplete") == 0

    @property
    def client_consistent(self) -> bool:
        return self.count("client") == 0

    @property
    def ok(self) -> bool:
        return len(self.violations) == 0


def check_atomicity(events: pd.DataFrame, participants: Mapping[str, Sequence[str]],
                    client: Mapping[str, str] | None = None) -> AtomicityResult:
    """Check every transaction in ``participants`` (gtid -> its participant nodes).

    ``events`` needs the columns :data:`REQUIRED_COLUMNS` (others are ignored);
    rows of transactions not in ``participants`` are ignored. ``client`` maps a gtid
    to the client's outcome.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"events lack column(s) {', '.join(missing)}; need {', '.join(REQUIRED_COLUMNS)}")
    client = client or {}
    states = _States.of(events)
    rows: list[dict[str, str]] = []
    for gtid, nodes in participants.items():
        rows.extend(_violations(gtid, nodes, states, client.get(gtid)))
    violations = pd.DataFrame(rows, columns=_COLUMNS)
    return AtomicityResult(len(participants), violations, _explain(len(participants), violations))


@dataclass(frozen=True, eq=False)
class _States:
    """What each participant did with each transaction, keyed by (gtid, node)."""

    final: dict[tuple[str, str], str]  # its last state of any kind
    outcome: dict[tuple[str, str], str]  # its last committed/aborted state
    both: set[tuple[str, str]]  # it both committed and aborted

    @classmethod
    def of(cls, events: pd.DataFrame) -> _States:
        """Replay the state changes in time order (ties in input order)."""
        final: dict[tuple[str, str], str] = {}
        outcome: dict[tuple[str, str], str] = {}
        both: set[tuple[str, str]] = set()
        ordered = events.sort_values("time", kind="stable")
        for gtid, node, state in zip(ordered["gtid"], ordered["node"], ordered["state"]):
            key = (gtid, node)
            final[key] = state
            if state in ("committed", "aborted"):
                previous = outcome.get(key)
                if previous is not None and previous != state:
                    both.add(key)
                outcome[key] = state
        return cls(final, outcome, both)


def _violations(gtid: str, nodes: Sequence[str], states: _States, told: str | None) -> list[dict[str, str]]:
    """The violation rows of one transaction (see the module docstring), given what its client was told."""
    final, outcome = states.final, states.outcome
    committed = [n for n in nodes if outcome.get((gtid, n)) == "committed"]
    aborted = [n for n in nodes if outcome.get((gtid, n)) == "aborted"]
    pending = [n for n in nodes if final.get((gtid, n)) in _HOLDING or (gtid, n) not in final]
    rows: list[dict[str, str]] = []

    def add(kind: str, detail: str) -> None:
        rows.append({"gtid": gtid, "kind": kind, "committed": ",".join(committed),
                     "aborted": ",".join(aborted), "pending": ",".join(pending), "detail": detail})

    for n in nodes:
        if (gtid, n) in states.both:
            add("flip", f"{n} both committed and aborted {gtid}")
    if committed and aborted:
        add("split", f"committed at {', '.join(committed)} but aborted at {', '.join(aborted)}")
    if committed and aborted:
        pass  # a split is reported above; "applied everywhere" has no meaning for it
    elif committed or told == "ok":
        lagging = [n for n in nodes if final.get((gtid, n)) != "committed"]
        if lagging:
            add("incomplete", f"committed, but not applied at {', '.join(lagging)} by the end")
    elif aborted or told == "fail":
        holding = [n for n in nodes if final.get((gtid, n)) in _HOLDING]
        if holding:
            add("incomplete", f"aborted, but still locked at {', '.join(holding)} by the end")
    if told == "ok" and aborted:
        add("client", f"client told committed, but aborted at {', '.join(aborted)}")
    elif told == "fail" and committed:
        add("client", f"client told aborted, but committed at {', '.join(committed)}")
    return rows


def _explain(total: int, violations: pd.DataFrame) -> str:
    if len(violations) == 0:
        return f"all {total} transactions atomic and applied everywhere"
    parts = []
    for kind in VIOLATION_KINDS:
        sub = violations[violations["kind"] == kind]
        if len(sub):
            first = sub.iloc[0]
            parts.append(f"{len(sub)} {kind} (e.g. {first['gtid']}: {first['detail']})")
    return f"{violations['gtid'].nunique()} of {total} transactions violate: " + "; ".join(parts)
