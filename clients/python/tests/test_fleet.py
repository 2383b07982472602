"""Black-box tests: the Python producer and worker against the real Swift broker, workers,
controller and CLI, launched as separate processes on loopback (see ``harness``)."""

from __future__ import annotations

import collections
import json
import signal
import sys
import unittest
from typing import Dict, List

import zmq

from harness import Sandbox, eventually, kill_hard
from drover_client import BrokerUnreachable, Producer, Result
from drover_client import protocol as p


def upper(texts: List[str]) -> List[str]:
    return [t.upper() for t in texts]


class PythonProducerTests(unittest.TestCase):
    def test_python_producer_to_swift_workers_gets_every_result_once(self) -> None:
        sandbox = Sandbox(self)
        _, broker = sandbox.broker()
        echo1 = sandbox.swift_worker("echo1", broker, ["--threads", "2", "--echo"])
        echo2 = sandbox.swift_worker("echo2", broker, ["--threads", "2", "--echo"])
        sandbox.swift_worker("shout", broker, ["--queue", "shout", "--threads", "2", "--exec", "tr a-z A-Z"])

        items = [f"item-{n}" for n in range(2000)]
        with Producer(broker) as producer:
            results = producer.send_and_wait(items, timeout=60)
            self.assertEqual([r.text for r in results], items, "results in input order, each its item's echo")
            self.assertTrue(all(r.succeeded for r in results))
            self.assertEqual(len({r.id for r in results}), len(items), "one id per item")

            words = [f"word{n}" for n in range(30)]
            ids = producer.submit(words, queue="shout")
            streamed: Dict[bytes, Result] = {}
            for result in producer.results(timeout=30):
                self.assertNotIn(result.id, streamed, "each result arrives once")
                streamed[result.id] = result
            self.assertEqual(set(streamed), set(ids))
            self.assertEqual([streamed[i].text for i in ids], upper(words), "the --exec handler's output")

            fire_and_forget = producer.submit([f"quiet-{n}" for n in range(100)], want_results=False)
            self.assertEqual(producer.wait_accepted(timeout=30), {}, "every item accepted")
            self.assertEqual(len(fire_and_forget), 100)
            self.assertEqual(producer.unfinished, 0)

        executed = [line for line in echo1.stdout.split("\n") + echo2.stdout.split("\n") if line.startswith("item-")]
        self.assertEqual(collections.Counter(executed), collections.Counter(items), "every item ran exactly once")
        self.assertTrue(echo1.stdout and echo2.stdout, "both workers took part")

    def test_python_send_cli_prints_each_result(self) -> None:
        sandbox = Sandbox(self)
        _, broker = sandbox.broker()
        sandbox.swift_worker("shout", broker, ["--threads", "2", "--exec", "tr a-z A-Z"])
        words = [f"line{n}" for n in range(40)]
        sent = sandbox.start("send", [sys.executable, "-m", "drover_client", "send", "--broker", broker, "--wait"],
                             stdin="\n".join(words) + "\n\n")
        self.assertEqual(sent.wait(60), 0, sent.stderr)
        self.assertEqual(sorted(line for line in sent.stdout.split("\n") if line), sorted(upper(words)))
        self.assertIn("40 items: 40 accepted", sent.stderr)
        self.assertIn("40 succeeded, 0 failed", sent.stderr)

        queued = sandbox.start("send-queued", [sys.executable, "-m", "drover_client", "send", "--broker", broker,
                                               "--queue", "later", "a", "b", "c"])
        self.assertEqual(queued.wait(30), 0, queued.stderr)
        self.assertEqual(queued.stdout, "", "without --wait nothing is printed on stdout")
        self.assertEqual({q["name"]: q["queued"] for q in sandbox.status(broker)["queues"]}.get("later"), 3)

    def test_item_timeout_reaches_a_swift_worker_that_has_none(self) -> None:
        sandbox = Sandbox(self)
        _, broker = sandbox.broker(["--max-deliveries", "1"])
        sandbox.swift_worker("sleepy", broker, ["--threads", "2", "--exec", 'read l; [ "$l" = slow ] && sleep 60; echo "$l"'])
        with Producer(broker, item_timeout=0.5) as producer:
            results = producer.send_and_wait(["slow", "quick"], timeout=60)
        self.assertEqual([r.succeeded for r in results], [False, True])
        self.assertIn("timed out after 0.5 s (send --item-timeout)", results[0].text)
        with self.assertRaises(ValueError):
            Producer(broker, item_timeout=0)

    def test_an_unreachable_broker_is_reported_by_address(self) -> None:
        sandbox = Sandbox(self)
        # A port that was free a moment ago and has nobody listening now.
        process, endpoint = sandbox.broker()
        kill_hard(process)
        producer = Producer(endpoint, connect_timeout=0.5)
        self.addCleanup(producer.close)
        with self.assertRaises(BrokerUnreachable) as caught:
            producer.connect()
        self.assertIn(f"cannot reach the broker at {endpoint}", str(caught.exception))

    def test_producer_offers_unfinished_items_again_after_a_broker_restart(self) -> None:
        sandbox = Sandbox(self)
        first, endpoint = sandbox.broker()
        items = [f"keep-{n}" for n in range(50)]
        with Producer(endpoint, reconnect_timeout=30) as producer:
            before = producer.welcome
            ids = producer.submit(items)
            self.assertEqual(producer.wait_accepted(timeout=20), {}, "queued: no worker yet")
            kill_hard(first)  # the broker forgets everything it held
            sandbox.broker(bind=endpoint)
            sandbox.swift_worker("echo", endpoint, ["--threads", "2", "--echo"])
            got = {r.id: r for r in producer.results(timeout=30)}
            self.assertNotEqual(producer.welcome.instance, before.instance, "a new broker process answered")
        self.assertEqual(set(got), set(ids))
        self.assertEqual([got[i].text for i in ids], items, "every item completed on the new broker")


class PythonWorkerTests(unittest.TestCase):
    def test_swift_producer_to_python_workers(self) -> None:
        sandbox = Sandbox(self)
        _, broker = sandbox.broker()
        workers = [sandbox.python_worker(f"py{n}", broker, "fleet_handlers:upper", ["--threads", "4"]) for n in (1, 2)]
        words = [f"word{n}" for n in range(1000)]
        sent = sandbox.run_drover(["send", "--broker", broker, "--wait"], stdin="\n".join(words) + "\n", timeout=60)
        self.assertEqual(sent.status, 0, sent.stderr)
        self.assertEqual(collections.Counter(sent.lines), collections.Counter(upper(words)), "every result once")

        runs = sandbox.ledger()
        self.assertEqual(collections.Counter(r[0] for r in runs), collections.Counter(words), "every item ran once")
        self.assertEqual({r[2] for r in runs}, {"py1", "py2"}, "both workers took part")

        for worker in workers:
            worker.signal(signal.SIGTERM)
        for worker in workers:
            self.assertEqual(worker.wait(20), 0, worker.stderr)
        departed = {d["name"]: d for d in sandbox.status(broker)["departed"]}
        for name in ("py1", "py2"):
            self.assertEqual(departed[name]["how"], "bye", f"{name} said goodbye and was acknowledged")
            self.assertEqual(departed[name]["reason"], "SIGTERM")

    def test_failures_are_retried_then_dead_lettered_with_their_attempts(self) -> None:
        sandbox = Sandbox(self)
        _, broker = sandbox.broker(["--max-deliveries", "3", "--retry-base-ms", "20", "--retry-max-ms", "100"])
        sandbox.python_worker("flaky", broker, "fleet_handlers:flaky", ["--threads", "2"])
        items = ["good-1", "bad-1", "good-2", "bad-2"]
        with Producer(broker) as producer:
            results = producer.send_and_wait(items, timeout=60)
        by_item = dict(zip(items, results))
        for good in ("good-1", "good-2"):
            self.assertTrue(by_item[good].succeeded)
            self.assertEqual(by_item[good].text, good)
        for bad in ("bad-1", "bad-2"):
            self.assertFalse(by_item[bad].succeeded)
            self.assertTrue(by_item[bad].error.startswith("dead-lettered after 3 failed deliveries"), by_item[bad].error)
            self.assertIn(f"cannot handle {bad}", by_item[bad].error, "the handler's exception text")

        attempts: Dict[str, List[int]] = collections.defaultdict(list)
        for text, attempt, _ in sandbox.ledger():
            attempts[text].append(int(attempt))
        self.assertEqual(sorted(attempts["bad-1"]), [1, 2, 3])
        self.assertEqual(sorted(attempts["bad-2"]), [1, 2, 3])
        self.assertEqual(attempts["good-1"], [1])

        listed = sandbox.run_drover(["dlq", "list", "--broker", broker, "--json"])
        self.assertEqual(listed.status, 0, listed.stderr)
        dead = json.loads(listed.stdout)
        self.assertEqual(sorted(d["id"] for d in dead), sorted(by_item[b].id.hex() for b in ("bad-1", "bad-2")))
        for letter in dead:
            self.assertEqual((letter["attempts"], letter["failures"]), (3, 3))
            self.assertIn("cannot handle bad-", letter["lastError"])
        counters = sandbox.status(broker)["counters"]
        self.assertEqual((counters["completed"], counters["deadLettered"], counters["retried"]), (2, 2, 4))

    def test_a_worker_killed_mid_run_loses_nothing_and_completes_nothing_twice(self) -> None:
        sandbox = Sandbox(self)
        _, broker = sandbox.broker(["--heartbeat-ms", "200", "--liveness", "3"])
        victim = sandbox.python_worker("victim", broker, "fleet_handlers:slow_upper", ["--threads", "4"])
        sandbox.python_worker("survivor", broker, "fleet_handlers:slow_upper", ["--threads", "4"])
        words = [f"w{n}" for n in range(300)]
        got: Dict[bytes, Result] = {}
        killed_at = None
        with Producer(broker) as producer:
            ids = producer.submit(words)
            for result in producer.results(timeout=30):
                self.assertNotIn(result.id, got, "no item completes twice")
                got[result.id] = result
                if len(got) == 40:
                    kill_hard(victim)
                    killed_at = len(got)
        self.assertEqual(killed_at, 40)
        self.assertEqual(set(got), set(ids), "every item completed")
        self.assertEqual([got[i].text for i in ids], upper(words))
        self.assertTrue(all(r.succeeded for r in got.values()))

        books = sandbox.status(broker)
        self.assertEqual(books["counters"]["completed"], 300, "the broker completed each item once")
        self.assertGreaterEqual(books["counters"]["redelivered"], 1, "the victim's items were redelivered")
        departed = {d["name"]: d["how"] for d in books["departed"]}
        self.assertIn(departed.get("victim"), ("silent", "unreachable"), "declared dead, not departed with a goodbye")
        victim_runs = [r for r in sandbox.ledger() if r[2] == "victim"]
        self.assertGreater(len(victim_runs), 0, "the victim was running items when it was killed")

    def test_a_python_worker_registers_again_with_a_restarted_broker(self) -> None:
        sandbox = Sandbox(self)
        first, broker = sandbox.broker(["--heartbeat-ms", "200"])
        worker = sandbox.python_worker("py", broker, "fleet_handlers:upper", ["--threads", "2"])
        kill_hard(first)
        sandbox.broker(["--heartbeat-ms", "200"], bind=broker)
        sent = sandbox.run_drover(["send", "--broker", broker, "--wait", "after", "restart"], timeout=30)
        self.assertEqual(sent.status, 0, sent.stderr)
        self.assertEqual(sorted(sent.lines), ["AFTER", "RESTART"])
        self.assertEqual({r[2] for r in sandbox.ledger()}, {"py"})
        self.assertIsNone(worker.exit_status)
        self.assertIn("registering again", worker.stderr)

    def test_a_second_signal_stops_at_once_and_the_broker_redelivers(self) -> None:
        sandbox = Sandbox(self)
        _, broker = sandbox.broker()
        worker = sandbox.python_worker("slow", broker, "fleet_handlers:sleepy", ["--threads", "1"],
                                       environment={"SLEEP_SECONDS": "20"})
        with Producer(broker) as producer:
            producer.submit(["long"], want_results=False)
            self.assertEqual(producer.wait_accepted(timeout=10), {})
        self.assertTrue(eventually(lambda: len(sandbox.ledger()) == 1, 10), "the item started")
        worker.signal(signal.SIGTERM)
        self.assertTrue(eventually(lambda: "draining" in worker.stderr, 10))
        self.assertIsNone(worker.exit_status, "a drain waits for the running item")
        worker.signal(signal.SIGINT)
        self.assertEqual(worker.wait(10), 2, "exit status 2: stopped at once")
        books = sandbox.status(broker)
        departed = {d["name"]: d for d in books["departed"]}
        self.assertEqual((departed["slow"]["how"], departed["slow"].get("byeCode")), ("bye", 3))
        self.assertEqual(books["queues"][0]["queued"], 1, "its item is back in the queue at once")

    def test_drain_deadline_hands_running_items_back(self) -> None:
        sandbox = Sandbox(self)
        _, broker = sandbox.broker()
        worker = sandbox.python_worker("slow", broker, "fleet_handlers:sleepy",
                                       ["--threads", "1", "--drain-deadline", "0.3"], environment={"SLEEP_SECONDS": "20"})
        with Producer(broker) as producer:
            producer.submit(["long"], want_results=False)
            self.assertEqual(producer.wait_accepted(timeout=10), {})
        self.assertTrue(eventually(lambda: len(sandbox.ledger()) == 1, 10), "the item started")
        worker.signal(signal.SIGTERM)
        self.assertEqual(worker.wait(20), 3, "exit status 3: the deadline passed")
        books = sandbox.status(broker)
        departed = {d["name"]: d for d in books["departed"]}
        self.assertEqual((departed["slow"]["how"], departed["slow"].get("byeCode")), ("bye", 2))
        self.assertEqual(departed["slow"]["reason"], "drain deadline passed")
        self.assertEqual(books["queues"][0]["queued"], 1, "the running item went back to the queue")
        self.assertEqual(books["queues"][0]["leased"], 0)


class CoordinatedExitTests(unittest.TestCase):
    def test_exit_reaches_python_and_swift_workers_and_loses_nothing(self) -> None:
        sandbox = Sandbox(self)
        _, broker = sandbox.broker()
        _, publish, commands = sandbox.controller(broker)
        ledger = sandbox.path("ledger")
        workers = [
            sandbox.python_worker("py-control", broker, "fleet_handlers:slow_upper", ["--threads", "2"], control=publish),
            sandbox.python_worker("py-broker-only", broker, "fleet_handlers:slow_upper", ["--threads", "2"]),
            sandbox.swift_worker("swift", broker, ["--threads", "2", "--exec",
                                                   f'read x; echo "$x 1 swift" >> {ledger}; sleep 0.05; echo "$x"'],
                                 control=publish),
        ]
        total = 600
        sent = sandbox.run_drover(["send", "--broker", broker], stdin="\n".join(f"x{n}" for n in range(total)) + "\n")
        self.assertEqual(sent.status, 0, sent.stderr)
        self.assertTrue(eventually(lambda: len(sandbox.ledger()) >= 30, 20), "the fleet is busy")

        exit = sandbox.run_drover(["exit", "--controller", commands, "--deadline", "30"], timeout=60)
        self.assertEqual(exit.status, 0, exit.stdout + exit.stderr)
        self.assertIn("fleet exited: 3 workers confirmed", exit.stdout)
        for worker in workers:
            self.assertEqual(worker.wait(20), 0, f"{worker.name}: {worker.stderr}")

        books = sandbox.status(broker)
        queue = books["queues"][0]
        completed = books["counters"]["completed"]
        runs = [r[0] for r in sandbox.ledger()]
        self.assertEqual(len(runs), len(set(runs)), "no item ran twice")
        self.assertEqual(len(runs), completed, "every item started was finished and reported")
        self.assertEqual(queue["leased"], 0)
        self.assertEqual(completed + queue["queued"], total, "nothing lost: completed + queued = sent")
        self.assertGreater(queue["queued"], 0, "the exit came mid-run")
        departed = {d["name"]: d for d in books["departed"]}
        self.assertEqual({n: departed[n]["how"] for n in departed}, {w.name: "bye" for w in workers})
        self.assertEqual({d["name"] for d in books["departed"] if d["reason"].startswith("fleet exit")},
                         {w.name for w in workers}, "each learned of the exit (py-broker-only from the broker)")

        late = sandbox.python_worker("py-late", broker, "fleet_handlers:slow_upper")
        self.assertEqual(late.wait(15), 0, f"a worker joining an exiting fleet leaves at once: {late.stderr}")
        self.assertEqual(sandbox.status(broker)["queues"][0]["queued"], queue["queued"], "and takes nothing")


class WireTests(unittest.TestCase):
    """The protocol changes, spoken by hand to the real broker."""

    def setUp(self) -> None:
        self.sandbox = Sandbox(self)
        _, self.broker = self.sandbox.broker(["--heartbeat-ms", "200", "--liveness", "3"])
        self.context = zmq.Context()
        self.addCleanup(self.context.term)

    def dealer(self) -> zmq.Socket:
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.broker)
        self.addCleanup(sock.close)
        return sock

    def next(self, sock: zmq.Socket, kind: type) -> p.Message:
        """The next message of ``kind``, skipping heartbeats; fails after 5 s."""
        while sock.poll(5000):
            message = p.decode(sock.recv_multipart())
            if isinstance(message, kind):
                return message
            if not isinstance(message, p.Heartbeat):
                self.fail(f"expected {kind.__name__}, got {message}")
        self.fail(f"no {kind.__name__} within 5 s")

    def test_submit_before_hello_is_unknown_peer_and_bad_flags_are_malformed(self) -> None:
        sock = self.dealer()
        sock.send_multipart(p.encode(p.Submit("q", False, [p.Item(bytes(16), b"x")])))
        self.assertEqual(self.next(sock, p.Error).code, p.ErrorCode.UNKNOWN_PEER)
        sock.send_multipart(p.encode(p.Hello(p.Role.PRODUCER, "raw")))
        welcome = self.next(sock, p.Welcome)
        self.assertEqual((welcome.heartbeat_ms, welcome.liveness_ms), (200, 600), "liveness-ms = heartbeat × liveness")
        frames = p.encode(p.Submit("q", False, [p.Item(bytes(16), b"x")]))
        frames[3] = b"\x03"
        sock.send_multipart(frames)
        self.assertEqual(self.next(sock, p.Error).code, p.ErrorCode.MALFORMED)
        self.assertEqual(self.sandbox.status(self.broker)["counters"]["accepted"], 0, "neither submit was kept")

    def test_a_workers_bye_is_acknowledged_with_code_0(self) -> None:
        sock = self.dealer()
        sock.send_multipart(p.encode(p.Hello(p.Role.WORKER, "raw-worker", "default", 1)))
        self.next(sock, p.Welcome)
        sock.send_multipart(p.encode(p.HandBack([])))
        sock.send_multipart(p.encode(p.Bye(p.ByeCode.DRAINED, "done by hand")))
        self.assertEqual(self.next(sock, p.Bye).code, p.ByeCode.ACKNOWLEDGED)
        departed = {d["name"]: d for d in self.sandbox.status(self.broker)["departed"]}
        self.assertEqual(departed["raw-worker"]["how"], "bye")


if __name__ == "__main__":
    unittest.main()
