"""PBS t-visibility: a vectorised Monte-Carlo of the WARS model.

The WARS model (Bailis et al., "Probabilistically Bounded Staleness for
Practical Partial Quorums", PVLDB 5(8), 2012, section 4) describes one write
followed by one read on a Dynamo-style partial quorum of ``n`` replicas. All
times are milliseconds; per replica ``i`` four delays are drawn independently:

``W_i``  the write's propagation delay from the coordinator to replica ``i``;
``A_i``  the replica's acknowledgement delay back to the coordinator;
``R_i``  the read request's delay from the (read) coordinator to replica ``i``;
``S_i``  the read response's delay back.

The write is sent to all ``n`` replicas and **commits** when the coordinator
holds ``w`` acks: ``commit = w-th smallest of (W_i + A_i)``, measured from the
write's start. A read starts ``t`` ms after the commit and is sent to all
replicas; replica ``i`` answers with the version it holds when the request
arrives, so it has the new version iff ``commit + t + R_i >= W_i``. The read
returns after the first ``r`` responses (the ``r`` smallest ``R_i + S_i``) and
is **consistent** iff at least one of those ``r`` replicas had the new version.

Placement (:func:`wars_placement_trials`). In a multi-datacenter deployment
a replica's four delays depend on where it is: a replica in the coordinator's
zone (datacenter) draws ``local`` delays, any other replica ``remote`` ones
(e.g. the local ones ``shifted`` by a WAN link's propagation delay). The
write's coordinator decides W and A, the read's coordinator R and S; each is
next to a given replica or, as in the paper's WAN setting, next to a
uniformly random replica, drawn independently per trial for the write and
the read.

How it is computed. Replica ``i`` is fresh at ``t`` iff ``t >= W_i - R_i -
commit``, so a trial's read is consistent iff ``t >= D`` where ``D`` is the
minimum of ``W_i - R_i - commit`` over the ``r`` first responders. One pass
over all trials (no Python loop per trial) yields ``D`` per trial; the
t-visibility curve is then the empirical CDF of ``D``, evaluated for every
``t`` with one ``searchsorted``. Every ``t`` reuses the same trials (common
random numbers), so the estimated curve is exactly non-decreasing in ``t``.

Properties the tests check (each follows from the definition above, for
non-negative delays):

* ``r + w > n``: consistency is exactly 1 for every ``t >= 0``. The ``w``
  replicas whose acks arrived first satisfy ``W_i <= W_i + A_i <= commit``,
  so they are fresh at ``t = 0``, and any ``r`` replicas include one of them.
* ``t >= max_i W_i`` (e.g. ``t = inf``): every replica is fresh, so 1.
* ``A_i = R_i = 0``, ``t = 0``, ``W_i`` continuous and ``S_i`` i.i.d.
  continuous: the fresh replicas are exactly the ``w`` with the smallest
  ``W_i`` and the ``r`` responders are a uniformly random ``r``-subset
  independent of them, so consistency is ``1 - C(n-w, r) / C(n, r)``, the
  static closed form of :func:`sim.analysis.quorum.stale_read_probability`.

Ties among response times (possible with constant or empirical delays) are
resolved by ``numpy.argpartition``, a rule that looks only at the response
times; since the replicas' delays are i.i.d., this gives the same outcome
distribution as choosing uniformly among the tied replicas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..dists import Dist, parse_dist
from ..errors import ScenarioError
from ..metrics import PERCENTILES
from ._checks import check_int, check_probability

__all__ = [
    "WarsTrials",
    "WarsDelays",
    "RANDOM",
    "wars_trials",
    "wars_placement_trials",
    "quantile_interval",
    "wars_from_delays",
    "wars_t_visibility",
    "wars_latencies",
]

DistSpec = Dist | float | str | Mapping[str, Any]
"""A distribution object, or its scenario form as :func:`sim.dists.parse_dist` accepts it."""

_DELAY_NAMES = ("w_delays", "a_delays", "r_delays", "s_delays")
_KINDS = ("w", "a", "r", "s")

RANDOM = "random"
"""A coordinator position: next to a uniformly random replica, drawn per trial."""


@dataclass(frozen=True, slots=True)
class WarsDelays:
    """The four one-way delay distributions (ms) of a coordinator-replica path.

    ``w``: write request to the replica; ``a``: its ack back; ``r``: read
    request; ``s``: read response. :meth:`of` builds one from another
    ``WarsDelays``, from a table ``{"w": ..., "a": ..., "r": ..., "s": ...}``
    of distribution specs, or from one distribution spec used for all four.
    """

    w: Dist
    a: Dist
    r: Dist
    s: Dist

    @classmethod
    def of(cls, value: WarsDelays | Mapping[str, Any] | DistSpec, path: str = "delays") -> WarsDelays:
        if isinstance(value, WarsDelays):
            return value
        if isinstance(value, Mapping) and "dist" not in value:
            unknown = sorted(str(k) for k in value if k not in _KINDS)
            if unknown:
                raise ScenarioError(f"{path}.{unknown[0]}", "unknown delay kind; the kinds are w, a, r, s (or give "
                                                            "one distribution for all four)")
            missing = [k for k in _KINDS if k not in value]
            if missing:
                raise ScenarioError(f"{path}.{missing[0]}", "missing: a table of delays names all of w, a, r, s")
            return cls(*(parse_dist(value[k], f"{path}.{k}") for k in _KINDS))
        dist = parse_dist(value, path)
        return cls(dist, dist, dist, dist)

    def as_tuple(self) -> tuple[Dist, Dist, Dist, Dist]:
        """``(w, a, r, s)``."""
        return (self.w, self.a, self.r, self.s)


@dataclass(frozen=True, slots=True, eq=False)
class WarsTrials:
    """The outcome of many independent WARS write-then-read trials.

    Per-trial arrays (all of length ``trials``, in trial order):
    ``write_latency`` (commit time after the write starts), ``read_latency``
    (time from the read's start to its ``r``-th response) and ``visible_after``
    (``D``: the read is consistent iff it starts at least ``D`` ms after the
    commit; ``D <= 0`` means consistent even at ``t = 0``).
    """

    n: int
    r: int
    w: int
    write_latency: np.ndarray
    read_latency: np.ndarray
    visible_after: np.ndarray
    _sorted_visible: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Read-only views keep the sorted copy below in step with the per-trial arrays.
        for name in ("write_latency", "read_latency", "visible_after"):
            view = np.asarray(getattr(self, name), dtype=float).view()
            view.flags.writeable = False
            object.__setattr__(self, name, view)
        object.__setattr__(self, "_sorted_visible", np.sort(self.visible_after))

    @property
    def trials(self) -> int:
        """Number of trials."""
        return int(self.visible_after.size)

    def consistent_counts(self, t_values: Any) -> np.ndarray:
        """Number of trials whose read, started ``t`` ms after commit, is consistent."""
        t = _check_t_values(t_values)
        return np.searchsorted(self._sorted_visible, t, side="right")

    def p_consistent(self, t_values: Any) -> np.ndarray:
        """Estimated probability of a consistent read for each ``t`` (ms after commit)."""
        return self.consistent_counts(t_values) / self.trials

    def t_visibility(self, t_values: Any, confidence: float = 0.95) -> pd.DataFrame:
        """The t-visibility curve as tidy rows, with exact (Clopper-Pearson) intervals.

        Columns: ``t`` (ms), ``p_consistent``, ``ci_low``, ``ci_high``,
        ``consistent`` (count), ``trials``, ``n``, ``r``, ``w``.
        """
        confidence = check_probability(confidence, "confidence")
        t = _check_t_values(t_values)
        k = self.consistent_counts(t)
        lo, hi = _clopper_pearson(k, self.trials, confidence)
        return pd.DataFrame(
            {
                "t": t,
                "p_consistent": k / self.trials,
                "ci_low": lo,
                "ci_high": hi,
                "consistent": k,
                "trials": self.trials,
                "n": self.n,
                "r": self.r,
                "w": self.w,
            }
        )

    def visibility_time(self, p: float) -> float:
        """Smallest ``t >= 0`` (ms) at which the estimated ``P(consistent)`` reaches ``p``.

        This is the PBS headline figure, e.g. "99.9% of reads starting 10 ms
        after commit are consistent": an empirical quantile of ``D``.
        """
        p = check_probability(p, "p")
        if p == 0.0:
            return 0.0
        return max(0.0, float(self._sorted_visible[_inverted_cdf_rank(p, self.trials) - 1]))

    def latency_percentiles(self) -> pd.DataFrame:
        """Write and read latency (ms): one row per op with mean, p50, p95, p99, p999."""
        rows = []
        for op, lat in (("write", self.write_latency), ("read", self.read_latency)):
            qs = np.percentile(lat, [q for _, q in PERCENTILES])
            row: dict[str, Any] = {"op": op, "n": self.n, "r": self.r, "w": self.w, "trials": self.trials}
            row["mean"] = float(lat.mean())
            row.update({name: float(v) for (name, _), v in zip(PERCENTILES, qs)})
            rows.append(row)
        return pd.DataFrame(rows)


def _inverted_cdf_rank(p: float, m: int) -> int:
    """The fewest of ``m`` sorted values, ``k >= 1``, with ``k / m >= p`` (computed as ``p_consistent`` does).

    The ``k``-th smallest value is the inverted-CDF ``p``-quantile.
    """
    k = max(1, int(np.ceil(p * m)))
    while k > 1 and (k - 1) / m >= p:
        k -= 1
    while k < m and k / m < p:
        k += 1
    return k


def _check_t_values(t_values: Any) -> np.ndarray:
    t = np.atleast_1d(np.asarray(t_values, dtype=float))
    if t.ndim != 1:
        raise ScenarioError("t_values", f"must be a number or a 1-D sequence of numbers, got shape {t.shape}")
    if np.isnan(t).any() or (t < 0).any():
        raise ScenarioError("t_values", f"must be >= 0 ms after the commit (inf allowed), got {t_values!r}")
    return t


def _clopper_pearson(k: np.ndarray, trials: int, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = 1.0 - confidence
    k = np.asarray(k, dtype=float)
    # The beta quantiles are undefined at k = 0 and k = trials; the bounds there are 0 and 1.
    with np.errstate(invalid="ignore"):
        lo = np.where(k > 0, stats.beta.ppf(alpha / 2, k, trials - k + 1), 0.0)
        hi = np.where(k < trials, stats.beta.isf(alpha / 2, k + 1, trials - k), 1.0)
    return lo, hi


def wars_from_delays(
    w_delays: Any, a_delays: Any, r_delays: Any, s_delays: Any, *, r: int, w: int
) -> WarsTrials:
    """Run the WARS model on given delays: arrays of shape ``(trials, n)`` in ms.

    Row ``j`` holds trial ``j``'s per-replica delays ``W``, ``A``, ``R``,
    ``S``. Use this to replay measured latency traces; :func:`wars_trials`
    samples the arrays from distributions and calls it.
    """
    arrays = []
    for name, value in zip(_DELAY_NAMES, (w_delays, a_delays, r_delays, s_delays)):
        arr = np.asarray(value, dtype=float)
        if arr.ndim != 2 or arr.size == 0:
            raise ScenarioError(name, f"must be a non-empty 2-D array (trials, n), got shape {arr.shape}")
        if not np.isfinite(arr).all() or (arr < 0).any():
            raise ScenarioError(name, "delays must be finite and >= 0 ms")
        arrays.append(arr)
    wd, ad, rd, sd = arrays
    if not wd.shape == ad.shape == rd.shape == sd.shape:
        shapes = ", ".join(f"{nm}={a.shape}" for nm, a in zip(_DELAY_NAMES, arrays))
        raise ScenarioError("a_delays", f"all delay arrays must have the same shape, got {shapes}")
    n = wd.shape[1]
    r = check_int(r, "r", 1, n, high_name="n")
    w = check_int(w, "w", 1, n, high_name="n")

    # Commit: the coordinator's w-th ack (acks arrive at W_i + A_i).
    acks = wd + ad
    commit = acks.min(axis=1) if w == 1 else np.partition(acks, w - 1, axis=1)[:, w - 1]

    # The r first responders of the read (responses arrive R_i + S_i after the read starts).
    response = rd + sd
    if r == n:
        first = np.broadcast_to(np.arange(n), response.shape)
    elif r == 1:  # the common R = 1 case: argmin is several times faster than argpartition
        first = response.argmin(axis=1)[:, None]
    else:
        first = np.argpartition(response, r - 1, axis=1)[:, :r]
    read_latency = np.take_along_axis(response, first, axis=1).max(axis=1)

    # Replica i is fresh at t iff t >= W_i - R_i - commit; the read needs one fresh responder.
    fresh_from = (wd - rd) - commit[:, None]
    visible_after = np.take_along_axis(fresh_from, first, axis=1).min(axis=1)
    return WarsTrials(n=n, r=r, w=w, write_latency=commit, read_latency=read_latency, visible_after=visible_after)


def wars_trials(
    n: int,
    r: int,
    w: int,
    w_dist: DistSpec,
    a_dist: DistSpec,
    r_dist: DistSpec,
    s_dist: DistSpec,
    trials: int,
    rng: np.random.Generator,
) -> WarsTrials:
    """Sample ``trials`` independent WARS trials on ``n`` replicas with quorums ``r``, ``w``.

    The four distributions are :mod:`sim.dists` objects or anything
    :func:`sim.dists.parse_dist` accepts (``"2ms"``, ``{"dist": "pareto",
    "shape": 2.5, "scale": 1}``...). Each draws ``trials * n`` values from
    ``rng``, in the order W, A, R, S, so the result depends only on ``rng``'s
    state.
    """
    n = check_int(n, "n", 1)
    r = check_int(r, "r", 1, n, high_name="n")
    w = check_int(w, "w", 1, n, high_name="n")
    trials = check_int(trials, "trials", 1)
    _check_rng(rng)
    delays = []
    for name, value in zip(("w_dist", "a_dist", "r_dist", "s_dist"), (w_dist, a_dist, r_dist, s_dist)):
        delays.append(_sample_delays(parse_dist(value, name), name, trials, n, rng))
    return wars_from_delays(*delays, r=r, w=w)


def wars_t_visibility(
    n: int,
    r: int,
    w: int,
    t_values: Any,
    w_dist: DistSpec,
    a_dist: DistSpec,
    r_dist: DistSpec,
    s_dist: DistSpec,
    trials: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Probability that a read starting ``t`` ms after a write's commit sees it, per ``t``.

    A shortcut for ``wars_trials(...).t_visibility(t_values)``: a DataFrame
    with columns ``t``, ``p_consistent``, ``ci_low``, ``ci_high`` (95%
    Clopper-Pearson), ``consistent``, ``trials``, ``n``, ``r``, ``w``.
    """
    return wars_trials(n, r, w, w_dist, a_dist, r_dist, s_dist, trials, rng).t_visibility(t_values)


def wars_latencies(
    n: int,
    r: int,
    w: int,
    w_dist: DistSpec,
    a_dist: DistSpec,
    r_dist: DistSpec,
    s_dist: DistSpec,
    trials: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Write (commit) and read latency percentiles of the WARS model, in ms.

    A shortcut for ``wars_trials(...).latency_percentiles()``; the per-trial
    samples are ``WarsTrials.write_latency`` and ``WarsTrials.read_latency``.
    """
    return wars_trials(n, r, w, w_dist, a_dist, r_dist, s_dist, trials, rng).latency_percentiles()


def wars_placement_trials(
    n: int,
    r: int,
    w: int,
    local: WarsDelays | Mapping[str, Any] | DistSpec,
    remote: WarsDelays | Mapping[str, Any] | DistSpec,
    trials: int,
    rng: np.random.Generator,
    *,
    zones: Sequence[str] | None = None,
    write_coordinator: int | str = RANDOM,
    read_coordinator: int | str = RANDOM,
) -> WarsTrials:
    """WARS trials on replicas placed in zones (datacenters); see "Placement" above.

    ``zones`` names the zone of each of the ``n`` replicas (default: each
    replica in a zone of its own, one datacenter per replica as in the PBS
    paper's WAN setting). ``write_coordinator`` and ``read_coordinator`` are
    the index (0 to n-1) of the replica each coordinator sits next to, or
    :data:`RANDOM` for a uniformly random replica per trial. A replica in the
    same zone as the coordinator's replica draws its delays from ``local``
    (W and A by the write's coordinator, R and S by the read's), any other
    from ``remote``. ``local`` and ``remote`` are :class:`WarsDelays` or what
    :meth:`WarsDelays.of` accepts.

    Draws, in order, ``trials * n`` values for each of W, A, R, S from
    ``local`` then from ``remote``, then the random write coordinators, then
    the random read coordinators; the result depends only on ``rng``'s state.
    """
    n = check_int(n, "n", 1)
    r = check_int(r, "r", 1, n, high_name="n")
    w = check_int(w, "w", 1, n, high_name="n")
    trials = check_int(trials, "trials", 1)
    _check_rng(rng)
    near = WarsDelays.of(local, "local")
    far = WarsDelays.of(remote, "remote")
    if zones is None:
        zone_ids = np.arange(n)
    else:
        if isinstance(zones, str) or len(zones) != n:
            raise ScenarioError("zones", f"must list the zone of each of the n={n} replicas, got {zones!r}")
        names = list(dict.fromkeys(zones))  # first-seen order: labels need not be sortable
        zone_ids = np.array([names.index(z) for z in zones])
    for name, where in (("write_coordinator", write_coordinator), ("read_coordinator", read_coordinator)):
        if where != RANDOM:
            check_int(where, name, 0, n - 1, high_name="n-1")

    samples = {}
    for kind, d_near, d_far in zip(_KINDS, near.as_tuple(), far.as_tuple()):
        samples[kind] = (_sample_delays(d_near, f"local.{kind}", trials, n, rng),
                         _sample_delays(d_far, f"remote.{kind}", trials, n, rng))
    write_local = _local_mask(write_coordinator, zone_ids, trials, rng)
    read_local = _local_mask(read_coordinator, zone_ids, trials, rng)
    delays = [np.where(write_local if kind in ("w", "a") else read_local, *samples[kind]) for kind in _KINDS]
    return wars_from_delays(*delays, r=r, w=w)


def _local_mask(where: int | str, zone_ids: np.ndarray, trials: int, rng: np.random.Generator) -> np.ndarray:
    """``(trials, n)`` booleans: is replica i in the zone of trial j's coordinator?"""
    n = zone_ids.size
    at = rng.integers(n, size=trials) if where == RANDOM else np.full(trials, int(where))
    return zone_ids[None, :] == zone_ids[at][:, None]


def _sample_delays(dist: Dist, name: str, trials: int, n: int, rng: np.random.Generator) -> np.ndarray:
    sample = np.asarray(dist.sample(rng, trials * n), dtype=float).reshape(trials, n)
    if (sample < 0).any():
        raise ScenarioError(name, f"delays must be >= 0 ms, but {dist!r} produced a negative sample")
    return sample


def _check_rng(rng: object) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed)), got {type(rng).__name__}"
        )


def quantile_interval(values: Any, q: float, confidence: float = 0.95) -> tuple[float, float, float]:
    """The ``q``-quantile of ``values`` and a distribution-free confidence interval for it.

    Returns ``(estimate, low, high)``: the inverted-CDF sample quantile (the
    one :meth:`WarsTrials.visibility_time` uses) and the order statistics
    ``x_(l) <= x_(u)`` with ``l``, ``u`` the binomial(m, q) quantiles
    ``confidence`` apart, so ``P(x_(l) <= true quantile <= x_(u)) >=
    confidence`` for any continuous distribution.
    """
    q = check_probability(q, "q")
    confidence = check_probability(confidence, "confidence")
    x = np.sort(np.asarray(values, dtype=float).ravel())
    m = x.size
    if m == 0:
        raise ScenarioError("values", "must not be empty")
    alpha = 1.0 - confidence
    k = _inverted_cdf_rank(q, m)
    lo = int(stats.binom.ppf(alpha / 2, m, q))
    hi = int(stats.binom.ppf(1 - alpha / 2, m, q)) + 1
    return float(x[k - 1]), float(x[max(lo, 1) - 1]), float(x[min(hi, m) - 1])
