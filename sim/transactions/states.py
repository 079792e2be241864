"""The states of a transaction at a participant, shared by the protocols and the tables."""

from __future__ import annotations

__all__ = ["UNCERTAIN_STATES", "FINAL_STATES"]

#: participant states in which it voted yes, holds its lock and waits for a decision
UNCERTAIN_STATES = ("prepared", "precommitted")
FINAL_STATES = ("committed", "aborted")
