"""A RabbitMQ node of our own: started on free ports with its own data directory, restarted, stopped.

Broker restarts must not touch the broker other people use, so the adapter
restarts only a node it started itself. :class:`LocalBrokerNode` starts one
with ``rabbitmq-server -detached`` and these settings:

* ``RABBITMQ_NODENAME=capsim-test-<pid>-<n>@localhost``;
* a free AMQP port (``listeners.tcp.local = 127.0.0.1:<port>`` in its own
  ``rabbitmq.conf``, so the system's config file is not read) and a free
  distribution port (``RABBITMQ_DIST_PORT``);
* ``RABBITMQ_MNESIA_BASE``, ``RABBITMQ_LOG_BASE`` and the pid file in a fresh
  temporary directory, deleted when the node stops;
* ``RABBITMQ_ENABLED_PLUGINS_FILE`` pointing to an empty list, so no plugin
  (e.g. management on port 15672) clashes with the system's node.

Every command has a timeout. A node started as root runs as the ``rabbitmq``
user (the packaged scripts switch to it), so its directory is handed to that
user; the Erlang cookie of that user is shared by ``rabbitmqctl``.

A restart (:meth:`broker_down`, then :meth:`broker_up`) is ``stop_app`` then
``start_app``: a clean restart of the broker application in the same Erlang VM,
after which durable queues are recovered from disk as after a full node
restart. (Killing the VM instead was tried: RabbitMQ 3.10 then also loses
acknowledgements it had not yet written to disk, so acked messages come back,
which the simulation does not model; and right after the restart a quorum
queue reports zero messages until its leader is elected again, which the
adapter's end-of-run check cannot tell from an empty queue. So the adapter
does not offer it.)

``rabbitmqctl`` needs about a second to boot its own Erlang VM before it acts,
far too late for a fault scheduled at a given millisecond, so the node keeps a
small control process (an ``escript`` connected to it by Erlang distribution,
started once) that runs ``rabbit:stop()`` / ``rabbit:start()`` (what
``rabbitmqctl stop_app`` / ``start_app`` call) the moment it is asked.
``rabbit:stop()`` closes client connections only some 90 ms into its shutdown,
so the control process first
suspends the client listeners and closes every client connection (RabbitMQ's
maintenance-mode functions): clients lose the broker within a few ms of the
fault's start; starting again takes about 0.8 s here. Without ``escript`` the
node falls back to ``rabbitmqctl``.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .errors import AdapterError
from .settings import AmqpSettings

__all__ = ["LocalBrokerNode", "free_port"]

_COUNTER = [0]

# The control process: connects to the node and runs one command per line of stdin.
_CONTROL = """#!/usr/bin/env escript
%%! -hidden
main([NodeName, Self]) ->
    {ok, _} = net_kernel:start([list_to_atom(Self), shortnames]),
    Node = list_to_atom(NodeName),
    io:format("ready ~p~n", [net_adm:ping(Node)]),
    loop(Node).
loop(Node) ->
    case io:get_line("") of
        eof -> halt(0);
        Line ->
            Result = case string:trim(Line) of
                         "stop_app" ->
                             rpc:call(Node, rabbit_maintenance, suspend_all_client_listeners, [], 60000),
                             rpc:call(Node, rabbit_maintenance, close_all_client_connections, [], 60000),
                             rpc:call(Node, rabbit, stop, [], 60000);
                         "start_app" -> rpc:call(Node, rabbit, start, [], 120000);
                         Other -> {unknown_command, Other}
                     end,
            io:format("~0p~n", [Result]),
            loop(Node)
    end.
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class LocalBrokerNode:
    """A separate RabbitMQ node for tests that restart the broker (see the module docstring)."""

    def __init__(self, *, startup_timeout: float = 60.0, command_timeout: float = 60.0) -> None:
        _COUNTER[0] += 1
        self.nodename = f"capsim-test-{os.getpid()}-{_COUNTER[0]}@localhost"
        self.startup_timeout = startup_timeout
        self.command_timeout = command_timeout
        self.port = 0
        self.dist_port = 0
        self.base: Path | None = None
        self.running = False
        self.restarts = 0
        self._control: subprocess.Popen[str] | None = None

    @property
    def settings(self) -> AmqpSettings:
        return AmqpSettings(port=self.port, source=f"local node {self.nodename}")

    def __repr__(self) -> str:
        return f"LocalBrokerNode({self.nodename!r}, port={self.port}, running={self.running})"

    # -- commands -------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        assert self.base is not None
        env = dict(os.environ)
        env.update({
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "node.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
        })
        return env

    def _run(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(list(args), env=self._env(), capture_output=True, text=True,
                                  timeout=timeout or self.command_timeout, cwd=str(self.base))
        except FileNotFoundError:
            raise AdapterError(f"{args[0]} not found: RabbitMQ's server scripts are needed to start a test node") \
                from None
        except subprocess.TimeoutExpired:
            raise AdapterError(f"`{' '.join(args)}` did not finish within {timeout or self.command_timeout:g} s") \
                from None

    def ctl(self, *args: str, timeout: float | None = None) -> str:
        """``rabbitmqctl -n <node> ARGS``; a failure raises :class:`AdapterError` with its output."""
        proc = self._run("rabbitmqctl", "-n", self.nodename, *args, timeout=timeout)
        if proc.returncode != 0:
            out = (proc.stderr or proc.stdout).strip().splitlines()
            raise AdapterError(f"rabbitmqctl {' '.join(args)} failed on {self.nodename}: "
                               f"{out[0] if out else proc.returncode}")
        return proc.stdout

    def log_tail(self, lines: int = 15) -> str:
        if self.base is None:
            return ""
        logs = sorted((self.base / "log").glob("*.log"))
        text = [ln for p in logs if not p.name.endswith("_upgrade.log") for ln in p.read_text(errors="replace")
                .splitlines()]
        return "\n".join(text[-lines:])

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> LocalBrokerNode:
        """Start the node and wait until it accepts AMQP connections (``startup_timeout``)."""
        if self.running:
            return self
        self.port, self.dist_port = free_port(), free_port()
        self.base = Path(tempfile.mkdtemp(prefix="capsim-rabbitmq-"))
        (self.base / "mnesia").mkdir()
        (self.base / "log").mkdir()
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        self._hand_over(self.base)
        proc = self._run("rabbitmq-server", "-detached")
        if proc.returncode != 0:
            self._cleanup()
            raise AdapterError(f"rabbitmq-server -detached failed: {(proc.stderr or proc.stdout).strip()}")
        self.running = True
        try:
            self._await(self.startup_timeout)
            self._control_process()  # started now, so that the first restart happens on time
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _hand_over(base: Path) -> None:
        """Let the ``rabbitmq`` user (which the server scripts switch to under root) own the directory."""
        base.chmod(0o755)
        if os.geteuid() == 0:
            try:
                for path in [base, *base.rglob("*")]:
                    shutil.chown(path, "rabbitmq", "rabbitmq")
            except (LookupError, OSError) as exc:
                raise AdapterError(f"cannot hand {base} to the rabbitmq user: {exc}") from None

    def _await(self, timeout_s: float, *, confirm: bool = True) -> None:
        """Wait for the AMQP port, then (``confirm``) for ``rabbitmqctl await_startup``."""
        deadline = time.monotonic() + timeout_s
        while not _listening(self.port):
            if time.monotonic() > deadline:
                raise AdapterError(f"RabbitMQ node {self.nodename} did not accept connections on port {self.port} "
                                   f"within {timeout_s:g} s; log tail:\n{self.log_tail()}")
            time.sleep(0.05)
        if confirm:
            self.ctl("await_startup", "--timeout", str(max(1, int(deadline - time.monotonic()))))

    def _control_process(self) -> subprocess.Popen[str] | None:
        """The control escript (started on first use), or None where it cannot run."""
        if self._control is not None and self._control.poll() is None:
            return self._control
        if self.base is None or shutil.which("escript") is None:
            return None
        script = self.base / "control.escript"
        script.write_text(_CONTROL)
        self._hand_over(script)
        me = f"capsim-ctl-{self.nodename.split('@')[0].removeprefix('capsim-test-')}@localhost"
        cmd = ["escript", str(script), self.nodename, me]
        if os.geteuid() == 0:  # run as the node's user, whose Erlang cookie the node uses
            cmd = ["su", "rabbitmq", "-s", "/bin/sh", "-c", " ".join(cmd)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, bufsize=1, cwd=str(self.base))
        if self._read(proc, 30.0) != "ready pong":
            proc.kill()
            proc.wait(5)
            return None
        self._control = proc
        return proc

    @staticmethod
    def _read(proc: subprocess.Popen[str], timeout_s: float) -> str:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        return proc.stdout.readline().strip() if ready else ""

    def _command(self, name: str, timeout_s: float) -> None:
        """Run ``stop_app`` / ``start_app`` through the control process, else through rabbitmqctl."""
        proc = self._control_process()
        if proc is None:
            self.ctl(name)
            return
        assert proc.stdin is not None
        proc.stdin.write(name + "\n")
        proc.stdin.flush()
        answer = self._read(proc, timeout_s)
        if answer != "ok":
            raise AdapterError(f"{name} failed on {self.nodename}: {answer or f'no answer within {timeout_s:g} s'}")

    def stop_app(self) -> None:
        """Stop the broker application (connections close; durable state stays on disk)."""
        self._command("stop_app", self.command_timeout)

    def start_app(self) -> None:
        """Start the broker application again and wait until it accepts connections."""
        self._command("start_app", self.startup_timeout)
        self._await(self.startup_timeout, confirm=False)  # rabbit:start() has returned: the broker is up
        self.restarts += 1

    def broker_down(self) -> None:
        """The broker goes down now (``stop_app``): every client connection closes."""
        self.stop_app()

    def broker_up(self) -> None:
        """The broker comes back (``start_app``) and accepts connections."""
        self.start_app()

    def restart(self) -> None:
        """:meth:`broker_down` then :meth:`broker_up`."""
        self.broker_down()
        self.broker_up()

    def describe(self) -> str:
        return f"{self.nodename} on port {self.port}, restarts: stop_app + start_app"

    def stop(self) -> None:
        """Stop the node (killing its own process if ``rabbitmqctl stop`` fails) and delete its directory."""
        if self.base is None:
            return
        self._stop_control()
        try:
            if self.running:
                try:
                    self.ctl("stop", timeout=self.command_timeout)
                except AdapterError:
                    self._kill()
                self._wait_exit(30.0)
        finally:
            self.running = False
            self._cleanup()

    def _stop_control(self) -> None:
        if self._control is not None:
            self._control.kill()  # this process's own child
            self._control.wait(10)
            self._control = None

    def _pid(self) -> int | None:
        try:
            return int((self.base / "node.pid").read_text().strip()) if self.base is not None else None
        except (OSError, ValueError):
            return None

    def _wait_exit(self, timeout_s: float) -> None:
        """Wait until the node's VM has exited (``rabbitmqctl stop`` returns before it does)."""
        pid = self._pid()
        deadline = time.monotonic() + timeout_s
        while pid is not None and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)

    def _kill(self) -> None:
        """Kill this node's own VM (its pid file), never anything matched by name."""
        pid = self._pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _cleanup(self) -> None:
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def __enter__(self) -> LocalBrokerNode:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
