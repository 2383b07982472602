"""Python client of Drover, a worker fleet over ZeroMQ: a :class:`Producer` that submits items
and collects results, and a :class:`Worker` that runs a Python function on items from a
Drover broker, speaking wire protocol version 1 (:mod:`drover_client.protocol`).
"""

import logging

from ._support import BrokerLost, BrokerRefused, BrokerUnreachable, DroverError
from .keys import ClientKeys, HandshakeRefused, KeyProblem
from .producer import Producer, Result
from .worker import Handler, WorkItem, Worker
from .worker_session import WorkerExit

__all__ = [
    "Producer", "Result", "Worker", "WorkItem", "WorkerExit", "Handler",
    "DroverError", "BrokerUnreachable", "BrokerLost", "BrokerRefused", "HandshakeRefused",
    "ClientKeys", "KeyProblem",
]

__version__ = "0.1.0"

# A library logs; the application decides where to (the CLI logs to stderr).
logging.getLogger("drover_client").addHandler(logging.NullHandler())
