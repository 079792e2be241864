"""Protocols that run on the simulated nodes, selected by ``protocol.name``."""

from .base import ProtocolConfig, protocol_names

__all__ = ["ProtocolConfig", "protocol_names"]
