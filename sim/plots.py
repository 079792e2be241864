"""Figures (matplotlib). Every function draws on an Axes it is given or creates."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["availability_timeline", "latency_cdf", "shade_faults"]

SIDE_COLORS = {"availability": "black", "availability_majority": "tab:blue", "availability_minority": "tab:red"}


def _axes(ax: Any | None, figsize=(8, 3)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, constrained_layout=True)
    return ax


def shade_faults(ax: Any, faults: pd.DataFrame, *, unit: float = 1000.0) -> None:
    """Shade partition (grey) and crash (orange) intervals; times in ms, axis in ms/unit."""
    labelled: set[str] = set()
    for row in faults.itertuples():
        color = {"partition": "0.85", "crash": "moccasin"}.get(row.kind)
        if color is None:
            continue
        end = row.end if np.isfinite(row.end) else ax.get_xlim()[1] * unit
        label = None if row.kind in labelled else row.kind
        labelled.add(row.kind)
        ax.axvspan(row.start / unit, end / unit, color=color, alpha=0.6, lw=0, label=label, zorder=0)


def availability_timeline(result: Any, ax: Any | None = None, *, sides: bool = True, title: str | None = None):
    """Availability per time window, overall and per partition side, faults shaded."""
    ax = _axes(ax)
    tl = result.timeline
    mid = (tl["start"] + tl["end"]) / 2 / 1000.0
    cols = ["availability"] + (["availability_majority", "availability_minority"] if sides else [])
    for col in cols:
        if col in tl and tl[col].notna().any():
            label = col.replace("availability_", "") + " side" if col != "availability" else "all clients"
            ax.plot(mid, tl[col], drawstyle="steps-mid", color=SIDE_COLORS[col], label=label,
                    lw=1.6 if col == "availability" else 1.2)
    ax.set_xlim(0, result.scenario.run.duration / 1000.0)
    shade_faults(ax, result.faults)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("availability")
    ax.set_title(title or f"{result.scenario.name}: availability")
    ax.legend(loc="lower left", fontsize="small", framealpha=0.9)
    return ax


def latency_cdf(results: dict[str, Any], op: str = "read", ax: Any | None = None, *, logx: bool = True):
    """Empirical CDFs of ``ok`` latency for ``op`` ("read" or "write"), one line per result."""
    ax = _axes(ax, (5, 3.5))
    for label, result in results.items():
        h = result.history
        ok = h[(h["outcome"] == "ok") & (h["op"] == op)]
        lat = np.sort((ok["complete"] - ok["invoke"]).to_numpy(dtype=float))
        if len(lat) == 0:
            continue
        ax.step(lat, np.arange(1, len(lat) + 1) / len(lat), where="post", label=label)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(f"{op} latency (ms)")
    ax.set_ylabel("fraction of ok operations")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return ax
