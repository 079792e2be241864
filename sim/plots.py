"""Figures (matplotlib). Every function draws on an Axes it is given or creates.

The backend is never chosen here: Jupyter shows the figures inline, a script on a
machine without a display gets matplotlib's non-interactive default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

__all__ = [
    "availability_timeline",
    "latency_cdf",
    "shade_faults",
    "lamport_diagram",
    "t_visibility_curves",
    "divergence_timeline",
    "metric_vs_factor",
    "heatmap",
    "axis_label",
]

_UNITS = {"latency": "ms", "convergence.after": "ms", "throughput": "ops/s", "duration": "ms", "timeout": "ms",
          "rate": "ops/s per client", "end": "ms", "start": "ms", "mtbf": "ms"}


def axis_label(name: str) -> str:
    """A metric or factor name with its unit, e.g. ``latency.read.p99 (ms)``."""
    for key, unit in _UNITS.items():
        if key in name:
            return f"{name} ({unit})"
    return name

SIDE_COLORS = {"availability": "black", "availability_majority": "tab:blue", "availability_minority": "tab:red"}


def _axes(ax: Any | None, figsize=(8, 3)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, constrained_layout=True)
    return ax


def shade_faults(ax: Any, faults: pd.DataFrame, *, unit: float = 1000.0) -> None:
    """Shade partition (grey) and crash (orange) intervals; times in ms, axis in ms/unit."""
    labelled: set[str] = set()
    for kind, start, end in zip(faults["kind"].astype(str), faults["start"].astype(float),
                                faults["end"].astype(float)):
        color = {"partition": "0.85", "crash": "moccasin"}.get(kind)
        if color is None:
            continue
        if not np.isfinite(end):
            end = ax.get_xlim()[1] * unit
        label = None if kind in labelled else kind
        labelled.add(kind)
        ax.axvspan(start / unit, end / unit, color=color, alpha=0.6, lw=0, label=label, zorder=0)


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


def lamport_diagram(result: Any, start: float, end: float, *, endpoints: list[str] | None = None,
                    ax: Any | None = None, max_messages: int = 300, title: str | None = None,
                    highlight_ops: Iterable[int] = (), highlight: Iterable[str] = ()):
    """Space-time diagram of the messages sent in ``[start, end)`` ms (needs ``run.trace``).

    One vertical line per endpoint (each node followed by its clients), time
    flowing downwards, thick grey where a node is crashed; an arrow per delivered
    message coloured by type, a red line ending in a cross (drawn half way) per
    dropped one. Client requests and replies of the operations in ``highlight_ops``
    are drawn in bold black, labelled with their op id, and so are the messages
    whose repr contains one of the ``highlight`` texts (labelled with their type).
    With more than ``max_messages`` messages in the window only the first ones are
    drawn.
    """
    marks = [(re.compile(rf"\bop_id={int(op)}[,)]"), f"op {int(op)}") for op in highlight_ops]
    marks += [(re.compile(re.escape(str(text))), "") for text in highlight if str(text)]
    trace = result.trace
    if trace is None:
        raise ValueError("this result has no trace; run the scenario with run.trace = true")
    window = trace[(trace["send"] >= start) & (trace["send"] < end)].head(max_messages)
    if endpoints is None:
        used = set(window["src"]) | set(window["dst"])
        sc = result.scenario
        homes = sc.workload.homes or sc.nodes
        order: list[str] = []
        for node in sc.nodes:
            order.append(node)
            order += [f"c{i}" for i in range(sc.workload.clients) if homes[i % len(homes)] == node]
        endpoints = [n for n in order if n in used] + sorted(used.difference(order))  # e.g. a lab's own clients
    x = {name: i for i, name in enumerate(endpoints)}
    labels: set[str] = set()
    ax = _axes(ax, (max(6, 0.9 * len(endpoints)), 7))
    for i in x.values():
        ax.axvline(i, color="0.7", lw=1, zorder=0)
    down: dict[str, float] = {}
    events = getattr(result, "node_events", None)
    rows = [] if events is None else list(events[["time", "node", "event"]].itertuples(index=False))
    for t, node, event in [*rows, *((math.inf, n, "recover") for n in list(x))]:
        if event == "crash":
            down.setdefault(node, t)
        elif event == "recover" and node in down:
            t0 = down.pop(node)
            if node in x and t0 < end and t > start:
                ax.plot([x[node]] * 2, [max(t0, start), min(t, end)], color="black", lw=4, alpha=0.35,
                        solid_capstyle="butt", zorder=1, label="crashed" if "crashed" not in labels else None)
                labels.add("crashed")
    colors: dict[str, Any] = {}
    palette = [c for i, c in enumerate(plt.get_cmap("tab10")(range(10))) if i != 3]  # red marks drops
    for row in window.itertuples():
        if row.src not in x or row.dst not in x:
            continue
        color = colors.setdefault(row.type, palette[len(colors) % len(palette)])
        x0, x1 = x[row.src], x[row.dst]
        dropped = isinstance(row.dropped, str) and row.dropped != ""
        y1 = row.deliver if not dropped and np.isfinite(row.deliver) else row.send + (end - start) * 0.02
        if dropped:
            xm = x0 + (x1 - x0) * 0.5
            ax.annotate("", (xm, y1), (x0, row.send), arrowprops=dict(arrowstyle="-", color="red", lw=0.8))
            ax.plot([xm], [y1], marker="x", color="red", ms=5)
        else:
            label = next((lab for pat, lab in marks if pat.search(str(row.message))), None) if marks else None
            if label is None:
                ax.annotate("", (x1, y1), (x0, row.send), arrowprops=dict(arrowstyle="->", color=color, lw=0.8))
            else:
                ax.annotate("", (x1, y1), (x0, row.send), arrowprops=dict(arrowstyle="->", color="black", lw=2.2))
                ax.text((x0 + x1) / 2, (row.send + y1) / 2, f"{row.type} {label}".strip(), fontsize=7,
                        ha="center", va="bottom", bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))
    for name, color in colors.items():
        ax.plot([], [], color=color, label=name)
    ax.plot([], [], color="red", marker="x", label="dropped")
    ax.set_xticks(range(len(endpoints)), endpoints)
    ax.xaxis.tick_top()
    ax.set_ylim(end, start)
    ax.set_ylabel("time (ms)")
    ax.set_title(title or f"messages {start:g}-{end:g} ms", pad=20)
    ax.legend(fontsize="x-small", loc="lower right", framealpha=0.9)
    return ax


def t_visibility_curves(curves: dict[str, pd.DataFrame], ax: Any | None = None, *, min_reads: int = 10):
    """t-visibility curves (tables from ``sim.checkers.staleness.t_visibility``) with CI bars;
    bins with fewer than ``min_reads`` reads are left out."""
    ax = _axes(ax, (5, 3.5))
    for label, tv in curves.items():
        tv = tv[tv["reads"] >= min_reads]
        mid = (tv["t_low"] + tv["t_high"]) / 2
        yerr = [tv["p_consistent"] - tv["ci_low"], tv["ci_high"] - tv["p_consistent"]]
        ax.errorbar(mid, tv["p_consistent"], yerr=yerr, marker="o", ms=3, capsize=2, label=label)
    ax.set_xlabel("time since the newest write committed (ms)")
    ax.set_ylabel("P(read returns it or newer)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def divergence_timeline(results: dict[str, Any], ax: Any | None = None, *, kinds: bool = False):
    """Number of keys whose live replicas disagree, over time, faults of the first result shaded.

    ``kinds=True`` draws one panel per result (``ax``: None or one Axes per result)
    with the divergent keys split into *conflicting* (red, at the bottom) and
    *lagging* (blue, stacked on top); see :mod:`sim.checkers.convergence`. Returns
    the Axes, or the list of them.
    """
    if kinds:
        return _divergence_kinds(results, ax)
    ax = _axes(ax)
    first = None
    for label, result in results.items():
        d = result.divergence
        if d is None or not len(d):
            continue
        first = first or result
        ax.plot(d["time"] / 1000.0, d["divergent"], drawstyle="steps-post", label=label)
    if first is not None:
        ax.set_xlim(0, first.scenario.end_time / 1000.0)
        shade_faults(ax, first.faults)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("divergent keys")
    ax.legend(fontsize="small")
    return ax


def _divergence_kinds(results: dict[str, Any], axes: Any | None):
    shown = {label: r for label, r in results.items() if r.divergence is not None and len(r.divergence)}
    if axes is None:
        _, made = plt.subplots(len(shown), 1, figsize=(8, 1.6 * len(shown) + 0.6), sharex=True, sharey=True,
                               constrained_layout=True, squeeze=False)
        axes = list(made[:, 0])
    axes = list(axes)
    if len(axes) != len(shown):
        raise ValueError(f"kinds=True needs one Axes per result with divergence samples ({len(shown)}), "
                         f"got {len(axes)}")
    top = max(int(r.divergence["divergent"].max()) for r in shown.values()) if shown else 1
    for ax, (label, r) in zip(axes, shown.items()):
        d = r.divergence
        t = d["time"].to_numpy(dtype=float) / 1000.0
        if "conflicting" in d:
            conflicting = d["conflicting"].to_numpy(dtype=float)
            behind = conflicting + d["lagging"].to_numpy(dtype=float)
            ax.fill_between(t, 0, conflicting, step="post", color="tab:red", alpha=0.75, lw=0,
                            label="conflicting (diverged histories)")
            ax.fill_between(t, conflicting, behind, step="post", color="tab:blue", alpha=0.45, lw=0,
                            label="lagging (older point of one history)")
        ax.plot(t, d["divergent"], drawstyle="steps-post", color="black", lw=0.8, label="divergent keys")
        ax.set_xlim(0, r.scenario.end_time / 1000.0)
        ax.set_ylim(0, max(top, 1) * 1.1)
        shade_faults(ax, r.faults)
        ax.set_title(label, fontsize="medium", loc="left")
        ax.set_ylabel("keys")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if axes:
        axes[-1].set_xlabel("time (s)")
        fig = axes[0].figure
        if not fig.legends:  # one legend per figure, however many calls drew on it
            handles, labels = axes[0].get_legend_handles_labels()
            fig.legend(handles, labels, loc="outside upper center", ncol=2, fontsize="small")
    return axes


def metric_vs_factor(summary: pd.DataFrame, x: str, metric: str, *, hue: str | None = None, ax: Any | None = None):
    """Mean of ``metric`` against factor ``x`` with its confidence band (from ``sim.summarize``)."""
    ax = _axes(ax, (5.5, 3.6))
    rows = summary[summary["metric"] == metric]
    groups = [(None, rows)] if hue is None else list(rows.groupby(hue, sort=True))
    for value, g in groups:
        g = g.sort_values(x)
        xs = pd.to_numeric(g[x], errors="coerce")
        label = None if hue is None else f"{hue} = {value!s}"
        line = ax.plot(xs, g["mean"], marker="o", ms=3, label=label)[0]
        ax.fill_between(xs, g["ci_low"], g["ci_high"], color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(metric))
    ax.grid(alpha=0.3)
    if hue is not None:
        ax.legend(fontsize="small")
    return ax


def heatmap(summary: pd.DataFrame, x: str, y: str, metric: str, *, ax: Any | None = None, fmt: str = "{:.2f}"):
    """Mean of ``metric`` over two factors, annotated with the values."""
    ax = _axes(ax, (6, 4.5))
    rows = summary[summary["metric"] == metric]
    table = rows.pivot_table(index=y, columns=x, values="mean", aggfunc="mean").sort_index(ascending=False)
    im = ax.imshow(table.to_numpy(dtype=float), aspect="auto", cmap="viridis")
    ax.set_xticks(range(table.shape[1]), [f"{v:g}" if isinstance(v, float) else str(v) for v in table.columns])
    ax.set_yticks(range(table.shape[0]), [f"{v:g}" if isinstance(v, float) else str(v) for v in table.index])
    for (i, j), v in np.ndenumerate(table.to_numpy(dtype=float)):
        if np.isfinite(v):
            ax.text(j, i, fmt.format(v), ha="center", va="center", color="white", fontsize="x-small")
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    ax.figure.colorbar(im, ax=ax, label=axis_label(metric))
    return ax
