"""capsim validate rabbitmq-cluster without a real cluster: the comparison's verdicts (one real run and several, the
timing noise of repeats), the refusals, --model-only, and the recorded real runs against the current model."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import pytest

from sim.checkers.cluster_history import PartitionReport
from sim.cli import main
from sim.errors import ScenarioError
from sim.messaging.cluster_scenario import load_cluster_scenario
from sim.rabbitmq.cluster_validate import check_real_workload, compare_reports

EXAMPLES = Path(__file__).resolve().parents[1] / "experiments" / "rabbitmq-cluster"
ARGS = {"rate": 20.0, "net_ticktime": 4000.0, "reconnect_delay": 500.0, "partition": 6000.0}


def report(lost: int = 0, dup: int = 0, unconfirmed: int = 0, majority: float = 1.0, minority: float = 0.0,
           recovery: float = 1500.0) -> PartitionReport:
    counts = {"published": 300, "confirmed": 250, "nacked": 0, "unknown": 50, "pending": 0, "delivered": 250,
              "lost": lost, "duplicates": dup, "unconfirmed_delivered": unconfirmed}
    return PartitionReport(counts, [], [], [], {"majority": majority, "minority": minority}, recovery)


def test_the_same_report_agrees():
    sem, timing, verdict = compare_reports(report(), report(), **ARGS)
    assert verdict == "agree" and sem["agree"].all() and timing["within"].all()


@pytest.mark.parametrize("real", [report(lost=1), report(dup=2), report(minority=0.5), report(majority=0.0)])
def test_a_semantic_difference_is_caught(real):
    _sem, _timing, verdict = compare_reports(report(), real, **ARGS)
    assert verdict == "semantics differ"


def test_duplicates_the_model_calls_possible_agree_with_any_run_and_nothing_else_is_relaxed():
    """With acks that may be cut off (a classic or mirrored queue's node away from a consumer), real duplicates agree
    with a model that shows none; a lost confirmed message still differs, and without the rule duplicates differ."""
    for real in (report(), report(dup=48), [report(), report(dup=48), report(dup=1)]):
        sem, _timing, verdict = compare_reports(report(), real, duplicates_possible=True, **ARGS)
        assert sem.set_index("aspect").loc["duplicates", "model"] == "possible" and verdict == "agree"
    assert compare_reports(report(), report(dup=2, lost=3), duplicates_possible=True, **ARGS)[2] == "semantics differ"
    assert compare_reports(report(), report(dup=2), duplicates_possible=False, **ARGS)[2] == "semantics differ"
    # a model that predicts duplicates keeps its own answer: a run without any differs
    assert compare_reports(report(dup=40), report(), duplicates_possible=True, **ARGS)[2] == "semantics differ"


@pytest.mark.parametrize(("name", "possible"), [("classic-queue-on-paused-node", True),
                                                ("mirrored-queue-on-paused-node", True),
                                                ("quorum-queue-minority-cut-off", False)])
def test_acks_may_be_cut_off_only_for_classic_and_mirrored_queues_away_from_a_consumer(name, possible):
    from sim.faultspec import Partition
    from sim.messaging.cluster_model import run_cluster_model
    from sim.rabbitmq.cluster_validate import acks_may_be_cut_off

    sc = load_cluster_scenario(EXAMPLES / f"{name}.toml")
    first = next(f for f in run_cluster_model(sc).schedule if isinstance(f, Partition))
    assert acks_may_be_cut_off(sc, first) is possible
    # every consumer on the queue's own side: nothing to cut off
    home = sc.broker.queue.node
    moved = tuple(dataclasses.replace(c, node=home) for c in sc.broker.consumers)
    alone = dataclasses.replace(sc, broker=dataclasses.replace(sc.broker, consumers=moved))
    assert acks_may_be_cut_off(alone, first) is False


def test_timing_outside_the_stated_accuracy_is_caught_and_inside_is_not():
    # allowance: 20/s over 0.25 x 4 s + 1 s = 40 messages; recovery: 2 s + 0.5 s
    assert compare_reports(report(lost=50), report(lost=89), **ARGS)[2] == "agree"
    assert compare_reports(report(lost=50), report(lost=91), **ARGS)[2] == "timing differs"
    assert compare_reports(report(), report(recovery=4100.0), **ARGS)[2] == "timing differs"
    assert compare_reports(report(), report(majority=0.6), **ARGS)[2] == "timing differs"


def test_unconfirmed_but_delivered_is_a_race_with_an_allowance():
    """A consumer may get a message before its confirm (the disk sync) and the connection may close in between."""
    assert compare_reports(report(), report(unconfirmed=2), **ARGS)[2] == "agree"
    assert compare_reports(report(), report(unconfirmed=3), **ARGS)[2] == "timing differs"


def test_unconfirmed_deliveries_of_the_detection_window_have_the_count_allowance():
    """A mirrored queue's publishes wait for the cut-off leader until the detection, then are delivered unconfirmed
    from the promoted mirror: the model predicts that window's messages (90), known to within the detection's
    accuracy (40 messages) plus the race (2); 94 on the real cluster agrees, 133 does not, and 0 (no such window)
    does not either."""
    assert compare_reports(report(unconfirmed=90), report(unconfirmed=94), **ARGS)[2] == "agree"
    assert compare_reports(report(unconfirmed=90), report(unconfirmed=133), **ARGS)[2] == "timing differs"
    assert compare_reports(report(unconfirmed=90), report(unconfirmed=0), **ARGS)[2] == "timing differs"


def test_a_side_that_never_recovered_differs_from_one_that_did():
    assert compare_reports(report(), report(recovery=math.nan), **ARGS)[2] == "timing differs"
    assert compare_reports(report(recovery=math.nan), report(recovery=math.nan), **ARGS)[2] == "agree"


def test_model_only_has_no_verdict_on_the_real_side():
    sem, timing, verdict = compare_reports(report(), None, **ARGS)
    assert verdict == "model only" and sem["real"].isna().all() and timing["within"].isna().all()


# -- timing against the spread of several real runs ----------------------------------------------------------------
def test_the_noise_is_the_prediction_interval_of_one_more_run():
    """t(R-1) x sd x sqrt(1 + 1/R) at 95 %, the single-broker rule's term A; no spread from fewer than two runs."""
    from scipy import stats

    from sim.rabbitmq.timing import prediction_noise

    runs = [100.0, 102.0, 104.0]  # sd 2
    assert prediction_noise(runs, 0.95) == pytest.approx(stats.t.ppf(0.975, 2) * 2.0 * math.sqrt(4 / 3))
    assert prediction_noise([5.0, 5.0, 5.0], 0.95) == 0.0
    assert prediction_noise([100.0], 0.95) == 0.0 and prediction_noise([100.0, math.nan], 0.95) == 0.0
    with pytest.raises(ValueError, match="level"):
        prediction_noise(runs, 1.0)


def test_a_timing_far_outside_the_runs_noise_differs_and_one_inside_agrees():
    """Accuracy 0 so that only the noise decides: runs 100, 102, 104 give a noise of 9.9 around their mean 102."""
    from sim.rabbitmq.cluster_validate import judge_timing

    runs = [100.0, 102.0, 104.0]
    assert judge_timing(110.0, runs, accuracy=0.0)["within"]
    assert not judge_timing(130.0, runs, accuracy=0.0)["within"]
    assert not judge_timing(80.0, runs, accuracy=0.0)["within"]
    # the same difference agrees when the runs themselves spread that far, and the accuracy adds to the noise
    assert judge_timing(130.0, [90.0, 110.0, 130.0], accuracy=0.0)["within"]
    assert judge_timing(130.0, runs, accuracy=30.0)["within"]
    row = judge_timing(110.0, runs, accuracy=5.0)
    assert row["real"] == 102.0 and row["allowance"] == pytest.approx(row["noise"] + 5.0)
    assert row["real runs"] == "100 102 104"


def test_never_recovering_agrees_only_with_never_recovering_in_every_run():
    from sim.rabbitmq.cluster_validate import judge_timing

    assert judge_timing(math.nan, [math.nan, math.nan], accuracy=1.0)["within"]
    assert not judge_timing(math.nan, [math.nan, 1500.0], accuracy=1e9)["within"]
    assert not judge_timing(1500.0, [1500.0, math.nan], accuracy=1e9)["within"]


def test_semantics_must_agree_on_every_real_run():
    """Three real runs; one of them lost a confirmed message: the semantics differ, though two runs agreed."""
    sem, _timing, verdict = compare_reports(report(), [report(), report(lost=1), report()], **ARGS)
    assert verdict == "semantics differ"
    row = sem.set_index("aspect").loc["loses confirmed messages"]
    assert row["real runs"] == "False True False" and not row["agree"]


def test_several_runs_judge_timing_against_their_spread_plus_the_accuracy():
    """lost: accuracy 40 messages (20/s over 0.25 x 4 s + 1 s). Three tight runs around 150 leave the model's 50
    outside; three runs spread from 60 to 240 put it inside their noise; one run is judged on the accuracy alone."""
    tight = [report(lost=149), report(lost=150), report(lost=151)]
    _sem, timing, verdict = compare_reports(report(lost=50), tight, **ARGS)
    lost = timing.set_index("measure").loc["lost"]
    assert verdict == "timing differs" and not lost["within"]
    assert lost["noise"] == pytest.approx(4.303 * 1.0 * math.sqrt(4 / 3), rel=1e-3) and lost["accuracy"] == 40
    wide = [report(lost=60), report(lost=150), report(lost=240)]
    _sem, timing, verdict = compare_reports(report(lost=50), wide, **ARGS)
    assert verdict == "agree", timing
    assert compare_reports(report(lost=50), [report(lost=89)], **ARGS)[2] == "agree"
    assert compare_reports(report(lost=50), [report(lost=91)], **ARGS)[2] == "timing differs"


def _repeated_recordings() -> dict[str, list[Path]]:
    """Recorded runs of the same scenario (folders NAME, NAME-2, NAME-3, ...), by NAME, for those run twice or more."""
    import re

    root = EXAMPLES / "recorded"
    groups: dict[str, list[Path]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        groups.setdefault(re.sub(r"-\d+$", "", d.name), []).append(d)
    return {k: v for k, v in groups.items() if len(v) >= 2 and (root / k).is_dir()}


@pytest.mark.parametrize("name", sorted(_repeated_recordings()))
def test_recorded_repeats_of_one_scenario_are_judged_together(name):
    """A scenario run several times on the real cluster: every run agrees with the model on semantics and the timing
    noise comes from their spread (e.g. the classic queue's two runs recovered 1206 and 1213 ms after the heal)."""
    import pandas as pd

    from sim.rabbitmq.cluster_validate import compare_recorded

    runs = _repeated_recordings()[name]
    scenarios = {(d / "scenario.toml").read_text() for d in runs}
    assert len(scenarios) == 1, f"{name}: the repeats ran different scenarios"
    histories = [pd.read_csv(d / "history_real.csv.gz", keep_default_na=False) for d in runs]
    result = compare_recorded(load_cluster_scenario(runs[0] / "scenario.toml"), histories)
    assert result.verdict == "agree" and len(result.reals) == len(runs), result.report()
    recovery = result.timing.set_index("measure").loc["recovery_ms"]
    assert recovery["noise"] > 0 and len(recovery["real runs"].split()) == len(runs)
    assert f"mean of {len(runs)} real runs" in result.report()


def test_the_recorded_repeats_are_found():
    assert {"classic-queue-on-paused-node", "mirrored-queue-on-paused-node"} <= set(_repeated_recordings())


def test_recorded_repeats_against_a_wrong_model_disagree():
    """The mirrored queue's three recorded runs against the model of a plain classic queue in the same place (which
    loses what the majority publishes while n3 is paused): the semantics differ."""
    import pandas as pd

    from sim.rabbitmq.cluster_validate import compare_recorded

    runs = _repeated_recordings()["mirrored-queue-on-paused-node"]
    plain = _plain(runs[0] / "scenario.toml")
    wrong = load_cluster_scenario({**plain, "broker": {**plain["broker"], "queue": {**plain["broker"]["queue"],
                                                                                      "type": "classic"}}})
    histories = [pd.read_csv(d / "history_real.csv.gz", keep_default_na=False) for d in runs]
    assert compare_recorded(wrong, histories).verdict == "semantics differ"


def test_the_recorded_repeats_that_duplicated_are_judged_a_semantic_difference():
    """Three runs of classic-queue-on-paused-node (recorded-disagreements/): the first agrees with the model alone,
    the second and third delivered messages twice, a race the model calls possible (acks cut off) without placing
    it: judged together the semantics agree, and the second run's missing recovery is the timing difference left."""
    import pandas as pd

    from sim.rabbitmq.cluster_validate import compare_recorded

    d = EXAMPLES / "recorded-disagreements" / "classic-queue-on-paused-node-3-runs"
    sc = load_cluster_scenario(d / "scenario.toml")
    histories = [pd.read_csv(d / f"history_real{s}.csv.gz", keep_default_na=False) for s in ("", "_2", "_3")]
    assert compare_recorded(sc, histories[0]).verdict == "agree"
    result = compare_recorded(sc, histories)
    assert result.verdict == "timing differs", result.report()
    sem = result.semantics.set_index("aspect")
    assert sem["agree"].astype(bool).all()
    assert sem.loc["duplicates", "model"] == "possible" and sem.loc["duplicates", "real runs"] == "False True True"
    timing = result.timing.set_index("measure")
    assert list(timing.index[~timing["within"].astype(bool)]) == ["recovery_ms"]


@pytest.mark.parametrize("repeats", ["0", "11", "-1"])
def test_the_cli_refuses_repeats_out_of_range_naming_the_field(capsys, repeats):
    path = str(EXAMPLES / "quorum-queue-minority-cut-off.toml")
    assert main(["validate", "rabbitmq-cluster", path, "--model-only", "--repeats", repeats]) == 2
    err = capsys.readouterr().err
    assert "--repeats" in err and "[1, 10]" in err and "Traceback" not in err


def test_validate_cluster_refuses_repeats_out_of_range():
    from sim.rabbitmq.cluster_validate import validate_cluster

    sc = load_cluster_scenario(EXAMPLES / "quorum-queue-minority-cut-off.toml")
    for bad in (0, 11, 2.5, True):
        with pytest.raises(ScenarioError) as err:
            validate_cluster(sc, model_only=True, repeats=bad)  # type: ignore[arg-type]
        assert err.value.path == "repeats"


BASE = {"broker": {"cluster": {"nodes": 3}, "queue": {"type": "quorum"},
                   "publishers": [{"name": "p1", "node": "n1"}, {"name": "p3", "node": "n3"}],
                   "consumers": [{"name": "c1", "node": "n1"}]},
        "faults": {"schedule": [{"kind": "isolate", "node": "n3", "start": "1s", "end": "3s"}]}}


@pytest.mark.parametrize("path, value, field", [
    (("broker", "cluster", "nodes"), ["a", "b", "c"], "broker.cluster.nodes"),
    (("broker", "cluster", "net_ticktime"), "2500ms", "broker.cluster.net_ticktime"),
    (("broker", "publishers", 1, "rate"), 10, "broker.publishers"),
    (("broker", "publishers", 0, "start"), "1s", "broker.publishers[0].start"),
    (("broker", "publishers", 0, "failover"), ["n2"], "broker.publishers[0].failover"),
    (("broker", "consumers", 0, "start"), "5s", "broker.consumers[0].start"),
    (("faults", "schedule"), [], "faults.schedule"),
])
def test_what_the_real_workload_cannot_play_is_refused_by_field(path, value, field):
    data = copy.deepcopy(BASE)
    if path[-2:] == ("cluster", "nodes") and value == ["a", "b", "c"]:
        for c in data["broker"]["publishers"] + data["broker"]["consumers"]:
            c["node"] = {"n1": "a", "n3": "c"}[c["node"]]
        data["broker"]["queue"]["node"] = "a"
        data["faults"]["schedule"][0]["node"] = "c"
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ScenarioError) as err:
        check_real_workload(load_cluster_scenario(data))
    assert err.value.path == field


def test_the_examples_are_playable_and_the_cli_prints_the_prediction(capsys, tmp_path):
    for path in sorted(EXAMPLES.glob("*.toml")):
        check_real_workload(load_cluster_scenario(path))
    out = tmp_path / "v"
    assert main(["validate", "rabbitmq-cluster", str(EXAMPLES / "classic-queue-on-paused-node.toml"),
                 "--model-only", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "loses confirmed messages     True" in text and "verdict: model only" in text
    assert "duplicates possible" in text  # acks cut off from n3: a race the model does not place
    assert (out / "semantics.csv").exists() and (out / "history_model.csv").exists()


def test_the_cli_refuses_options_that_do_not_apply(capsys):
    path = str(EXAMPLES / "quorum-queue-minority-cut-off.toml")
    assert main(["validate", "rabbitmq-cluster", path, "--model-only", "--local-node"]) == 2
    assert "--local-node" in capsys.readouterr().err
    assert main(["validate", "rabbitmq", path, "--model-only"]) == 2


RECORDED = sorted(p for p in (EXAMPLES / "recorded").iterdir() if p.is_dir())


@pytest.mark.parametrize("run", RECORDED, ids=lambda p: p.name)
def test_the_model_agrees_with_every_recorded_real_cluster_run(run):
    """The current model against each recorded run of the real cluster (experiments/rabbitmq-cluster/recorded):
    semantics equal, timing within the stated accuracy."""
    import pandas as pd

    from sim.rabbitmq.cluster_validate import compare_recorded

    history = pd.read_csv(run / "history_real.csv.gz", keep_default_na=False)
    result = compare_recorded(load_cluster_scenario(run / "scenario.toml"), history)
    assert result.verdict == "agree", result.report()


def test_a_recorded_run_compared_with_a_wrong_model_disagrees():
    """The same check rejects a model that is wrong: the classic queue's recorded run against a quorum queue."""
    import pandas as pd

    from sim.rabbitmq.cluster_validate import compare_recorded

    run = EXAMPLES / "recorded" / "classic-queue-on-paused-node"
    sc = load_cluster_scenario(run / "scenario.toml")
    wrong = load_cluster_scenario({**_plain(run / "scenario.toml"), "broker": {
        **_plain(run / "scenario.toml")["broker"], "queue": {"name": "cq", "type": "quorum", "node": "n3"}}})
    history = pd.read_csv(run / "history_real.csv.gz", keep_default_na=False)
    assert compare_recorded(sc, history).verdict == "agree"
    assert compare_recorded(wrong, history).verdict == "semantics differ"


def _plain(path: Path) -> dict:
    import tomllib

    return tomllib.loads(path.read_text())


def test_a_scenario_of_the_other_kind_is_named_as_such(capsys, tmp_path):
    """A simulation scenario given to validate rabbitmq-cluster, or a broker-cluster scenario to capsim run or
    validate rabbitmq, is one line saying which kind it is and where it belongs; a missing file or a folder too."""
    simulation = Path(__file__).resolve().parents[1] / "experiments" / "scenarios" / "raft-leader-crash.toml"
    cluster = EXAMPLES / "quorum-queue-ignore.toml"
    cases = [(["validate", "rabbitmq-cluster", str(simulation), "--model-only"], "a simulation scenario ([protocol]"),
             (["run", str(cluster)], "a broker-cluster scenario ([broker]; for capsim validate rabbitmq-cluster)"),
             (["validate", "rabbitmq-cluster", str(tmp_path / "nope.toml"), "--model-only"], "nope.toml: no such file"),
             (["validate", "rabbitmq-cluster", str(tmp_path), "--model-only"], "is a folder, not a scenario file")]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
