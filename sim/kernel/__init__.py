"""The simulation kernel: world, network, nodes, timers and fault injection."""

from .messages import ClientReply, ClientRequest
from .network import Network
from .node import Endpoint, Node, Timer
from .world import World

__all__ = ["World", "Network", "Endpoint", "Node", "Timer", "ClientRequest", "ClientReply"]
