"""Experiment scripts: each quick mode runs, writes its CSV and PNG, and shows the predicted result.

Every expectation comes from the script's docstring (a formula or a stated
qualitative prediction), never from a previous run's numbers. Quick modes are
small: the whole file runs in well under a minute on an idle 2-core machine.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from scipy import stats

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def load(name: str) -> ModuleType:
    """Import ``experiments/<name>.py`` as a module (registered, so process pools can find it)."""
    module_name = f"_experiment_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def run_quick(name: str, out: Path) -> None:
    """Run a script's quick mode serially; it must exit with status 0."""
    assert load(name).main(["--quick", "--out", str(out), "--executor", "serial"]) == 0


def test_partition_duration(tmp_path):
    """CP protocols refuse the minority and lose availability with the partition's length; eventual does not."""
    run_quick("partition_duration", tmp_path)
    assert (tmp_path / "partition_duration.png").stat().st_size > 0
    table = pd.read_csv(tmp_path / "partition_duration.csv")
    assert set(table["protocol"]) == {"raft", "quorum", "eventual", "primary_backup"}
    assert (table["errors"] == 0).all()
    mean = table.pivot_table(index=["protocol", "partition_s"], columns="metric", values="mean")
    for protocol in ("raft", "quorum", "primary_backup"):
        m = mean.loc[protocol].sort_index()
        # minority side: no majority (or no primary) reachable, so nothing is served
        assert (m["availability.minority"] <= 0.02).all(), (protocol, m["availability.minority"])
        # overall availability falls as the partition takes a larger share of the run
        assert (np.diff(m["availability"].to_numpy()) < 0).all(), (protocol, m["availability"])
        # linearizable protocols never return a stale read
        assert (m["staleness.stale_fraction"] == 0).all(), protocol
    # a majority quorum keeps serving on the majority side
    assert (mean.loc["quorum"]["availability.majority"] >= 0.99).all()
    ev = mean.loc["eventual"].sort_index()
    assert (ev["availability.majority"] >= 0.99).all() and (ev["availability.minority"] >= 0.99).all()
    # each side misses the other's writes for as long as the partition lasts
    assert (np.diff(ev["staleness.stale_fraction"].to_numpy()) > 0).all(), ev["staleness.stale_fraction"]
    # anti-entropy makes every eventual run converge after the heal
    conv = table[(table["protocol"] == "eventual") & (table["metric"] == "convergence.after_heal")]
    runs = pd.read_csv(tmp_path / "partition_runs.csv")
    reps = runs.groupby(["protocol", "partition_s"]).size().max()
    assert (conv["n"] == reps).all()


def test_pbs_visibility(tmp_path):
    """Simulated t-visibility agrees with the WARS Monte-Carlo; R + W > N is never stale."""
    run_quick("pbs_visibility", tmp_path)
    assert (tmp_path / "pbs_visibility.png").stat().st_size > 0
    table = pd.read_csv(tmp_path / "pbs_visibility.csv")
    judged = table[table["judged"]]
    assert len(judged) >= 40  # enough bins for the rule to mean something
    # the rule of the script's docstring: >= 90% of judged bins inside the 99% CI, <= 1 outside per configuration
    assert judged["inside_ci"].mean() >= 0.9, judged[~judged["inside_ci"]]
    outside = (~judged["inside_ci"]).groupby([judged["family"], judged["n"], judged["r"], judged["w"]]).sum()
    assert (outside <= 1).all(), outside[outside > 1]
    strict = table[table["r"] + table["w"] > table["n"]]
    assert len(strict) and strict["reads"].sum() > 0
    assert (strict["consistent"] == strict["reads"]).all()  # no stale read in the simulation
    assert (strict.dropna(subset=["wars"])["wars"] == 1.0).all()  # none in the model either
    # the write keeps spreading during the last ack and the read's request: t = 0 beats the static bound
    first = table.groupby(["family", "n", "r", "w"]).first()
    assert (first["model_t0"] >= first["static"]).all()
    partial = first[first.index.get_level_values("r") + first.index.get_level_values("w")
                    <= first.index.get_level_values("n")]
    assert (partial["model_t0"] > partial["static"]).all()


def test_majority_availability(tmp_path):
    """Operations' availability matches the binomial majority formula within its CI and bias bounds."""
    run_quick("majority_availability", tmp_path)
    assert (tmp_path / "majority_availability.png").stat().st_size > 0
    table = pd.read_csv(tmp_path / "majority_availability.csv")
    assert set(table["n"]) == {3, 5} and len(table) >= 4
    # the estimate is low by at most straddle_bias and high by at most warmup_bias (script docstring)
    low = table["ci99_low"] - table["warmup_bias"]
    high = table["ci99_high"] + table["straddle_bias"]
    assert ((low <= table["formula"]) & (table["formula"] <= high)).all(), table
    # the crash generator gives the replicas the intended up probability: p_up inside the 99% CI of
    # the runs' measured up fractions
    runs = pd.read_csv(tmp_path / "majority_runs.csv")
    for (n, p), g in runs.groupby(["n", "p_up"]):
        x = g["up_fraction"].to_numpy()
        half = stats.t.ppf(0.995, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
        assert abs(x.mean() - p) <= half, (n, p, x.mean(), half)


def test_queueing(tmp_path):
    """M/M/1 and M/M/c formulas inside the simulated 95% CI at all but at most one utilisation."""
    run_quick("queueing", tmp_path)
    assert (tmp_path / "queueing.png").stat().st_size > 0
    table = pd.read_csv(tmp_path / "queueing.csv")
    assert len(table) >= 4
    assert table["inside_ci"].sum() >= len(table) - 1, table


def test_two_phase_blocking(tmp_path):
    """2PC blocks more as the coordinator crashes more often; 3PC never blocks; no atomicity violation."""
    run_quick("two_phase_blocking", tmp_path)
    assert (tmp_path / "blocking.png").stat().st_size > 0
    table = pd.read_csv(tmp_path / "blocking.csv")
    assert (table["violations"] == 0).all()
    assert (table.loc[~np.isfinite(table["crash_mtbf"]), "blocked_fraction"] == 0).all()
    assert (table.loc[table["variant"] == "3PC", "blocked_fraction"] == 0).all()
    two = table[(table["variant"] == "2PC") & np.isfinite(table["crash_mtbf"])].sort_values("crash_mtbf")
    assert two["blocked_fraction"].iloc[0] > two["blocked_fraction"].iloc[-1]  # most crashes, most blocking


def test_retry_storm(tmp_path):
    """Backoff with jitter offers less load, wastes fewer calls and drains; immediate retry does not drain first."""
    run_quick("retry_storm", tmp_path)
    assert (tmp_path / "retry_storm.png").stat().st_size > 0
    runs = pd.read_csv(tmp_path / "retry_storm.csv")
    immediate = runs[runs["policy"] == "immediate"]
    backoff = runs[runs["policy"] == "backoff_jitter"]
    assert len(immediate) and len(backoff)
    assert backoff["peak_attempt_rate"].mean() < immediate["peak_attempt_rate"].mean()
    assert backoff["wasted_calls_after"].mean() < immediate["wasted_calls_after"].mean()
    # backoff drains every time, and no faster than B / (mu - lambda)
    assert backoff["drain_time"].notna().all()
    assert (backoff["drain_time"] >= backoff["drain_predicted"]).all()
    # immediate retry sustains the storm: it never drains before backoff does
    slowest_backoff = backoff["drain_time"].max()
    assert (immediate["drain_time"].isna() | (immediate["drain_time"] > slowest_backoff)).all()


def test_pbs_paper(tmp_path):
    """The PBS paper's profiles: strict quorums never stale, latencies as published, t biased low, WAN about 1/N."""
    assert load("pbs_paper").main(["--quick", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "pbs_paper.png").stat().st_size > 0
    table = pd.read_csv(tmp_path / "pbs_paper.csv")
    assert len(table) == 5 * 6 * 3 and table["monte_carlo_value"].notna().all()
    t = table[table["quantity"] == "t"]
    strict = t[t["r"] + t["w"] > 3]
    assert (strict["monte_carlo_value"] == 0).all() and (strict["paper"] == 0).all()
    # the event simulation of the same profiles as plain scenarios: strict quorums never stale there either, and
    # P(consistent) at every grid t agrees with the Monte-Carlo's (Fisher's exact test, Bonferroni at 1%)
    assert (strict["event_sim_value"] == 0).all() and table["event_sim_value"][table["quantity"] != "t"].notna().all()
    points = pd.read_csv(tmp_path / "pbs_paper_points.csv")
    judged = points[points["reads"] > 0]
    assert len(judged) >= 100 and (judged["p_value"] >= 0.01 / len(judged)).all(), judged
    # same model and fits: the published latency percentiles lie in the Monte-Carlo's 95% interval (YMMR with the
    # simulator's alpha; allow one row in twenty outside, as a 95% interval does)
    lat = table[(table["quantity"] != "t") & (table["profile"] != "YMMR")]
    assert lat["monte_carlo_paper_inside_ci"].mean() >= 0.95, lat[~lat["monte_carlo_paper_inside_ci"]]
    # the paper's first-crossing t is biased low: never above the Monte-Carlo's interval
    partial = t[t["paper"] > 0]
    assert len(partial) >= 10 and (partial["paper"] <= partial["monte_carlo_ci_high"]).all(), partial
    said = pd.read_csv(tmp_path / "pbs_paper_statements.csv").set_index(["profile", "n", "r", "w", "t", "quantity"])
    wan = said.loc[("WAN", 3, 1, 1, 0.0, "p_consistent_pct")]
    assert wan["ci_high"] >= 100 / 3 and wan["ci_low"] <= 100 / 3 + 2  # about 1/N, a little more
    # the published YMMR t = 0 value was computed with the simulator's alpha = 3.5, not Table 3's 3.35
    p_table3 = said.loc[("YMMR", 3, 1, 1, 0.0, "p_consistent_pct")]
    p_sim = said.loc[("YMMR-sim", 3, 1, 1, 0.0, "p_consistent_pct")]
    assert abs(p_sim["model"] - p_sim["paper"]) < abs(p_table3["model"] - p_table3["paper"])


def test_client_retries(tmp_path):
    """Retry storm against k - g k (k-1) / 2D, backoff below immediate, the budget's bound; duplicates without keys
    and none with them; availability 1 - q^k and latency as predicted (docstring of the script)."""
    run_quick("client_retries", tmp_path)
    assert (tmp_path / "client_retries.png").stat().st_size > 0
    storm = pd.read_csv(tmp_path / "storm.csv")
    lossy = pd.read_csv(tmp_path / "lossy.csv")
    summary = pd.read_csv(tmp_path / "summary.csv")

    def row(part, variant, metric):
        (r,) = summary[(summary["part"] == part) & (summary["variant"] == variant) & (summary["metric"] == metric)
                       ].itertuples()
        return r

    for variant in ("immediate", "fixed"):  # a fixed gap between attempts: the closed form, pooled over seeds
        runs = storm[storm["variant"] == variant]
        n = runs["invoked"].sum()
        z = (runs["sent"].sum() / n - runs["predicted"].iloc[0]) / np.sqrt(runs["predicted_variance"].iloc[0] / n)
        assert abs(z) < 3.5, (variant, z)
    by = storm.groupby("variant")["multiplication"]
    assert (storm[storm["variant"] == "none"]["multiplication"] == 1).all()
    for jittered in ("exponential full jitter", "exponential decorrelated"):
        assert by.max()[jittered] < by.min()["immediate"]  # less load inside the outage, though still above 1
    budget = storm[storm["variant"] == "full jitter + budget"]
    assert (budget["multiplication"] <= budget["budget_bound"]).all()
    outage = storm.groupby("variant")["availability_outage"].mean()
    latency = storm.groupby("variant")["latency_mean"].mean()
    for retrying in ("immediate", "fixed", "exponential full jitter", "exponential decorrelated"):
        assert outage[retrying] > outage["none"] and latency[retrying] > latency["none"]

    for variant in ("none", "immediate k=2", "immediate k=4"):  # every operation of every seed, pooled
        runs = lossy[lossy["variant"] == variant]
        assert stats.binomtest(int(runs["ok"].sum()), int(runs["ops"].sum()),
                               runs["predicted_availability"].iloc[0]).pvalue > 0.001, variant
        for name, count, total, squares in (("latency_mean", "ok", "latency_sum", "latency_sumsq"),
                                            ("applied_per_write", "writes", "applied_sum", "applied_sumsq")):
            n = runs[count].sum()
            if n == 0:
                continue  # without retries there is no duplicates verdict
            mean, want = runs[total].sum() / n, runs[f"predicted_{name}"].iloc[0]
            var = runs[squares].sum() / n - mean**2
            if var < 1e-9:  # every value alike (no retries: every latency is the round trip)
                assert np.isclose(mean, want), (variant, name, mean, want)
                continue
            z = (mean - want) / np.sqrt(var / n)
            assert abs(z) < 3.5, (variant, name, z)
    keyed = lossy[lossy["variant"] == "k=4 + keys"]
    plain = lossy[lossy["variant"] == "immediate k=4"]
    expired = lossy[lossy["variant"] == "k=4 + keys, ttl 10ms"]
    assert (plain["duplicated"] > 0).all() and (keyed["duplicated"] == 0).all()
    assert (keyed["applied_per_write"] <= 1).all()
    # past the table's bound the keys change nothing: the same seeds apply exactly what the keyless runs do
    assert expired["applied_per_write"].tolist() == plain["applied_per_write"].tolist()


SCRIPTS = sorted(p.stem for p in EXPERIMENTS.glob("*.py"))


@pytest.mark.parametrize("name", SCRIPTS)
@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "-3"], "argument --workers: must be an integer in [1, 1024], got -3"),
    (["--workers", "many"], "argument --workers: must be an integer in [1, 1024], got 'many'"),
    (["--executor", "threads"], "argument --executor: invalid choice: 'threads'"),
    (["--out", "FILE"], "argument --out: FILE is a file, not a folder"),
    (["--out", "FILE/sub"], "argument --out: FILE/sub lies under a file"),
])
def test_a_mistake_on_the_command_line_is_one_line_naming_the_option(name, args, message, tmp_path, capsys):
    """Every experiment refuses bad options before doing any work: exit 2, the option and what it accepts."""
    file = tmp_path / "taken"
    file.write_text("not a folder")
    args = [a.replace("FILE", str(file)) for a in args]
    with pytest.raises(SystemExit) as exc:
        load(name).main(["--quick", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message.replace("FILE", str(file)) in err
    assert "Traceback" not in err
    assert file.read_text() == "not a folder"


@pytest.mark.parametrize("name", [n for n in SCRIPTS if "--seeds" in (EXPERIMENTS / f"{n}.py").read_text()])
@pytest.mark.parametrize("seeds", ["0", "-2", "10001", "two"])
def test_seed_counts_outside_the_accepted_range_are_refused(name, seeds, capsys):
    with pytest.raises(SystemExit) as exc:
        load(name).main(["--quick", "--seeds", seeds])
    assert exc.value.code == 2
    assert "argument --seeds: must be an integer in [1, 10000]" in capsys.readouterr().err
