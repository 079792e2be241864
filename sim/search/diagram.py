"""The space-time diagram of a search trace: one column per node and client, one row per step."""

from __future__ import annotations

from typing import Any

from .explore import SearchResult

__all__ = ["space_time"]


def space_time(result: SearchResult, ax: Any | None = None, title: str | None = None) -> Any:
    """Draw ``result``'s trace: steps flow downwards, an arrow per delivered message from the step
    that sent it to the step that delivered it, a red cross per message dropped or lost, a dot per
    timer, a red X per crash (and a thick grey line while down), a dashed line per partition or heal.
    Returns the Axes."""
    import matplotlib.pyplot as plt

    trace = result.trace
    nodes = list(result.scenario.nodes) if result.scenario is not None else []
    clients = sorted({s.node for s in trace if s.kind == "client"} | {s.src for s in trace if s.src.startswith("c")
                                                                         and s.src not in nodes})
    columns = nodes + [c for c in clients if c not in nodes]
    x = {name: i for i, name in enumerate(columns)}
    if ax is None:
        _, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(columns) + 2), max(4.0, 0.32 * len(trace) + 1.5)))
    for i in x.values():
        ax.axvline(i, color="0.8", lw=1, zorder=0)
    down: dict[str, int] = {}
    for k, step in enumerate(trace, start=1):
        if step.kind in ("deliver", "duplicate", "drop", "lost") and step.src in x and step.dst in x:
            y0 = step.sent_step or 0
            label = step.message.split("(")[0]
            if step.kind in ("deliver", "duplicate"):
                ax.annotate("", xy=(x[step.dst], k), xytext=(x[step.src], y0),
                            arrowprops={"arrowstyle": "->", "color": "tab:blue", "lw": 1})
                ax.text((x[step.src] + x[step.dst]) / 2, (y0 + k) / 2, label, fontsize=7, ha="center",
                        va="bottom", color="tab:blue")
            else:
                mid = ((x[step.src] + x[step.dst]) / 2, (y0 + k) / 2)
                ax.plot([x[step.src], mid[0]], [y0, mid[1]], color="tab:red", lw=1)
                ax.plot([mid[0]], [mid[1]], marker="x", color="tab:red")
        elif step.kind == "timer" and step.node in x:
            ax.plot([x[step.node]], [k], marker="o", ms=4, color="0.3")
            ax.text(x[step.node] + 0.05, k, step.detail, fontsize=7, va="center", color="0.3")
        elif step.kind == "crash" and step.node in x:
            ax.plot([x[step.node]], [k], marker="X", ms=10, color="tab:red")
            down[step.node] = k
        elif step.kind == "recover" and step.node in x:
            ax.plot([x[step.node]] * 2, [down.pop(step.node, k), k], color="0.5", lw=5, zorder=1)
        elif step.kind in ("partition", "heal"):
            ax.axhline(k, color="tab:purple" if step.kind == "partition" else "tab:green", ls="--", lw=1)
            ax.text(len(columns) - 0.5, k, f"{step.kind}: {step.detail}", fontsize=7, ha="right", va="bottom")
        elif step.kind == "error":
            ax.axhline(k, color="tab:red", lw=1)
            ax.text(0, k, step.detail, fontsize=7, va="bottom", color="tab:red")
    for name, since in down.items():
        ax.plot([x[name]] * 2, [since, len(trace) + 0.5], color="0.5", lw=5, zorder=1)
    ax.set_xticks(range(len(columns)), columns)
    ax.set_ylim(len(trace) + 0.8, -0.5)
    ax.set_ylabel("step")
    ax.set_title(title or f"{result.verdict}: {result.message}"[:90], fontsize=9)
    return ax
