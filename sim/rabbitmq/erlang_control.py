"""A hidden Erlang node that evaluates expressions on RabbitMQ nodes, started once and kept.

``rabbitmqctl`` boots a VM for every call (1-2 s on a busy machine); this one
boots once and answers in about a millisecond, which matters when tests poll a
cluster's state. It runs as the ``rabbitmq`` user (whose Erlang cookie the
nodes share), does not listen (``-dist_listen false``: no epmd registration,
nothing reachable from outside) and is hidden, so it never appears in the
nodes' views or bridges a partition between them.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess

from .errors import AdapterError

__all__ = ["ErlangControl"]

# The control process's loop: one "<node> <expression>" per line in, one "{ok,Value}" or "{error,Why}" line out.
_CONTROL_LOOP = """
Loop = fun Loop() ->
    case io:get_line("") of
        eof -> halt(0);
        Line ->
            [Node, Text] = string:split(string:trim(Line), " ", leading),
            Reply = try
                {ok, Tokens, _} = erl_scan:string(Text),
                {ok, Exprs} = erl_parse:parse_exprs(Tokens),
                case rpc:call(list_to_atom(Node), erl_eval, exprs, [Exprs, []], %d) of
                    {value, Value, _} -> {ok, Value};
                    Other -> {error, Other}
                end
            catch Class:Why -> {error, {Class, Why}} end,
            io:format("~0p~n", [Reply]),
            Loop()
    end
end,
Loop().
"""


class ErlangControl:
    """The control node ``name`` (a long name), with the nodes' ``net_ticktime``; see the module docstring."""

    def __init__(self, name: str, ticktime: int) -> None:
        import pwd

        home = pwd.getpwnam("rabbitmq").pw_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith("ERL_")}
        env["HOME"] = home
        loop = _CONTROL_LOOP % 60000
        self.proc = subprocess.Popen(
            ["erl", "-noshell", "-hidden", "-name", name, "-dist_listen", "false", "-start_epmd", "false",
             "-kernel", "net_ticktime", str(ticktime), "-eval", loop],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
            user="rabbitmq", group="rabbitmq", extra_groups=[], env=env, cwd=home)

    def eval(self, node: str, expr: str, timeout_s: float) -> str:
        """The value of ``expr`` evaluated on ``node``, printed on one line; AdapterError if it fails."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{node} {' '.join(expr.split())}\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline().strip() if ready else ""
        if not line:  # a late answer would be read as the next one's: this process is done
            self.stop()
        if not line.startswith("{ok,"):
            raise AdapterError(f"eval {expr!r} on {node} failed: {line or f'no answer within {timeout_s:g} s'}")
        return line[len("{ok,"):-1]

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # this process's own child
            self.proc.wait(5)
