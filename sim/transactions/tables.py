"""From the transaction recorder to tables, the atomicity verdict and the run summary.

Definitions (times in ms):

* A participant is **uncertain** from the moment it votes yes (its prepared record is
  durable) until it learns the outcome; in 3PC pre-committed counts too. It holds its
  lock all that time. Each stretch is an *episode*; a crash does not end one, and a
  participant that comes back in doubt after losing a lazily written abort starts a
  new one. An episode still open at the end of the run is *unresolved*.
* A participant is **blocked** when an episode lasts longer than the config's
  ``threshold`` (``block_threshold``, by default ``vote_timeout + decision_timeout +
  2 * retry_interval``). ``blocked_time`` is the length of such episodes; a transaction is
  blocked when any of its participants is. ``cause`` names a fault active during the
  episode's first ``threshold`` ms that explains it: a crash of the coordinator or of
  the participant, a partition separating them, or message loss.
* The **uncertainty window** of a transaction runs from the moment the coordinator
  sends its prepare (can-commit) messages to the moment it sends the decision, and is
  0 when nobody votes yes. A coordinator crash inside it leaves every participant that
  votes yes uncertain with nobody who knows the outcome (messages already sent are
  still delivered, so participants reached by the prepare vote even after the crash).
  ``window_all_yes`` is the window of transactions where everyone voted yes (0
  otherwise): with the cooperative termination protocol only those block, because a
  participant that voted no knows the outcome.
* **Lost throughput**: prepares refused (voted no) because their account was locked
  by a participant that was blocked at that moment, per second.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..checkers.atomicity import AtomicityResult, check_atomicity
from ..faultspec import Crash, LossWindow, Partition
from .recorder import TxnRecorder
from .states import FINAL_STATES, UNCERTAIN_STATES

if TYPE_CHECKING:
    from ..kernel.world import World

__all__ = [
    "transaction_tables",
    "transaction_table",
    "participant_table",
    "atomicity",
    "summarize",
    "recorder",
]


def recorder(world: World) -> TxnRecorder:
    """The transaction recorder of a two- or three-phase commit world (its protocol state)."""
    rec = world.state
    if not isinstance(rec, TxnRecorder):
        raise TypeError(f"not a commit-protocol world: its state is {type(rec).__name__}")
    return rec


def transaction_tables(world: World) -> dict[str, pd.DataFrame]:
    """Every table at once: ``transactions``, ``participants``, ``events``, ``locks``,
    ``conflicts``, ``messages`` (per transaction and type) and ``balances``."""
    rec = recorder(world)
    key = (world.now, len(rec.events), len(rec.specs), len(rec.notes), len(world.history))
    cached = rec._tables
    if cached is not None and cached[0] == key:
        return cached[1]
    out = _build(world)
    rec._tables = (key, out)
    return out


def transaction_table(world: World) -> pd.DataFrame:
    """One row per transaction (see the module docstring for the columns' meaning)."""
    return transaction_tables(world)["transactions"]


def participant_table(world: World) -> pd.DataFrame:
    """One row per (transaction, participant)."""
    return transaction_tables(world)["participants"]


def atomicity(world: World) -> AtomicityResult:
    """The atomicity checker's verdict on this run, clients' outcomes included."""
    rec = recorder(world)
    tables = transaction_tables(world)
    cached = rec._verdict
    if cached is not None and cached[0] is tables:
        return cached[1]
    txns = tables["transactions"]
    client = dict(zip(txns["gtid"], txns["client_outcome"]))
    verdict = check_atomicity(tables["events"], {g: s.participants for g, s in rec.specs.items()}, client)
    rec._verdict = (tables, verdict)
    return verdict


# -- building the tables ------------------------------------------------------------
Episodes = dict[tuple[str, str], list[tuple[float, float]]]


def _build(world: World) -> dict[str, pd.DataFrame]:
    rec = recorder(world)
    end = world.now
    events = rec.events.frame()
    prow, episodes = _participant_rows(rec, _cause_finder(world), end)
    participants = pd.DataFrame(prow, columns=_PARTICIPANT_COLUMNS)
    transactions = pd.DataFrame(_transaction_rows(rec, prow, world.history.to_frame()), columns=_TRANSACTION_COLUMNS)
    locks = pd.DataFrame(rec.locks, columns=["gtid", "node", "account", "acquired", "released"])
    locks["held"] = locks["released"].fillna(end) - locks["acquired"]
    messages = pd.DataFrame([(g, typ, n) for g, per_type in rec.messages.items() for typ, n in per_type.items()],
                            columns=["gtid", "type", "count"])
    return {"transactions": transactions, "participants": participants, "events": events, "locks": locks,
            "conflicts": _conflicts(rec, episodes), "messages": messages, "balances": _balances(world, rec)}


def _episode_rows(evs: list[tuple[float, str]], end: float
                  ) -> tuple[list[tuple[float, float]], bool, str | None, float]:
    """A participant's uncertain episodes, whether the last is still open, its outcome and when."""
    eps: list[tuple[float, float]] = []
    start = None
    outcome, outcome_time = None, math.nan
    for t, s in evs:
        if s in UNCERTAIN_STATES:
            if start is None:
                start = t
        elif s in FINAL_STATES:
            if start is not None:
                eps.append((start, t))
                start = None
            outcome, outcome_time = s, t
    unresolved = start is not None
    if start is not None:
        eps.append((start, end))
    return eps, unresolved, outcome, outcome_time


def _participant_rows(rec: TxnRecorder, cause_of: Callable[[str, float, float], str | None], end: float
                      ) -> tuple[list[dict[str, Any]], Episodes]:
    thr = rec.threshold
    per: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for t, g, n, s, _ in rec.events:
        per.setdefault((g, n), []).append((t, s))
    episodes: Episodes = {}
    rows: list[dict[str, Any]] = []
    for gtid, spec in rec.specs.items():
        for node in spec.participants:
            evs = per.get((gtid, node), [])
            eps, unresolved, outcome, outcome_time = _episode_rows(evs, end)
            episodes[(gtid, node)] = eps
            blocked = [(a, b) for a, b in eps if b - a > thr]
            vote = rec.votes.get((gtid, node))
            rows.append({
                "gtid": gtid,
                "node": node,
                "vote": None if vote is None else ("yes" if vote[1] else "no"),
                "vote_time": math.nan if vote is None else vote[0],
                "vote_reason": None if vote is None else vote[2],
                "final_state": evs[-1][1] if evs else None,
                "outcome": outcome,
                "outcome_time": outcome_time,
                "episodes": len(eps),
                "uncertain_time": float(sum(b - a for a, b in eps)),
                "blocked": bool(blocked),
                "blocked_time": float(sum(b - a for a, b in blocked)),
                "blocked_since": blocked[0][0] + thr if blocked else math.nan,
                "unresolved": unresolved,
                "cause": cause_of(node, blocked[0][0], blocked[0][0] + thr) if blocked else None,
            })
    return rows, episodes


def _verdict(outcomes: list[str | None], decided: str | None) -> str:
    """A transaction's outcome from its participants' outcomes and the coordinator's decision."""
    committed, aborted = outcomes.count("committed"), outcomes.count("aborted")
    if committed and aborted or aborted and decided == "commit":
        return "split"  # (or the coordinator committed while participants aborted)
    if committed or decided == "commit":
        return "committed"
    if aborted or decided == "abort":
        return "aborted"
    return "undecided"


def _transaction_rows(rec: TxnRecorder, prow: list[dict[str, Any]], history: pd.DataFrame) -> list[dict[str, Any]]:
    client = {op: (o, i, c) for op, o, i, c in zip(history["op_id"], history["outcome"], history["invoke"],
                                                   history["complete"])}
    by_txn: dict[str, list[dict[str, Any]]] = {}
    for row in prow:
        by_txn.setdefault(row["gtid"], []).append(row)
    out: list[dict[str, Any]] = []
    for gtid, spec in rec.specs.items():
        rows = by_txn.get(gtid, [])
        decision = rec.decisions.get(gtid)
        yes = sum(r["vote"] == "yes" for r in rows)
        t_dec = decision[0] if decision is not None else math.nan
        window = t_dec - rec.begin[gtid] if yes else 0.0
        outcome, invoke, complete = client.get(spec.op_id, (None, math.nan, math.nan))
        blocked = [r for r in rows if r["blocked"]]
        out.append({
            "gtid": gtid,
            "op_id": spec.op_id,
            "begin": rec.begin[gtid],
            "n": len(spec.participants),
            "participants": ",".join(spec.participants),
            "payer": spec.payer,
            "account": spec.account,
            "amount": spec.amount,
            "no_votes": sum(r["vote"] == "no" for r in rows),
            "decision": None if decision is None else decision[1],
            "decision_time": t_dec,
            "decision_how": None if decision is None else decision[2],
            "outcome": _verdict([r["outcome"] for r in rows], None if decision is None else decision[1]),
            "window": window,
            "window_all_yes": window if yes == len(spec.participants) else 0.0,
            "messages": int(sum(rec.messages.get(gtid, {}).values())),
            "forced_writes": rec.forced.get(gtid, 0),
            "lazy_writes": rec.lazy.get(gtid, 0),
            "uncertain_time": max((r["uncertain_time"] for r in rows), default=0.0),
            "blocked": bool(blocked),
            "blocked_participants": len(blocked),
            "blocked_time": max((r["blocked_time"] for r in blocked), default=0.0),
            "unresolved": any(r["unresolved"] for r in rows),
            "client_outcome": outcome,
            "latency": complete - invoke,
        })
    return out


def _conflicts(rec: TxnRecorder, episodes: Episodes) -> pd.DataFrame:
    """Refused prepares, with whether the lock's holder was blocked at that moment."""
    thr = rec.threshold
    rows = []
    for t, node, account, gtid, holder in rec.conflicts:
        eps = episodes.get((holder, node), [])
        holder_blocked = any(a + thr <= t <= b for a, b in eps if b - a > thr)
        rows.append((t, node, account, gtid, holder, holder_blocked))
    return pd.DataFrame(rows, columns=["time", "node", "account", "gtid", "holder", "holder_blocked"])


def _balances(world: World, rec: TxnRecorder) -> pd.DataFrame:
    protocol = world.scenario.protocol
    initial = getattr(protocol, "initial_balance", 0)
    rows = [(name, account, balance, balance - initial) for name in rec.participants
            for account, balance in sorted(world.nodes[name].disk.get("balances", {}).items())]
    return pd.DataFrame(rows, columns=["node", "account", "balance", "change"])


_PARTICIPANT_COLUMNS = ["gtid", "node", "vote", "vote_time", "vote_reason", "final_state", "outcome",
                        "outcome_time", "episodes", "uncertain_time", "blocked", "blocked_time", "blocked_since",
                        "unresolved", "cause"]
_TRANSACTION_COLUMNS = ["gtid", "op_id", "begin", "n", "participants", "payer", "account", "amount", "no_votes",
                        "decision", "decision_time", "decision_how", "outcome", "window", "window_all_yes",
                        "messages", "forced_writes", "lazy_writes", "uncertain_time", "blocked",
                        "blocked_participants", "blocked_time", "unresolved", "client_outcome", "latency"]


def _cause_finder(world: World) -> Callable[[str, float, float], str | None]:
    """A function naming a fault that explains a participant blocked during [lo, hi]."""
    coordinator = recorder(world).coordinator
    faults = list(world.faults)
    global_loss = world.scenario.network.loss > 0

    def separates(fault: Partition, a: str, b: str) -> bool:
        def group(n: str) -> int:
            return next((i for i, g in enumerate(fault.groups) if n in g), len(fault.groups))

        ga, gb = group(a), group(b)
        return ga != gb and (not fault.one_way or ga == 0 or gb == 0)

    def cause(node: str, lo: float, hi: float) -> str | None:
        active = [f for f in faults if f.start <= hi and f.end >= lo]
        if any(isinstance(f, Crash) and f.node == coordinator for f in active):
            return "coordinator crash"
        if any(isinstance(f, Crash) and f.node == node for f in active):
            return "participant crash"
        if any(isinstance(f, Partition) and separates(f, coordinator, node) for f in active):
            return "partition"
        if global_loss or any(isinstance(f, LossWindow) and f.probability > 0 for f in active):
            return "message loss"
        return None

    return cause


# -- the summary ------------------------------------------------------------------
def _pcts(prefix: str, values: np.ndarray) -> dict[str, float]:
    """Mean, p50, p95 and p99 of ``values`` (NaN when there are none)."""
    if len(values) == 0:
        return {f"{prefix}.{k}": math.nan for k in ("mean", "p50", "p95", "p99")}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {f"{prefix}.mean": float(values.mean()), f"{prefix}.p50": float(p50), f"{prefix}.p95": float(p95),
            f"{prefix}.p99": float(p99)}


def _mean(series: pd.Series) -> float:
    return float(series.mean()) if len(series) else math.nan


def summarize(world: World) -> dict[str, Any]:
    """Flat ``txn.*`` numbers over transactions begun in ``[warmup, duration)``.

    ``count``, ``committed``, ``aborted``, ``split``, ``undecided`` (transaction
    outcomes); ``commit_latency.{mean,p50,p95,p99}`` (client-visible, ok operations);
    ``messages_per_{txn,commit,abort}`` and ``forced_writes_per_{txn,commit,abort}``;
    ``window.mean`` (tau) and ``window_all_yes.mean``; ``uncertain_time.*`` over
    participants that voted yes; ``blocked`` (transactions), ``blocked_fraction``,
    ``blocked_time.*`` over blocked participants, ``blocked_time_per_txn``,
    ``unresolved`` (still uncertain at the end); ``lock_conflicts``,
    ``conflicts_with_blocked`` and ``lost_throughput`` (per second);
    ``atomicity_violations`` (split + flip), ``incomplete`` and ``client_mismatches``
    from the atomicity checker, over every transaction of the run.
    """
    run = world.scenario.run
    tables = transaction_tables(world)
    txns = tables["transactions"]
    measured = txns[(txns["begin"] >= run.warmup) & (txns["begin"] < run.duration)]
    keep = set(measured["gtid"])
    parts = tables["participants"]
    conflicts = tables["conflicts"]
    seconds = (run.duration - run.warmup) / 1000.0
    verdict = atomicity(world)
    s: dict[str, Any] = {}
    s.update(_outcomes(measured))
    s.update(_costs(measured))
    s.update(_blocking(measured, parts[parts["gtid"].isin(keep)]))
    s.update(_locking(conflicts[conflicts["gtid"].isin(keep)], seconds))
    s["txn.atomicity_violations"] = verdict.count("split") + verdict.count("flip")
    s["txn.incomplete"] = verdict.count("incomplete")
    s["txn.client_mismatches"] = verdict.count("client")
    return s


def _outcomes(measured: pd.DataFrame) -> dict[str, Any]:
    s: dict[str, Any] = {"txn.count": int(len(measured))}
    for outcome in ("committed", "aborted", "split", "undecided"):
        s[f"txn.{outcome}"] = int((measured["outcome"] == outcome).sum())
    ok = measured[measured["client_outcome"] == "ok"]
    s.update(_pcts("txn.commit_latency", ok["latency"].to_numpy(dtype=float)))
    return s


def _costs(measured: pd.DataFrame) -> dict[str, Any]:
    committed = measured[measured["outcome"] == "committed"]
    aborted = measured[measured["outcome"] == "aborted"]
    s: dict[str, Any] = {}
    for cost in ("messages", "forced_writes"):
        s[f"txn.{cost}_per_txn"] = _mean(measured[cost])
        s[f"txn.{cost}_per_commit"] = _mean(committed[cost])
        s[f"txn.{cost}_per_abort"] = _mean(aborted[cost])
    s["txn.window.mean"] = _mean(measured["window"])
    s["txn.window_all_yes.mean"] = _mean(measured["window_all_yes"])
    return s


def _blocking(measured: pd.DataFrame, parts: pd.DataFrame) -> dict[str, Any]:
    uncertain = parts[parts["episodes"] > 0]
    s = _pcts("txn.uncertain_time", uncertain["uncertain_time"].to_numpy(dtype=float))
    blocked = parts[parts["blocked"]]
    s["txn.blocked"] = int(measured["blocked"].sum())
    s["txn.blocked_fraction"] = _mean(measured["blocked"].astype(float))
    s.update(_pcts("txn.blocked_time", blocked["blocked_time"].to_numpy(dtype=float)))
    s["txn.blocked_time_per_txn"] = _mean(measured["blocked_time"])
    s["txn.unresolved"] = int(measured["unresolved"].sum())
    return s


def _locking(conflicts: pd.DataFrame, seconds: float) -> dict[str, Any]:
    lost = int(conflicts["holder_blocked"].sum())
    return {"txn.lock_conflicts": int(len(conflicts)), "txn.conflicts_with_blocked": lost,
            "txn.lost_throughput": lost / seconds if seconds > 0 else math.nan}
