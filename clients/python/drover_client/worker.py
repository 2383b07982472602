"""The worker: handler threads that take items from a Drover broker and run a function on each.

Threads: :meth:`Worker.run` is the I/O thread. It owns the DEALER socket to the broker and,
with ``control``, a SUB socket to the controller's publisher, and feeds what arrives to a
:class:`~drover_client.worker_session.WorkerSession`, which decides everything. ``threads``
handler threads take deliveries from an in-process queue, run the handler, and leave each
outcome in a locked mailbox, ringing a pipe the I/O thread polls. :meth:`Worker.drain` and
:meth:`Worker.stop_now` (and the signal handlers) do the same from any thread.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Deque, List, Optional, Sequence, Union

import zmq
from zmq.utils.monitor import recv_monitor_message

from . import protocol as p
from ._support import (Wakeup, configure_broker_socket, default_peer_name, monotonic_ms, write_ready_file)
from .keys import HANDSHAKE_EVENTS, ClientKeys, HandshakeWatch, Redial
from .worker_session import (DEFAULT_HEARTBEAT_MS, DEFAULT_LIVENESS, WARN_EVERY_MS, WorkerExit, WorkerPorts,
                             WorkerSession)

if TYPE_CHECKING:
    from ._support import Context, Socket

__all__ = ["Worker", "WorkItem", "WorkerExit", "Handler"]

log = logging.getLogger("drover_client.worker")

#: Most bytes of a handler's error text sent to the broker.
MAX_ERROR_BYTES = 16 * 1024
#: The longest the I/O thread sleeps between looks at its timers.
MAX_POLL_MS = 100


@dataclass(frozen=True)
class WorkItem:
    """One delivery, as a handler sees it.

    ``attempt`` is 1 on the first delivery and grows with each redelivery; an item can run
    twice (its worker died mid-run), so handlers whose effects must not repeat should be
    idempotent, keyed on ``id``.
    """

    id: bytes
    attempt: int
    queue: str
    payload: bytes
    #: This worker's name.
    worker: str
    #: The producer's limit on running this item, in milliseconds (``drover send
    #: --item-timeout``); 0 for none. Nothing stops a Python thread from outside: a handler
    #: that may run long should check it and give up by itself.
    timeout_ms: int = 0

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8."""
        return self.payload.decode("utf-8")

    @property
    def id_hex(self) -> str:
        """The id as 32 hex digits, as ``drover dlq`` prints it."""
        return self.id.hex()


#: A handler takes a :class:`WorkItem` and returns the result (bytes, text sent as UTF-8, or
#: ``None`` for an empty result). An exception fails the item with its text; the broker retries
#: it per the queue's policy.
Handler = Callable[[WorkItem], Union[bytes, bytearray, memoryview, str, None]]


class _HandlerPool:
    """``threads`` daemon threads taking deliveries from one in-process queue.

    A delivery is either queued or running, never both, and :meth:`take_unstarted` takes
    back exactly the queued ones, so a drain hands back what no thread has begun.
    """

    def __init__(self, threads: int, run: Callable[[p.Delivery], None]) -> None:
        self._run = run
        self._jobs: Deque[p.Delivery] = collections.deque()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closing = False
        self._threads = [threading.Thread(target=self._loop, name=f"drover-handler-{n}", daemon=True)
                         for n in range(threads)]
        for thread in self._threads:
            thread.start()

    def submit(self, deliveries: Sequence[p.Delivery]) -> None:
        with self._changed:
            self._jobs.extend(deliveries)
            self._changed.notify(len(deliveries))

    def take_unstarted(self) -> List[p.Delivery]:
        with self._lock:
            taken = list(self._jobs)
            self._jobs.clear()
            return taken

    def close(self, join_seconds: Optional[float]) -> None:
        """Lets every thread end after its current job; waits up to ``join_seconds`` (none:
        a thread stuck in a handler is abandoned, and ends with the process)."""
        with self._changed:
            self._closing = True
            self._jobs.clear()
            self._changed.notify_all()
        if join_seconds is not None:
            for thread in self._threads:
                thread.join(join_seconds)

    def _loop(self) -> None:
        while True:
            with self._changed:
                while not self._jobs and not self._closing:
                    self._changed.wait()
                if self._closing:
                    return
                delivery = self._jobs.popleft()
            self._run(delivery)


class _Ports(WorkerPorts):
    """The session's ports over the real socket and handler pool."""

    def __init__(self, worker: "Worker", sock: Socket, pool: _HandlerPool) -> None:
        self.worker = worker
        self.sock = sock
        self.pool = pool
        self.wrote_ready_file = False

    def send(self, message: p.Message) -> bool:
        try:
            self.sock.send_multipart(p.encode(message), flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            return False  # not connected (ZMQ_IMMEDIATE) or the pipe is full

    def run(self, deliveries: Sequence[p.Delivery]) -> None:
        self.pool.submit(deliveries)

    def take_unstarted(self) -> List[p.Delivery]:
        return self.pool.take_unstarted()

    def cancel_running(self) -> None:
        # A Python thread cannot be stopped from outside: its item has been handed back, its
        # late outcome is dropped, and the daemon thread ends with the process.
        pass

    def welcomed(self, welcome: p.Welcome) -> None:
        self.worker._max_result_bytes = welcome.max_item_bytes
        if not self.wrote_ready_file and self.worker.ready_file:
            self.wrote_ready_file = True
            write_ready_file(self.worker.ready_file, [self.worker.name])


class Worker:
    """Serves one queue of a Drover broker with ``threads`` handler threads.

    ::

        def shout(item):
            return item.text.upper()

        exit = Worker("tcp://127.0.0.1:5555", shout, threads=4).run_with_signals()

    ``lookahead``: items held beyond one per thread (credit = threads + lookahead). ``control``:
    the controller's publish endpoint, to hear a fleet exit directly (the broker relays it
    too). ``drain_deadline``: seconds a drain started by :meth:`drain` or a signal lets running
    items finish (a fleet exit carries its own). ``ready_file``: written with the worker's
    name once the broker has welcomed it.

    ``keys``: this worker's :class:`~drover_client.keys.ClientKeys`, for a broker that uses
    keys; ``control_keys``: the same for the controller's publisher (its own public key as the
    server key), when that uses keys. A refused handshake (a key not, or no longer, authorized;
    keys on one side only) is logged, at most every 5 s, and the worker keeps trying: it
    connects afresh 2 s after each refusal, so a key the broker authorizes later (SIGHUP) gets in.
    """

    def __init__(self, broker: str, handler: Handler, queue: str = "default", threads: int = 2,
                 lookahead: int = 1, control: Optional[str] = None, *, name: Optional[str] = None,
                 drain_deadline: float = 30.0, ready_file: Optional[str] = None,
                 context: Optional[Context] = None, keys: Optional[ClientKeys] = None,
                 control_keys: Optional[ClientKeys] = None) -> None:
        problem = p.queue_name_problem(queue)
        if problem:
            raise ValueError(f"queue: {problem}")
        if threads < 1 or lookahead < 0:
            raise ValueError("threads must be at least 1 and lookahead at least 0")
        if drain_deadline < 0:
            raise ValueError("drain_deadline must not be negative")
        self.broker = broker
        self.handler = handler
        self.queue = queue
        self.threads = threads
        self.lookahead = lookahead
        self.control = control
        self.name = name or default_peer_name()
        self.drain_deadline = drain_deadline
        self.ready_file = ready_file
        self.keys = keys
        self.control_keys = control_keys
        self._context = context
        self._wakeup = Wakeup()
        self._mailbox_lock = threading.Lock()
        self._outcomes: List[p.Outcome] = []
        self._drain_requested: Optional[str] = None
        self._stop_requested = False
        self._max_result_bytes = 1 << 20
        self._signals = 0

    # MARK: Requests from any thread

    def drain(self, reason: str = "drain requested") -> None:
        """Starts draining: no more work, unstarted items handed back, running ones finished
        within ``drain_deadline``, then goodbye. What SIGTERM does. Safe from any thread."""
        with self._mailbox_lock:
            if self._drain_requested is None:
                self._drain_requested = reason
        self._wakeup.signal()

    def stop_now(self) -> None:
        """Stops at once; the broker redelivers what this worker held. What a second signal does."""
        with self._mailbox_lock:
            self._stop_requested = True
        self._wakeup.signal()

    def install_signal_handlers(self) -> Callable[[], None]:
        """Maps SIGTERM and SIGINT onto this worker: the first drains it, a second stops it at
        once. Call from the main thread; returns a function that restores the old handlers."""
        def on_signal(number: int, _frame: object) -> None:
            self._signals += 1
            if self._signals == 1:
                self.drain(signal.Signals(number).name)
            else:
                self.stop_now()
        old = {number: signal.signal(number, on_signal) for number in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for number, handler in old.items():
                signal.signal(number, handler)
        return restore

    def run_with_signals(self) -> WorkerExit:
        """:meth:`run`, with SIGTERM and SIGINT mapped onto the worker for its duration
        (:meth:`install_signal_handlers`). Call from the main thread."""
        restore = self.install_signal_handlers()
        try:
            return self.run()
        finally:
            restore()

    # MARK: The I/O thread

    def run(self) -> WorkerExit:
        """Serves until the fleet exits, :meth:`drain` completes, or :meth:`stop_now`;
        blocks the calling thread, which becomes the worker's I/O thread."""
        context = self._context or zmq.Context.instance()
        sock = context.socket(zmq.DEALER)
        # A routing id of our own: a reconnection takes our place at the broker (ROUTER
        # handover). Not starting with a zero byte, which ZeroMQ reserves.
        configure_broker_socket(sock, immediate=True, heartbeat_ms=DEFAULT_HEARTBEAT_MS, liveness=DEFAULT_LIVENESS,
                                routing_id=b"w-" + os.urandom(12))
        if self.keys is not None:
            self.keys.apply(sock)
        monitor = sock.get_monitor_socket(HANDSHAKE_EVENTS)
        sock.connect(self.broker)
        sub: Optional[Socket] = None
        if self.control:
            sub = context.socket(zmq.SUB)
            if self.control_keys is not None:
                self.control_keys.apply(sub)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
            sub.setsockopt(zmq.MAXMSGSIZE, 4096)
            sub.connect(self.control)
        pool = _HandlerPool(self.threads, self._run_item)
        exit: Optional[WorkerExit] = None
        try:
            exit = self._loop(sock, monitor, sub, pool)
            return exit
        finally:
            # The monitor first: libzmq sends its events blockingly, so one nobody reads could
            # stall the socket's linger.
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=1000)
            if sub is not None:
                sub.close()
            drained = exit is not None and exit.code == p.ByeCode.DRAINED
            pool.close(join_seconds=5 if drained else None)
            log.info("worker exited: %s", exit.reason if exit else "error")

    def _loop(self, sock: Socket, monitor: Socket, sub: Optional[Socket], pool: _HandlerPool) -> WorkerExit:
        ports = _Ports(self, sock, pool)
        session = WorkerSession(name=self.name, queue=self.queue, threads=self.threads, lookahead=self.lookahead,
                                ports=ports, now=monotonic_ms())
        handshakes = HandshakeWatch(uses_keys=self.keys is not None)
        redial = Redial()
        last_warned = -WARN_EVERY_MS
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        if sub is not None:
            poller.register(sub, zmq.POLLIN)
        poller.register(self._wakeup.fileno, zmq.POLLIN)
        session.start(monotonic_ms())
        while True:
            ready = dict(poller.poll(min(MAX_POLL_MS, max(session.heartbeat_ms // 4, 5))))
            now = monotonic_ms()
            session.turn(now)
            if self._wakeup.fileno in ready:
                self._wakeup.clear()
            with self._mailbox_lock:
                outcomes, self._outcomes = self._outcomes, []
                drain, stop = self._drain_requested, self._stop_requested
                self._drain_requested = None
            if stop:
                return session.stop_now(now)
            if outcomes:
                session.finished(outcomes, now)
            if drain is not None:
                session.drain(drain, int(self.drain_deadline * 1000), now)
            if sock in ready:
                for message in self._receive(sock, "the broker"):
                    exit = session.received(message, now)
                    if exit is not None:
                        return exit
            if monitor in ready:
                while monitor.poll(0):
                    event = recv_monitor_message(monitor)
                    handshakes.note(event["event"], event["value"])
                    redial.note(event["event"], now)
                    failure = handshakes.last_failure
                    if event["event"] != zmq.EVENT_HANDSHAKE_SUCCEEDED and failure is not None \
                            and now - last_warned >= WARN_EVERY_MS:
                        last_warned = now
                        log.error("cannot register with the broker at %s: %s; still trying", self.broker, failure)
            if redial.redial_if_due(sock, self.broker, monotonic_ms()):
                log.debug("connecting to the broker at %s afresh after a refused handshake", self.broker)
            if sub is not None and sub in ready:
                for message in self._receive(sub, "the controller"):
                    session.received_from_controller(message, now)
            exit = session.timers(monotonic_ms())
            if exit is not None:
                return exit

    @staticmethod
    def _receive(sock: Socket, source: str) -> List[p.Message]:
        messages: List[p.Message] = []
        while True:
            try:
                frames = sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return messages
            try:
                messages.append(p.decode(frames))
            except p.ProtocolError as error:
                log.warning("dropped a malformed message from %s: %s", source, error.detail)

    # MARK: Handler threads

    def _run_item(self, delivery: p.Delivery) -> None:
        """Runs the handler on one delivery (on a handler thread) and leaves the outcome in
        the mailbox, waking the I/O thread if the mailbox was empty."""
        item = WorkItem(delivery.id, delivery.attempt, self.queue, delivery.payload, self.name, delivery.timeout_ms)
        outcome = self.outcome(self.handler, item, self._max_result_bytes)
        with self._mailbox_lock:
            self._outcomes.append(outcome)
            first = len(self._outcomes) == 1
        if first:
            self._wakeup.signal()

    @staticmethod
    def outcome(handler: Handler, item: WorkItem, limit: int) -> p.Outcome:
        """Runs ``handler`` on ``item``: its result, or a failure with the exception's text.
        A result over the broker's item limit fails the item (the broker would refuse the
        message carrying it), and error text is cut to :data:`MAX_ERROR_BYTES`."""
        try:
            result = handler(item)
            if result is None:
                payload = b""
            elif isinstance(result, str):
                payload = result.encode("utf-8")
            elif isinstance(result, (bytes, bytearray, memoryview)):
                payload = bytes(result)
            else:
                raise TypeError(f"the handler returned {type(result).__name__}; return bytes, str or None")
            if len(payload) <= limit:
                return p.Outcome(item.id, item.attempt, p.Status.SUCCEEDED, payload)
            text = f"result of {len(payload):,} bytes is over the broker's limit of {limit:,} (broker --max-item-size)"
        except BaseException as error:  # noqa: B902 - any failure of the handler fails its item, never the thread
            text = str(error) or type(error).__name__
        raw = text.encode("utf-8")
        cap = min(MAX_ERROR_BYTES, limit)
        if len(raw) > cap:
            raw = raw[:max(cap - 4, 0)].decode("utf-8", errors="ignore").encode("utf-8") + " …".encode("utf-8")
        return p.Outcome(item.id, item.attempt, p.Status.FAILED, raw)
