"""Connection settings: an ``amqp://`` URL or the environment, with the password kept out of sight.

``AmqpSettings.resolve(url)`` takes, in order: the ``url`` given (e.g. the
CLI's ``--url``), the ``CAPSIM_AMQP_URL`` environment variable, then the
local default ``amqp://guest:guest@127.0.0.1:5672/%2F``. The URL form is
RabbitMQ's: ``amqp://user:pass@host:port/vhost`` with percent-encoded parts
(``/%2F`` is the vhost ``/``, an empty path too). Query options:
``heartbeat`` (seconds) and ``connection_timeout`` (seconds).

The password never appears in a ``repr``, a log line or an error message:
:meth:`AmqpSettings.redacted_url` replaces it by ``***`` and
:meth:`AmqpSettings.redact` scrubs it from any text (such as an exception
message from the client library) before it is shown.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ..errors import ScenarioError

__all__ = ["AmqpSettings", "ENV_VAR", "DEFAULT_URL"]

ENV_VAR = "CAPSIM_AMQP_URL"
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
_OPTIONS = ("heartbeat", "connection_timeout")


@dataclass(frozen=True)
class AmqpSettings:
    """Where the broker is and how to log in; ``source`` says where the settings came from."""

    host: str = "127.0.0.1"
    port: int = 5672
    vhost: str = "/"
    username: str = "guest"
    password: str = field(default="guest", repr=False)
    heartbeat: int = 5
    connection_timeout: float = 5.0
    source: str = "default"

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_url(cls, url: str, *, source: str = "--url") -> AmqpSettings:
        """Parse ``amqp://user:pass@host:port/vhost?heartbeat=5``; a bad URL raises ScenarioError."""
        shown = _redact_url_text(url)
        if not isinstance(url, str) or not url.strip():
            raise ScenarioError(source, "must be an amqp:// URL, got an empty value")
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            reason = _scrub(str(exc), _password_guess(url))
            raise ScenarioError(source, f"is not a valid AMQP URL ({reason}): {shown}") from None
        if parts.scheme == "amqps":
            raise ScenarioError(source, f"TLS (amqps://) is not supported by the adapter: {shown}")
        if parts.scheme != "amqp":
            raise ScenarioError(source, f"must start with amqp://, got {shown}")
        if not parts.hostname:
            raise ScenarioError(source, f"names no host: {shown}")
        if parts.fragment:
            raise ScenarioError(source, f"must not have a #fragment: {shown}")
        path = parts.path
        if path in ("", "/"):
            vhost = "/"
        else:
            raw = path[1:]
            if "/" in raw:
                raise ScenarioError(source, f"the vhost must be one path segment (percent-encode '/' as %2F): {shown}")
            vhost = unquote(raw)
        kwargs: dict[str, Any] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key not in _OPTIONS:
                raise ScenarioError(source, f"unknown URL option {key!r}; accepted: {', '.join(_OPTIONS)}")
            try:
                number = float(value)
            except ValueError:
                raise ScenarioError(source, f"option {key} must be a number, got {value!r}") from None
            if not math.isfinite(number) or number <= 0:
                raise ScenarioError(source, f"option {key} must be > 0, got {value!r}")
            kwargs[key] = int(math.ceil(number)) if key == "heartbeat" else number
        return cls(
            host=parts.hostname,
            port=port if port is not None else 5672,
            vhost=vhost,
            username=unquote(parts.username) if parts.username is not None else "guest",
            password=unquote(parts.password) if parts.password is not None else "guest",
            source=source,
            **kwargs,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AmqpSettings | None:
        """The settings in ``CAPSIM_AMQP_URL``, or None when it is unset or empty."""
        value = (os.environ if env is None else env).get(ENV_VAR, "")
        return cls.from_url(value, source=ENV_VAR) if value.strip() else None

    @classmethod
    def resolve(cls, url: str | None = None, env: Mapping[str, str] | None = None) -> AmqpSettings:
        """``url`` if given, else ``CAPSIM_AMQP_URL``, else the local default broker."""
        if url is not None:
            return cls.from_url(url)
        return cls.from_env(env) or cls.from_url(DEFAULT_URL, source="default")

    def with_port(self, port: int) -> AmqpSettings:
        return replace(self, port=port)

    # -- showing without the password ---------------------------------------------------
    def url(self) -> str:
        """The full URL, password included: for handing to a client, never for printing."""
        return self._url(self.password)

    def redacted_url(self) -> str:
        """The URL with the password replaced by ``***``."""
        return self._url("***")

    def _url(self, password: str) -> str:
        user = quote(self.username, safe="")
        secret = password if password == "***" else quote(password, safe="")
        return f"amqp://{user}:{secret}@{self.host}:{self.port}/{quote(self.vhost, safe='')}"

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of the password (plain or URL-encoded) replaced by ``***``."""
        return _scrub(text, self.password)

    def __repr__(self) -> str:
        return f"AmqpSettings({self.redacted_url()!r}, source={self.source!r})"

    __str__ = redacted_url

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly description without the password."""
        return {"url": self.redacted_url(), "source": self.source, "heartbeat_s": self.heartbeat,
                "connection_timeout_s": self.connection_timeout}

    # -- pika ---------------------------------------------------------------------------------
    def parameters(self, *, heartbeat: int | None = None) -> Any:
        """``pika.ConnectionParameters`` with every wait bounded: one attempt, timeouts on socket and handshake."""
        from .amqp import pika_module

        pika = pika_module()
        return pika.ConnectionParameters(
            host=self.host,
            port=self.port,
            virtual_host=self.vhost,
            credentials=pika.PlainCredentials(self.username, self.password, erase_on_connect=False),
            heartbeat=self.heartbeat if heartbeat is None else heartbeat,
            connection_attempts=1,
            retry_delay=0,
            socket_timeout=self.connection_timeout,
            stack_timeout=self.connection_timeout * 2,
            blocked_connection_timeout=self.connection_timeout * 6,
        )


def _scrub(text: str, secret: str) -> str:
    if not secret:
        return text
    for form in {secret, quote(secret, safe=""), quote(secret)}:
        if form:
            text = text.replace(form, "***")
    return text


def _password_guess(url: str) -> str:
    """The text between ``user:`` and the last ``@`` of a URL that may not parse."""
    rest = url.partition("://")[2]
    userinfo = rest.rpartition("@")[0]
    return userinfo.partition(":")[2]


def _redact_url_text(url: Any) -> str:
    """A best-effort redaction of a URL that may not even parse (for error messages)."""
    if not isinstance(url, str):
        return repr(url)
    head, sep, rest = url.partition("://")
    if not sep:
        return url if "@" not in url else "***@" + url.rsplit("@", 1)[1]
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{head}://{user}:***@{host}" if ":" in userinfo else f"{head}://{user}@{host}"
