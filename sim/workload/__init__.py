"""Clients that drive a protocol: open- and closed-loop, key choice, read/write mix."""

from .clients import Client, make_clients

__all__ = ["Client", "make_clients"]
