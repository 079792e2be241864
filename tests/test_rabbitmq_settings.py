"""The RabbitMQ adapter without a broker: URLs and redaction, unsupported scenarios, errors, the comparison."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import sim
from sim.cli import main
from sim.errors import ScenarioError
from sim.rabbitmq import AmqpSettings, BrokerUnreachable, UnsupportedScenario, run_rabbitmq
from sim.rabbitmq.compare import compare, retry_delays
from sim.rabbitmq.faults import FaultPlan
from sim.rabbitmq.names import RunNames, death_count, x_death_text
from sim.rabbitmq.node import free_port
from sim.rabbitmq.probes import MEASURED_3_10_8, sim_requeue_order
from sim.rabbitmq.runner import check_supported
from sim.rabbitmq.testing import with_events
from sim.scenario import Scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "experiments" / "scenarios"
SECRET = "s3cr#t:p@ss/word"


def test_url_parts_and_defaults():
    """amqp://user:pass@host:port/vhost parses with percent-decoding; the vhost '/' is %2F or empty."""
    s = AmqpSettings.from_url("amqp://alice:p%40ss@broker.example:5673/%2F?heartbeat=3&connection_timeout=2.5")
    assert (s.host, s.port, s.vhost, s.username, s.password) == ("broker.example", 5673, "/", "alice", "p@ss")
    assert (s.heartbeat, s.connection_timeout) == (3, 2.5)
    assert AmqpSettings.from_url("amqp://h").vhost == "/" and AmqpSettings.from_url("amqp://h").port == 5672
    assert AmqpSettings.from_url("amqp://h/prod").vhost == "prod"
    assert AmqpSettings.from_url(AmqpSettings.from_url("amqp://u:x%2Fy@h:1/v").url()).password == "x/y"


def test_environment_variable_then_default():
    """--url wins over CAPSIM_AMQP_URL, which wins over the local default."""
    env = {"CAPSIM_AMQP_URL": "amqp://env:pw@envhost:5999/%2F"}
    assert AmqpSettings.resolve(None, env).host == "envhost"
    assert AmqpSettings.resolve(None, env).source == "CAPSIM_AMQP_URL"
    assert AmqpSettings.resolve("amqp://cli@clihost", env).host == "clihost"
    default = AmqpSettings.resolve(None, {})
    assert (default.host, default.port, default.source) == ("127.0.0.1", 5672, "default")


@pytest.mark.parametrize("url, fragment", [
    ("http://u:hunter2@h/", "must start with amqp://"),
    ("amqps://u:hunter2@h/", "TLS"),
    ("amqp://u:hunter2@:5672/", "names no host"),
    ("amqp://u:hunter2@h:notaport/", "not a valid AMQP URL"),
    ("amqp://u:hunter2@h/a/b", "one path segment"),
    ("amqp://u:hunter2@h/?frame_max=1", "unknown URL option"),
    ("amqp://u:hunter2@h/?heartbeat=-1", "must be > 0"),
    ("", "empty"),
])
def test_bad_urls_are_scenario_errors_without_the_password(url, fragment):
    """A malformed URL raises ScenarioError naming --url; the password never appears in the message."""
    with pytest.raises(ScenarioError) as err:
        AmqpSettings.from_url(url)
    assert err.value.path == "--url" and fragment in str(err.value)
    assert "hunter2" not in str(err.value)


def test_password_is_redacted_everywhere():
    """repr, str, describe() and redact() never show the password (plain or URL-encoded)."""
    from urllib.parse import quote

    s = AmqpSettings.from_url(f"amqp://bob:{quote(SECRET, safe='')}@h:1/%2F")
    assert s.password == SECRET
    shown = [repr(s), str(s), s.redacted_url(), str(s.describe())]
    assert all(SECRET not in t and quote(SECRET, safe="") not in t for t in shown)
    assert "amqp://bob:***@h:1/%2F" in shown
    assert s.redact(f"failed for {SECRET} and {quote(SECRET, safe='')}") == "failed for *** and ***"


def test_run_names_are_unique_and_map_back():
    """Every run gets its own prefix; names, default-exchange routing keys and x-death entries map back."""
    a, b = RunNames.new("demo run"), RunNames.new("demo run")
    assert a.prefix != b.prefix and a.prefix.startswith("capsim.demo-run.")
    assert a.real("") == "" and a.sim(a.real("work")) == "work"
    assert a.routing_key("", "work") == a.real("work") and a.routing_key("ex", "order.*") == "order.*"
    headers = {"x-death": [{"queue": a.real("wait"), "reason": "expired", "count": 2},
                           {"queue": a.real("work"), "reason": "rejected", "count": 2}]}
    assert x_death_text(headers, a) == "wait:expired:2|work:rejected:2"
    assert death_count(headers, a, "work", "rejected") == 2 and death_count(headers, a, "work", "expired") == 0


def scenario(name):
    return Scenario.from_toml(SCENARIOS / f"rabbitmq-{name}.toml")


@pytest.mark.parametrize("update, path", [
    ({"network.loss": 0.1}, "network.loss"),
    ({"protocol.consumer_timeout": 5000}, "protocol.consumer_timeout"),
    ({"faults.schedule": [{"kind": "loss", "probability": 0.5, "start": 0, "end": 10}]}, "faults.schedule[0].kind"),
    ({"faults.schedule": [{"kind": "crash", "node": "broker", "start": 0, "end": 10}]}, "faults.schedule[0].node"),
    ({"faults.schedule": [{"kind": "partition", "groups": [["c1"]], "one_way": True, "start": 0, "end": 10}]},
     "faults.schedule[0].one_way"),
])
def test_unsupported_scenarios_are_rejected_with_the_field(update, path):
    """What the adapter cannot reproduce on a real broker is an UnsupportedScenario naming the field."""
    s = scenario("retry-dlx").variant(update)
    with pytest.raises(UnsupportedScenario) as err:
        check_supported(s)
        FaultPlan.from_scenario(s, broker_control=False)
    assert err.value.path == path


def test_a_hard_kill_of_the_broker_is_refused_and_a_clean_restart_planned():
    """The adapter restarts a real broker cleanly and cannot kill it: a broker crash without clean = true is an
    UnsupportedScenario naming the field, even with a broker it controls; with clean = true it is a restart."""
    crash = {"kind": "crash", "node": "broker", "start": 100, "end": 200}
    with pytest.raises(UnsupportedScenario) as err:
        FaultPlan.from_scenario(scenario("retry-dlx").variant({"faults.schedule": [crash]}), broker_control=True)
    assert err.value.path == "faults.schedule[0].clean" and "clean = true" in str(err.value)
    clean = scenario("retry-dlx").variant({"faults.schedule": [{**crash, "clean": True}]})
    assert FaultPlan.from_scenario(clean, broker_control=True).broker_restarts == [(100.0, 200.0)]


def test_fault_plan_maps_crashes_and_partitions():
    """A client crash is a process crash; a partition or isolation cuts clients off the broker."""
    s = scenario("retry-dlx").variant({"faults.schedule": [
        {"kind": "crash", "node": "c1", "start": 100, "end": 200},
        {"kind": "partition", "groups": [["broker", "pub"], ["c1", "c2"]], "start": 300, "end": 400},
        {"kind": "isolate", "node": "pub", "start": 500, "end": 600}]})
    plan = FaultPlan.from_scenario(s, broker_control=False)
    assert plan.crashes == [("c1", 100.0, 200.0)]
    assert plan.cuts == [("c1", 300.0, 400.0), ("c2", 300.0, 400.0), ("pub", 500.0, 600.0)]
    assert plan.last_end == 600.0 and plan.broker_restarts == []


def test_unreachable_broker_fails_fast_with_a_clear_error():
    """Nothing listening: BrokerUnreachable within seconds, naming the redacted URL, not the password."""
    url = f"amqp://bob:{SECRET.replace('/', '%2F').replace('#', '%23').replace('@', '%40')}@127.0.0.1:{free_port()}/"
    t0 = time.monotonic()
    with pytest.raises(BrokerUnreachable) as err:
        run_rabbitmq(scenario("retry-dlx"), url=url)
    assert time.monotonic() - t0 < 10
    assert "connection refused" in str(err.value) and "bob:***@127.0.0.1" in str(err.value)
    assert SECRET not in str(err.value)


def test_a_refused_vhost_is_told_apart_from_a_missing_one():
    """Both end the handshake with 530 NOT_ALLOWED: the broker's text says which (as RabbitMQ 3.10.8 words them)."""
    from sim.rabbitmq.amqp import connect_error_reason, pika_module

    denied = pika_module().exceptions.ProbableAccessDeniedError
    settings = AmqpSettings.from_url("amqp://bob:hunter2@127.0.0.1/orders")
    missing = denied("ConnectionClosedByBroker: (530) 'NOT_ALLOWED - vhost orders not found'")
    refused = denied("ConnectionClosedByBroker: (530) "
                     "\"NOT_ALLOWED - access to vhost 'orders' refused for user 'bob'\"")
    assert connect_error_reason(missing, settings).startswith("vhost 'orders' does not exist")
    assert connect_error_reason(refused, settings) == "access to vhost 'orders' refused for user 'bob'"


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_cli_unreachable_broker_exit_3_one_line():
    """capsim validate against a closed port: exit status 3, one line on stderr, no traceback, no password."""
    url = f"amqp://bob:hunter2secret@127.0.0.1:{free_port()}/%2F"
    proc = run_cli("validate", "rabbitmq", str(SCENARIOS / "rabbitmq-retry-dlx.toml"), "--url", url)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("capsim: error: cannot connect to RabbitMQ")
    assert "Traceback" not in proc.stderr and "hunter2secret" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("args, fragment", [
    (["--url", "http://u:hunter2@x"], "--url: must start with amqp://"),
    (["--seed", "-1"], "--seed: must be an integer in [0, 2**63), got -1"),
    (["--url", "amqp://u:hunter2@127.0.0.1:1/%2F", "--seed", "-1"], "--seed: must be an integer in [0, 2**63), got -1"),
    (["--repeats", "0"], "--repeats: must be an integer in [1, 20], got 0"),
    (["--repeats", "1000000000"], "--repeats: must be an integer in [1, 20]"),
    (["--out", ""], "--out: must name a folder, got an empty path"),
    (["--out", "SCENARIOS"], "holds the input"),
    (["--out", "/proc/capsim-validate"], "--out: cannot write"),
])
def test_cli_user_mistakes_exit_2(args, fragment, capsys):
    """A bad URL, seed, repeat count or output folder is a user mistake: exit status 2 and a one-line error, before
    any broker work."""
    args = [str(SCENARIOS) if a == "SCENARIOS" else a for a in args]
    assert main(["validate", "rabbitmq", str(SCENARIOS / "rabbitmq-retry-dlx.toml"), *args]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert fragment in err and err.count("\n") == 1 and "hunter2" not in err
    assert captured.out == ""  # nothing ran


def test_cli_a_flood_is_refused_before_the_broker(tmp_path, capsys):
    """A publisher at 1e9 messages/s is refused by the cost guard, naming the field, before any broker work (the
    URL points at a closed port: reaching it would be exit 3)."""
    flood = tmp_path / "flood.toml"
    text = (SCENARIOS / "rabbitmq-retry-dlx.toml").read_text().replace("rate = 200\ncount = 200\n", "rate = 1e9\n")
    flood.write_text(text)
    url = f"amqp://u:p@127.0.0.1:{free_port()}/%2F"
    assert main(["validate", "rabbitmq", str(flood), "--url", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("capsim: error: protocol.publishers[0].rate: ") and "--allow-large" in err


def test_cli_unsupported_scenario_exit_2(tmp_path, capsys):
    """A scenario the adapter cannot run exits 2, naming the field, before any broker work."""
    bad = tmp_path / "bad.toml"
    text = (SCENARIOS / "rabbitmq-retry-dlx.toml").read_text()
    bad.write_text(text.replace("[workload]", "[network]\nloss = 0.2\n\n[workload]"))
    assert main(["validate", "rabbitmq", str(bad), "--url", f"amqp://127.0.0.1:{free_port()}"]) == 2
    assert "network.loss: needs control over the network" in capsys.readouterr().err


def test_package_imports_without_pika():
    """import sim and sim.rabbitmq work without pika; contacting a broker then says how to install it."""
    code = ("import sys; sys.modules['pika'] = None\n"
            "import sim, sim.rabbitmq\n"
            "from sim.rabbitmq import PikaMissing, AmqpSettings\n"
            "try:\n    AmqpSettings.resolve().parameters()\nexcept PikaMissing as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'pika>=1.3,<2'" in proc.stdout


def test_simulated_requeue_orders_are_the_measured_ones():
    """The probe script on the simulated broker gives the orders measured on RabbitMQ 3.10.8
    (tests/test_rabbitmq_validation.py measures them again on the live broker)."""
    for (kind, how), order in MEASURED_3_10_8.items():
        assert sim_requeue_order(kind, how) == order, (kind, how)


def test_compare_a_run_with_itself_agrees_and_a_changed_one_differs():
    """compare(sim, sim) agrees on every row; dropping a side effect is reported as a difference."""
    r = sim.run(scenario("retry-dlx"))
    same = compare(r, r)
    assert same.verdict == "agree" and same.differences == []
    assert set(same.counts["quantity"]) >= {"published", "confirmed", "delivered", "redelivered", "dead_lettered",
                                            "lost", "duplicated"}
    assert len(retry_delays(r.tables["message_events"])) == int((r.tables["message_events"]["reason"] == "retry").sum())
    ev = r.tables["message_events"]
    first_effect = ev.index[ev["event"] == "side_effect"][0]
    changed = with_events(r, ev.drop(index=first_effect))
    other = compare(r, changed)
    assert other.verdict == "differ" and other.semantics == "differ"
    assert any(d.startswith("counts: processed") for d in other.differences)
    assert "semantics: differ" in other.report() and "verdict: differ" in other.report()
    several = compare(r, [r, changed, r])
    assert several.semantics == "differ" and several.counts["agree"].dropna().all()
    assert any(d.startswith("broker run 2: counts: processed") for d in several.semantic_differences)


def at_latency(name, mean_ms):
    """The scenario simulated with another network latency: same seeded decisions, other timing."""
    return sim.run(scenario(name).variant({"network.latency": {"dist": "exponential", "mean": mean_ms}}))


def test_timing_is_judged_against_the_spread_of_the_broker_runs():
    """Three 'broker runs' whose p50 latency spreads over 20%: a simulation inside that noise agrees even though
    it is off by more than any fixed 0 ms allowance would take; one six times slower differs, on timing only."""
    runs = [at_latency("delivery-limit", m) for m in (0.8, 1.0, 1.3)]
    p50s = [float(np.percentile(r.tables["messages"]["latency"].dropna(), 50)) for r in runs]
    assert max(p50s) > 1.2 * min(p50s)
    close = compare(at_latency("delivery-limit", 1.1), runs)
    assert close.verdict == "agree" and close.semantics == "agree" and close.timing == "agree"
    row = close.latency.set_index("quantity").loc["p50 (ms)"]
    assert row["simulation"] != row["broker"] and row["broker runs"] == " ".join(f"{v:.3f}" for v in p50s)
    slow = compare(at_latency("delivery-limit", 6.0), runs)
    assert slow.verdict == "timing differs" and slow.semantics == "agree" and slow.semantic_differences == []
    assert any(d.startswith("latency: p50 (ms)") and "allowance" in d for d in slow.timing_differences)
    assert "timing: differ" in slow.report() and "verdict: timing differs" in slow.report()


def test_timing_noise_is_the_prediction_interval_of_one_more_run():
    """With little sampling noise, the noise is t(R-1, 99.5%) x the runs' standard deviation x sqrt(1 + 1/R), and the
    allowance adds the model's accuracy: 5% of the broker's value, at least 2 ms."""
    from scipy import stats

    from sim.rabbitmq.timing import TimingRule, judge

    rng = np.random.default_rng(1)
    runs = [np.full(500, v) + rng.normal(0, 0.01, 500) for v in (100.0, 101.0, 102.5)]
    j = judge(np.full(500, 101.0), runs, 50.0, TimingRule(), np.random.default_rng(2))
    spread = float(np.std([np.percentile(r, 50) for r in runs], ddof=1))
    assert j.noise == pytest.approx(stats.t.ppf(0.995, 2) * spread * np.sqrt(1 + 1 / 3))
    assert j.allowance == pytest.approx(j.noise + 0.05 * j.broker) and j.within < 0.01 < spread
    assert j.agree
    far = judge(np.full(500, j.broker + 1.01 * j.allowance), runs, 50.0, TimingRule(), np.random.default_rng(2))
    assert not far.agree


def test_timing_noise_of_a_single_run_is_its_sampling_noise():
    """One broker run has no spread to measure: the noise is z(99.5%) x the bootstrap standard errors."""
    from sim.rabbitmq.timing import TimingRule, judge

    rng = np.random.default_rng(3)
    real, simulated = rng.exponential(5.0, 400), rng.exponential(5.0, 400)
    j = judge(simulated, [real], 50.0, TimingRule(), np.random.default_rng(4))
    assert np.isnan(j.between) and 0.1 < j.within < 1.0 and 0.1 < j.sim_se < 1.0
    assert j.noise == pytest.approx(2.5758 * np.sqrt(j.sim_se**2 + j.within**2), rel=1e-3)
    assert j.allowance == pytest.approx(j.noise + 2.0)


def test_a_calibration_that_moves_the_prediction_widens_the_noise():
    """Simulations calibrated with each ping run alone: when one of them (a ping run caught a burst of load) puts
    the median at 64 ms instead of 5, the prediction cannot be trusted to a few ms and the noise says so."""
    from sim.rabbitmq.timing import TimingRule, judge

    rng = np.random.default_rng(5)
    runs = [rng.exponential(6.0, 300) for _ in range(3)]
    steady = [rng.exponential(5.0, 300) for _ in range(3)]
    burst = steady[:2] + [rng.exponential(90.0, 300)]
    quiet = judge(steady[0], runs, 50.0, TimingRule(), np.random.default_rng(6), steady)
    loud = judge(steady[0], runs, 50.0, TimingRule(), np.random.default_rng(6), burst)
    assert quiet.cal < 1.0 < 20.0 < loud.cal and loud.noise > 10 * quiet.noise


def test_the_models_accuracy_excuses_its_known_optimism_and_nothing_more():
    """Three broker runs within 0.3 ms of 102.4 ms: a simulated retry delay 1.6 ms shorter (the broker's
    dead-lettering work, which the model does not simulate) agrees; one 10 ms longer (a wrong TTL) differs."""
    from sim.rabbitmq.timing import TimingRule, judge

    rng = np.random.default_rng(7)
    runs = [v + rng.normal(0, 0.3, 90) for v in (102.38, 102.22, 102.21)]
    sim_at = lambda v: v + rng.normal(0, 0.3, 90)  # noqa: E731
    assert judge(sim_at(100.66), runs, 50.0, TimingRule(), np.random.default_rng(8)).agree
    assert not judge(sim_at(100.66), runs, 50.0, TimingRule(accuracy_ms=0, accuracy_rel=0),
                     np.random.default_rng(8)).agree
    assert not judge(sim_at(112.4), runs, 50.0, TimingRule(), np.random.default_rng(8)).agree

def test_the_semantic_simulation_keeps_each_publisher_in_order():
    """Calibrated hops spread over 0.2-3 ms, wider than the 1 ms between a publisher's messages: on connections
    (the AMQP frames' default, like the TCP stream of a real AMQP connection) every queue still gets each
    publisher's messages in order, as with the median as a constant; drawn per message as datagrams they reorder,
    so the broker restart catches other messages in flight."""
    from sim.rabbitmq.calibrate import Calibration

    hops = tuple(float(x) for x in np.round(np.linspace(0.2, 3.0, 57), 4))
    cal = Calibration(hops, publish_to_receive={}, publish_to_confirm={}, consumer_overhead={}, messages=57, rate=200)

    def arrivals(spread, transport="protocol"):
        s = cal.apply(scenario("broker-restart"), spread=spread).variant({"network.transport.mode": transport})
        ev = sim.run(s).tables["message_events"]
        enq = ev[(ev["event"] == "enqueue") & ev["msg_id"].str.match(r"p[cq]-")]
        return {q: list(g["msg_id"]) for q, g in enq.groupby("queue")}

    in_order = {q: [f"p{q[0]}-{i}" for i in range(10)] for q in ("classic", "quorum")}
    assert arrivals(False) == in_order
    assert arrivals(True) == in_order
    assert arrivals(True, "datagram") != in_order


def test_the_timing_simulation_keeps_the_broker_down_as_long_as_the_real_one_was():
    """A real restart overran the scenario's 500 ms crash window by 900 ms: the simulation whose timing is compared
    keeps its broker down 1400 ms, so the messages waiting through it wait longer; what happens to them does not
    change."""
    from sim.rabbitmq.validate import restarts_as_run

    s = scenario("broker-restart")
    longer = restarts_as_run(s, 900.0)
    assert (longer.faults.schedule[0].start, longer.faults.schedule[0].end) == (250.0, 1650.0)
    assert restarts_as_run(s, 0.0) is s and restarts_as_run(scenario("retry-dlx"), 900.0) == scenario("retry-dlx")
    before, after = sim.run(s).tables["messages"], sim.run(longer).tables["messages"]
    assert list(before["status"]) == list(after["status"])
    assert after["latency"].median() > before["latency"].median() + 300


def test_consumers_restart_as_late_as_a_real_connection_set_up_takes():
    """Connections measured at 9 ms to consume again, four simulated hops at 0.5 ms: each consumer restarts and
    every client reconnects 7 ms later in the simulation, which moves the consumer-crash example's latencies up."""
    from sim.rabbitmq.calibrate import Calibration

    stats = {"p50": 1.0, "p95": 1.0}
    cal = Calibration((0.5,) * 20, publish_to_receive=stats, publish_to_confirm=stats, consumer_overhead=stats,
                      messages=20, rate=200, setup_samples=(8.0, 9.0, 10.0))
    s = scenario("consumer-crash")
    applied = cal.apply(s)
    assert cal.setup_extra_ms == pytest.approx(7.0)
    assert [c.restart_after for c in applied.protocol.consumers] == [57.0, 57.0]
    assert applied.protocol.reconnect_delay == s.protocol.reconnect_delay + 7.0
    assert dataclasses.replace(cal, setup_samples=()).apply(s).protocol.consumers[0].restart_after == 50.0
    slower = sim.run(applied).tables["messages"]["latency"].median()
    assert slower > sim.run(dataclasses.replace(cal, setup_samples=()).apply(s)).tables["messages"]["latency"].median()
    assert "consumers restart and clients reconnect 7.000 ms later" in cal.describe()


def test_a_stall_is_left_out_of_the_hop_latency_and_ordinary_spread_is_not():
    """Pings in publish order: a stretch of 15 at 44-57 ms among 0.4-3 ms ones (seen on a loaded machine) is a stall
    and left out; one or two slow pings in a row are ordinary spread and kept; a machine slow throughout (every
    ping 10-30 ms) has no stall, since the bar moves with the median."""
    import numpy as np

    from sim.rabbitmq.calibrate import STALL_RUN, Calibration, stall_mask

    rng = np.random.default_rng(5)
    quiet = rng.uniform(0.4, 3.0, 100)
    stalled = quiet.copy()
    stalled[40:55] = rng.uniform(44.0, 57.0, 15)
    mask = stall_mask(stalled)
    assert mask[40:55].all() and mask.sum() == 15
    spread = quiet.copy()
    spread[[10, 30, 31, 70]] = 60.0  # one, two in a row, one: never STALL_RUN in a row
    assert STALL_RUN == 3 and not stall_mask(spread).any()
    assert not stall_mask(rng.uniform(10.0, 30.0, 100)).any()
    assert not stall_mask(np.array([])).any()
    # the count is kept through pooling and said in the description
    stats = {"count": 1.0, "p50": 1.0, "p95": 1.0, "p99": 1.0, "mean": 1.0}
    cals = [Calibration((0.5,) * 20, publish_to_receive=stats, publish_to_confirm=stats, consumer_overhead=stats,
                        messages=20, rate=200, stalled=n) for n in (15, 0)]
    pooled = Calibration.pooled(cals)
    assert pooled.stalled == 15 and "15 pings inside stalls" in pooled.describe()
    assert "stalls" not in cals[1].describe()
