"""Checkers: from a history to a verdict plus the evidence for it."""

from .atomicity import AtomicityResult, check_atomicity
from .convergence import convergence_summary, divergent_keys
from .counter import CounterResult, check_counter
from .delivery import DeliveryReport, check_delivery
from .linearizability import LinearizabilityResult, check_linearizable
from .lost_writes import LostWritesResult, lost_writes
from .notification import check_notifications
from .saga import check_sagas
from .saga_order import SagaOrderReport, check_saga_order
from .staleness import read_staleness, staleness_summary, t_visibility
from .txmsg import check_transactional

__all__ = [
    "check_linearizable",
    "LinearizabilityResult",
    "read_staleness",
    "staleness_summary",
    "t_visibility",
    "divergent_keys",
    "convergence_summary",
    "lost_writes",
    "check_counter",
    "CounterResult",
    "LostWritesResult",
    "check_atomicity",
    "AtomicityResult",
    "check_delivery",
    "DeliveryReport",
    "check_sagas",
    "check_saga_order",
    "SagaOrderReport",
    "check_notifications",
    "check_transactional",
]
