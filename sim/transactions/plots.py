"""Figures for commit protocols: participant state timelines and blocking sweeps.

matplotlib is imported only when a function is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..faultspec import Crash, Partition
from ..kernel.faults import fault_schedule
from ..rng import Streams
from .common import TransactionConfig

if TYPE_CHECKING:
    import pandas as pd

    from ..result import Result

__all__ = ["STATE_COLORS", "STATE_LABELS", "plot_timeline", "plot_blocking"]

STATE_COLORS = {
    "working": "#bbbbbb",
    "prepared": "#d62728",      # uncertain: voted yes, lock held, waiting
    "precommitted": "#ff7f0e",
    "committed": "#2ca02c",
    "aborted": "#1f77b4",
}
STATE_LABELS = {
    "working": "working (locked, not voted)",
    "prepared": "prepared (uncertain)",
    "precommitted": "pre-committed",
    "committed": "committed",
    "aborted": "aborted",
}


def plot_timeline(result: Result, gtid: str | None = None, *, until: float | None = None,
                  ax: Any = None, title: str | None = None) -> Any:
    """Each participant's state over time for one transaction (default: the first) of a
    commit-protocol run, with the coordinator's outages and the partitions shaded.

    Final states are drawn for a short while after they are reached; ``until`` sets
    the right edge (default: a little after the last event).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 2.6))
    txns = result.tables["transactions"].set_index("gtid")
    gtid = gtid or str(txns.index[0])
    txn = txns.loc[gtid].to_dict()
    all_events = result.tables["events"]
    events = all_events[all_events["gtid"] == gtid]
    begin = float(txn["begin"])
    last = float(events["time"].max()) if len(events) else begin
    right = until if until is not None else last + max(0.1 * (last - begin), 20.0)
    nodes = str(txn["participants"]).split(",")
    scenario = result.scenario
    protocol = scenario.protocol
    if not isinstance(protocol, TransactionConfig):
        raise ValueError(f"not a commit-protocol run: protocol {protocol.tag!r}")
    coordinator = protocol.coordinator_of(scenario.nodes)
    for i, node in enumerate(nodes):
        mine = events[events["node"] == node]
        times = mine["time"].tolist() + [right]
        for (t0, state), t1 in zip(zip(mine["time"], mine["state"]), times[1:]):
            ax.broken_barh([(t0, max(t1 - t0, 1e-9))], (i - 0.35, 0.7), color=STATE_COLORS.get(state, "k"))
    ys = len(nodes)
    left = begin - 0.02 * (right - begin)
    for fault in fault_schedule(scenario, Streams(result.seed)):
        end = min(fault.end, right)
        if fault.end < left or fault.start > right:
            continue
        x = max(fault.start, left)
        if isinstance(fault, Crash) and fault.node == coordinator:
            ax.axvspan(x, end, color="k", alpha=0.12)
            ax.text(x, ys - 0.45, f" {coordinator} down", va="bottom", fontsize=8)
        elif isinstance(fault, Partition):
            ax.axvspan(x, end, color="purple", alpha=0.08)
            sides = " | ".join(",".join(g) for g in fault.groups) + " | rest"
            ax.text(x, ys - 0.05, f" partition {sides}", va="bottom", fontsize=8)
    if np.isfinite(txn["decision_time"]):
        ax.axvline(float(txn["decision_time"]), color="k", lw=0.8, ls="--")
    ax.set_yticks(range(len(nodes)), nodes)
    ax.set_ylim(-0.6, ys + 0.35)
    ax.set_xlim(left, right)
    ax.set_xlabel("time (ms)")
    ax.set_title(title or f"{gtid}: participants' states")
    seen = set(events["state"])
    handles = [Patch(color=c, label=STATE_LABELS[s]) for s, c in STATE_COLORS.items() if s in seen]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return ax


def plot_blocking(table: pd.DataFrame, axes: Any = None) -> Any:
    """Blocked fraction (with the 1 - exp(-lambda tau) prediction) and blocked lock-time
    per transaction against the coordinator's crash rate, one line per variant."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 4))
    faulty = table[np.isfinite(table["crash_mtbf"])]
    for i, (variant, t) in enumerate(faulty.groupby("variant", sort=False)):
        x = t["lambda"] * 1000.0  # crashes per second of coordinator up time
        color = f"C{i}"
        axes[0].errorbar(x, t["blocked_fraction"], yerr=t["blocked_fraction_ci"], fmt="o", color=color,
                         capsize=3, label=f"{variant} (measured)")
        if variant != "3PC":
            lam = np.linspace(0, t["lambda"].max() * 1.05, 100)
            axes[0].plot(lam * 1000, 1 - np.exp(-lam * t["tau"].iloc[0]), color=color, ls="--",
                         label=f"1 - exp(-λτ), τ = {t['tau'].iloc[0]:.1f} ms")
        axes[1].errorbar(x, t["blocked_time_per_txn"], yerr=t["blocked_time_per_txn_ci"], fmt="o-", color=color,
                         capsize=3, label=variant)
    axes[0].set_xlabel("coordinator crash rate λ (1/s)")
    axes[0].set_ylabel("fraction of transactions blocked")
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel("coordinator crash rate λ (1/s)")
    axes[1].set_ylabel("blocked lock-time per transaction (ms)")
    axes[1].legend(fontsize=8)
    return axes
