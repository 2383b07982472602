"""Keys: :class:`ClientKeys` and the handshake words on their own, then the Python producer
and worker against a real ``drover broker --key … --authorized-keys …`` (see ``harness``)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import List, Optional, Tuple
from unittest import mock

import zmq
import zmq.auth

from harness import Sandbox, eventually
from drover_client import BrokerRefused, BrokerUnreachable, ClientKeys, HandshakeRefused, KeyProblem, Producer
from drover_client.__main__ import main
from drover_client.keys import MECHANISM_MISMATCH, HandshakeWatch, Redial, describe_handshake_failure

REFUSED = "the broker refused this key (it is not in its --authorized-keys, or was revoked)"
REQUIRES = ("the broker requires keys: give this client --key (its secret certificate) and --broker-key "
            "(the broker's public one)")
NO_KEYS_THERE = ("the broker does not use keys, and this client was given --key: drop --key and --broker-key, "
                 "or give the broker its keys")
WRONG_SERVER_KEY = "the broker closed the connection during the handshake: its key does not match --broker-key"
LOOPBACK_ONLY = ("the broker refused this connection: without keys it admits loopback peers only "
                 "(use --key and --broker-key, or start it with --insecure)")


class ClientKeysTests(unittest.TestCase):
    """Certificates made by pyzmq (``zmq.auth.create_certificates``: NAME.key is the public one
    there, NAME.key_secret the secret one), so these run without the drover executable."""

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="drover-py-keys-"))
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.public, self.secret = zmq.auth.create_certificates(str(self.directory), "client")
        self.server_public, self.server_secret = zmq.auth.create_certificates(str(self.directory), "server")

    def write(self, name: str, text: str) -> str:
        path = self.directory / name
        path.write_text(text)
        return str(path)

    def problem(self, key: Optional[str], broker_key: Optional[str], **options: str) -> str:
        with self.assertRaises(KeyProblem) as raised:
            ClientKeys.from_options(key, broker_key, **options)
        self.assertIsInstance(raised.exception, ValueError, "a KeyProblem is a ValueError too")
        return str(raised.exception)

    def test_load_reads_the_own_pair_and_the_servers_public_key(self) -> None:
        keys = ClientKeys.load(self.secret, self.server_public)
        public, secret = zmq.auth.load_certificate(self.secret)
        server, _ = zmq.auth.load_certificate(self.server_public)
        self.assertEqual((keys.public_key, keys.secret_key, keys.server_key), (public, secret, server))
        self.assertEqual(ClientKeys.load(Path(self.secret), Path(self.server_secret)).server_key, server,
                         "a secret certificate as the broker key gives its public half; paths may be Path objects")
        self.assertNotIn(secret.decode(), repr(keys), "the secret key is never printed")

    def test_load_errors_name_the_file(self) -> None:
        missing = str(self.directory / "missing.key")
        self.assertEqual(self.problem(missing, self.server_public),
                         f"cannot read the certificate {missing} (make one with drover keygen)")
        self.assertEqual(self.problem(self.secret, missing),
                         f"cannot read the certificate {missing} (make one with drover keygen)")
        self.assertEqual(self.problem(str(self.directory), self.server_public),
                         f"cannot read the certificate {self.directory} (make one with drover keygen)")
        self.assertEqual(self.problem(self.public, self.server_public),
                         f"--key {self.public} is a public certificate; give this peer's secret one "
                         "(NAME.key, from drover keygen)")
        not_a_certificate = self.write("notes.txt", "hello\nworld\n")
        self.assertEqual(self.problem(self.secret, not_a_certificate),
                         f"{not_a_certificate}: no curve public-key; is it a ZeroMQ certificate (drover keygen makes them)?")
        short = self.write("short.key", 'curve\n    public-key = "abc"\n    secret-key = "def"\n')
        self.assertEqual(self.problem(short, self.server_public), f"{short}: the public-key is not 40 characters of Z85")
        public, _ = zmq.auth.load_certificate(self.public)
        bad_secret = self.write("bad-secret.key", f'curve\n    public-key = "{public.decode()}"\n    secret-key = "{"~" * 40}"\n')
        self.assertEqual(self.problem(bad_secret, self.server_public), f"{bad_secret}: the secret-key is not 40 characters of Z85")

    def test_both_or_neither(self) -> None:
        self.assertIsNone(ClientKeys.from_options(None, None))
        self.assertEqual(self.problem(self.secret, None),
                         "--key needs --broker-key too: the server's public certificate (its NAME.pub), "
                         "so that this peer knows it talks to the real one")
        self.assertEqual(self.problem(None, self.server_public),
                         "--broker-key needs --key too: this peer's own secret certificate (NAME.key from drover keygen)")
        self.assertEqual(self.problem(None, self.server_public, server_flag="--controller-key"),
                         "--controller-key needs --key too: this peer's own secret certificate (NAME.key from drover keygen)")
        self.assertIsInstance(ClientKeys.from_options(self.secret, self.server_public), ClientKeys)

    def test_apply_makes_a_curve_client(self) -> None:
        keys = ClientKeys.load(self.secret, self.server_public)
        context = zmq.Context()
        self.addCleanup(context.term)
        sock = context.socket(zmq.DEALER)
        self.addCleanup(sock.close, 0)
        keys.apply(sock)
        self.assertEqual(sock.getsockopt(zmq.MECHANISM), zmq.CURVE)
        self.assertEqual(sock.getsockopt(zmq.CURVE_SERVER), 0, "a client, not a server")

    def test_keys_given_directly_are_checked(self) -> None:
        keys = ClientKeys.load(self.secret, self.server_public)
        self.assertEqual(ClientKeys(keys.public_key.decode(), keys.secret_key.decode(), keys.server_key.decode()), keys,
                         "text keys are taken as their ASCII bytes")
        with self.assertRaises(KeyProblem):
            ClientKeys(keys.public_key, b"short", keys.server_key)


class HandshakeWordsTests(unittest.TestCase):
    def test_each_failure_in_the_swift_clients_words(self) -> None:
        auth, protocol, no_detail = (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                                     zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        self.assertEqual(describe_handshake_failure(auth, 400, uses_keys=True), REFUSED)
        self.assertEqual(describe_handshake_failure(auth, 400, uses_keys=False), LOOPBACK_ONLY)
        self.assertEqual(describe_handshake_failure(protocol, MECHANISM_MISMATCH, uses_keys=False), REQUIRES)
        self.assertEqual(describe_handshake_failure(protocol, MECHANISM_MISMATCH, uses_keys=True), NO_KEYS_THERE)
        self.assertEqual(describe_handshake_failure(protocol, 0x11000001, uses_keys=True),
                         "the handshake with the broker failed on a protocol error (code 11000001)")
        self.assertEqual(describe_handshake_failure(no_detail, 0, uses_keys=True), WRONG_SERVER_KEY)
        self.assertEqual(describe_handshake_failure(no_detail, 0, uses_keys=False),
                         "the broker closed the connection during the handshake")
        self.assertIsNone(describe_handshake_failure(zmq.EVENT_HANDSHAKE_SUCCEEDED, 0, uses_keys=True))
        self.assertIsNone(describe_handshake_failure(zmq.EVENT_DISCONNECTED, 0, uses_keys=True))
        self.assertEqual(MECHANISM_MISMATCH, 0x11000002)

    def test_the_watch_ends_the_wait_only_for_final_refusals(self) -> None:
        watch = HandshakeWatch(uses_keys=True)
        self.assertIsNone(watch.note(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 0), "a wrong broker key is retried")
        self.assertEqual(watch.last_failure, WRONG_SERVER_KEY, "but remembered for the timeout's message")
        self.assertIsNone(watch.note(zmq.EVENT_HANDSHAKE_SUCCEEDED, 0))
        self.assertIsNone(watch.last_failure, "a handshake that succeeds clears it")
        self.assertEqual(watch.note(zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400), REFUSED)
        self.assertEqual(watch.note(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, MECHANISM_MISMATCH), NO_KEYS_THERE)
        self.assertIsNone(watch.note(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, 0x11000001), "other protocol errors are not final")
        self.assertIsNone(watch.note(zmq.EVENT_DISCONNECTED, 0))

    def test_redial_once_two_seconds_after_a_refusal(self) -> None:
        redial = Redial()
        self.assertFalse(redial.due(10_000))
        redial.note(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 0)
        self.assertFalse(redial.due(10_000), "libzmq reconnects by itself after other failures")
        redial.note(zmq.EVENT_HANDSHAKE_FAILED_AUTH, 1000)
        self.assertFalse(redial.due(2999))
        self.assertTrue(redial.due(3000))
        self.assertFalse(redial.due(3001), "once per refusal")
        redial.note(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, 4000)
        self.assertTrue(redial.due(6000))


class KeyFlagsTests(unittest.TestCase):
    """The command line's ``--key``/``--broker-key`` rules, run in this process (they fail
    before anything connects)."""

    def run_main(self, argv: List[str], environment: Optional[dict] = None) -> Tuple[int, str]:
        err = io.StringIO()
        clean = {k: v for k, v in os.environ.items() if not k.startswith("DROVER_")}
        clean.update(environment or {})
        # basicConfig is patched out: it would send this process's logging to `err` for good.
        with mock.patch.dict(os.environ, clean, clear=True), contextlib.redirect_stderr(err), \
                mock.patch("logging.basicConfig"):
            status = main(argv)
        return status, err.getvalue()

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="drover-py-flags-"))
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.public, self.secret = zmq.auth.create_certificates(str(self.directory), "client")

    def test_send_wants_both_or_neither(self) -> None:
        status, err = self.run_main(["send", "--broker", "tcp://127.0.0.1:1", "--key", self.secret, "x"])
        self.assertEqual(status, 1)
        self.assertIn("error: --key needs --broker-key too", err)
        status, err = self.run_main(["send", "--broker", "tcp://127.0.0.1:1", "x"], {"DROVER_BROKER_KEY": self.public})
        self.assertEqual(status, 1)
        self.assertIn("error: --broker-key needs --key too", err, "DROVER_BROKER_KEY is --broker-key's default")
        status, err = self.run_main(["send", "--broker", "tcp://127.0.0.1:1", "--broker-key", self.public, "x"],
                                    {"DROVER_KEY": self.public})
        self.assertEqual(status, 1)
        self.assertIn(f"error: --key {self.public} is a public certificate", err, "DROVER_KEY is --key's default")

    def test_worker_checks_its_keys_before_importing_anything(self) -> None:
        status, err = self.run_main(["worker", "--broker", "tcp://127.0.0.1:1", "--key", self.secret, "no_such_module:f"])
        self.assertEqual(status, 1)
        self.assertIn("error: --key needs --broker-key too", err)
        status, err = self.run_main(["worker", "--broker", "tcp://127.0.0.1:1", "--key", self.secret, "--broker-key",
                                     self.public, "--controller-key", self.public, "no_such_module:f"])
        self.assertEqual(status, 1)
        self.assertIn("error: --controller-key is for --control", err)


class KeyedFleetTests(unittest.TestCase):
    """The Python producer and worker against ``drover broker --key … --authorized-keys …``."""

    def setUp(self) -> None:
        self.sandbox = Sandbox(self)
        self.broker_key, self.broker_pub = self.sandbox.keygen("broker", "broker")
        self.producer_key, producer_pub = self.sandbox.keygen("producer", "producer")
        self.worker_key, worker_pub = self.sandbox.keygen("worker", "worker")
        self.authorized = self.sandbox.directory / "authorized"
        self.authorized.mkdir()
        for public in (producer_pub, worker_pub):
            shutil.copy(public, self.authorized)

    def keyed_broker(self) -> Tuple["object", str]:
        return self.sandbox.broker(["--in-memory", "--key", self.broker_key, "--authorized-keys", str(self.authorized)])

    def producer_keys(self) -> ClientKeys:
        return ClientKeys.load(self.producer_key, self.broker_pub)

    def test_keyed_python_producer_and_worker_run_items_end_to_end(self) -> None:
        _, broker = self.keyed_broker()
        self.sandbox.python_worker("py-keyed", broker, "fleet_handlers:upper", ["--threads", "2", "--key", self.worker_key,
                                                                                "--broker-key", self.broker_pub])
        words = [f"word{n}" for n in range(200)]
        with Producer(broker, keys=self.producer_keys()) as producer:
            results = producer.send_and_wait(words, timeout=60)
        self.assertEqual([r.text for r in results], [w.upper() for w in words])
        self.assertEqual({r[2] for r in self.sandbox.ledger()}, {"py-keyed"})

        # The command line, its keys from the environment.
        sent = self.sandbox.start("send", [sys.executable, "-m", "drover_client", "send", "--broker", broker, "--wait",
                                           "cli", "keyed"],
                                  environment={"DROVER_KEY": self.producer_key, "DROVER_BROKER_KEY": self.broker_pub})
        self.assertEqual(sent.wait(60), 0, sent.stderr)
        self.assertEqual(sorted(line for line in sent.stdout.split("\n") if line), ["CLI", "KEYED"])

    def test_a_producer_whose_key_is_unknown_fails_at_once(self) -> None:
        _, broker = self.keyed_broker()
        stranger_key, _ = self.sandbox.keygen("stranger", "producer")
        started = time.monotonic()
        with self.assertRaises(HandshakeRefused) as raised:
            with Producer(broker, keys=ClientKeys.load(stranger_key, self.broker_pub), connect_timeout=30):
                pass
        self.assertLess(time.monotonic() - started, 10, "at once, not after the connect timeout")
        self.assertEqual(str(raised.exception), f"{REFUSED} ({broker})")

        # A key of another role is admitted, and its hello refused with error 5.
        with self.assertRaises(BrokerRefused) as raised:
            with Producer(broker, keys=ClientKeys.load(self.worker_key, self.broker_pub), connect_timeout=30):
                pass
        self.assertNotIsInstance(raised.exception, HandshakeRefused)
        self.assertIn("(not_allowed): a worker key may not say hello as a producer", str(raised.exception))

    def test_a_producer_without_keys_is_told_the_broker_requires_them(self) -> None:
        _, broker = self.keyed_broker()
        started = time.monotonic()
        with self.assertRaises(HandshakeRefused) as raised:
            with Producer(broker, connect_timeout=30):
                pass
        self.assertLess(time.monotonic() - started, 10, "at once, not after the connect timeout")
        self.assertEqual(str(raised.exception), f"{REQUIRES} ({broker})")

        sent = self.sandbox.start("send", [sys.executable, "-m", "drover_client", "send", "--broker", broker,
                                           "--timeout", "30", "x"])
        self.assertEqual(sent.wait(20), 1, sent.stderr)
        self.assertIn(f"error: {REQUIRES}", sent.stderr)

    def test_a_wrong_broker_key_or_keys_for_a_plain_broker_are_said_as_such(self) -> None:
        _, broker = self.keyed_broker()
        _, plain = self.sandbox.broker(["--in-memory"])
        with self.assertRaises(BrokerUnreachable) as raised:
            with Producer(broker, keys=ClientKeys.load(self.producer_key, self.producer_key), connect_timeout=1.5):
                pass
        self.assertEqual(str(raised.exception), f"no answer from the broker at {broker} within 1.5 s: {WRONG_SERVER_KEY}")

        started = time.monotonic()
        with self.assertRaises(HandshakeRefused) as raised:
            with Producer(plain, keys=self.producer_keys(), connect_timeout=30):
                pass
        self.assertLess(time.monotonic() - started, 10)
        self.assertEqual(str(raised.exception), f"{NO_KEYS_THERE} ({plain})")

    def test_a_worker_authorized_after_it_started_gets_in_after_sighup(self) -> None:
        broker_process, broker = self.keyed_broker()
        late_key, late_pub = self.sandbox.keygen("late", "worker")
        ready = self.sandbox.path("late.ready")
        worker = self.sandbox.start("late", [sys.executable, "-m", "drover_client", "worker", "--broker", broker,
                                             "--name", "late", "--ready-file", ready, "--threads", "2",
                                             "--key", late_key, "--broker-key", self.broker_pub, "fleet_handlers:upper"])
        self.assertTrue(eventually(lambda: REFUSED in worker.stderr or worker.exit_status is not None, 20),
                        f"the refusal is logged: {worker.stderr}")
        self.assertIsNone(worker.exit_status, f"the worker keeps trying: {worker.stderr}")
        self.assertIn(f"cannot register with the broker at {broker}: {REFUSED}; still trying", worker.stderr)
        self.assertFalse(os.path.exists(ready), "not registered")

        shutil.copy(late_pub, self.authorized)
        broker_process.signal(signal.SIGHUP)
        self.assertEqual(self.sandbox.wait_for_file(ready, worker, 30), ["late"], "registered once authorized")
        with Producer(broker, keys=self.producer_keys()) as producer:
            results = producer.send_and_wait(["after", "sighup"], timeout=30)
        self.assertEqual([r.text for r in results], ["AFTER", "SIGHUP"])
        self.assertEqual({r[2] for r in self.sandbox.ledger()}, {"late"})

        worker.signal(signal.SIGTERM)
        self.assertEqual(worker.wait(20), 0, worker.stderr)


if __name__ == "__main__":
    unittest.main()
