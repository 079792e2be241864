"""A real three-node RabbitMQ cluster in Linux network namespaces, with partitions between its nodes.

Tests and experiments start the cluster and remove it themselves; it needs root,
``ip`` (iproute2) and RabbitMQ's server scripts, nothing else.

Network. Every cluster has a run id (4 hex digits) and lives in namespaces named
``capsim-<run>-hub`` (a bridge) and ``capsim-<run>-n1`` ... ``-n3`` (one node
each). Each node namespace has loopback and ``eth0``, one end of a veth pair
whose other end is a port of the hub's bridge, with the address
``10.213.<k>.1<i>/24``. One veth, ``capsim<run>r``, joins the *root* namespace
to the hub with ``10.213.<k>.1``: it is the only thing the cluster puts
outside its namespaces, and it is how clients (pika, in this process) and
``rabbitmqctl`` reach every node. ``k`` is the first subnet no address of the
root namespace uses, so concurrent runs do not collide.

Nodes. Every node runs in its namespace with the same ports (AMQP 5672,
distribution 25672, its own epmd on 4369: the namespaces keep them apart), the
long name ``rabbit@<its address>`` (``RABBITMQ_USE_LONGNAME``: no name
resolution needed), its own data, log and config files in a temporary
directory, and an empty ``rabbitmq-env.conf`` of its own
(``RABBITMQ_CONF_ENV_FILE``), so a system-wide one, which may bind epmd and the
distribution to 127.0.0.1, is not read. ``advanced.config`` sets the kernel's
``net_ticktime`` (default 4 s instead of 60 s), so a partition is noticed
within ``net_ticktime`` to 1.25 × ``net_ticktime``; ``rabbitmq.conf`` sets
``cluster_partition_handling`` (``ignore``, ``autoheal`` or
``pause_minority``: one mode per cluster; another mode takes another cluster),
allows the ``guest`` user from other hosts, and enables no plugin. The server
scripts, started as root, run the node as the ``rabbitmq`` user, so every node
shares that user's Erlang cookie (the same one ``rabbitmqctl`` uses). The three
nodes boot in parallel; then ``n2`` and ``n3`` join ``n1`` with ``rabbitmqctl
stop_app``, ``join_cluster``, ``start_app``. Questions about the cluster's state (:meth:`RabbitCluster.eval`, e.g. which
nodes a node sees running) go through one hidden, non-listening Erlang node in
the root namespace that stays connected, because every ``rabbitmqctl`` call
boots a VM of its own (1-2 s on a busy machine). Starting takes about 20 s on
two quiet cores (booting the three nodes 14 s, the two joins 6 s) and up to 55 s
on busy ones.

Partitions. A blocked direction ``a -> b`` is a blackhole route for ``b``'s
address in ``a``'s namespace: ``a``'s packets to ``b`` are discarded, as on a
cut link, and TCP connections between them stall until Erlang's tick notices.
Locally, a blackhole route also makes new connection attempts fail at once
instead of timing out, which only changes how quickly a reconnecting node gives
up. Routes need no package: the kernel used here has neither the ``tc`` drop
action nor userspace nftables/iptables. A symmetric partition blocks both
directions between every pair of nodes in different groups; a one-way one only
the directions from ``groups[0]`` to the other nodes. Clients are not cut off:
a client keeps talking to its node, like the simulation's clients homed at a
node. :meth:`RabbitCluster.partition` takes the simulation's group format (the
nodes named in no group form one more group), and :meth:`partition_fault`
applies a :class:`sim.faultspec.Partition`, ``Isolate`` or resolved ``Split``.
Overlapping partitions are counted per direction, as in the simulation's
network.

Clean-up. :meth:`RabbitCluster.close` (also by ``with``, and at interpreter
exit) kills every process in the cluster's namespaces (found with ``ip netns
pids``: the nodes, their epmd and helpers), deletes the namespaces and the root
veth and removes the directory. A run killed before that leaves them behind;
:func:`cleanup_leftovers`, called before every start, removes the namespaces,
root veths and directories of runs whose owning process has died (each run's
directory holds the owner's pid), and never touches a live run's. A lock file
(``capsim-cluster.lock`` in the temporary directory) serialises building a
run's network and removing leftovers, so concurrent runs pick different
subnets and a cleanup never mistakes a run being set up for a dead one.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from ..faultspec import LEADER, Fault, Isolate, Partition, Split
from .erlang_control import ErlangControl
from .errors import AdapterError
from .settings import AmqpSettings

__all__ = ["RabbitCluster", "ClusterNode", "cleanup_leftovers", "leftovers", "blocked_directions", "PARTITION_HANDLING",
           "PREFIX"]

PREFIX = "capsim"
PARTITION_HANDLING = ("ignore", "autoheal", "pause_minority")
PartitionHandling = Literal["ignore", "autoheal", "pause_minority"]
_NS = re.compile(rf"^{PREFIX}-([0-9a-f]{{4}})-(hub|n\d+)$")
_ROOT_LINK = re.compile(rf"^{PREFIX}([0-9a-f]{{4}})r$")
_AMQP_PORT = 5672


def _state_root() -> Path:
    return Path(tempfile.gettempdir())


def _run_dir(run: str) -> Path:
    return _state_root() / f"{PREFIX}-cluster-{run}"


def _sh(*args: str, timeout: float = 30.0, check: bool = True, env: dict[str, str] | None = None) \
        -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError:
        raise AdapterError(f"{args[0]} not found (the real cluster needs iproute2 and RabbitMQ)") from None
    except subprocess.TimeoutExpired:
        raise AdapterError(f"`{' '.join(args)}` did not finish within {timeout:g} s") from None
    if check and proc.returncode != 0:
        raise AdapterError(f"`{' '.join(args)}` failed: {(proc.stderr or proc.stdout).strip()}")
    return proc


def _namespaces() -> list[str]:
    out = _sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _root_links() -> list[str]:
    out = _sh("ip", "-o", "link", "show", check=False).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]
    return [n for n in names if _ROOT_LINK.match(n)]


def _owner_alive(run: str) -> bool:
    try:
        pid = int((_run_dir(run) / "owner").read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_namespace_processes(ns: str, timeout_s: float = 10.0) -> None:
    """SIGKILL every process in namespace ``ns`` (by pid, from ``ip netns pids``) and wait until none is left."""
    deadline = time.monotonic() + timeout_s
    while True:
        pids = [int(p) for p in _sh("ip", "netns", "pids", ns, check=False).stdout.split()]
        if not pids:
            return
        if time.monotonic() > deadline:
            raise AdapterError(f"processes {pids} in namespace {ns} did not end")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def leftovers() -> dict[str, list[str]]:
    """What dead runs left: their namespaces, root veths and directories (live runs are not listed)."""
    runs: set[str] = set()
    found: dict[str, list[str]] = {"namespaces": [], "links": [], "dirs": []}
    for ns in _namespaces():
        m = _NS.match(ns)
        if m and not _owner_alive(m.group(1)):
            found["namespaces"].append(ns)
            runs.add(m.group(1))
    for link in _root_links():
        m = _ROOT_LINK.match(link)
        if m and not _owner_alive(m.group(1)):
            found["links"].append(link)
    for path in _state_root().glob(f"{PREFIX}-cluster-*"):
        run = path.name.rsplit("-", 1)[-1]
        if re.fullmatch(r"[0-9a-f]{4}", run) and not _owner_alive(run):
            found["dirs"].append(str(path))
    return found


@contextlib.contextmanager
def _setup_lock() -> Iterator[None]:
    """Held while a run picks its id and subnet and builds its network, and while leftovers are removed: a
    concurrent run never takes the same subnet, and a cleanup never sees a run that has no owner file yet."""
    with open(_state_root() / f"{PREFIX}-cluster.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cleanup_leftovers() -> dict[str, list[str]]:
    """Remove what :func:`leftovers` finds (processes in those namespaces first); returns what was removed."""
    with _setup_lock():
        found = leftovers()
        for ns in found["namespaces"]:
            _kill_namespace_processes(ns)
            _sh("ip", "netns", "del", ns, check=False)
        for link in found["links"]:
            _sh("ip", "link", "del", link, check=False)
        for path in found["dirs"]:
            shutil.rmtree(path, ignore_errors=True)
    return found


class ClusterNode:
    """One node of a :class:`RabbitCluster`: its name, namespace, address and files."""

    def __init__(self, name: str, index: int, namespace: str, ip: str, base: Path) -> None:
        self.name = name
        self.index = index
        self.namespace = namespace
        self.ip = ip
        self.base = base
        self.erlang_name = f"rabbit@{ip}"

    def __repr__(self) -> str:
        return f"ClusterNode({self.name!r}, {self.erlang_name!r})"

    @property
    def settings(self) -> AmqpSettings:
        """AMQP connection settings for a client of this node (from the root namespace)."""
        return AmqpSettings(host=self.ip, port=_AMQP_PORT, source=f"cluster node {self.name} ({self.erlang_name})")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "RABBITMQ_NODENAME": self.erlang_name,
            "RABBITMQ_USE_LONGNAME": "true",
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "node.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
        })
        return env

    def log_tail(self, lines: int = 20) -> str:
        logs = sorted((self.base / "log").glob("*.log"))
        text = [ln for p in logs for ln in p.read_text(errors="replace").splitlines()]
        return "\n".join(text[-lines:])


class RabbitCluster:
    """Three (``size``) RabbitMQ nodes in network namespaces, clustered; see the module docstring.

    ``with RabbitCluster(partition_handling="pause_minority") as cluster: ...`` starts it and
    removes everything afterwards.
    """

    def __init__(self, size: int = 3, *, partition_handling: PartitionHandling = "pause_minority",
                 net_ticktime: int = 4, startup_timeout: float = 90.0, command_timeout: float = 60.0) -> None:
        if partition_handling not in PARTITION_HANDLING:
            raise ValueError(f"partition_handling must be one of {', '.join(PARTITION_HANDLING)}, "
                             f"got {partition_handling!r}")
        if not 1 <= size <= 9:
            raise ValueError(f"size must be 1..9, got {size}")
        if net_ticktime < 1:
            raise ValueError(f"net_ticktime must be a whole number of seconds >= 1, got {net_ticktime}")
        self.size = size
        self.partition_handling = partition_handling
        self.net_ticktime = net_ticktime
        self.startup_timeout = startup_timeout
        self.command_timeout = command_timeout
        self.run = ""
        self.nodes: dict[str, ClusterNode] = {}
        self.base: Path | None = None
        self.root_link = ""
        self.startup_seconds: dict[str, float] = {}
        self._blocked: dict[tuple[str, str], int] = {}
        self._partitions: dict[Any, list[tuple[str, str]]] = {}
        self._next_key = 0
        self._closed = True
        self._control: ErlangControl | None = None

    def __repr__(self) -> str:
        return f"RabbitCluster(run={self.run!r}, nodes={list(self.nodes)}, {self.partition_handling})"

    @property
    def hub(self) -> str:
        return f"{PREFIX}-{self.run}-hub"

    def node(self, name: str) -> ClusterNode:
        try:
            return self.nodes[name]
        except KeyError:
            raise ValueError(f"no node {name!r} in the cluster (nodes: {', '.join(self.nodes)})") from None

    # -- life cycle -------------------------------------------------------------------------------
    def start(self) -> RabbitCluster:
        """Build the network, boot the nodes and cluster them; on any failure everything is removed again."""
        for tool in ("rabbitmq-server", "rabbitmqctl"):
            if shutil.which(tool) is None:
                raise AdapterError(f"{tool} not found: the real cluster needs RabbitMQ's server scripts")
        self.build_network()
        try:
            t1 = time.monotonic()
            self._boot_nodes()
            self.startup_seconds["boot"] = time.monotonic() - t1
            t2 = time.monotonic()
            self._join()
            self.startup_seconds["join"] = time.monotonic() - t2
        except BaseException:
            self.close()
            raise
        return self

    def build_network(self) -> RabbitCluster:
        """Remove dead runs' leftovers, then make this run's directory, namespaces, bridge and veths
        (no node runs yet; :meth:`start` does this first)."""
        if os.geteuid() != 0:
            raise AdapterError("the real cluster needs root (network namespaces)")
        if shutil.which("ip") is None:
            raise AdapterError("ip not found: the real cluster needs iproute2")
        cleanup_leftovers()
        self._closed = False
        atexit.register(self.close)
        try:
            t0 = time.monotonic()
            with _setup_lock():
                self._make_dirs()
                self._make_network()
            self.startup_seconds["network"] = time.monotonic() - t0
        except BaseException:
            self.close()
            raise
        return self

    def _make_dirs(self) -> None:
        for _ in range(100):
            run = secrets.token_hex(2)
            if not _run_dir(run).exists() and f"{PREFIX}-{run}-hub" not in _namespaces():
                break
        else:  # pragma: no cover - 65536 run ids all taken
            raise AdapterError("no free cluster run id")
        self.run = run
        self.base = _run_dir(run)
        self.base.mkdir(mode=0o755)
        (self.base / "owner").write_text(f"{os.getpid()}\n")
        k = self._free_subnet()
        for i in range(1, self.size + 1):
            name = f"n{i}"
            nbase = self.base / name
            for sub in ("mnesia", "log"):
                (nbase / sub).mkdir(parents=True)
            (nbase / "rabbitmq-env.conf").write_text("")
            (nbase / "enabled_plugins").write_text("[].\n")
            (nbase / "rabbitmq.conf").write_text(
                f"listeners.tcp.default = {_AMQP_PORT}\n"
                f"cluster_partition_handling = {self.partition_handling}\n"
                "loopback_users = none\n"
                "log.console = false\n"
                "log.file.level = info\n")
            (nbase / "advanced.config").write_text(f"[{{kernel, [{{net_ticktime, {self.net_ticktime}}}]}}].\n")
            self.nodes[name] = ClusterNode(name, i, f"{PREFIX}-{run}-{name}", f"10.213.{k}.{10 + i}", nbase)
        self.subnet = f"10.213.{k}"
        if os.geteuid() == 0:
            for path in [self.base, *self.base.rglob("*")]:
                shutil.chown(path, "rabbitmq", "rabbitmq")

    @staticmethod
    def _free_subnet() -> int:
        used = _sh("ip", "-o", "-4", "addr", "show", check=False).stdout + _sh("ip", "-4", "route", check=False).stdout
        for k in range(255):
            if f"10.213.{k}." not in used:
                return k
        raise AdapterError("every subnet 10.213.0-254.0/24 is in use")

    def _make_network(self) -> None:
        hub = self.hub
        _sh("ip", "netns", "add", hub)
        _sh("ip", "-n", hub, "link", "set", "lo", "up")
        _sh("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", hub, "link", "set", "br0", "up")
        for node in self.nodes.values():
            ns, port = node.namespace, f"p{node.index}"
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", hub)
            _sh("ip", "-n", hub, "link", "set", port, "master", "br0", "up")
            _sh("ip", "-n", ns, "addr", "add", f"{node.ip}/24", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
        self.root_link = f"{PREFIX}{self.run}r"
        _sh("ip", "link", "add", self.root_link, "type", "veth", "peer", "name", "p0", "netns", hub)
        _sh("ip", "-n", hub, "link", "set", "p0", "master", "br0", "up")
        _sh("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.root_link)
        _sh("ip", "link", "set", self.root_link, "up")

    def _boot_nodes(self) -> None:
        """Start the three VMs at once, then wait for each broker."""
        for node in self.nodes.values():
            proc = subprocess.run(["ip", "netns", "exec", node.namespace, "rabbitmq-server", "-detached"],
                                  env=node.env(), capture_output=True, text=True, timeout=self.command_timeout,
                                  cwd=str(node.base))
            if proc.returncode != 0:
                raise AdapterError(f"rabbitmq-server -detached failed for {node.name}: "
                                   f"{(proc.stderr or proc.stdout).strip()}")
        for node in self.nodes.values():
            self.await_node(node.name, self.startup_timeout)

    def await_node(self, name: str, timeout_s: float) -> None:
        """Wait until node ``name`` accepts AMQP connections and ``rabbitmqctl await_startup`` returns."""
        node = self.node(name)
        deadline = time.monotonic() + timeout_s
        while not _listening(node.ip, _AMQP_PORT):
            if time.monotonic() > deadline:
                raise AdapterError(f"node {name} ({node.erlang_name}) did not accept AMQP connections within "
                                   f"{timeout_s:g} s; log tail:\n{node.log_tail()}")
            time.sleep(0.1)
        self.ctl(name, "await_startup", "--timeout", str(max(1, int(deadline - time.monotonic()))))

    def _join(self) -> None:
        """``rabbitmqctl stop_app``, ``join_cluster <n1>``, ``start_app`` on every node but the first, one node
        after the other; then check that the first node sees them all running."""
        first = next(iter(self.nodes.values()))
        for node in list(self.nodes.values())[1:]:
            self.ctl(node.name, "stop_app")
            self.ctl(node.name, "join_cluster", first.erlang_name)
            self.ctl(node.name, "start_app")
        running = self.running_nodes(first.name)
        if sorted(running) != sorted(self.nodes):
            raise AdapterError(f"the cluster did not form: {first.name} sees {running} running")

    def close(self) -> None:
        """Kill the nodes, delete the namespaces, the root veth and the directory (safe to call twice)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        if self._control is not None:
            self._control.stop()
            self._control = None
        if not self.run:
            return
        names = set(_namespaces())
        for ns in [n.namespace for n in self.nodes.values()] + [self.hub]:
            if ns in names:
                _kill_namespace_processes(ns)
                _sh("ip", "netns", "del", ns, check=False)
        if self.root_link:
            _sh("ip", "link", "del", self.root_link, check=False)
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
        self._blocked.clear()
        self._partitions.clear()

    def __enter__(self) -> RabbitCluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- rabbitmqctl ---------------------------------------------------------------------------------
    def ctl(self, name: str, *args: str, timeout: float | None = None, check: bool = True) -> str:
        """``rabbitmqctl --longnames -n <node> ARGS`` from the root namespace; a failure raises AdapterError."""
        node = self.node(name)
        proc = subprocess.run(["rabbitmqctl", "--longnames", "-n", node.erlang_name, *args], env=node.env(),
                              capture_output=True, text=True, timeout=timeout or self.command_timeout,
                              cwd=str(node.base))
        if check and proc.returncode != 0:
            out = (proc.stderr or proc.stdout).strip().splitlines()
            raise AdapterError(f"rabbitmqctl {' '.join(args)} failed on {name}: {out[0] if out else proc.returncode}")
        return proc.stdout

    def eval(self, name: str, expr: str, *, timeout: float | None = None) -> str:
        """Evaluate the Erlang expression ``expr`` on node ``name``; its value, printed (what
        ``rabbitmqctl eval`` does, through the control process when there is one)."""
        if self._control is not None and self._control.proc.poll() is not None:
            self._control = None
        if self._control is None and self.base is not None and shutil.which("erl") is not None:
            self._control = ErlangControl(f"{PREFIX}-ctl-{self.run}@{self.subnet}.1", self.net_ticktime)
        if self._control is not None:
            return self._control.eval(self.node(name).erlang_name, expr, timeout or self.command_timeout)
        return self.ctl(name, "eval", expr, timeout=timeout).strip()

    def _names_in(self, term: str) -> list[str]:
        by_erlang = {n.erlang_name: n.name for n in self.nodes.values()}
        return [by_erlang[a] for a in re.findall(r"'(rabbit@[0-9.]+)'", term) if a in by_erlang]

    def running_nodes(self, name: str) -> list[str]:
        """The cluster members node ``name`` sees running (empty when its broker application is stopped)."""
        return self._names_in(self.eval(name, "rabbit_mnesia:cluster_nodes(running)."))

    def partitions_seen(self, name: str) -> list[str]:
        """The nodes node ``name`` has recorded a partition with (``rabbit_node_monitor:partitions()``)."""
        return self._names_in(self.eval(name, "rabbit_node_monitor:partitions()."))

    def is_running(self, name: str) -> bool:
        """Whether node ``name``'s broker application runs (false while pause_minority pauses it)."""
        return self.eval(name, "rabbit:is_running().") == "true"

    def cluster_status(self, name: str) -> dict[str, Any]:
        """``rabbitmqctl cluster_status`` of node ``name`` as a dict (its JSON form)."""
        out = self.ctl(name, "cluster_status", "--formatter", "json")
        start = out.find("{")
        try:
            return dict(json.loads(out[start:]))
        except ValueError:
            raise AdapterError(f"cluster_status of {name} is not JSON: {out[:200]!r}") from None

    def wait_for(self, condition: Any, timeout_s: float, what: str, *, poll_s: float = 0.5) -> float:
        """Poll ``condition()`` until true; returns the seconds it took, or raises AdapterError naming ``what``."""
        t0 = time.monotonic()
        last: Exception | None = None
        while time.monotonic() - t0 < timeout_s:
            try:
                if condition():
                    return time.monotonic() - t0
                last = None
            except AdapterError as exc:
                last = exc
            time.sleep(poll_s)
        raise AdapterError(f"{what} did not happen within {timeout_s:g} s" + (f" (last error: {last})" if last else ""))

    def all_running(self) -> bool:
        """Every node runs its broker application and the first node sees them all running (one ``eval``)."""
        first = next(iter(self.nodes))
        out = self.eval(first, "{rabbit_mnesia:cluster_nodes(running), "
                               "[rpc:call(N, rabbit, is_running, [], 5000) || N <- rabbit_mnesia:cluster_nodes(all)]}.")
        running, _, answers = out.partition("],")
        return sorted(self._names_in(running)) == sorted(self.nodes) and answers.count("true") == len(self.nodes) \
            and "false" not in answers and "badrpc" not in answers

    # -- partitions ----------------------------------------------------------------------------------
    def partition(self, groups: Sequence[Sequence[str]], *, one_way: bool = False) -> int:
        """Partition the nodes into ``groups`` (the simulation's format); returns a key for :meth:`heal`."""
        blocked = blocked_directions(tuple(self.nodes), groups, one_way)
        key = self._next_key
        self._next_key += 1
        self._partitions[key] = blocked
        for pair in blocked:
            self._blocked[pair] = self._blocked.get(pair, 0) + 1
            if self._blocked[pair] == 1:
                self._route("add", *pair)
        return key

    def heal(self, key: int | None = None) -> None:
        """End partition ``key`` (every partition when None)."""
        keys = list(self._partitions) if key is None else [key]
        for k in keys:
            for pair in self._partitions.pop(k, []):
                self._blocked[pair] -= 1
                if self._blocked[pair] == 0:
                    del self._blocked[pair]
                    self._route("del", *pair)

    def blocked(self) -> set[tuple[str, str]]:
        """The directions ``(from, to)`` currently blocked."""
        return set(self._blocked)

    def partition_fault(self, fault: Fault) -> int:
        """Apply a partition fault of the simulation's schedule (``Partition``, ``Isolate`` of a named node,
        ``Split`` with ``pick = "first"`` or ``"last"``); returns the key for :meth:`heal`."""
        if isinstance(fault, Partition):
            return self.partition(fault.groups, one_way=fault.one_way)
        if isinstance(fault, Isolate):
            if fault.node == LEADER:
                raise ValueError(f"isolate node = {LEADER!r} is not supported on the real cluster: name the node")
            return self.partition(((fault.node,),))
        if isinstance(fault, Split):
            if fault.pick == "random":
                raise ValueError("split pick = 'random' needs the simulation's faults stream; resolve it first "
                                 "(sim.kernel.faults.resolve_schedule) or use pick = 'first' / 'last'")
            names = tuple(self.nodes)
            k = min(fault.minority if fault.minority is not None else max((len(names) - 1) // 2, 1), len(names))
            return self.partition((names[:k] if fault.pick == "first" else names[len(names) - k:],))
        raise ValueError(f"fault kind {fault.tag!r} is not supported on the real cluster "
                         "(supported: partition, isolate, split)")

    def _route(self, op: str, src: str, dst: str) -> None:
        _sh("ip", "-n", self.node(src).namespace, "route", op, "blackhole", f"{self.node(dst).ip}/32")

    def routes(self, name: str) -> list[str]:
        """The blackhole routes in node ``name``'s namespace (what the kernel really has)."""
        out = _sh("ip", "-n", self.node(name).namespace, "route", "show", "type", "blackhole").stdout
        return sorted(line.split()[1].removesuffix("/32") for line in out.splitlines() if line.strip())


def blocked_directions(nodes: Sequence[str], groups: Sequence[Sequence[str]], one_way: bool = False) \
        -> list[tuple[str, str]]:
    """The directions ``(from, to)`` a partition blocks, in the simulation's semantics: nodes named in no group
    form one more group; symmetric: every pair on different sides; one-way: only from ``groups[0]`` to the rest."""
    if not groups or any(not g for g in groups):
        raise ValueError(f"groups must be non-empty lists of node names, got {groups!r}")
    side: dict[str, int] = {}
    for i, group in enumerate(groups):
        for name in group:
            if name not in nodes:
                raise ValueError(f"no node {name!r} in the cluster (nodes: {', '.join(nodes)})")
            if name in side:
                raise ValueError(f"node {name!r} is in two groups")
            side[name] = i
    for name in nodes:
        side.setdefault(name, len(groups))
    pairs = [(a, b) for a in nodes for b in nodes if a != b and side[a] != side[b]]
    return [(a, b) for a, b in pairs if side[a] == 0] if one_way else pairs


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
