"""The producer: submits items to a Drover broker and collects their results.

A :class:`Producer` owns one I/O thread, which owns the DEALER socket to the broker (a ZeroMQ
socket belongs to one thread). The public methods may be called from any thread: they leave
items in the producer's books under a lock and wake the I/O thread through a pipe.

The books hold every item until it is *safe*: accepted by the broker, or, when its result was
asked for, finished. When the broker may have lost what it acknowledged — a ``welcome`` with a
new ``instance`` (it restarted), silence past its liveness window, a dropped connection, or an
``error`` "unknown peer" — every unfinished item is offered again. Ids are the broker's
de-duplication key, so an item it still holds is not queued twice, and one it completed
recently has its result sent again rather than being run again.
"""

from __future__ import annotations

import collections
import itertools
import logging
import secrets
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Deque, Dict, Iterable, Iterator, List, NamedTuple, Optional, Union

import zmq
from zmq.utils.monitor import recv_monitor_message

from . import protocol as p
from ._support import (BrokerLost, BrokerRefused, BrokerUnreachable, DroverError, Wakeup,
                       configure_broker_socket, default_peer_name, monotonic_ms)
from .keys import HANDSHAKE_EVENTS, ClientKeys, HandshakeRefused, HandshakeWatch

if TYPE_CHECKING:
    from ._support import Context, Socket

__all__ = ["Producer", "Result"]

log = logging.getLogger("drover_client.producer")

#: How often ``hello`` is offered while waiting for the broker's first ``welcome``.
HELLO_RETRY_MS = 250
#: How long a batch refused with "queue full" (or that met a full pipe) waits to be offered again.
RETRY_AFTER_FULL_MS = 100
#: The longest the I/O thread sleeps: bounds how late a timer (keep-alive, retry) fires.
POLL_MS = 100
#: Assumed until the first ``welcome`` says otherwise.
DEFAULT_HEARTBEAT_MS = 1000
DEFAULT_LIVENESS = 3

ItemLike = Union[bytes, bytearray, memoryview, str]


class Result(NamedTuple):
    """One item's final answer: ``(id, succeeded, payload)``.

    ``payload`` is the handler's result when ``succeeded``; otherwise the UTF-8 error text
    (the last error after the broker's retries, prefixed ``dead-lettered after N failed
    deliveries:``, or why the item was refused), also available decoded as :attr:`error`.
    """

    id: bytes
    succeeded: bool
    payload: bytes

    @property
    def error(self) -> str:
        """The failure's text; empty when the item succeeded."""
        return "" if self.succeeded else self.payload.decode("utf-8", errors="replace")

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8 (for text results)."""
        return self.payload.decode("utf-8", errors="replace")


class _Sink:
    """Where the results of one :meth:`Producer.send_and_wait` call go, instead of the queue
    :meth:`Producer.results` reads."""

    def __init__(self) -> None:
        self.results: Dict[bytes, Result] = {}


@dataclass
class _Pending:
    """An item the producer still answers for."""

    payload: bytes
    queue: str
    want_results: bool
    #: The broker holds it (with results asked for, the outcome is still to come).
    accepted: bool = False
    sink: Optional[_Sink] = None


class Producer:
    """Sends items to a Drover broker and returns their results.

    ::

        with Producer("tcp://127.0.0.1:5555") as producer:
            for result in producer.send_and_wait([b"hello", b"world"]):
                print(result.succeeded, result.payload)

    ``window`` bounds the items not yet safe (not accepted, or with results asked for, not
    finished): :meth:`submit` blocks while it is full, so memory stays bounded.
    ``reconnect_timeout`` is how long the broker may stay away, while items are unfinished,
    before :meth:`results` and the other calls raise :class:`BrokerLost`.

    ``keys``: this producer's :class:`~drover_client.keys.ClientKeys`, for a broker that uses
    keys (``drover broker --key … --authorized-keys …``). A broker that refuses this key, or
    one side using keys and the other not, fails the producer at once with
    :class:`~drover_client.keys.HandshakeRefused`, saying which.
    """

    def __init__(self, broker: str, *, queue: str = "default", name: Optional[str] = None,
                 connect_timeout: float = 5.0, reconnect_timeout: float = 60.0, window: int = 10_000,
                 batch_items: int = 256, batch_bytes: int = 256 * 1024, item_timeout: Optional[float] = None,
                 context: Optional[Context] = None, keys: Optional[ClientKeys] = None) -> None:
        problem = p.queue_name_problem(queue)
        if problem:
            raise ValueError(f"queue: {problem}")
        if window < 1 or batch_items < 1 or batch_bytes < 1:
            raise ValueError("window, batch_items and batch_bytes must be at least 1")
        if item_timeout is not None and not 0 < item_timeout <= 2_000_000:
            raise ValueError("item_timeout must be a number of seconds above 0 (at most 2,000,000)")
        #: How long each item may run once a worker starts it (``drover send --item-timeout``).
        self.item_timeout_ms = max(1, int(item_timeout * 1000)) if item_timeout is not None else 0
        self.broker = broker
        self.queue = queue
        self.name = name or default_peer_name()
        self.connect_timeout = connect_timeout
        self.reconnect_timeout = reconnect_timeout
        self.window = window
        self.batch_items = batch_items
        self.batch_bytes = batch_bytes
        self.keys = keys
        self._owns_context = context is None
        self._context = context or zmq.Context()
        self._run_id = secrets.token_bytes(8)
        self._sequence = itertools.count()

        # Shared with the I/O thread, under `_lock`; `_changed` announces every change.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: Dict[bytes, _Pending] = {}
        self._to_send: Deque[bytes] = collections.deque()
        self._retry: List[bytes] = []
        self._retry_at = 0
        self._results: Deque[Result] = collections.deque()
        #: Items submitted with results asked for (outside `send_and_wait`) not yet in `_results`.
        self._unreported = 0
        self._refused: Dict[bytes, str] = {}
        #: Items in `_pending` not yet accepted.
        self._unaccepted = 0
        self._welcome: Optional[p.Welcome] = None
        self._fatal: Optional[DroverError] = None
        #: How the handshakes with the broker went (a refused key, a wrong broker key).
        self._handshakes = HandshakeWatch(uses_keys=keys is not None)
        self._pending_since = 0
        self._closing = False
        self._closed = False

        # The I/O thread's own state.
        self._wakeup = Wakeup()
        self._link_up = False
        self._lost_since = 0
        self._hello_due = True
        self._last_sent = -HELLO_RETRY_MS
        self._last_heard = 0
        self._thread: Optional[threading.Thread] = None

    # MARK: Lifecycle

    def __enter__(self) -> "Producer":
        try:
            self.connect()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self, timeout: Optional[float] = None) -> p.Welcome:
        """Starts the I/O thread if needed and waits for the broker's ``welcome``.

        Raises :class:`BrokerUnreachable` ("cannot reach the broker at …") when none comes
        within ``timeout`` seconds (default: ``connect_timeout``), or, when a failed handshake
        explains the silence, "no answer from the broker at … within N s: " and why. Raises
        :class:`~drover_client.keys.HandshakeRefused` at once when the broker refuses this key,
        or requires keys this producer was not given (or the other way round).
        """
        limit = self.connect_timeout if timeout is None else timeout
        with self._changed:
            if self._closing:
                raise DroverError("this producer is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._io_thread, name="drover-producer-io", daemon=True)
                self._thread.start()
            if not self._changed.wait_for(lambda: self._welcome is not None or self._fatal is not None, limit):
                failure = self._handshakes.last_failure
                if failure is not None:
                    raise BrokerUnreachable(f"no answer from the broker at {self.broker} within {limit:g} s: {failure}")
                raise BrokerUnreachable(
                    f"cannot reach the broker at {self.broker}: no answer to hello within {limit:g} s "
                    "(is `drover broker` running there and is the port open?)")
            if self._fatal is not None:
                raise self._fatal
            assert self._welcome is not None
            return self._welcome

    @property
    def welcome(self) -> Optional[p.Welcome]:
        """The broker's latest ``welcome`` (its limits and instance), once connected."""
        with self._lock:
            return self._welcome

    def close(self) -> None:
        """Stops the I/O thread and closes the connection. Unfinished items are abandoned.
        Calling it again does nothing."""
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._closing = True
            self._changed.notify_all()
        self._wakeup.signal()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._wakeup.close()
        if self._owns_context:
            self._context.term()

    # MARK: Items in

    def submit(self, items: Iterable[ItemLike], queue: Optional[str] = None, want_results: bool = True) -> List[bytes]:
        """Offers ``items`` (bytes, or text sent as UTF-8) to ``queue``; returns their ids (16
        bytes each) in order. Returns once every item is on its way, not once accepted: use
        :meth:`results` or :meth:`wait_accepted`. Blocks while the window is full.
        """
        return self._submit(items, queue, want_results, None)

    def send_and_wait(self, items: Iterable[ItemLike], queue: Optional[str] = None,
                      timeout: Optional[float] = None) -> List[Result]:
        """Submits ``items`` with results asked for and returns their results in input order.

        Raises :class:`TimeoutError` when they are not all back within ``timeout`` seconds.
        These results do not appear in :meth:`results`.
        """
        sink = _Sink()
        ids = self._submit(items, queue, True, sink)
        deadline = None if timeout is None else monotonic_ms() + int(timeout * 1000)
        with self._changed:
            while len(sink.results) < len(ids):
                self._raise_if_failed()
                left = None if deadline is None else (deadline - monotonic_ms()) / 1000
                if left is not None and left <= 0:
                    raise TimeoutError(f"{len(ids) - len(sink.results)} of {len(ids)} results still missing after {timeout:g} s")
                self._changed.wait(left)
        return [sink.results[item_id] for item_id in ids]

    def _submit(self, items: Iterable[ItemLike], queue: Optional[str], want_results: bool,
                sink: Optional[_Sink]) -> List[bytes]:
        queue = self.queue if queue is None else queue
        problem = p.queue_name_problem(queue)
        if problem:
            raise ValueError(f"queue: {problem}")
        self.connect()
        ids: List[bytes] = []
        for item in items:
            payload = item.encode("utf-8") if isinstance(item, str) else bytes(item)
            item_id = self._run_id + next(self._sequence).to_bytes(8, "big")
            with self._changed:
                self._changed.wait_for(lambda: len(self._pending) < self.window or self._closing or self._fatal is not None)
                self._raise_if_failed()
                if not self._pending:
                    self._pending_since = monotonic_ms()
                self._pending[item_id] = _Pending(payload, queue, want_results, sink=sink)
                self._unaccepted += 1
                self._to_send.append(item_id)
                if want_results and sink is None:
                    self._unreported += 1
            ids.append(item_id)
            if len(ids) % self.batch_items == 0:
                self._wakeup.signal()
        self._wakeup.signal()
        return ids

    # MARK: Answers out

    def results(self, timeout: Optional[float] = None) -> Iterator[Result]:
        """Yields each result as it arrives, for items submitted with ``want_results=True``
        (an item the broker refused yields a failure with the reason). Ends once every such
        item submitted so far has been yielded. ``timeout``: the longest wait for the next
        result, in seconds; past it :class:`TimeoutError` is raised.
        """
        while True:
            with self._changed:
                deadline = None if timeout is None else monotonic_ms() + int(timeout * 1000)
                while not self._results:
                    self._raise_if_failed()
                    if self._unreported == 0:
                        return
                    left = None if deadline is None else (deadline - monotonic_ms()) / 1000
                    if left is not None and left <= 0:
                        raise TimeoutError(f"no result within {timeout:g} s ({self._unreported} still to come)")
                    self._changed.wait(left)
                result = self._results.popleft()
            yield result

    def wait_accepted(self, timeout: Optional[float] = None) -> Dict[bytes, str]:
        """Waits until the broker has accepted (or refused) every item submitted so far, and
        returns the refused ones since the last call, with the reason. Items submitted with
        results asked for may count as accepted by their result arriving first.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: self._fatal is not None or self._unaccepted == 0, timeout):
                raise TimeoutError(f"{self._unaccepted} items not yet accepted after {timeout:g} s")
            self._raise_if_failed()
            refused, self._refused = self._refused, {}
            return refused

    @property
    def unfinished(self) -> int:
        """Items not yet safe: not accepted, or with results asked for, not finished."""
        with self._lock:
            return len(self._pending)

    def _raise_if_failed(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._closing:
            raise DroverError("this producer is closed")

    # MARK: The I/O thread

    def _io_thread(self) -> None:
        sock = self._context.socket(zmq.DEALER)
        # No ZMQ_IMMEDIATE, like the Swift producer: what a dropped connection loses is offered
        # again anyway, and the monitor below says when that happened.
        configure_broker_socket(sock, immediate=False, heartbeat_ms=DEFAULT_HEARTBEAT_MS, liveness=DEFAULT_LIVENESS)
        if self.keys is not None:
            self.keys.apply(sock)
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | HANDSHAKE_EVENTS)
        sock.connect(self.broker)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        poller.register(self._wakeup.fileno, zmq.POLLIN)
        try:
            while True:
                with self._lock:
                    if self._closing:
                        return
                ready = dict(poller.poll(POLL_MS))
                if self._wakeup.fileno in ready:
                    self._wakeup.clear()
                with self._changed:
                    if sock in ready:
                        self._receive_all(sock)
                    if monitor in ready:
                        while monitor.poll(0):
                            event = recv_monitor_message(monitor)
                            if event["event"] == zmq.EVENT_DISCONNECTED:
                                self._connection_lost()
                            refusal = self._handshakes.note(event["event"], event["value"])
                            if refusal is not None and self._fatal is None:
                                # Final: libzmq does not retry a connection refused this way.
                                self._fatal = HandshakeRefused(f"{refusal} ({self.broker})")
                    now = monotonic_ms()
                    self._keep_alive(sock, now)
                    self._send_due(sock, now)
                    self._changed.notify_all()
        except Exception as error:  # a bug or a broken socket: tell the callers, do not hang them
            log.exception("the producer's I/O thread failed")
            with self._changed:
                self._fatal = self._fatal or DroverError(f"the producer's I/O thread failed: {error}")
                self._changed.notify_all()
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close()

    def _send(self, sock: Socket, message: p.Message) -> bool:
        """Sends without blocking; ``False`` when the pipe is full (nothing was sent)."""
        try:
            sock.send_multipart(p.encode(message), flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        self._last_sent = monotonic_ms()
        return True

    def _receive_all(self, sock: Socket) -> None:
        while True:
            try:
                frames = sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                message = p.decode(frames)
            except p.ProtocolError as error:
                log.warning("dropped a malformed message from the broker: %s", error.detail)
                continue
            self._received(message, sock)

    def _received(self, message: p.Message, sock: Socket) -> None:
        now = monotonic_ms()
        self._last_heard = now
        if isinstance(message, p.Welcome):
            first = self._welcome is None
            restarted = not first and message.instance != self._welcome.instance  # type: ignore[union-attr]
            if not first and (restarted or not self._link_up):
                log.warning("%s; offering every unfinished item again (%d items)",
                            "the broker restarted" if restarted else "the broker is back", len(self._pending))
                self._offer_everything_again()
            self._welcome = message
            self._link_up = True
        elif isinstance(message, p.Accepted):
            for item_id in message.ids:
                item = self._pending.get(item_id)
                if item is None:
                    continue
                if item.want_results:
                    self._mark_accepted(item)
                else:
                    self._forget(item_id)
        elif isinstance(message, p.Rejected):
            self._rejected(message, now)
        elif isinstance(message, p.Result):
            for outcome in message.outcomes:
                item = self._forget(outcome.id)
                if item is not None and item.want_results:
                    self._report(outcome.id, item, Result(outcome.id, outcome.succeeded, outcome.payload))
        elif isinstance(message, p.Error):
            if message.code == p.ErrorCode.UNKNOWN_PEER:
                # A broker that restarted, or a new connection it has not heard hello on.
                log.warning("the broker does not know this producer (%s); saying hello again", message.text)
                self._connection_lost()
            else:
                code = message.code.name.lower() if isinstance(message.code, p.ErrorCode) else str(message.code)
                self._fatal = BrokerRefused(f"the broker at {self.broker} refused a message ({code}): {message.text}")
        else:
            log.debug("ignored %s from the broker", type(message).__name__)

    def _rejected(self, message: p.Rejected, now: int) -> None:
        for item_id in message.ids:
            item = self._pending.get(item_id)
            if item is None or item.accepted:
                continue
            if message.code in (p.RejectCode.QUEUE_FULL, p.RejectCode.STORAGE_UNAVAILABLE):
                self._retry.append(item_id)  # stays in the window until accepted
                self._retry_at = now + RETRY_AFTER_FULL_MS
            else:
                self._refuse(item_id, item, f"refused by the broker: {message.reason}")

    def _mark_accepted(self, item: _Pending) -> None:
        if not item.accepted:
            item.accepted = True
            self._unaccepted -= 1

    def _forget(self, item_id: bytes) -> Optional[_Pending]:
        """Takes an item off the books (it is safe, or refused); returns it, or ``None``."""
        item = self._pending.pop(item_id, None)
        if item is not None and not item.accepted:
            self._unaccepted -= 1
        return item

    def _refuse(self, item_id: bytes, item: _Pending, reason: str) -> None:
        self._forget(item_id)
        self._refused[item_id] = reason
        if item.want_results:
            self._report(item_id, item, Result(item_id, False, reason.encode("utf-8")))

    def _report(self, item_id: bytes, item: _Pending, result: Result) -> None:
        if item.sink is not None:
            item.sink.results[item_id] = result
        else:
            self._results.append(result)
            self._unreported -= 1

    def _connection_lost(self) -> None:
        """The link may have lost what was queued on it, both ways: say hello at once, and
        offer everything unfinished again once the broker answers."""
        if self._link_up:
            self._link_up = False
            self._lost_since = monotonic_ms()
            log.warning("lost the connection to the broker at %s; reconnecting", self.broker)
        self._hello_due = True

    def _offer_everything_again(self) -> None:
        for item in self._pending.values():
            item.accepted = False
        self._unaccepted = len(self._pending)
        self._to_send = collections.deque(sorted(self._pending))
        self._retry = []
        self._retry_at = 0

    def _keep_alive(self, sock: Socket, now: int) -> None:
        """``hello`` when nothing else went out for a heartbeat (its ``welcome`` says whether
        the broker restarted); notices a broker silent past its liveness window."""
        welcome = self._welcome
        interval = welcome.heartbeat_ms if welcome else HELLO_RETRY_MS
        if self._hello_due or now - self._last_sent >= interval:
            if self._send(sock, p.Hello(p.Role.PRODUCER, self.name)):
                self._hello_due = False
        if welcome is None:
            return
        liveness = welcome.liveness_ms or welcome.heartbeat_ms * DEFAULT_LIVENESS
        if self._link_up and now - self._last_heard > liveness:
            self._link_up = False
            self._lost_since = now
            log.warning("the broker at %s has been silent for %d ms; reconnecting", self.broker, now - self._last_heard)
        if not self._link_up and self._pending:
            gone_for = now - max(self._lost_since, self._pending_since)
            if gone_for > self.reconnect_timeout * 1000:
                self._fatal = BrokerLost(
                    f"lost the broker at {self.broker}: no answer for {self.reconnect_timeout:g} s "
                    f"with {len(self._pending)} items unfinished")

    def _send_due(self, sock: Socket, now: int) -> None:
        """Sends the items waiting to go, in batches of one queue and one flag value."""
        if not self._link_up or self._welcome is None:
            return
        if self._retry and now >= self._retry_at:
            self._to_send.extend(self._retry)
            self._retry = []
        limit = self._welcome.max_item_bytes
        while self._to_send:
            batch: List[p.Item] = []
            size = 0
            key = None
            while self._to_send and len(batch) < self.batch_items and size < self.batch_bytes:
                item_id = self._to_send[0]
                item = self._pending.get(item_id)
                if item is None or item.accepted:
                    self._to_send.popleft()
                    continue
                if key is not None and key != (item.queue, item.want_results):
                    break
                self._to_send.popleft()
                if len(item.payload) > limit:
                    self._refuse(item_id, item, f"item is {len(item.payload)} bytes; the broker accepts at most "
                                                f"{limit} (broker --max-item-size)")
                    continue
                key = (item.queue, item.want_results)
                batch.append(p.Item(item_id, item.payload))
                size += len(item.payload)
            if not batch:
                continue
            assert key is not None
            if not self._send(sock, p.Submit(key[0], key[1], batch, self.item_timeout_ms)):
                self._retry.extend(i.id for i in batch)
                self._retry_at = now + RETRY_AFTER_FULL_MS
                return
