"""The worker's protocol state machine, driven with lists and a number for the clock."""

from __future__ import annotations

import unittest
from typing import List, Sequence

import harness  # noqa: F401  (puts drover_client on the path)
from drover_client import protocol as p
from drover_client.worker_session import WorkerExit, WorkerPorts, WorkerSession

RUNNING = p.FleetState(1, p.Phase.RUNNING, 0)


class FakePorts(WorkerPorts):
    def __init__(self) -> None:
        self.connected = True
        self.sent: List[p.Message] = []
        self.queued: List[p.Delivery] = []
        self.cancelled = 0

    def send(self, message: p.Message) -> bool:
        if self.connected:
            self.sent.append(message)
        return self.connected

    def run(self, deliveries: Sequence[p.Delivery]) -> None:
        self.queued += deliveries

    def take_unstarted(self) -> List[p.Delivery]:
        taken, self.queued = self.queued, []
        return taken

    def cancel_running(self) -> None:
        self.cancelled += 1

    def take(self) -> List[p.Message]:
        taken, self.sent = self.sent, []
        return taken


def welcome(fleet: p.FleetState = RUNNING, instance: int = 1) -> p.Welcome:
    return p.Welcome(1 << 20, 1000, fleet, instance, 3000)


def delivery(n: int, attempt: int = 1) -> p.Delivery:
    return p.Delivery(n.to_bytes(16, "big"), attempt, bytes([n]))


def success(d: p.Delivery) -> p.Outcome:
    return p.Outcome(d.id, d.attempt, p.Status.SUCCEEDED, d.payload)


def ref(d: p.Delivery) -> p.Ref:
    return p.Ref(d.id, d.attempt)


def hello(threads: int = 2, held: Sequence[p.Delivery] = ()) -> p.Hello:
    """A worker's ``hello``, naming the deliveries it holds."""
    return p.Hello(p.Role.WORKER, "w", "default", threads, held=[ref(d) for d in held])


class WorkerSessionTests(unittest.TestCase):
    def registered(self, threads: int = 2, lookahead: int = 1) -> WorkerSession:
        self.ports = FakePorts()
        session = WorkerSession(name="w", queue="default", threads=threads, lookahead=lookahead, ports=self.ports, now=0)
        session.start(0)
        self.assertEqual(self.ports.take(), [hello(threads)])
        self.assertIsNone(session.received(welcome(), 1))
        return session

    def test_the_first_hello_names_no_held_items_but_says_so(self) -> None:
        self.ports = FakePorts()
        session = WorkerSession(name="w", queue="default", threads=2, lookahead=1, ports=self.ports, now=0)
        session.start(0)
        sent = self.ports.take()
        self.assertEqual(sent, [p.Hello(p.Role.WORKER, "w", "default", 2, held=[])])
        self.assertEqual(sent[0].held, [], "an empty list, not None: a worker always says what it holds")
        self.assertEqual(p.encode(sent[0])[6:], [b""], "held goes as an empty 5th argument frame")

    def test_a_welcome_grants_one_credit_per_slot_and_a_second_grants_nothing(self) -> None:
        session = self.registered(threads=2, lookahead=1)
        self.assertEqual(self.ports.take(), [p.Credit(3)])
        session.received(welcome(), 2)
        self.assertEqual(self.ports.take(), [], "two hellos crossed in flight: no second grant")

    def test_deliveries_past_the_credit_are_run_and_their_slots_not_granted_again(self) -> None:
        session = self.registered(threads=1, lookahead=0)
        self.ports.take()
        session.received(p.Deliver([delivery(1), delivery(2)]), 2)
        self.assertEqual(self.ports.queued, [delivery(1), delivery(2)])
        self.assertEqual(self.ports.take(), [], "no hand-back: it would stop the broker sending work")
        session.finished([success(delivery(1))], 3)
        self.assertEqual(self.ports.take(), [p.Done(0, [success(delivery(1))])], "still at capacity: no credit")
        session.finished([success(delivery(2))], 4)
        self.assertEqual(self.ports.take(), [p.Done(1, [success(delivery(2))])])

    def test_deliveries_while_draining_are_handed_back(self) -> None:
        session = self.registered()
        session.drain("SIGTERM", 1000, 2)
        self.ports.take()
        session.received(p.Deliver([delivery(3)]), 3)
        self.assertEqual(self.ports.take(), [p.HandBack([p.Ref(delivery(3).id, 1)])])
        self.assertEqual(self.ports.queued, [])

    def test_outcomes_carry_the_credit_they_free(self) -> None:
        session = self.registered()
        self.ports.take()
        session.received(p.Deliver([delivery(1), delivery(2)]), 2)
        session.finished([success(delivery(1)), success(delivery(2))], 3)
        self.assertEqual(self.ports.take(), [p.Done(2, [success(delivery(1)), success(delivery(2))])])

    def test_outcomes_wait_for_a_new_registration_which_grants_every_free_slot(self) -> None:
        session = self.registered()
        self.ports.take()
        session.received(p.Deliver([delivery(1)]), 2)
        session.received(p.Error(p.ErrorCode.UNKNOWN_PEER, "who?"), 3)
        self.assertEqual(self.ports.take(), [hello(held=[delivery(1)])])
        session.finished([success(delivery(1))], 4)
        self.assertEqual(self.ports.take(), [], "not registered: kept")
        session.received(welcome(), 5)
        self.assertEqual(self.ports.take(), [p.Done(0, [success(delivery(1))]), p.Credit(3)])

    def test_silence_past_the_brokers_liveness_registers_again(self) -> None:
        session = self.registered()
        self.ports.take()
        self.assertIsNone(session.timers(1001))
        self.assertEqual(self.ports.take(), [p.Heartbeat()], "a heartbeat after a quiet interval")
        self.assertIsNone(session.timers(3002))
        self.assertEqual(self.ports.take(), [hello()], "3000 ms from welcome's liveness-ms")

    def test_a_hello_after_silence_names_the_running_items_and_the_unsent_outcomes(self) -> None:
        session = self.registered(threads=2, lookahead=1)
        self.ports.take()
        session.received(p.Deliver([delivery(1), delivery(2), delivery(3, attempt=2)]), 2)
        self.ports.connected = False  # the connection dropped: outcomes cannot go out
        session.finished([success(delivery(2))], 3)
        self.assertEqual(session.unsent_outcomes, [success(delivery(2))])
        self.ports.connected = True
        self.assertIsNone(session.timers(3003))
        self.assertEqual(self.ports.take(), [hello(held=[delivery(1), delivery(3, attempt=2), delivery(2)])],
                         "running items first, then those whose outcome is unsent")
        session.received(welcome(), 3004)
        self.assertEqual(self.ports.take(), [p.Done(0, [success(delivery(2))]), p.Credit(1)])

    def test_a_hello_names_the_items_of_an_unsent_hand_back(self) -> None:
        session = self.registered(threads=1, lookahead=1)
        self.ports.take()
        session.received(p.Deliver([delivery(1), delivery(2)]), 2)
        self.ports.queued = [delivery(2)]  # the handler thread started item 1
        self.ports.connected = False
        session.drain("SIGTERM", 30_000, 3)
        self.ports.connected = True
        session.received(p.Error(p.ErrorCode.UNKNOWN_PEER, "who?"), 4)
        self.assertEqual(self.ports.take(), [hello(threads=1, held=[delivery(1), delivery(2)])])

    def test_deliveries_crossing_a_new_hello_are_neither_run_nor_handed_back(self) -> None:
        for draining in (False, True):
            with self.subTest(draining=draining):
                session = self.registered()
                if draining:
                    session.drain("SIGTERM", 30_000, 2)
                self.ports.take()
                session.received(p.Error(p.ErrorCode.UNKNOWN_PEER, "who?"), 3)
                self.assertEqual(self.ports.take(), [hello()])
                session.received(p.Deliver([delivery(5), delivery(6)]), 4)
                self.assertEqual(self.ports.queued, [], "the broker takes them back when it reads the hello")
                self.assertEqual(self.ports.take(), [])
                self.assertEqual(session.held, {})
                session.received(welcome(instance=2), 5)
                sent = self.ports.take()
                self.assertEqual(sent, [p.HandBack([])] if draining else [p.Credit(3)], "nothing of items 5 and 6")
                self.assertIsNone(session.timers(6))
                self.assertNotIn(p.HandBack([ref(delivery(5)), ref(delivery(6))]), self.ports.take())

    def test_drain_hands_back_unstarted_items_finishes_the_rest_and_says_goodbye(self) -> None:
        session = self.registered(threads=1, lookahead=1)
        self.ports.take()
        session.received(p.Deliver([delivery(1), delivery(2)]), 2)
        self.ports.queued = [delivery(2)]  # the handler thread started item 1
        session.drain("SIGTERM", 30_000, 3)
        self.assertEqual(self.ports.take(), [p.HandBack([p.Ref(delivery(2).id, 1)])])
        session.finished([success(delivery(1))], 4)
        self.assertEqual(self.ports.take(), [p.Done(0, [success(delivery(1))])], "no credit while draining")
        self.assertIsNone(session.timers(5))
        self.assertEqual(self.ports.take(), [p.Bye(p.ByeCode.DRAINED, "SIGTERM")])
        self.assertEqual(session.received(p.Bye(p.ByeCode.ACKNOWLEDGED, "ok"), 6), WorkerExit(p.ByeCode.DRAINED, "SIGTERM"))

    def test_deliveries_that_cross_the_goodbye_are_left_to_it(self) -> None:
        session = self.registered()
        session.drain("SIGTERM", 1000, 2)
        session.timers(3)
        self.assertEqual(self.ports.take()[-1], p.Bye(p.ByeCode.DRAINED, "SIGTERM"))
        session.received(p.Deliver([delivery(4)]), 4)
        self.assertEqual(self.ports.take(), [], "the broker returns them at the bye; a hand-back now would get error 3")

    def test_the_drain_deadline_hands_running_items_back(self) -> None:
        session = self.registered(threads=1, lookahead=0)
        self.ports.take()
        session.received(p.Deliver([delivery(7)]), 2)
        self.ports.queued = []
        session.drain("SIGTERM", 100, 3)
        self.assertEqual(self.ports.take(), [p.HandBack([])], "nothing unstarted: still tells the broker to stop")
        self.assertIsNone(session.timers(103))
        self.assertEqual(self.ports.take(), [p.HandBack([p.Ref(delivery(7).id, 1)]),
                                             p.Bye(p.ByeCode.DEADLINE_PASSED, "drain deadline passed")])
        session.finished([success(delivery(7))], 104)
        self.assertEqual(self.ports.take(), [], "a late outcome of a handed-back item is dropped")
        exit = session.received(p.Bye(p.ByeCode.ACKNOWLEDGED, "ok"), 105)
        self.assertEqual((exit.code, exit.abandoned, exit.exit_status), (p.ByeCode.DEADLINE_PASSED, 1, 3))

    def test_an_exiting_fleet_in_welcome_makes_a_new_worker_leave_at_once(self) -> None:
        self.ports = FakePorts()
        session = WorkerSession(name="w", queue="default", threads=2, lookahead=1, ports=self.ports, now=0)
        session.start(0)
        session.received(welcome(p.FleetState(5, p.Phase.EXITING, 1000)), 1)
        self.assertIsNone(session.timers(2))
        sent = self.ports.take()
        self.assertEqual(sent[-2:], [p.HandBack([]), p.Bye(p.ByeCode.DRAINED, "fleet exit (epoch 5, from the broker)")])
        self.assertNotIn(p.Credit(3), sent)

    def test_a_goodbye_goes_again_after_registering_again(self) -> None:
        session = self.registered()
        session.drain("SIGTERM", 1000, 2)
        session.timers(3)
        self.ports.take()
        session.received(p.Error(p.ErrorCode.UNKNOWN_PEER, "who?"), 4)
        session.received(welcome(instance=2), 5)
        sent = self.ports.take()
        self.assertEqual(sent[1:], [p.HandBack([]), p.Bye(p.ByeCode.DRAINED, "SIGTERM")],
                         "the new registration hears 'no more work', then the goodbye")

    def test_stop_now_says_goodbye_with_code_3(self) -> None:
        session = self.registered()
        self.ports.take()
        exit = session.stop_now(2)
        self.assertEqual(self.ports.take(), [p.Bye(p.ByeCode.STOPPED, "stopped at once")])
        self.assertEqual(exit.exit_status, 2)


if __name__ == "__main__":
    unittest.main()
