"""Analytic companions of the simulator: closed forms and vectorised Monte-Carlo.

These are the oracles the simulation is checked against and the quick answers
a notebook reaches for before running a full scenario:

* :mod:`~sim.analysis.quorum`: stale-read and k-staleness probabilities of
  partial quorums, availability of a quorum under independent node failures;
* :mod:`~sim.analysis.queueing`: M/M/1 and M/M/c (Erlang C) steady state,
  rates per millisecond, times in milliseconds;
* :mod:`~sim.analysis.pbs`: the PBS WARS model's t-visibility and latencies by
  vectorised Monte-Carlo, with replicas placed in datacenters if wanted.
"""

from .pbs import (
    RANDOM,
    WarsDelays,
    WarsTrials,
    quantile_interval,
    wars_from_delays,
    wars_latencies,
    wars_placement_trials,
    wars_t_visibility,
    wars_trials,
)
from .queueing import QueueMetrics, UnstableQueueError, erlang_c, mm1, mmc
from .quorum import (
    k_staleness_probability,
    majority_availability,
    quorum_availability,
    stale_read_probability,
)

__all__ = [
    "stale_read_probability",
    "k_staleness_probability",
    "quorum_availability",
    "majority_availability",
    "QueueMetrics",
    "UnstableQueueError",
    "mm1",
    "mmc",
    "erlang_c",
    "WarsTrials",
    "wars_trials",
    "wars_from_delays",
    "wars_t_visibility",
    "wars_latencies",
    "WarsDelays",
    "RANDOM",
    "wars_placement_trials",
    "quantile_interval",
]
