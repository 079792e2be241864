"""Checkers: from a history to a verdict plus the evidence for it."""

from .linearizability import LinearizabilityResult, check_linearizable

__all__ = ["check_linearizable", "LinearizabilityResult"]
