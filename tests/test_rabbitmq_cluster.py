"""The real three-node RabbitMQ cluster in network namespaces: it forms, partitions are detected and heal,
a quorum queue keeps every confirmed message, a classic queue on a paused node loses confirmed ones, a
mirrored one in the same place loses none (as the model predicts), and nothing is left behind.

The cluster tests share one cluster (``pause_minority``, ``net_ticktime`` 4 s) started by a module
fixture; they need root, iproute2 and RabbitMQ's server scripts, and fail instead of skipping under
``CI=true``. The tests of the partition semantics, the schedule format and the history checker need
none of that.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
import tomllib

import numpy as np
import pandas as pd
import pytest

from sim.errors import ScenarioError
from sim.faultspec import Isolate, Partition
from sim.rabbitmq import cluster as cluster_mod
from sim.rabbitmq.cluster import RabbitCluster, blocked_directions, cleanup_leftovers, leftovers
from sim.rabbitmq.cluster_clients import (
    EVENTS,
    HISTORY_COLUMNS,
    check_confirmed_delivered,
    delete_queue,
    message_outcomes,
    partition_schedule,
    run_cluster_workload,
    run_fault_schedule,
)
from sim.rabbitmq.errors import AdapterError
from sim.rabbitmq.testing import unavailable

NODES = ("n1", "n2", "n3")


# -- partition semantics, schedules and the checker (no cluster needed) ------------------------------------------
def test_isolating_a_node_blocks_both_directions_to_it():
    """An isolated node loses both directions to each other node; the other two still talk."""
    assert sorted(blocked_directions(NODES, [["n3"]])) == [("n1", "n3"), ("n2", "n3"), ("n3", "n1"), ("n3", "n2")]


def test_nodes_in_no_group_form_one_more_group():
    """[[n1], [n2]] leaves n3 on a third side: every pair is cut, as in the simulation."""
    assert len(blocked_directions(NODES, [["n1"], ["n2"]])) == 6


def test_one_way_blocks_only_from_the_first_group():
    """One-way: only what the first group sends to the others is dropped."""
    assert sorted(blocked_directions(NODES, [["n3"]], one_way=True)) == [("n3", "n1"), ("n3", "n2")]
    assert sorted(blocked_directions(NODES, [["n1", "n2"]], one_way=True)) == [("n1", "n3"), ("n2", "n3")]


@pytest.mark.parametrize("groups, message", [
    ([["n4"]], "no node 'n4'"),
    ([["n1"], ["n1", "n2"]], "in two groups"),
    ([[]], "non-empty"),
    ([], "non-empty"),
])
def test_bad_partition_groups_are_refused(groups, message):
    """Unknown nodes, a node on two sides and empty groups are errors that say so."""
    with pytest.raises(ValueError, match=message):
        blocked_directions(NODES, groups)


def test_bad_cluster_settings_are_refused():
    """An unknown partition handling mode names the accepted ones."""
    with pytest.raises(ValueError, match="ignore, autoheal, pause_minority"):
        RabbitCluster(partition_handling="heal_everything")  # type: ignore[arg-type]


SCHEDULE_TOML = """
[[schedule]]
kind = "isolate"
node = "n3"
start = "1s"
end = "4s"

[[schedule]]
kind = "partition"
groups = [["n1"]]
one_way = true
start = "5s"
end = "6s"

[[schedule]]
kind = "split"
pick = "last"
start = "7s"
end = "8s"
"""


def test_the_simulations_fault_format_becomes_concrete_partitions():
    """A [faults] table as the simulation reads it: isolate and split become partitions with named groups."""
    faults = partition_schedule(tomllib.loads(SCHEDULE_TOML), NODES)
    assert faults == [
        Partition(start=1000.0, end=4000.0, groups=(("n3",),)),
        Partition(start=5000.0, end=6000.0, groups=(("n1",),), one_way=True),
        Partition(start=7000.0, end=8000.0, groups=(("n3",),)),
    ]


@pytest.mark.parametrize("schedule, path, message", [
    ([{"kind": "isolate", "node": "n9"}], "faults.schedule[0].node", "unknown node 'n9'"),
    ([{"kind": "partition", "groups": [["n1"], ["n7"]]}], "faults.schedule[0].groups[1][0]", "unknown node 'n7'"),
    ([{"kind": "crash", "node": "n1", "start": "1s", "end": "2s"}], "faults.schedule[0].kind", "not supported"),
    ([{"kind": "isolate", "node": "@leader"}], "faults.schedule[0].node", "name the node"),
    ([{"kind": "split", "pick": "random"}], "faults.schedule[0].pick", "needs rng"),
    ([{"kind": "partition", "groups": [["n1"]], "sides": 2}], "faults.schedule[0].sides", "unknown key"),
])
def test_schedules_the_cluster_cannot_play_are_refused_by_field(schedule, path, message):
    """Each refusal names the field and what is accepted."""
    with pytest.raises(ScenarioError, match=message) as info:
        partition_schedule({"schedule": schedule}, NODES)
    assert info.value.path == path


def test_a_random_split_is_drawn_from_the_given_stream():
    """With the faults stream a random split resolves, and the same seed gives the same minority."""
    faults = [{"kind": "split", "pick": "random", "start": "1s", "end": "2s"}]
    a = partition_schedule({"schedule": faults}, NODES, rng=np.random.default_rng(7))
    b = partition_schedule({"schedule": faults}, NODES, rng=np.random.default_rng(7))
    assert a == b and len(a[0].groups) == 1 and len(a[0].groups[0]) == 1


class _RecordingCluster:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.t0 = time.monotonic()

    def partition_fault(self, fault):
        self.calls.append(("partition", fault))
        return len(self.calls)

    def heal(self, key=None):
        self.calls.append(("heal", key))


def test_a_schedule_is_played_in_time_order_with_heals_before_same_time_starts():
    """Faults start and end in time order; a heal at the same time as a start comes first."""
    schedule = [Partition(start=0.0, end=60.0, groups=(("n1",),)), Isolate(start=60.0, end=90.0, node="n2")]
    rec = _RecordingCluster()
    frame = run_fault_schedule(rec, schedule)  # type: ignore[arg-type]
    assert rec.calls == [("partition", schedule[0]), ("heal", 1), ("partition", schedule[1]), ("heal", 3)]
    assert list(frame["event"]) == ["start", "end", "start", "end"]
    assert frame["time"].is_monotonic_increasing and frame["time"].iloc[-1] >= 90.0


class _NodesOnly:
    def node(self, name):
        if name not in NODES:
            raise ValueError(f"no node {name!r}")
        return name


def test_a_workload_refuses_faults_it_would_never_play():
    """A fault starting after the workload ends is an error, not silently skipped."""
    late = Partition(start=5000.0, end=6000.0, groups=(("n3",),))
    with pytest.raises(ValueError, match="must start before the workload's end"):
        run_cluster_workload(_NodesOnly(), queue="q", publishers={"p": "n1"}, consumers={},  # type: ignore[arg-type]
                             duration=5000.0, faults=[late])


def _history(rows):
    return pd.DataFrame([(t, c, "n1", m, e, EVENTS[e], None, "") for t, c, m, e in rows], columns=HISTORY_COLUMNS)


def test_the_checker_accepts_a_history_where_every_confirmed_message_arrived():
    """Confirmed and delivered, or never confirmed: at-least-once holds."""
    h = _history([(0, "p", "m1", "published"), (1, "p", "m1", "confirmed"), (2, "c", "m1", "delivered"),
                  (3, "c", "m1", "acked"), (4, "p", "m2", "published"), (5, "p", "m2", "unknown")])
    v = check_confirmed_delivered(h)
    assert v.ok and v.counts["confirmed"] == 1 and v.counts["unknown"] == 1 and v.lost == []


def test_the_checker_rejects_a_confirmed_message_that_never_arrived():
    """A confirmed message without a delivery is lost; a delivery nobody published is a phantom."""
    h = _history([(0, "p", "m1", "published"), (1, "p", "m1", "confirmed"), (2, "c", "x9", "delivered")])
    v = check_confirmed_delivered(h)
    assert not v.ok and v.lost == ["m1"] and v.phantom == ["x9"]


def test_a_late_confirm_outranks_an_earlier_unknown():
    """A message recorded unknown (confirm timeout) and confirmed later counts as confirmed."""
    h = _history([(0, "p", "m1", "published"), (1, "p", "m1", "unknown"), (2, "p", "m1", "confirmed")])
    assert message_outcomes(h)["publish"].tolist() == ["confirmed"]
    assert not check_confirmed_delivered(h).ok


# -- the real cluster -------------------------------------------------------------------------------------------
def _needs_root_and_tools() -> None:
    if os.geteuid() != 0:
        unavailable("the real RabbitMQ cluster needs root (network namespaces)")
    for tool in ("ip", "rabbitmq-server", "rabbitmqctl"):
        if shutil.which(tool) is None:
            unavailable(f"the real RabbitMQ cluster needs {tool}")


@pytest.fixture(scope="module")
def cluster():
    _needs_root_and_tools()
    c = RabbitCluster(partition_handling="pause_minority", net_ticktime=4)
    try:
        c.start()
    except AdapterError as exc:
        unavailable(f"cannot start the three-node RabbitMQ cluster: {exc}")
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def settled(cluster):
    """The cluster with every node running and no partition (a previous test's paused node is back)."""
    cluster.heal()
    cluster.wait_for(cluster.all_running, 120.0, "all three nodes running again")
    return cluster


def _tcp(ns: str, ip: str, port: int = 5672, timeout: float = 1.0) -> bool:
    """Whether a TCP connection from namespace ``ns`` to ``ip:port`` opens."""
    code = (f"import socket\ntry:\n    socket.create_connection(({ip!r}, {port}), timeout={timeout}).close()\n"
            "    print('open')\nexcept OSError as e:\n    print('closed', e)")
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30)
    return out.stdout.startswith("open")


@pytest.mark.rabbitmq
def test_the_cluster_forms(settled):
    """Three nodes, each in its own namespace, all running and clustered, with the configured settings."""
    c = settled
    status = c.cluster_status("n1")
    assert sorted(status["running_nodes"]) == sorted(n.erlang_name for n in c.nodes.values())
    assert sorted(status["disk_nodes"]) == sorted(status["running_nodes"])
    assert {n.namespace for n in c.nodes.values()} <= set(cluster_mod._namespaces())
    settings = c.eval("n1", "[{rpc:call(N, net_kernel, get_net_ticktime, []), "
                            "rpc:call(N, application, get_env, [rabbit, cluster_partition_handling])} "
                            "|| N <- rabbit_mnesia:cluster_nodes(all)].")
    assert settings.replace("\n", "").replace(" ", "") == "[" + ",".join(["{4,{ok,pause_minority}}"] * 3) + "]"
    print("startup seconds:", c.startup_seconds)


@pytest.mark.rabbitmq
def test_isolating_a_node_is_detected_and_heals(settled):
    """Cut n3 off: the majority stops seeing it and n3 pauses (pause_minority) within a few net_ticktimes;
    after the heal n3 comes back and the cluster is whole again."""
    c = settled
    key = c.partition([["n3"]])
    assert c.routes("n3") == sorted([c.node("n1").ip, c.node("n2").ip])
    assert c.routes("n1") == [c.node("n3").ip] and c.routes("n2") == [c.node("n3").ip]
    detected = c.wait_for(lambda: sorted(c.running_nodes("n1")) == ["n1", "n2"], 6 * c.net_ticktime,
                          "n1 noticing n3 gone")
    c.wait_for(lambda: not c.is_running("n3"), 6 * c.net_ticktime, "n3 pausing")
    assert c.is_running("n1") and c.is_running("n2")
    c.heal(key)
    assert c.blocked() == set() and all(c.routes(n) == [] for n in NODES)
    healed = c.wait_for(c.all_running, 120.0, "the cluster healing")
    print(f"partition noticed after {detected:.1f} s; cluster whole {healed:.1f} s after the heal")


@pytest.mark.rabbitmq
def test_a_one_way_partition_drops_only_what_the_first_group_sends(settled):
    """n3's packets to n1 and n2 are dropped: n3 cannot open a connection to n1, and n1's connection to n3
    fails too (n3's answers are dropped); n1 and n2 still talk, and clients still reach n3."""
    c = settled
    n1, n2, n3 = (c.node(n) for n in NODES)
    key = c.partition([["n3"]], one_way=True)
    try:
        assert c.routes("n3") == sorted([n1.ip, n2.ip]) and c.routes("n1") == [] and c.routes("n2") == []
        assert not _tcp(n3.namespace, n1.ip)
        assert not _tcp(n1.namespace, n3.ip)
        assert _tcp(n1.namespace, n2.ip)
        assert _tcp(n2.namespace, n1.ip)
    finally:
        c.heal(key)
    assert _tcp(n1.namespace, n3.ip) and _tcp(n3.namespace, n1.ip)


def _window(run, index: int = 0) -> tuple[float, float]:
    f = run.faults
    start = f.loc[(f["fault"] == index) & (f["event"] == "start"), "time"].iloc[0]
    end = f.loc[(f["fault"] == index) & (f["event"] == "end"), "time"].iloc[0]
    return float(start), float(end)


def _published_at(run) -> pd.Series:
    h = run.history
    return h[h["event"] == "published"].set_index("msg_id")["time"]


def _dropped(run) -> set[str]:
    """Clients whose connection the broker closed or reset (a connection the client closes itself ends with
    ``200 Normal shutdown``; a pausing node closes with 320 CONNECTION_FORCED or resets the socket)."""
    e = run.client_events
    closed = e[e["event"].str.startswith("connection_closed: ")]
    return set(closed.loc[~closed["event"].str.endswith("200 Normal shutdown"), "client"])


def _paused_during(run, node: str) -> bool:
    """``node``'s broker ran, stopped (paused) after the cut, and ran again; the others never stopped."""
    st = run.node_states
    mine = st[st["node"] == node]
    others = st[st["node"] != node]
    states = list(mine["state"])
    stopped_at = mine.loc[mine["state"] == "stopped", "time"]
    return (states[0] == "running" and states[-1] == "running" and len(stopped_at) > 0
            and bool(stopped_at.iloc[0] >= _window(run)[0]) and set(others["state"]) == {"running"})


ISOLATE = "[[schedule]]\nkind = 'isolate'\nnode = '{node}'\nstart = '1s'\nend = '7s'\n"


def _isolate_and_run(cluster, queue_type: str, *, isolated: str):
    """The tests' workload: a ``queue_type`` queue declared on n1, publishers (20/s, 9 s) and consumers on n1 and
    n3, ``isolated`` cut off from 1 s to 7 s; the queue is deleted afterwards. Returns the run, its
    confirmed-delivered verdict and a line of facts for failure messages."""
    queue = f"capsim-{queue_type[:2]}-{secrets.token_hex(3)}"
    faults = partition_schedule(tomllib.loads(ISOLATE.format(node=isolated)), NODES)
    run = run_cluster_workload(cluster, queue=queue, queue_type=queue_type, declare_on="n1",
                               publishers={"p1": "n1", "p3": "n3"}, consumers={"c1": "n1", "c3": "n3"},
                               rate=20, duration=9000, faults=faults)
    delete_queue(cluster, "n1", queue)
    verdict = check_confirmed_delivered(run.history)
    return run, verdict, f"{verdict.counts}, {run.meta}, dropped: {sorted(_dropped(run))}"


def _validate_example(name: str, cluster, repeats: int = 1):
    """``capsim validate rabbitmq-cluster`` on ``experiments/rabbitmq-cluster/NAME.toml`` with this module's
    cluster; the report is printed."""
    from pathlib import Path

    from sim.messaging.cluster_scenario import load_cluster_scenario
    from sim.rabbitmq.cluster_validate import validate_cluster

    examples = Path(__file__).resolve().parents[1] / "experiments" / "rabbitmq-cluster"
    result = validate_cluster(load_cluster_scenario(examples / f"{name}.toml"), cluster=cluster, repeats=repeats)
    print(result.report())
    return result


@pytest.mark.rabbitmq
def test_a_quorum_queue_keeps_every_confirmed_message_when_the_minority_is_cut_off(settled):
    """Quorum queue led by n1; n3 is isolated from 1 s to 7 s. The majority (n1, n2) keeps confirming;
    n3's publishes during the partition are never confirmed (n3 pauses and drops its clients); after the
    heal every confirmed message is delivered and the queue is empty."""
    run, verdict, facts = _isolate_and_run(settled, "quorum", isolated="n3")
    assert verdict.ok, f"lost: {verdict.lost[:10]}; {facts}"
    m = message_outcomes(run.history).set_index("msg_id")
    start, end = _window(run)
    during = m[_published_at(run).reindex(m.index).between(start, end)]
    minority = during[during["publisher"] == "p3"]
    assert len(minority) > 0 and (minority["publish"] != "confirmed").all(), facts
    assert (m.loc[m["publisher"] == "p1", "publish"] == "confirmed").all(), facts
    assert {"p3", "c3"} <= _dropped(run) and not {"p1", "c1"} & _dropped(run), facts
    assert _paused_during(run, "n3"), run.node_states
    assert run.meta["messages_left"] == 0, facts
    print(verdict.counts, "faults:", run.faults[["time", "event"]].round().values.tolist(),
          "node states:", run.node_states.round().values.tolist())


@pytest.mark.rabbitmq
def test_a_classic_queue_on_a_paused_node_loses_messages_confirmed_to_the_majority(settled):
    """Classic (non-mirrored) queue on n1; n1 is isolated from 1 s to 7 s and pauses. What RabbitMQ 3.10
    does: n1's own clients are disconnected; messages the majority side (p3 on n3) publishes while the
    queue's node is away are confirmed, yet never delivered and not in the queue afterwards: lost.
    Messages published on n1 before it paused are kept."""
    run, verdict, facts = _isolate_and_run(settled, "classic", isolated="n1")
    assert not verdict.ok and verdict.lost, facts
    published = _published_at(run)
    m = message_outcomes(run.history).set_index("msg_id")
    lost = m.loc[verdict.lost]
    assert (lost["publisher"] == "p3").all(), f"lost: {lost.to_dict('index')}; {facts}"
    assert (published[verdict.lost] >= _window(run)[0]).all(), facts
    p1 = m[m["publisher"] == "p1"]
    assert (p1.loc[p1["publish"] == "confirmed", "deliveries"] > 0).all(), facts
    assert {"p1", "c1"} <= _dropped(run) and not {"p3", "c3"} & _dropped(run), facts
    assert _paused_during(run, "n1"), run.node_states
    assert run.meta["messages_left"] == 0, facts
    print(verdict.counts, "faults:", run.faults[["time", "event"]].round().values.tolist(),
          "node states:", run.node_states.round().values.tolist())


@pytest.mark.rabbitmq
def test_the_model_predicts_what_the_real_cluster_does_to_a_classic_queue_on_a_paused_node(settled):
    """`capsim validate rabbitmq-cluster`'s quick case on this module's cluster: the model's semantics (confirmed
    messages lost, none duplicated, both sides could publish) agree with the real cluster's; timing is printed
    (one run: judged against the model's stated accuracy only)."""
    result = _validate_example("classic-queue-on-paused-node", settled)
    assert result.real is not None and result.semantics["agree"].all(), result.report()


@pytest.mark.rabbitmq
def test_a_mirrored_queue_on_a_paused_node_loses_no_confirmed_message_as_the_model_predicts(settled):
    """The mirrored queue type's quick case: a classic queue mirrored on all nodes (ha-mode all) led by n3; n3 is
    isolated from 1 s to 7 s and pauses. The model predicts what the classic queue in the same place does not: the
    majority promotes its mirror, nothing confirmed is lost, the majority side publishes and the minority side
    cannot. The real cluster must agree on all of it. (A delivery twice is possible, an ack cut off by the
    partition, and not judged.)"""
    result = _validate_example("mirrored-queue-on-paused-node", settled)
    assert result.real is not None and result.semantics["agree"].all(), result.report()
    assert result.real.counts["lost"] == 0, result.report()
    assert result.real.availability["majority"] > 0 and result.real.availability["minority"] == 0, result.report()
    states = result.runs["real"].node_states
    assert list(states.loc[states["node"] == "n3", "state"])[-1] == "running", states
    assert "stopped" in set(states.loc[states["node"] == "n3", "state"]), states


@pytest.mark.rabbitmq
def test_closing_removes_namespaces_processes_and_files(cluster):
    """After close: no namespace, root veth, directory or process of the run is left (runs last)."""
    c = cluster
    names = [n.namespace for n in c.nodes.values()] + [c.hub]
    pids = [int(p) for ns in names for p in subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                                             text=True).stdout.split()]
    assert pids, "the nodes' processes should be running before close"
    base, link = c.base, c.root_link
    c.close()
    assert not set(names) & set(cluster_mod._namespaces())
    assert link not in cluster_mod._root_links()
    assert base is not None and not base.exists()
    assert not [pid for pid in pids if _alive(pid)]


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (an exited one not yet reaped by init is a zombie: not alive)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


KILLED_RUN = """
import subprocess, sys, time
from sim.rabbitmq.cluster import RabbitCluster
c = RabbitCluster().build_network()
subprocess.Popen(["ip", "netns", "exec", c.node("n1").namespace, "sleep", "300"])
print(c.run, flush=True)
time.sleep(300)
"""


def test_cleanup_removes_what_a_run_killed_with_sigkill_left():
    """A run killed with SIGKILL leaves namespaces (one with a process in it), a root veth and a directory;
    cleanup_leftovers removes all of them."""
    _needs_root_and_tools()
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.stdout is not None
    run = proc.stdout.readline().strip()
    proc.kill()
    proc.wait(10)
    left = leftovers()
    expected = {f"capsim-{run}-{n}" for n in ("hub", "n1", "n2", "n3")}
    assert expected <= set(left["namespaces"]) and f"capsim{run}r" in left["links"]
    sleeper = [int(p) for p in subprocess.run(["ip", "netns", "pids", f"capsim-{run}-n1"], capture_output=True,
                                              text=True).stdout.split()]
    assert sleeper
    cleanup_leftovers()
    assert not expected & set(cluster_mod._namespaces())
    assert f"capsim{run}r" not in cluster_mod._root_links() and not cluster_mod._run_dir(run).exists()
    assert not [pid for pid in sleeper if _alive(pid)]


def test_cleanup_removes_what_a_killed_run_left_and_spares_a_live_run():
    """A dead owner's namespace (with a process in it), root veth and directory are removed; a namespace of
    a run whose owner is alive stays."""
    _needs_root_and_tools()
    dead_run, live_run = "ee" + secrets.token_hex(1), "dd" + secrets.token_hex(1)
    dead_ns, live_ns = f"capsim-{dead_run}-n1", f"capsim-{live_run}-hub"
    gone = subprocess.Popen(["true"])
    gone.wait()
    sleeper = None
    try:
        for run, owner in ((dead_run, gone.pid), (live_run, os.getpid())):
            d = cluster_mod._run_dir(run)
            d.mkdir()
            (d / "owner").write_text(f"{owner}\n")
        subprocess.run(["ip", "netns", "add", dead_ns], check=True)
        subprocess.run(["ip", "netns", "add", live_ns], check=True)
        subprocess.run(["ip", "link", "add", f"capsim{dead_run}r", "type", "veth", "peer", "name", "p0",
                        "netns", dead_ns], check=True)
        sleeper = subprocess.Popen(["ip", "netns", "exec", dead_ns, "sleep", "300"])
        time.sleep(0.2)
        found = leftovers()
        assert dead_ns in found["namespaces"] and live_ns not in found["namespaces"]
        removed = cleanup_leftovers()
        assert dead_ns in removed["namespaces"] and f"capsim{dead_run}r" in removed["links"]
        assert sleeper.wait(timeout=10) == -9
        assert dead_ns not in cluster_mod._namespaces() and live_ns in cluster_mod._namespaces()
        assert f"capsim{dead_run}r" not in cluster_mod._root_links()
        assert not cluster_mod._run_dir(dead_run).exists() and cluster_mod._run_dir(live_run).exists()
    finally:
        if sleeper is not None and sleeper.poll() is None:
            sleeper.kill()
        for ns in (dead_ns, live_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", f"capsim{dead_run}r"], capture_output=True)
        for run in (dead_run, live_run):
            shutil.rmtree(cluster_mod._run_dir(run), ignore_errors=True)
