"""Side-by-side comparison of a simulated run and one or more real runs of the same scenario and seed.

:func:`compare` returns a :class:`Comparison` with two verdicts.

**Semantics** (exact). Both runs face the same seeded decisions, so these
must be equal, in every broker run:

``counts``        the delivery checker's counts, one row per count, and one row
                  per column of ``messages``;
``attempts``      how many settled messages (processed or dead-lettered) needed
                  1, 2, ... attempts;
``messages``      per message id: final status, attempts, the (delivery count,
                  redelivered) of each delivery (per queue, for a message
                  routed to several: how their deliveries interleave is
                  timing), and why it reached a dead-letter queue (every
                  queue and reason it was dead-lettered with, by name:
                  which copy arrives first is timing too); ``agree``
                  when all of them are equal;
``requeue_order`` optional: the order of requeued messages from
                  :func:`sim.rabbitmq.probes.requeue_orders`.

**Timing** (statistical). ``latency`` (end-to-end, publish to first side
effect) and ``retry_delays`` (a failed attempt to the start of the next):
p50 and p95 are judged against an allowance: the noise measured in this
validation (the broker's own run-to-run spread, the calibration's, the
sampling noise) plus the model's stated accuracy (:mod:`sim.rabbitmq.timing`);
count, p99 and the mean are shown. The ``broker`` column is the mean over the broker runs, ``broker
runs`` lists each.

``verdict`` is ``"differ"`` when a semantic row differs, else ``"timing
differs"`` when a timing row does, else ``"agree"``; :attr:`Comparison.differences`
names the rows that differ.

**Spans** first. Each run reports the span it ran and whether it drained
(was idle at its end; :mod:`sim.drain`). Counts of a run that drained and of
one that stopped with messages still in flight say different things, so when
the simulation and a broker run disagree on ``drained`` the semantics are not
judged: both verdicts say ``"spans differ"``, and the verdict lines show both
spans (``[run] drain = { until = "idle", limit = ... }`` makes both sides run
until idle).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..checkers.delivery import DeliveryReport
from ..drain import Span
from ..messaging.protocol import SPAN_PREFIX, messaging_config
from ..outdir import check_out, staged
from ..result import Result
from ..rng import Streams
from .timing import TIMING_COLUMNS, TimingRule, timing_rows

__all__ = ["Comparison", "TimingRule", "compare", "retry_delays", "COUNT_ROWS", "SPANS_DIFFER"]

#: the verdict when one side drained and the other did not
SPANS_DIFFER = "spans differ"

COUNT_ROWS = ("published", "confirmed", "returned", "delivered", "deliveries", "redeliveries", "processed",
              "dead_lettered", "lost", "duplicate_side_effects", "remaining", "dropped", "unconfirmed")
_LABELS = {"redeliveries": "redelivered", "duplicate_side_effects": "duplicated"}
_INFO_ROWS = ("duplicate_deliveries", "out_of_order", "publish_nacked")
_COLUMNS = ["quantity", "simulation", "broker", "difference", "rule", "agree"]
_SEMANTIC_TABLES = ("counts", "attempts", "requeue_order")
_TIMING_TABLES = ("latency", "retry_delays")


def _row(quantity: str, sim: Any, real: Any, rule: str, agree: bool | None) -> dict[str, Any]:
    diff = real - sim if isinstance(sim, (int, float)) and isinstance(real, (int, float)) else None
    return {"quantity": quantity, "simulation": sim, "broker": real, "difference": diff, "rule": rule, "agree": agree}


def retry_delays(events: pd.DataFrame) -> pd.DataFrame:
    """Per failed attempt that was retried: the time from its ``fail`` to the next attempt's ``process``."""
    fails = events[events["event"] == "fail"].groupby(["msg_id", "attempt"])["time"].min()
    starts = events[events["event"] == "process"].groupby(["msg_id", "attempt"])["time"].min()
    if fails.empty or starts.empty:
        return pd.DataFrame({"msg_id": pd.Series(dtype=object), "attempt": pd.Series(dtype="int64"),
                             "delay": pd.Series(dtype="float64")})
    nxt = starts.rename(lambda a: a - 1, level="attempt")
    joined = fails.to_frame("fail").join(nxt.to_frame("next"), how="inner")
    out = (joined["next"] - joined["fail"]).rename("delay").reset_index()
    return out.sort_values(["msg_id", "attempt"], kind="stable").reset_index(drop=True)


def _delivery(result: Result) -> DeliveryReport:
    """The delivery checker's report of a messaging run (simulated or real)."""
    report = result.verdicts.get("delivery")
    if not isinstance(report, DeliveryReport):
        raise ValueError(f"not a messaging run: protocol {result.scenario.protocol.tag!r} has no delivery verdict")
    return report


def _deliveries_by_queue(per_queue: pd.Series) -> dict[str, str]:
    """Per message id: its deliveries' sequence, or, received from several queues (routed to several), each
    queue's sequence by queue name (``"q1: 0 0r; q2: 0"``): how the queues' deliveries interleave is timing."""
    by_msg: dict[str, list[tuple[str, str]]] = {}
    for key, seq in per_queue.items():
        pair: tuple[Any, Any] = key  # type: ignore[assignment]
        by_msg.setdefault(str(pair[0]), []).append((str(pair[1]), str(seq)))
    return {m: parts[0][1] if len(parts) == 1 else "; ".join(f"{q}: {seq}" for q, seq in sorted(parts))
            for m, parts in by_msg.items()}


def _per_message(result: Result) -> pd.DataFrame:
    """status, attempts, deliveries (count/redelivered sequence) and dead-letter reason per message id."""
    ev = result.tables["message_events"]
    cfg = messaging_config(result.scenario)
    dlqs = set(cfg.dlq_names())
    table = _delivery(result).messages.set_index("msg_id")[["status", "attempts"]].copy()
    rec = ev[(ev["event"] == "receive") & ~ev["queue"].isin(dlqs)]
    shown = [f"{c}{'r' if r else ''}" for c, r in zip(rec["delivery_count"], rec["redelivered"])]
    per_queue = pd.Series(shown, index=rec.index, dtype=object).groupby(
        [rec["msg_id"], rec["queue"]], sort=False).agg(" ".join)
    table["deliveries"] = pd.Series(_deliveries_by_queue(per_queue), dtype=object).reindex(table.index).fillna("")
    by_consumer = set(ev.loc[ev["event"] == "dlq_publish", "msg_id"])
    arrivals = ev[ev["event"].isin(("enqueue", "remain", "receive")) & ev["queue"].isin(dlqs)]
    arrivals = arrivals[arrivals["x_death"].notna() & (arrivals["x_death"].astype(str) != "")]
    newest = arrivals["x_death"].map(lambda text: ":".join(str(text).split("|", 1)[0].split(":")[:2]))
    reasons = newest.groupby(arrivals["msg_id"], sort=False).agg(lambda r: "; ".join(sorted(set(r))))

    def reason(msg_id: str) -> str:
        if msg_id in by_consumer:
            return "consumer"
        return str(reasons.get(msg_id, ""))

    table["dead_letter"] = [reason(m) for m in table.index]
    return table


@dataclass
class _Semantics:
    """The exact comparison of the simulation with one broker run."""

    counts: pd.DataFrame
    attempts: pd.DataFrame
    messages: pd.DataFrame

    def differences(self, requeue_order: pd.DataFrame | None = None, prefix: str = "") -> list[str]:
        """One line per judged row that differs."""
        out = []
        tables = {"counts": self.counts, "attempts": self.attempts, "requeue_order": requeue_order}
        for name, df in tables.items():
            if df is None or df.empty:
                continue
            for _, r in df[df["agree"] == False].iterrows():  # noqa: E712 - None rows are info only
                out.append(f"{prefix}{name}: {r['quantity']}: simulation {_fmt(r['simulation'])} "
                           f"vs broker {_fmt(r['broker'])}")
        return out


def _semantics(sim: Result, real: Result) -> _Semantics:
    """Counts, attempts and per-message rows of ``sim`` against one broker run."""
    sim_report, real_report = _delivery(sim), _delivery(real)
    sc, rc = sim_report.counts, real_report.counts
    rows = [_row(_LABELS.get(k, k), int(sc[k]), int(rc[k]), "exact", sc[k] == rc[k]) for k in COUNT_ROWS]
    rows += [_row(k, int(sc[k]), int(rc[k]), "shown", None) for k in _INFO_ROWS]
    ms, mr = _per_message(sim), _per_message(real)
    both = pd.merge(ms, mr, how="outer", left_index=True, right_index=True, suffixes=("_sim", "_real"))
    for col in ("status", "attempts", "deliveries", "dead_letter"):
        a, b = both[f"{col}_sim"], both[f"{col}_real"]
        same = (a == b) | (a.isna() & b.isna())
        both[f"{col}_agree"] = same
        rows.append(_row(f"messages with the same {col.replace('_', '-')}", len(both), int(same.sum()),
                         "all messages", bool(same.all())))
    both["agree"] = both[[c for c in both.columns if c.endswith("_agree")]].all(axis=1)
    counts = pd.DataFrame(rows, columns=_COLUMNS)

    def settled(m: pd.DataFrame) -> pd.Series:
        return m[m["status"].isin(("processed", "dead_lettered"))]["attempts"]

    da, db = settled(sim_report.messages).value_counts(), settled(real_report.messages).value_counts()
    ks = sorted(set(da.index) | set(db.index))
    attempts = pd.DataFrame([_row(f"{k} attempt{'s' if k != 1 else ''}", int(da.get(k, 0)), int(db.get(k, 0)),
                                  "exact", int(da.get(k, 0)) == int(db.get(k, 0))) for k in ks], columns=_COLUMNS)
    return _Semantics(counts, attempts, both)


def _fmt(v: Any) -> str:
    """A value as the report shows it: 3 decimals, '-' for nothing, yes/NO for booleans."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "NO"
    if isinstance(v, (float, np.floating)):
        return f"{v:.3f}" if abs(float(v)) < 1000 else f"{v:.0f}"
    return str(v)


@dataclass
class Comparison:
    """The side-by-side tables, the two verdicts and the evidence (see the module docstring)."""

    counts: pd.DataFrame
    attempts: pd.DataFrame
    messages: pd.DataFrame
    latency: pd.DataFrame
    retry_delays: pd.DataFrame
    requeue_order: pd.DataFrame | None
    sim_latencies: np.ndarray = field(repr=False)
    real_latency_runs: tuple[np.ndarray, ...] = field(repr=False)
    sim_retry: np.ndarray = field(repr=False)
    real_retry_runs: tuple[np.ndarray, ...] = field(repr=False)
    calibration: str = ""
    timing_rule: TimingRule = field(default_factory=TimingRule)
    other_runs: list[str] = field(default_factory=list)
    sim_span: Span | None = None
    real_spans: tuple[Span | None, ...] = ()

    @property
    def spans_differ(self) -> bool:
        """Whether the simulation drained and a broker run did not, or the other way round."""
        if self.sim_span is None:
            return False
        return any(r is not None and r.drained != self.sim_span.drained for r in self.real_spans)

    def span_lines(self) -> list[str]:
        """The span of the simulation and of each broker run, when they report one."""
        if self.sim_span is None:
            return []
        out = [f"simulation: {self.sim_span.describe()}"]
        out += [f"broker run {i}: {r.describe()}" for i, r in enumerate(self.real_spans, start=1) if r is not None]
        return out

    @property
    def runs(self) -> int:
        """How many broker runs were compared."""
        return len(self.real_latency_runs)

    @property
    def real_latencies(self) -> np.ndarray:
        """End-to-end latencies of every broker run, pooled."""
        return np.concatenate(self.real_latency_runs) if self.real_latency_runs else np.array([])

    @property
    def real_retry(self) -> np.ndarray:
        """Retry delays of every broker run, pooled."""
        return np.concatenate(self.real_retry_runs) if self.real_retry_runs else np.array([])

    @property
    def semantic_differences(self) -> list[str]:
        """Exact rows that differ (in any broker run)."""
        first = _Semantics(self.counts, self.attempts, self.messages)
        return first.differences(self.requeue_order) + self.other_runs

    @property
    def timing_differences(self) -> list[str]:
        """Judged timing rows outside their allowance."""
        out = []
        for name in _TIMING_TABLES:
            df = getattr(self, name)
            for _, r in df[df["agree"] == False].iterrows():  # noqa: E712 - None rows are info only
                out.append(f"{name}: {r['quantity']}: simulation {_fmt(r['simulation'])} vs broker "
                           f"{_fmt(r['broker'])}, allowance {_fmt(r['allowance'])}")
        return out

    @property
    def loose_timing_rows(self) -> list[str]:
        """Judged timing rows whose measured noise is as large as the broker's value: too noisy to judge finely."""
        out = []
        for name in _TIMING_TABLES:
            df = getattr(self, name)
            judged = df[df["agree"].isin((True, False))]
            out += [f"{name} {r['quantity']}" for _, r in judged.iterrows() if r["noise"] >= abs(r["broker"])]
        return out

    @property
    def differences(self) -> list[str]:
        """Human-readable lines, one per judged row that differs: semantics first, then timing."""
        return self.semantic_differences + self.timing_differences

    @property
    def semantics(self) -> str:
        if self.spans_differ:
            return SPANS_DIFFER
        return "differ" if self.semantic_differences else "agree"

    @property
    def timing(self) -> str:
        if self.spans_differ:
            return SPANS_DIFFER
        return "differ" if self.timing_differences else "agree"

    @property
    def verdict(self) -> str:
        """``"spans differ"`` (one side drained, the other not), ``"differ"`` (semantics), ``"timing differs"``
        (semantics agree) or ``"agree"``."""
        if self.spans_differ:
            return SPANS_DIFFER
        if self.semantics == "differ":
            return "differ"
        return "timing differs" if self.timing == "differ" else "agree"

    def tables(self) -> dict[str, pd.DataFrame | None]:
        return {"counts": self.counts, "attempts": self.attempts, "latency": self.latency,
                "retry_delays": self.retry_delays, "requeue_order": self.requeue_order}

    # -- output ---------------------------------------------------------------------------------
    def verdict_lines(self) -> list[str]:
        """The semantic verdict with the rows that differ, the timing verdict, the overall verdict."""
        runs = f"{self.runs} broker run{'s' if self.runs != 1 else ''}"
        spans = [f"  {line}" for line in self.span_lines()]
        if self.spans_differ:
            return ["spans: differ: one side drained (idle at its end) and the other stopped with work in flight, so "
                    "counts and timing are not judged; set [run] drain = { until = \"idle\", limit = ... } to run "
                    "both until idle", *spans, f"verdict: {SPANS_DIFFER}"]
        lines = []
        if spans:
            drained = self.sim_span is not None and self.sim_span.drained
            both = "both drained" if drained else "neither side drained: counts depend on where each stopped"
            lines += [f"spans: {both}", *spans]
        lines.append(f"semantics: {self.semantics} (exact: counts, attempts, every message, requeue orders; {runs})")
        lines += [f"  differs: {d}" for d in self.semantic_differences]
        lines.append(f"timing: {self.timing} (p50 and p95 against the noise measured over {runs} at "
                     f"{self.timing_rule.level:.0%} confidence plus the model's accuracy; allowances in the latency "
                     "and retry_delays tables)")
        lines += [f"  differs: {d}" for d in self.timing_differences]
        if self.loose_timing_rows:
            lines.append(f"  note: the measured noise of {', '.join(self.loose_timing_rows)} is as large as the value: "
                         "timing on this machine now is too noisy to judge those finely (more --repeats narrow it)")
        lines.append(f"verdict: {self.verdict}")
        return lines

    def report(self) -> str:
        """The calibration, the side-by-side tables, how the timing allowance is derived, and the verdicts."""
        parts = [self.calibration] if self.calibration else []
        for name, df in self.tables().items():
            if df is None or df.empty:
                continue
            shown = df.copy()
            for col in shown.columns:
                shown[col] = shown[col].map(_fmt)
            parts.append(f"{name}:\n{shown.to_string(index=False)}")
        parts.append(self.timing_rule.describe())
        return "\n\n".join(parts + ["\n".join(self.verdict_lines())])

    def figure(self) -> Any:
        """Latency CDFs of the simulation and of each broker run (and retry-delay CDFs when there were retries)."""
        import matplotlib.pyplot as plt

        panels = [("end-to-end latency (ms)", self.sim_latencies, self.real_latency_runs)]
        if len(self.sim_retry) or len(self.real_retry):
            panels.append(("retry delay (ms)", self.sim_retry, self.real_retry_runs))
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
        for ax, (title, sim, runs) in zip(axes[0], panels):
            curves = [(sim, f"simulation (n={len(sim)})", "-", 1.0)]
            curves += [(r, f"RabbitMQ run {i + 1} (n={len(r)})", "--", 0.8) for i, r in enumerate(runs)]
            for values, label, style, alpha in curves:
                if len(values):
                    xs = np.sort(values)
                    ax.step(xs, np.arange(1, len(xs) + 1) / len(xs), style, where="post", label=label, alpha=alpha)
            ax.set_xlabel(title)
            ax.set_ylabel("fraction of messages" if "latency" in title else "fraction of retries")
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right")
        fig.suptitle(f"simulation vs real broker: semantics {self.semantics}, timing {self.timing}")
        fig.tight_layout()
        return fig

    def save(self, out: str | Path) -> Path:
        """Write every table as CSV, ``verdict.json`` and ``latency_cdf.png`` as the folder ``out``, whole (with its
        manifest.json; see :mod:`sim.outdir`)."""
        target = check_out(out, kind="validation", field="out")
        with staged(target, "validation") as stage:
            self.write_into(stage.path)
        return target

    def write_into(self, folder: Path) -> None:
        """Write the tables, ``verdict.json`` and ``latency_cdf.png`` into the existing ``folder``."""
        import matplotlib.pyplot as plt

        for name, df in self.tables().items():
            if df is not None:
                df.to_csv(folder / f"{name}.csv", index=False)
        self.messages.to_csv(folder / "messages.csv")
        (folder / "verdict.json").write_text(json.dumps(
            {"verdict": self.verdict, "semantics": self.semantics, "timing": self.timing,
             "spans": {"simulation": None if self.sim_span is None else self.sim_span.__dict__,
                       "broker_runs": [None if r is None else r.__dict__ for r in self.real_spans]},
             "differences": self.differences,
             "broker_runs": self.runs, "calibration": self.calibration,
             "timing_rule": {**self.timing_rule.__dict__, "derivation": self.timing_rule.describe()}}, indent=2))
        fig = self.figure()
        fig.savefig(folder / "latency_cdf.png", dpi=120)
        plt.close(fig)


def compare(sim: Result, real: Result | Sequence[Result], *, requeue_order: pd.DataFrame | None = None,
            calibration: str = "", timing: TimingRule | None = None, timing_sim: Result | None = None,
            calibrated: Sequence[Result] = ()) -> Comparison:
    """Compare a simulated run with one or more real runs of the same scenario and seed (module docstring).

    The semantic tables shown are those of the first real run; the other runs must agree as exactly, and any
    row where one does not is reported (``broker run 2: counts: ...``). Timing uses every run, against
    ``timing_sim`` when given (a simulation of the same scenario with another network latency), else ``sim``;
    ``calibrated`` are the simulations calibrated with each ping run alone, whose spread the timing allows for.
    """
    reals = [real] if isinstance(real, Result) else list(real)
    if not reals:
        raise ValueError("compare needs at least one real run")
    rule = timing or TimingRule()
    first = _semantics(sim, reals[0])
    other = [line for i, r in enumerate(reals[1:], start=2)
             for line in _semantics(sim, r).differences(prefix=f"broker run {i}: ")]
    streams = Streams(sim.seed)

    def latencies(r: Result) -> np.ndarray:
        return _delivery(r).messages["latency"].dropna().to_numpy(dtype=float)

    def retries(r: Result) -> np.ndarray:
        return retry_delays(r.tables["message_events"])["delay"].to_numpy(dtype=float)

    timed = timing_sim if timing_sim is not None else sim
    ls, lr = latencies(timed), tuple(latencies(r) for r in reals)
    rs, rr = retries(timed), tuple(retries(r) for r in reals)
    lc, rc = [latencies(c) for c in calibrated], [retries(c) for c in calibrated]
    latency = pd.DataFrame(timing_rows(ls, lr, rule, streams["compare/latency"], lc), columns=TIMING_COLUMNS)
    retry = pd.DataFrame(timing_rows(rs, rr, rule, streams["compare/retry_delays"], rc)
                         if len(rs) or any(len(r) for r in rr) else [], columns=TIMING_COLUMNS)
    return Comparison(counts=first.counts, attempts=first.attempts, messages=first.messages, latency=latency,
                      retry_delays=retry, requeue_order=requeue_order, sim_latencies=ls, real_latency_runs=lr,
                      sim_retry=rs, real_retry_runs=rr, calibration=calibration, timing_rule=rule,
                      other_runs=other, sim_span=Span.from_summary(sim.summary, SPAN_PREFIX),
                      real_spans=tuple(Span.from_summary(r.summary, SPAN_PREFIX) for r in reals))
