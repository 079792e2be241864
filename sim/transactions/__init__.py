"""Distributed transactions: two-phase and three-phase commit, their blocking and failures.

Protocols ``two_phase_commit`` and ``three_phase_commit`` (see :mod:`.two_phase`,
:mod:`.three_phase`; shared logs, nodes and settling in :mod:`.common`; the transfer
workload in :mod:`sim.workload.transfers`). :func:`sim.run` returns their tables in
``result.tables`` (``transactions``, ``participants``, ``events``, ...) and the
atomicity checker's verdict in ``result.verdicts["atomicity"]``; the functions below
compute the same from a world stepped by hand.
"""

from .tables import atomicity, participant_table, recorder, summarize, transaction_table, transaction_tables
from .three_phase import ThreePhaseCommitConfig
from .two_phase import TwoPhaseCommitConfig

__all__ = [
    "TwoPhaseCommitConfig",
    "ThreePhaseCommitConfig",
    "transaction_tables",
    "transaction_table",
    "participant_table",
    "atomicity",
    "summarize",
    "recorder",
]
