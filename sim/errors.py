"""Exceptions shared by the whole package."""

from __future__ import annotations

__all__ = ["ScenarioError", "CapsimError"]


class CapsimError(Exception):
    """Base class of every error capsim raises on purpose."""


class ScenarioError(CapsimError, ValueError):
    """A scenario (or one of its parts) is malformed.

    The message always starts with the dotted path of the offending field,
    e.g. ``network.links[2].loss: must be in [0, 1], got 1.5``.
    """

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.reason = message
        super().__init__(f"{path}: {message}" if path else message)
