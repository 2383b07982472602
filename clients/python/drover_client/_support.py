"""Small pieces the producer and the worker share: the clock, names, errors, a wake-up pipe,
and the socket options both set on their connection to the broker."""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, List, Optional

import zmq

if TYPE_CHECKING:
    #: pyzmq's socket and context types, as the annotations here use them.
    Socket = zmq.Socket[bytes]
    Context = zmq.Context[zmq.Socket[bytes]]

__all__ = ["DroverError", "BrokerUnreachable", "BrokerLost", "BrokerRefused",
           "monotonic_ms", "default_peer_name", "Wakeup", "write_ready_file"]


class DroverError(Exception):
    """Base class of this package's errors."""


class BrokerUnreachable(DroverError):
    """The broker did not answer ``hello`` in time."""


class BrokerLost(DroverError):
    """The broker went away and did not come back within the reconnect timeout."""


class BrokerRefused(DroverError):
    """The broker answered with ``error`` (other than "unknown peer", which is handled)."""


def monotonic_ms() -> int:
    """Monotonic milliseconds: every timer in this package reads this clock."""
    return time.monotonic_ns() // 1_000_000


def default_peer_name() -> str:
    """``HOST:PID``, the name a peer gives itself in ``hello`` unless told another."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Wakeup:
    """A pipe another thread (or a signal handler) writes to, so that the I/O thread's poll
    returns: ZeroMQ sockets belong to one thread, so others leave work in a locked mailbox and
    ring this bell. The read end is polled next to the sockets."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    @property
    def fileno(self) -> int:
        """The descriptor to poll for reading."""
        return self._read

    def signal(self) -> None:
        """Wakes the poller. Safe from any thread and from a signal handler."""
        try:
            os.write(self._write, b"\x01")
        except BlockingIOError:
            pass  # the pipe is full: the poller is awake anyway
        except OSError:
            pass  # closed: nobody is listening any more

    def clear(self) -> None:
        """Empties the pipe (the poller has woken)."""
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass


def write_ready_file(path: str, lines: List[str]) -> None:
    """Writes ``lines`` to ``path`` atomically (a temporary file, then a rename)."""
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(temporary, path)


def configure_broker_socket(sock: Socket, *, immediate: bool, heartbeat_ms: int, liveness: int,
                            routing_id: Optional[bytes] = None) -> None:
    """The options a producer's or worker's DEALER to the broker sets before connecting.

    - a bounded linger (1 s): closing never hangs on an unreachable broker;
    - reconnection from 100 ms backing off to 2 s;
    - ZMTP heartbeats, so a half-open TCP connection is noticed and closed;
    - a large maximum message size (the broker enforces its own limit);
    - ``ZMQ_IMMEDIATE`` for a worker: a message offered while the broker is not connected is
      refused here (``zmq.Again``) rather than queued for a broker that may never come back.
    """
    sock.setsockopt(zmq.LINGER, 1000)
    if routing_id is not None:
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
    if immediate:
        sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
    sock.setsockopt(zmq.MAXMSGSIZE, 64 << 20)
    if hasattr(zmq, "HEARTBEAT_IVL"):
        sock.setsockopt(zmq.HEARTBEAT_IVL, heartbeat_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, heartbeat_ms * liveness)
