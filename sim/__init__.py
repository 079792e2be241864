"""capsim: a discrete-event simulator for seeing and measuring CAP/BASE trade-offs.

``import sim`` is cheap: the public names below are loaded on first use, so plotting,
statistics, Dask and the RabbitMQ client are imported only by the parts that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import CapsimError, ScenarioError

if TYPE_CHECKING:
    from .harness import Harness
    from .protocol import ProtocolConfig, register_protocol
    from .result import Result
    from .runner import build_world, run
    from .scenario import Scenario
    from .sweeps import summarize, sweep

__all__ = [
    "run",
    "build_world",
    "sweep",
    "summarize",
    "Scenario",
    "Result",
    "ScenarioError",
    "CapsimError",
    "ProtocolConfig",
    "register_protocol",
    "Harness",
]

_LAZY = {
    "run": "sim.runner",
    "build_world": "sim.runner",
    "sweep": "sim.sweeps",
    "summarize": "sim.sweeps",
    "Scenario": "sim.scenario",
    "Result": "sim.result",
    "ProtocolConfig": "sim.protocol",
    "register_protocol": "sim.protocol",
    "Harness": "sim.harness",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
