"""What the saga, notification and transactional-message protocols share.

* :func:`check_roles`: every cluster node plays exactly one role;
* :func:`percentiles`: latency summaries of the reports.

When these nodes start business operations is the workload's
(:mod:`sim.workload.arrivals`); seeded process crashes are
:meth:`sim.kernel.Node.restart_after`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ScenarioError

__all__ = ["check_roles", "percentiles"]


def check_roles(scenario: Any, roles: list[tuple[str, str]], path: str, protocol: str) -> None:
    """Every node in ``roles`` (field, node) plays one role and every cluster node plays one."""
    if scenario.workload.clients != 0:
        raise ScenarioError("workload.clients", f"must be 0 for the {protocol} protocol "
                            "(its operations are started by the protocol's own nodes)")
    seen: dict[str, str] = {}
    for field, name in roles:
        if name in seen:
            raise ScenarioError(f"{path}.{field}", f"node {name!r} already plays the role of {seen[name]}")
        seen[name] = field
    for i, node in enumerate(scenario.nodes):
        if node not in seen:
            accepted = ", ".join(sorted({f.split("[")[0] for f, _ in roles}))
            raise ScenarioError(f"cluster.nodes[{i}]", f"node {node!r} has no {protocol} role ({accepted})")


def percentiles(values: Any, prefix: str) -> dict[str, float]:
    """``{prefix}.p50`` / ``p99`` / ``mean`` of the finite values (NaN when there are none)."""
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if len(arr) == 0:
        return {f"{prefix}.p50": math.nan, f"{prefix}.p99": math.nan, f"{prefix}.mean": math.nan}
    p50, p99 = np.percentile(arr, [50.0, 99.0])
    return {f"{prefix}.p50": float(p50), f"{prefix}.p99": float(p99), f"{prefix}.mean": float(arr.mean())}
