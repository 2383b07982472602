"""Keys: how a producer or a worker talks to a broker that uses them (``drover broker --key …
--authorized-keys …``), and what a failed handshake means.

With keys, every connection is a CURVE one: the client presents its own key pair (its secret
certificate, ``NAME.key`` from ``drover keygen``) and checks the server against the server's
public key (``NAME.pub``). The broker admits only the public keys in its ``--authorized-keys``,
each with its role (producer, worker, admin), and reads them again on SIGHUP.

::

    keys = ClientKeys.load("keys/web-1.key", "keys/broker.pub")
    with Producer("tcp://broker:5555", keys=keys) as producer:
        ...

A failed handshake shows only on the socket's monitor; :class:`HandshakeWatch` puts it into
the same words as the Swift clients, and :class:`Redial` is the pause after which a long-lived
client connects again (libzmq does not reconnect after a refused key or security mechanism).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Tuple, Union

import zmq
import zmq.auth
from zmq.utils import z85

from ._support import BrokerRefused, DroverError

if TYPE_CHECKING:
    from ._support import Socket

__all__ = ["ClientKeys", "KeyProblem", "HandshakeRefused", "HandshakeWatch", "Redial",
           "describe_handshake_failure", "HANDSHAKE_EVENTS"]

PathLike = Union[str, "os.PathLike[str]"]

#: The monitor events a client watches to explain its handshakes.
HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
#: ``ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH``: one side uses keys (CURVE), the other not.
MECHANISM_MISMATCH = getattr(zmq, "PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH", 0x11000002)

_Z85 = frozenset(z85.Z85CHARS)


class KeyProblem(DroverError, ValueError):
    """A key or certificate given to a client is missing, unreadable, of the wrong kind, or
    given without its other half. The text names the file and the flag, as ``drover`` does."""


class HandshakeRefused(BrokerRefused):
    """The broker refused the connection during its handshake, in a way retrying will not
    cure: this key is not authorized (or was revoked), or one side uses keys and the other not."""


def _valid_z85_key(key: Optional[bytes]) -> bool:
    return key is not None and len(key) == 40 and all(byte in _Z85 for byte in key)


def _load_certificate(path: str) -> Tuple[bytes, Optional[bytes]]:
    """``(public, secret or None)`` of a certificate file, Z85 bytes; :class:`KeyProblem`
    in the Swift client's words otherwise."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError:
        raise KeyProblem(f"cannot read the certificate {path} (make one with drover keygen)") from None
    except ValueError:
        raise KeyProblem(f"{path}: no curve public-key; is it a ZeroMQ certificate (drover keygen makes them)?") from None
    if not _valid_z85_key(public):
        raise KeyProblem(f"{path}: the public-key is not 40 characters of Z85")
    if secret is not None and not _valid_z85_key(secret):
        raise KeyProblem(f"{path}: the secret-key is not 40 characters of Z85")
    return public, secret


@dataclass(frozen=True)
class ClientKeys:
    """A client's keys for one server: its own key pair and the server's public key, each as
    40 characters of Z85 (bytes). Make them with :meth:`load`; :meth:`apply` makes a socket,
    before it connects, a CURVE client of that server."""

    public_key: bytes
    secret_key: bytes
    server_key: bytes

    def __post_init__(self) -> None:
        for name in ("public_key", "secret_key", "server_key"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = value.encode("ascii", errors="replace")
                object.__setattr__(self, name, value)
            if not _valid_z85_key(value):
                raise KeyProblem(f"{name} is not 40 characters of Z85")

    def __repr__(self) -> str:  # never print the secret
        return f"ClientKeys(public_key={self.public_key.decode()!r}, server_key={self.server_key.decode()!r})"

    @classmethod
    def load(cls, key: PathLike, broker_key: PathLike) -> "ClientKeys":
        """Reads this peer's secret certificate (``key``: ``NAME.key`` from ``drover keygen``)
        and the server's public one (``broker_key``: its ``NAME.pub``; a secret certificate
        works too, only its public key is read). Raises :class:`KeyProblem` naming the file:
        unreadable, not a certificate, or a public certificate given as ``key``.
        """
        key_path, server_path = os.fspath(key), os.fspath(broker_key)
        public, secret = _load_certificate(key_path)
        if secret is None:
            raise KeyProblem(f"--key {key_path} is a public certificate; give this peer's secret one "
                             "(NAME.key, from drover keygen)")
        server_public, _ = _load_certificate(server_path)
        return cls(public, secret, server_public)

    @classmethod
    def from_options(cls, key: Optional[PathLike], broker_key: Optional[PathLike], *,
                     server_flag: str = "--broker-key") -> Optional["ClientKeys"]:
        """The keys two command-line flags name, both or neither: ``None`` when neither is given
        (a plaintext client), :meth:`load` when both are, and :class:`KeyProblem` when only one is."""
        if key is None and broker_key is None:
            return None
        if key is None:
            raise KeyProblem(f"{server_flag} needs --key too: this peer's own secret certificate (NAME.key from drover keygen)")
        if broker_key is None:
            raise KeyProblem(f"--key needs {server_flag} too: the server's public certificate (its NAME.pub), "
                             "so that this peer knows it talks to the real one")
        return cls.load(key, broker_key)

    def apply(self, sock: Socket) -> None:
        """Makes ``sock`` a CURVE client of the server (call before it connects)."""
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret_key)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public_key)
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_key)


def describe_handshake_failure(event: int, value: int, *, uses_keys: bool, server: str = "the broker",
                               server_flag: str = "--broker-key") -> Optional[str]:
    """What a handshake event of a client's socket means, in words for the person running the
    client; ``None`` for an event that is not a failure. ``uses_keys``: this client presented keys."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        if uses_keys:
            return f"{server} refused this key (it is not in its --authorized-keys, or was revoked)"
        return (f"{server} refused this connection: without keys it admits loopback peers only "
                f"(use --key and {server_flag}, or start it with --insecure)")
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == MECHANISM_MISMATCH:
            if uses_keys:
                return (f"{server} does not use keys, and this client was given --key: drop --key and {server_flag}, "
                        f"or give {server} its keys")
            return f"{server} requires keys: give this client --key (its secret certificate) and {server_flag} ({server}'s public one)"
        return f"the handshake with {server} failed on a protocol error (code {value:x})"
    if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        if uses_keys:
            return f"{server} closed the connection during the handshake: its key does not match {server_flag}"
        return f"{server} closed the connection during the handshake"
    return None


def is_final(event: int, value: int) -> bool:
    """A refusal that retrying will not cure: the key refused, or one side uses keys and the other not."""
    return event == zmq.EVENT_HANDSHAKE_FAILED_AUTH or (
        event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == MECHANISM_MISMATCH)


class HandshakeWatch:
    """A client's view of its handshakes with one server, from its socket monitor: refusals
    that retrying will not cure are returned by :meth:`note` at once; others are remembered
    in :attr:`last_failure`, for the message when a wait times out."""

    def __init__(self, *, uses_keys: bool, server: str = "the broker", server_flag: str = "--broker-key") -> None:
        self.uses_keys = uses_keys
        self.server = server
        self.server_flag = server_flag
        #: The latest failure, in words; cleared by a handshake that succeeds.
        self.last_failure: Optional[str] = None

    def note(self, event: int, value: int) -> Optional[str]:
        """Notes one monitor event; returns its description when it is a final refusal."""
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.last_failure = None
            return None
        text = describe_handshake_failure(event, value, uses_keys=self.uses_keys, server=self.server,
                                          server_flag=self.server_flag)
        if text is None:
            return None
        self.last_failure = text
        return text if is_final(event, value) else None


class Redial:
    """libzmq gives up on a connection whose handshake was refused for its key or its security
    mechanism (it reconnects after a lost connection, not after those). A long-lived client
    connects afresh :data:`PAUSE_MS` after such a refusal, so that a key authorized later (the
    broker reads its keys again on SIGHUP) gets in without a restart."""

    PAUSE_MS = 2000

    def __init__(self) -> None:
        self._at: Optional[int] = None

    def note(self, event: int, now: int) -> None:
        """Notes a monitor event of the client's socket (``now`` in monotonic milliseconds)."""
        if event in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
            self._at = now + self.PAUSE_MS

    def due(self, now: int) -> bool:
        """Whether to redial now; ``True`` once per refusal."""
        if self._at is None or now < self._at:
            return False
        self._at = None
        return True

    def redial_if_due(self, sock: Socket, endpoint: str, now: int) -> bool:
        """Disconnects and connects ``sock`` to ``endpoint`` again once the pause is over."""
        if not self.due(now):
            return False
        try:
            sock.disconnect(endpoint)
        except zmq.ZMQError:
            pass  # libzmq already dropped the endpoint
        sock.connect(endpoint)
        return True
