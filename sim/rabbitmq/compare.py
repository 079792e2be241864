"""Side-by-side comparison of a simulated and a real run of the same scenario and seed.

:func:`compare` returns a :class:`Comparison` with these tables (one row per
quantity, columns ``simulation``, ``broker``, ``difference``, ``rule`` and
``agree``):

``counts``        the delivery checker's counts. Both runs face the same seeded
                  decisions, so the rule is exact equality.
``attempts``      how many settled messages (processed or dead-lettered) needed
                  1, 2, ... attempts: exact.
``messages``      per message id: final status, attempts, the (delivery count,
                  redelivered) of each delivery, and why it reached a
                  dead-letter queue; ``agree`` when all of them are equal. The
                  ``counts`` table carries one row per column of this check.
``latency``       end-to-end latency percentiles (publish to first side effect):
                  within ``tolerances.latency_rel`` or ``latency_abs_ms``; p99 and
                  the mean are shown, not judged (a few hundred messages).
``retry_delays``  time from a failed attempt to the start of the next one:
                  p50 and p95 within ``tolerances.retry_rel`` (10%).
``requeue_order`` optional: the order of requeued messages from
                  :func:`sim.rabbitmq.probes.requeue_orders`; exact.

``verdict`` is ``"agree"`` when every judged row agrees, else ``"differ"``,
with :attr:`Comparison.differences` naming the rows that differ.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..checkers.delivery import DeliveryReport
from ..messaging.protocol import messaging_config
from ..result import Result

__all__ = ["Comparison", "Tolerances", "compare", "retry_delays", "COUNT_ROWS"]

COUNT_ROWS = ("published", "confirmed", "returned", "delivered", "deliveries", "redeliveries", "processed",
              "dead_lettered", "lost", "duplicate_side_effects", "remaining", "dropped", "unconfirmed")
_LABELS = {"redeliveries": "redelivered", "duplicate_side_effects": "duplicated"}
_INFO_ROWS = ("duplicate_deliveries", "out_of_order", "publish_nacked")
_COLUMNS = ["quantity", "simulation", "broker", "difference", "rule", "agree"]


@dataclass(frozen=True)
class Tolerances:
    """How close latencies must be to count as agreeing (counts are always exact)."""

    latency_rel: float = 0.25
    latency_abs_ms: float = 2.0
    retry_rel: float = 0.10
    retry_abs_ms: float = 0.0


def _row(quantity: str, sim: Any, real: Any, rule: str, agree: bool | None) -> dict[str, Any]:
    diff = real - sim if isinstance(sim, (int, float)) and isinstance(real, (int, float)) else None
    return {"quantity": quantity, "simulation": sim, "broker": real, "difference": diff, "rule": rule, "agree": agree}


def _close(sim: float, real: float, rel: float, abs_ms: float) -> bool:
    if math.isnan(sim) and math.isnan(real):
        return True
    if math.isnan(sim) or math.isnan(real):
        return False
    return abs(real - sim) <= max(rel * abs(sim), abs_ms)


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


def _per_message(result: Result) -> pd.DataFrame:
    """status, attempts, deliveries (count/redelivered sequence) and dead-letter reason per message id."""
    ev = result.tables["message_events"]
    cfg = messaging_config(result.scenario)
    dlqs = set(cfg.dlq_names())
    table = _delivery(result).messages.set_index("msg_id")[["status", "attempts"]].copy()
    rec = ev[(ev["event"] == "receive") & ~ev["queue"].isin(dlqs)]
    shown = [f"{c}{'r' if r else ''}" for c, r in zip(rec["delivery_count"], rec["redelivered"])]
    seq = pd.Series(shown, index=rec.index, dtype=object).groupby(rec["msg_id"], sort=False).agg(" ".join)
    table["deliveries"] = seq.reindex(table.index).fillna("")
    by_consumer = set(ev.loc[ev["event"] == "dlq_publish", "msg_id"])
    arrivals = ev[ev["event"].isin(("enqueue", "remain", "receive")) & ev["queue"].isin(dlqs)]
    first = arrivals.groupby("msg_id", sort=False)["x_death"].first()

    def reason(msg_id: str) -> str:
        if msg_id in by_consumer:
            return "consumer"
        text = first.get(msg_id, None)
        if text is None:
            return ""
        newest = str(text).split("|", 1)[0]
        return ":".join(newest.split(":")[:2])

    table["dead_letter"] = [reason(m) for m in table.index]
    return table


@dataclass
class Comparison:
    """The side-by-side tables, the verdict and the evidence (see the module docstring)."""

    counts: pd.DataFrame
    attempts: pd.DataFrame
    messages: pd.DataFrame
    latency: pd.DataFrame
    retry_delays: pd.DataFrame
    requeue_order: pd.DataFrame | None
    sim_latencies: np.ndarray = field(repr=False)
    real_latencies: np.ndarray = field(repr=False)
    sim_retry: np.ndarray = field(repr=False)
    real_retry: np.ndarray = field(repr=False)
    calibration: str = ""
    tolerances: Tolerances = field(default_factory=Tolerances)

    @property
    def differences(self) -> list[str]:
        """Human-readable lines, one per judged row that differs."""
        out = []
        for name, df in self.tables().items():
            if df is None or "agree" not in df:
                continue
            for _, r in df[df["agree"] == False].iterrows():  # noqa: E712 - None rows are info only
                sim, real = (f"{v:.3f}" if isinstance(v, float) else str(v) for v in (r["simulation"], r["broker"]))
                out.append(f"{name}: {r['quantity']}: simulation {sim} vs broker {real}")
        return out

    @property
    def verdict(self) -> str:
        return "differ" if self.differences else "agree"

    def tables(self) -> dict[str, pd.DataFrame | None]:
        return {"counts": self.counts, "attempts": self.attempts, "latency": self.latency,
                "retry_delays": self.retry_delays, "requeue_order": self.requeue_order}

    # -- output ---------------------------------------------------------------------------------
    def report(self) -> str:
        """The side-by-side tables and the verdict as text."""

        def fmt(v: Any) -> str:
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return "-"
            if isinstance(v, (bool, np.bool_)):
                return "yes" if v else "NO"
            if isinstance(v, float):
                return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
            return str(v)

        parts = []
        if self.calibration:
            parts.append(self.calibration)
        for name, df in self.tables().items():
            if df is None or df.empty:
                continue
            shown = df.copy()
            for col in shown.columns:
                shown[col] = shown[col].map(fmt)
            parts.append(f"{name}:\n{shown.to_string(index=False)}")
        verdict = [f"verdict: {self.verdict}"] + [f"  differs: {d}" for d in self.differences]
        return "\n\n".join(parts + ["\n".join(verdict)])

    def figure(self) -> Any:
        """Latency CDFs of both runs (and retry-delay CDFs when there were retries)."""
        import matplotlib.pyplot as plt

        panels = [("end-to-end latency (ms)", self.sim_latencies, self.real_latencies)]
        if len(self.sim_retry) or len(self.real_retry):
            panels.append(("retry delay (ms)", self.sim_retry, self.real_retry))
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
        for ax, (title, sim, real) in zip(axes[0], panels):
            for values, label, style in ((sim, "simulation", "-"), (real, "RabbitMQ", "--")):
                if len(values):
                    xs = np.sort(values)
                    ax.step(xs, np.arange(1, len(xs) + 1) / len(xs), style, where="post",
                            label=f"{label} (n={len(xs)})")
            ax.set_xlabel(title)
            ax.set_ylabel("fraction of messages" if "latency" in title else "fraction of retries")
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right")
        fig.suptitle(f"simulation vs real broker: {self.verdict}")
        fig.tight_layout()
        return fig

    def save(self, out: str | Path) -> Path:
        """Write every table as CSV, ``verdict.json`` and ``latency_cdf.png`` into ``out``."""
        import matplotlib.pyplot as plt

        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        for name, df in self.tables().items():
            if df is not None:
                df.to_csv(folder / f"{name}.csv", index=False)
        self.messages.to_csv(folder / "messages.csv")
        (folder / "verdict.json").write_text(json.dumps(
            {"verdict": self.verdict, "differences": self.differences, "calibration": self.calibration,
             "tolerances": self.tolerances.__dict__}, indent=2))
        fig = self.figure()
        fig.savefig(folder / "latency_cdf.png", dpi=120)
        plt.close(fig)
        return folder


def compare(sim: Result, real: Result, *, requeue_order: pd.DataFrame | None = None,
            calibration: str = "", tolerances: Tolerances | None = None) -> Comparison:
    """Compare a simulated and a real run of one messaging scenario (see the module docstring)."""
    tol = tolerances or Tolerances()
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

    settled = lambda m: m[m["status"].isin(("processed", "dead_lettered"))]["attempts"]  # noqa: E731
    da, db = settled(sim_report.messages).value_counts(), settled(real_report.messages).value_counts()
    ks = sorted(set(da.index) | set(db.index))
    attempts = pd.DataFrame([_row(f"{k} attempt{'s' if k != 1 else ''}", int(da.get(k, 0)), int(db.get(k, 0)),
                                  "exact", int(da.get(k, 0)) == int(db.get(k, 0))) for k in ks], columns=_COLUMNS)

    ls = sim_report.messages["latency"].dropna().to_numpy(dtype=float)
    lr = real_report.messages["latency"].dropna().to_numpy(dtype=float)
    latency = pd.DataFrame(_percentile_rows(ls, lr, tol.latency_rel, tol.latency_abs_ms, judged=("p50", "p95")),
                           columns=_COLUMNS)
    rs = retry_delays(sim.tables["message_events"])["delay"].to_numpy(dtype=float)
    rr = retry_delays(real.tables["message_events"])["delay"].to_numpy(dtype=float)
    retry = pd.DataFrame(_percentile_rows(rs, rr, tol.retry_rel, tol.retry_abs_ms, judged=("p50", "p95"))
                         if len(rs) or len(rr) else [], columns=_COLUMNS)
    return Comparison(counts=counts, attempts=attempts, messages=both, latency=latency, retry_delays=retry,
                      requeue_order=requeue_order, sim_latencies=ls, real_latencies=lr, sim_retry=rs,
                      real_retry=rr, calibration=calibration, tolerances=tol)


def _percentile_rows(sim: np.ndarray, real: np.ndarray, rel: float, abs_ms: float,
                     judged: tuple[str, ...]) -> list[dict[str, Any]]:
    rule = f"within {rel:.0%}" + (f" or {abs_ms:g} ms" if abs_ms else "")
    rows = [_row("count", len(sim), len(real), "shown", None)]
    for name, q in (("p50", 50.0), ("p95", 95.0), ("p99", 99.0)):
        a = float(np.percentile(sim, q)) if len(sim) else math.nan
        b = float(np.percentile(real, q)) if len(real) else math.nan
        judge = name in judged
        rows.append(_row(f"{name} (ms)", a, b, rule if judge else "shown",
                         _close(a, b, rel, abs_ms) if judge else None))
    a = float(sim.mean()) if len(sim) else math.nan
    b = float(real.mean()) if len(real) else math.nan
    rows.append(_row("mean (ms)", a, b, "shown", None))
    return rows
