"""Distributed transactions: two-phase and three-phase commit, their blocking and failures.

Protocols ``two_phase_commit`` and ``three_phase_commit`` (see :mod:`.two_phase`,
:mod:`.three_phase`; shared workload, logs and recorder in :mod:`.common`). After a run,
:func:`transaction_table` and friends turn ``world.txn_recorder`` into DataFrames and
:func:`run_transactions` runs a scenario, lets it settle and returns world and tables.
"""

from .runner import TransactionRun, run_transactions, settle
from .tables import atomicity, participant_table, summarize, transaction_table, transaction_tables
from .three_phase import ThreePhaseCommitConfig
from .two_phase import TwoPhaseCommitConfig

__all__ = [
    "TwoPhaseCommitConfig",
    "ThreePhaseCommitConfig",
    "run_transactions",
    "TransactionRun",
    "settle",
    "transaction_tables",
    "transaction_table",
    "participant_table",
    "atomicity",
    "summarize",
]
