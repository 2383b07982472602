"""A worker's conversation with the broker, as a state machine with no sockets and no clock.

Messages, finished items, drain requests and the time go in; messages to send, deliveries to
run and the worker's exit come out through :class:`WorkerPorts`. :class:`~drover_client.Worker`
feeds it from its I/O thread; tests can drive it with lists and a number for the clock.

Two independent states: *registration* (does the broker know us?) and *phase* (serving,
draining, leaving). A worker may lose and regain the broker in any phase.

Registration
    ``hello`` (role 2, queue, threads, held) → ``welcome``. Only the first ``welcome`` after a
    ``hello`` grants credit (one per free slot): a second one, from two hellos crossed in
    flight, would double it. The broker is treated as gone after ``liveness-ms`` of silence
    (from ``welcome``), or when it answers ``error`` 3 (unknown peer); then the worker says
    ``hello`` again. Outcomes finished meanwhile wait and go with the new registration.

    Every ``hello`` names what the worker holds (``held``: items running or waiting in it, and
    those whose outcome or hand-back it has not sent yet; empty on the first one). A broker
    that already knew the worker returns every other lease of it to the queue, since messages
    in flight on a connection that dropped are lost both ways. Deliveries that arrive between
    that ``hello`` and its ``welcome`` crossed it, so it did not name them: they are ignored
    (neither run nor handed back), as the broker takes them back itself when it reads it.

Serving
    Credit = threads + lookahead slots. Each ``done`` carries outcomes and the credit their
    slots freed. Deliveries beyond the free slots (sent against an earlier registration's
    credit) are run too, and the slots they overdraw are not granted again.

Draining (SIGTERM, :meth:`Worker.drain`, or fleet state ``exiting`` from the broker or the
controller)
    Unstarted items are handed back (``hand-back``, possibly empty: it also tells the broker to
    send no more, and is repeated after every new registration, since ``hello`` clears that
    mark at the broker). Running items finish and are reported with no new credit. When none
    is left: ``bye`` code 1. When the deadline passes first: the running items are handed back
    and abandoned, ``bye`` code 2.

Leaving
    Waits for the broker's ``bye`` (code 0), or gives up after two heartbeat intervals; if the
    broker is unreachable, waits up to 30 s for it to come back so that outcomes and the
    goodbye are delivered rather than redelivered elsewhere.
"""

from __future__ import annotations

import enum
import logging
from typing import Dict, List, NamedTuple, Optional, Sequence

from . import protocol as p

__all__ = ["WorkerExit", "WorkerPorts", "WorkerSession"]

log = logging.getLogger("drover_client.worker")

#: How often ``hello`` is offered while not yet connected (with ``ZMQ_IMMEDIATE`` an offer
#: before the TCP connection is up is refused locally, so this bounds how soon we register).
HELLO_RETRY_MS = 100
#: How long a ``hello`` that went out waits for its ``welcome`` before another is sent.
HELLO_ANSWER_MS = 1000
#: How long a leaving worker waits for an unreachable broker to come back.
GOODBYE_WAIT_MS = 30_000
#: How often to warn that the broker cannot be reached.
WARN_EVERY_MS = 5000
#: Until the first ``welcome`` says otherwise.
DEFAULT_HEARTBEAT_MS = 1000
DEFAULT_LIVENESS = 3
#: The goodbye reason of a worker whose drain deadline passed (the controller reports it).
DEADLINE_BYE_REASON = "drain deadline passed"


class WorkerExit(NamedTuple):
    """How a worker's run ended: ``code`` is the ``bye`` code it sent (``DRAINED``,
    ``DEADLINE_PASSED`` or ``STOPPED``), ``abandoned`` the running items it handed back."""

    code: p.ByeCode
    reason: str
    abandoned: int = 0

    @property
    def exit_status(self) -> int:
        """The process exit status ``drover worker`` uses: 0 drained, 2 stopped, 3 deadline passed."""
        return {p.ByeCode.DRAINED: 0, p.ByeCode.STOPPED: 2, p.ByeCode.DEADLINE_PASSED: 3}.get(self.code, 1)


class WorkerPorts:
    """What the session asks of the world. Every method is called on the I/O thread."""

    def send(self, message: p.Message) -> bool:
        """Sends to the broker without blocking; ``False`` when nothing was sent."""
        raise NotImplementedError

    def run(self, deliveries: Sequence[p.Delivery]) -> None:
        """Hands deliveries to the handler threads."""
        raise NotImplementedError

    def take_unstarted(self) -> List[p.Delivery]:
        """Takes back the deliveries no handler thread has started."""
        raise NotImplementedError

    def cancel_running(self) -> None:
        """The running items are abandoned (deadline passed, or a stop at once)."""

    def welcomed(self, welcome: p.Welcome) -> None:
        """The broker welcomed this worker."""


class _Phase(enum.Enum):
    SERVING = "serving"
    DRAINING = "draining"
    LEAVING = "leaving"


class WorkerSession:
    """The protocol state machine of one worker. See the module documentation."""

    def __init__(self, *, name: str, queue: str, threads: int, lookahead: int, ports: WorkerPorts, now: int) -> None:
        self.name = name
        self.queue = queue
        self.threads = threads
        self.capacity = threads + lookahead
        self.ports = ports
        self.phase = _Phase.SERVING
        self.registered = False
        self.hello_in_flight = False
        #: Deliveries given to the handler threads and not finished, by reference.
        self.held: Dict[p.Ref, None] = {}
        #: Outcomes the broker has not taken yet.
        self.unsent_outcomes: List[p.Outcome] = []
        #: Slots freed since the broker last heard of our credit.
        self.credit_owed = 0
        #: A hand-back still to send (an empty list still tells the broker "no more").
        self.unsent_hand_back: Optional[List[p.Ref]] = None
        self.heartbeat_ms = DEFAULT_HEARTBEAT_MS
        self.liveness_ms = DEFAULT_HEARTBEAT_MS * DEFAULT_LIVENESS
        self.fleet_epoch = 0
        self.drain_deadline = 0
        self.reason = ""
        self.exit: Optional[WorkerExit] = None
        self.bye_sent_at: Optional[int] = None
        self.give_up_at = 0
        self.started_at = now
        self.last_sent = now
        self.last_heard = now
        self.last_hello = now - HELLO_ANSWER_MS
        self.last_turn = now
        self.last_warned = now

    # MARK: Life

    def start(self, now: int) -> None:
        """Says hello: the session begins."""
        self._say_hello(now)

    def turn(self, now: int) -> None:
        """Called first on every turn of the loop. A gap past the liveness window means this
        process was paused (SIGSTOP, a frozen VM): the broker has given up on it, so it
        registers again before anything else goes out."""
        if now - self.last_turn > self.liveness_ms and self.registered:
            log.warning("this worker was paused for %d ms, past the liveness window; registering again", now - self.last_turn)
            self._register_again(now)
        self.last_turn = now

    def stop_now(self, now: int) -> WorkerExit:
        """Stops at once: a goodbye without waiting, so the broker redelivers at once."""
        self._send(p.Bye(p.ByeCode.STOPPED, "stopped at once"), now)
        self.ports.cancel_running()
        log.warning("stopping at once; the broker redelivers the %d items this worker held", len(self.held))
        return WorkerExit(p.ByeCode.STOPPED, "stopped at once", len(self.held))

    # MARK: Messages

    def received(self, message: p.Message, now: int) -> Optional[WorkerExit]:
        """A message from the broker; returns the worker's exit when it ends the run."""
        self.last_heard = now
        if isinstance(message, p.Welcome):
            self._welcomed(message, now)
        elif isinstance(message, p.Deliver):
            self._deliver(message.deliveries, now)
        elif isinstance(message, p.Fleet):
            self._apply_fleet(message.state, "broker", now)
        elif isinstance(message, p.Heartbeat):
            pass
        elif isinstance(message, p.Bye):
            if self.phase is _Phase.LEAVING and self.exit is not None:
                return self.exit
        elif isinstance(message, p.Error):
            if message.code == p.ErrorCode.UNKNOWN_PEER:
                log.warning("the broker does not know this worker (restarted, or declared it dead); registering again")
                self._register_again(now)
            else:
                log.error("the broker refused a message (code %s): %s", message.code, message.text)
        else:
            log.warning("ignored an unexpected %s from the broker", type(message).__name__)
        return None

    def received_from_controller(self, message: p.Message, now: int) -> None:
        """A message from the controller's publisher (only ``fleet`` is expected)."""
        if isinstance(message, p.Fleet):
            self._apply_fleet(message.state, "controller", now)
        else:
            log.warning("ignored an unexpected %s from the controller", type(message).__name__)

    def _welcomed(self, welcome: p.Welcome, now: int) -> None:
        grants = not self.registered and self.hello_in_flight
        self.registered = True
        self.hello_in_flight = False
        self.heartbeat_ms = max(welcome.heartbeat_ms, 1)
        self.liveness_ms = welcome.liveness_ms or self.heartbeat_ms * DEFAULT_LIVENESS
        self.ports.welcomed(welcome)
        if grants:
            log.info("registered with the broker (queue %s, %d threads)", self.queue, self.threads)
            # A registration starts with no credit: the grant below covers every free slot,
            # including those freed by outcomes the broker has not heard of yet.
            self.credit_owed = 0
        was_serving = self.phase is _Phase.SERVING
        # First the fleet state: a worker that joins an exiting fleet grants no credit at all.
        self._apply_fleet(welcome.fleet, "broker", now)
        if not was_serving and self.unsent_hand_back is None:
            # `hello` cleared the broker's "draining" mark: tell it again that we take no more.
            self.unsent_hand_back = []
        self._flush(now)
        if self.phase is _Phase.SERVING and grants:
            free = self.capacity - len(self.held)
            if free > 0:
                self._send(p.Credit(free), now)

    def _deliver(self, deliveries: Sequence[p.Delivery], now: int) -> None:
        if not self.registered:
            # Sent before the broker read our latest `hello`, which named what we hold without
            # these: the broker takes them back when it reads it, so running them would only
            # run them twice.
            log.debug("ignored %d deliveries sent before the broker read this worker's hello", len(deliveries))
            return
        if self.phase is _Phase.LEAVING and self.bye_sent_at is not None:
            return  # crossed our goodbye, which returns them to the queue
        if self.phase is not _Phase.SERVING:
            # Crossed our hand-back in flight: they go back too.
            self._hand_back([p.Ref(d.id, d.attempt) for d in deliveries], now)
            return
        for d in deliveries:
            self.held[p.Ref(d.id, d.attempt)] = None
        # More than our slots happens when deliveries sent against the credit of an earlier
        # registration arrive after a new one was granted. They are run, not handed back: a
        # `hand-back` would mark this worker draining at the broker, which would then send it
        # nothing more. No credit is granted until the worker is back under its capacity.
        if len(self.held) > self.capacity:
            log.info("holding %d items beyond this worker's %d slots (deliveries crossed a new registration)",
                     len(self.held) - self.capacity, self.capacity)
        self.ports.run(deliveries)

    # MARK: Work

    def finished(self, outcomes: Sequence[p.Outcome], now: int) -> None:
        """Outcomes from the handler threads: their slots are free again. An outcome of an
        item already handed back (its deadline passed) is dropped: the broker would count
        it stale."""
        free_before = max(self.capacity - len(self.held), 0)
        kept = []
        for outcome in outcomes:
            ref = p.Ref(outcome.id, outcome.attempt)
            if ref in self.held:
                del self.held[ref]
                kept.append(outcome)
        if not kept:
            return
        if self.phase is _Phase.SERVING:
            # One credit per slot freed under the capacity (none while holding extra items).
            self.credit_owed += max(self.capacity - len(self.held), 0) - free_before
        self.unsent_outcomes.extend(kept)
        self._flush(now)

    def drain(self, reason: str, deadline_ms: int, now: int) -> None:
        """Stops taking work: unstarted items go back, running ones may finish within
        ``deadline_ms``. Only the first call counts."""
        if self.phase is not _Phase.SERVING:
            return
        unstarted = self.ports.take_unstarted()
        for d in unstarted:
            self.held.pop(p.Ref(d.id, d.attempt), None)
        self.phase = _Phase.DRAINING
        self.drain_deadline = now + deadline_ms
        self.reason = reason
        log.info("draining (%s): handing back %d unstarted items, %d running, deadline %d ms",
                 reason, len(unstarted), len(self.held), deadline_ms)
        self._hand_back([p.Ref(d.id, d.attempt) for d in unstarted], now)

    def _apply_fleet(self, state: p.FleetState, source: str, now: int) -> None:
        if state.epoch <= self.fleet_epoch:
            return
        self.fleet_epoch = state.epoch
        if state.exiting:
            self.drain(f"fleet exit (epoch {state.epoch}, from the {source})", state.deadline_ms, now)

    def _hand_back(self, refs: List[p.Ref], now: int) -> None:
        self.unsent_hand_back = (self.unsent_hand_back or []) + refs
        self._flush(now)

    def _flush(self, now: int) -> None:
        """Sends what waits for the broker, in order: hand-back, outcomes (with the credit
        owed), and a goodbye that could not go out before."""
        if not self.registered:
            return
        if self.unsent_hand_back is not None:
            if not self._send(p.HandBack(self.unsent_hand_back), now):
                return
            self.unsent_hand_back = None
        if self.unsent_outcomes:
            if not self._send(p.Done(self.credit_owed, self.unsent_outcomes), now):
                return
            self.unsent_outcomes = []
            self.credit_owed = 0
        if self.phase is _Phase.LEAVING and self.bye_sent_at is None and self.exit is not None:
            if self._send(p.Bye(self.exit.code, self.exit.reason), now):
                self.bye_sent_at = now

    # MARK: Timers

    def timers(self, now: int) -> Optional[WorkerExit]:
        """Hello retries, heartbeats, the broker's liveness, the drain deadline and the wait
        for the goodbye's acknowledgement; returns the worker's exit when the run ends."""
        if not self.registered:
            wait = HELLO_ANSWER_MS if self.hello_in_flight else HELLO_RETRY_MS
            if now - self.last_hello >= wait:
                self._say_hello(now)
            if now - self.started_at >= 3000 and now - self.last_warned >= WARN_EVERY_MS:
                self.last_warned = now
                log.warning("cannot reach the broker; still trying")
        elif now - self.last_heard > self.liveness_ms:
            log.warning("the broker has been silent for %d ms, past its liveness window; registering again",
                        now - self.last_heard)
            self._register_again(now)
        else:
            self._flush(now)
            if now - self.last_sent >= self.heartbeat_ms:
                self._send(p.Heartbeat(), now)

        if self.phase is _Phase.DRAINING:
            if not self.held:
                self._leave(WorkerExit(p.ByeCode.DRAINED, self.reason), now)
            elif now >= self.drain_deadline:
                abandoned = list(self.held)
                log.warning("drain deadline passed; handing %d running items back", len(abandoned))
                self.ports.cancel_running()
                self.held.clear()
                self._hand_back(abandoned, now)
                self._leave(WorkerExit(p.ByeCode.DEADLINE_PASSED, DEADLINE_BYE_REASON, len(abandoned)), now)
        elif self.phase is _Phase.LEAVING and self.exit is not None:
            if self.bye_sent_at is not None and now - self.bye_sent_at > 2 * self.heartbeat_ms:
                log.warning("the broker did not acknowledge this worker's goodbye; exiting anyway")
                return self.exit
            if self.bye_sent_at is None and now >= self.give_up_at:
                log.warning("the broker is still unreachable; exiting without a goodbye "
                            "(it redelivers what this worker held; %d outcomes unsent)", len(self.unsent_outcomes))
                return self.exit
        return None

    def _leave(self, exit: WorkerExit, now: int) -> None:
        self.phase = _Phase.LEAVING
        self.exit = exit
        self.give_up_at = now + GOODBYE_WAIT_MS
        self._flush(now)  # sends the goodbye once nothing else waits
        if self.bye_sent_at is None:
            log.info("waiting for the broker to come back to say goodbye")

    def _register_again(self, now: int) -> None:
        if self.registered:
            self.registered = False
            self.hello_in_flight = False
        # A goodbye the broker never acknowledged goes again to the new registration.
        self.bye_sent_at = None
        self._say_hello(now)

    def _say_hello(self, now: int) -> None:
        self.last_hello = now
        sent = self._send(p.Hello(p.Role.WORKER, self.name, self.queue, self.threads, held=self._answered_for()), now)
        if not self.registered:
            self.hello_in_flight = sent or self.hello_in_flight

    def _answered_for(self) -> List[p.Ref]:
        """Every delivery this worker answers for, as ``hello`` names them: held (running or
        waiting), with an unsent outcome, or in an unsent hand-back. A broker that knew this
        worker returns every other lease of it to the queue."""
        refs = list(self.held)
        refs += [p.Ref(o.id, o.attempt) for o in self.unsent_outcomes]
        if self.unsent_hand_back is not None:
            refs += self.unsent_hand_back
        return refs

    def _send(self, message: p.Message, now: int) -> bool:
        sent = self.ports.send(message)
        if sent:
            self.last_sent = now
        return sent
