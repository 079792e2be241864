"""Thin helpers over pika: the lazy import, blocking connections with clear errors, abrupt closes.

pika is imported only when a function here is called, so ``import sim`` and
``import sim.rabbitmq`` work without it. Connection failures become
:class:`~sim.rabbitmq.errors.BrokerUnreachable` with a one-line reason and the
redacted URL.
"""

from __future__ import annotations

import re
import socket
from typing import TYPE_CHECKING, Any

from .errors import AdapterError, BrokerUnreachable, PikaMissing

if TYPE_CHECKING:
    from .settings import AmqpSettings

__all__ = ["pika_module", "connect_blocking", "connect_error_reason", "broker_info", "abort_connection",
           "PIKA_REQUIREMENT"]

PIKA_REQUIREMENT = "pika>=1.3,<2"
# RabbitMQ's reply to connection.open for a vhost it does not have: 530 "NOT_ALLOWED - vhost <name> not found"
_NO_VHOST = re.compile(r"NOT_ALLOWED - vhost .* not found")


def pika_module() -> Any:
    """The pika module, or :class:`PikaMissing` saying how to install it."""
    try:
        import pika
    except ImportError:
        raise PikaMissing(f"the RabbitMQ adapter needs pika: pip install '{PIKA_REQUIREMENT}'") from None
    return pika


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (pika nests the socket error two or three levels deep)."""
    out: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(out) < 12:
        e = todo.pop(0)
        out.append(e)
        todo.extend(x for x in getattr(e, "exceptions", ()) if isinstance(x, BaseException))
        inner = getattr(e, "exception", None)
        if isinstance(inner, BaseException):
            todo.append(inner)
        todo.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
        if e.__cause__ is not None:
            todo.append(e.__cause__)
    return out


def connect_error_reason(exc: BaseException, settings: AmqpSettings) -> str:
    """A short, password-free reason for a failed connection attempt.

    A vhost the broker does not have and one the user may not use both end the
    handshake with reply 530 NOT_ALLOWED (pika: ``ProbableAccessDeniedError``);
    the broker's reply text tells them apart.
    """
    pika = pika_module()
    causes = _causes(exc)
    for e in causes:
        if isinstance(e, (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError)):
            return f"login refused for user {settings.username!r}"
        if isinstance(e, pika.exceptions.ProbableAccessDeniedError):
            if any(_NO_VHOST.search(str(a)) for a in (e, *e.args)):
                return f"vhost {settings.vhost!r} does not exist (create it, or name another in the URL's path)"
            return f"access to vhost {settings.vhost!r} refused for user {settings.username!r}"
    for e in causes:
        if isinstance(e, ConnectionRefusedError):
            return "connection refused (is RabbitMQ running? `rabbitmq-server -detached` starts it)"
        if isinstance(e, (socket.timeout, TimeoutError)):
            return f"no answer within {settings.connection_timeout:g} s"
        if isinstance(e, socket.gaierror):
            return f"cannot resolve host {settings.host!r}"
    last = causes[-1]
    text = str(last) or type(last).__name__
    return settings.redact(f"{type(last).__name__}: {text}")


def unreachable(exc: BaseException, settings: AmqpSettings) -> BrokerUnreachable:
    return BrokerUnreachable(f"cannot connect to RabbitMQ at {settings.redacted_url()}: "
                             f"{connect_error_reason(exc, settings)}")


def connect_blocking(settings: AmqpSettings, *, heartbeat: int | None = None) -> Any:
    """A ``pika.BlockingConnection`` (one attempt, bounded waits), or :class:`BrokerUnreachable`.

    ``heartbeat`` overrides the settings' (0 turns heartbeats off, for a connection idle between uses).
    """
    pika = pika_module()
    try:
        return pika.BlockingConnection(settings.parameters(heartbeat=heartbeat))
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise unreachable(exc, settings) from None


def broker_info(settings: AmqpSettings) -> dict[str, Any]:
    """Check that the broker answers; its product, version and the URL (redacted)."""
    conn = connect_blocking(settings)
    try:
        props = getattr(conn, "_impl", conn).server_properties or {}
    finally:
        close_quietly(conn)

    def text(key: str) -> str:
        value = props.get(key, b"")
        return value.decode() if isinstance(value, bytes) else str(value)

    return {"product": text("product"), "version": text("version"), "url": settings.redacted_url()}


def close_quietly(conn: Any) -> None:
    """Close a connection if it is open; errors on the way out are not interesting."""
    try:
        if conn is not None and conn.is_open:
            conn.close()
    except Exception:
        pass


def abort_connection(conn: Any) -> None:
    """Close a connection's socket at once, without ``connection.close``: what a crashing process does.

    The broker sees the TCP connection end and requeues the unacked deliveries;
    pika notices the end of stream and calls the connection's close callback.
    pika has no public call for this, so the socket is reached through the
    transport; if that attribute path ever changes, the connection is closed
    normally instead (the broker requeues the unacked messages in both cases).
    """
    impl = getattr(conn, "_impl", conn)
    sock = getattr(getattr(impl, "_transport", None), "_sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
            return
        except OSError:
            return  # already closed
    try:
        if impl.is_open:
            impl.close(320, "capsim: abrupt close")
    except Exception as exc:
        raise AdapterError(f"could not close the connection: {exc}") from None
