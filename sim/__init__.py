"""capsim: a discrete-event simulator for seeing and measuring CAP/BASE trade-offs."""

from .errors import CapsimError, ScenarioError
from .experiment import run
from .result import Result
from .scenario import Scenario

__all__ = ["run", "Scenario", "ScenarioError", "CapsimError", "Result"]
