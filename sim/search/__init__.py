"""The model checker: the same protocol nodes under exhaustive and randomized exploration.

``search(scenario, SearchConfig(...), predicates)`` explores every order of message
deliveries, drops, duplications, timer firings and the faults of the scenario's
schedule (see :mod:`.explore`), checks invariants and goals (:mod:`.predicates`) in
every state and returns a :class:`SearchResult` with the shortest trace of a violation
(breadth-first). :mod:`.replay` turns a trace into a table and a scenario that replays
its fault schedule in the ordinary simulator. The approach and its limits:
``docs/search.md``.
"""

from .config import OperationSpec, SearchConfig, parse_search
from .explore import Explorer, SearchResult, Step, search
from .predicates import PREDICATES, Predicate
from .state import SearchWorld

__all__ = ["search", "Explorer", "SearchConfig", "OperationSpec", "SearchResult", "Step", "Predicate",
           "PREDICATES", "SearchWorld", "parse_search"]
