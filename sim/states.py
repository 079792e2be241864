"""Protocol states as named constants that still read as plain strings.

A :class:`State` member compares equal to its value, formats as it, and repr's as
it, so a state in an event table, a trace or a message prints exactly as the bare
string did, while the code names every state it uses and a typo is an error.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["State"]


class State(StrEnum):
    """Base of the protocols' state enums (``Role.LEADER == "leader"``)."""

    def __repr__(self) -> str:
        return repr(self.value)
