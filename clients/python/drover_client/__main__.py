"""``python3 -m drover_client``: a worker running a Python function, and ``send`` (like
``drover send``).

::

    python3 -m drover_client worker --broker tcp://127.0.0.1:5555 --threads 4 mymodule:handle
    seq 1 100 | python3 -m drover_client send --broker tcp://127.0.0.1:5555 --wait
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import threading
from typing import Dict, Iterator, List, Optional

import zmq

from ._support import DroverError
from .keys import ClientKeys
from .producer import Producer, Result
from .worker import Handler, Worker


#: How :class:`Producer` words the failure of an item the broker (or the producer) refused.
REFUSAL_PREFIXES = ("refused by the broker:", "item is ")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m drover_client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default=os.environ.get("DROVER_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"], help="log level (stderr)")
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser("worker", help="run a worker whose handler is a Python function",
                                 description="Run a worker: MODULE:FUNCTION is called with a WorkItem (id, attempt, "
                                             "queue, payload, text) on each item and returns bytes, str or None; an "
                                             "exception fails the item. SIGTERM or Ctrl-C drains the worker (exit 0); "
                                             "a second one stops it at once (exit 2); exit 3 when the drain deadline passed.")
    worker.add_argument("--broker", required=True, help="the broker, e.g. tcp://127.0.0.1:5555")
    worker.add_argument("--control", help="the controller's publish endpoint, to hear fleet exit directly")
    worker.add_argument("--queue", default="default", help="the queue to serve (default: default)")
    worker.add_argument("--threads", type=int, default=2, help="handler threads (default 2)")
    worker.add_argument("--lookahead", type=int, default=1, help="items held ready beyond one per thread (default 1)")
    worker.add_argument("--name", help="name shown in logs and status (default HOST:PID)")
    worker.add_argument("--drain-deadline", type=float, default=30.0,
                        help="seconds a SIGTERM drain lets running items finish (default 30)")
    worker.add_argument("--ready-file", help="write the worker's name here once the broker has welcomed it")
    add_key_options(worker, controller=True)
    worker.add_argument("handler", metavar="MODULE:FUNCTION", help="the handler, e.g. mypackage.tasks:resize")

    send = commands.add_parser("send", help="send items (arguments, --file, or stdin lines)",
                               description="Send items: from the arguments, from --file (one per line) or from stdin "
                                           "(one per line; empty lines are skipped). Returns once the broker has "
                                           "accepted every item; with --wait, prints each result on stdout as it "
                                           "arrives (failures on stderr) and exits 1 if any item failed or was refused.")
    send.add_argument("--broker", required=True, help="the broker, e.g. tcp://127.0.0.1:5555")
    send.add_argument("--queue", default="default", help="the queue to send to (default: default)")
    send.add_argument("--wait", action="store_true", help="wait for each item's outcome and print it")
    send.add_argument("--file", help="read items from this file, one per line")
    send.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the broker's first answer")
    send.add_argument("--reconnect-timeout", type=float, default=60.0,
                      help="seconds to keep reconnecting to a broker that went away")
    send.add_argument("--item-timeout", type=float,
                      help="seconds each item may run once a worker starts it (a worker's own --item-timeout also applies; the smaller wins)")
    add_key_options(send, controller=False)
    send.add_argument("items", nargs="*", help="items to send; without items or --file, stdin is read")

    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "worker":
            return run_worker(args)
        return run_send(args)
    except (DroverError, ValueError, TimeoutError, ImportError, zmq.ZMQError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def add_key_options(command: argparse.ArgumentParser, controller: bool) -> None:
    """``--key`` and ``--broker-key`` (and a worker's ``--controller-key``), as ``drover`` has
    them, with the same environment defaults."""
    command.add_argument("--key", default=os.environ.get("DROVER_KEY") or None, metavar="FILE",
                         help="this peer's secret certificate (NAME.key from drover keygen), for a broker that uses "
                              "keys; give the broker's public certificate with --broker-key (env DROVER_KEY)")
    command.add_argument("--broker-key", default=os.environ.get("DROVER_BROKER_KEY") or None, metavar="FILE",
                         help="the broker's public certificate (its NAME.pub), with --key (env DROVER_BROKER_KEY)")
    if controller:
        command.add_argument("--controller-key", default=os.environ.get("DROVER_CONTROLLER_KEY") or None, metavar="FILE",
                             help="the controller's public certificate (its NAME.pub), for a controller that uses keys "
                                  "(with --control and --key; env DROVER_CONTROLLER_KEY)")


def load_handler(spec: str) -> Handler:
    """Imports ``MODULE:FUNCTION`` (the current directory is searched first)."""
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise ValueError(f"the handler is MODULE:FUNCTION, got {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    handler = module
    for part in function_name.split("."):
        handler = getattr(handler, part)
    if not callable(handler):
        raise ValueError(f"{spec} is not callable")
    return handler


def run_worker(args: argparse.Namespace) -> int:
    if not 1 <= args.threads <= 1024 or not 0 <= args.lookahead <= 10_000:
        raise ValueError("--threads must be between 1 and 1024 and --lookahead between 0 and 10000")
    keys = ClientKeys.from_options(args.key, args.broker_key)
    control_keys = None
    if args.controller_key is not None:
        if args.control is None:
            raise ValueError("--controller-key is for --control: give the controller's publish endpoint too")
        control_keys = ClientKeys.from_options(args.key, args.controller_key, server_flag="--controller-key")
    worker = Worker(args.broker, load_handler(args.handler), queue=args.queue, threads=args.threads,
                    lookahead=args.lookahead, control=args.control, name=args.name,
                    drain_deadline=args.drain_deadline, ready_file=args.ready_file, keys=keys,
                    control_keys=control_keys)
    exit = worker.run_with_signals()
    return exit.exit_status


def _lines(stream) -> Iterator[bytes]:  # type: ignore[no-untyped-def]
    for line in stream:
        line = line.rstrip(b"\n").rstrip(b"\r")
        if line:
            yield line


def run_send(args: argparse.Namespace) -> int:
    if args.file and args.items:
        raise ValueError("give items as arguments or with --file, not both")
    keys = ClientKeys.from_options(args.key, args.broker_key)
    if args.items:
        source: Iterator[bytes] = iter([item.encode("utf-8") for item in args.items])
        handle = None
    else:
        handle = open(args.file, "rb") if args.file else sys.stdin.buffer
        source = _lines(handle)

    producer = Producer(args.broker, queue=args.queue, connect_timeout=args.timeout, item_timeout=args.item_timeout,
                        reconnect_timeout=args.reconnect_timeout, keys=keys)
    numbers: Dict[bytes, int] = {}
    read_done = threading.Event()
    reader_error: List[BaseException] = []
    counts = {"succeeded": 0, "failed": 0}

    def reader() -> None:
        try:
            for payload in source:
                (item_id,) = producer.submit([payload], want_results=args.wait)
                numbers[item_id] = len(numbers) + 1
        except BaseException as error:  # reported by the main thread
            reader_error.append(error)
        finally:
            read_done.set()

    def emit(result: Result) -> None:
        if result.succeeded:
            counts["succeeded"] += 1
            out = sys.stdout.buffer
            out.write(result.payload if result.payload.endswith(b"\n") else result.payload + b"\n")
            out.flush()
        else:
            counts["failed"] += 1
            print(f"item {numbers.get(result.id, '?')} failed: {result.error}", file=sys.stderr, flush=True)

    try:
        producer.connect()
        thread = threading.Thread(target=reader, name="drover-send-reader", daemon=True)
        thread.start()
        refused: Dict[bytes, str] = {}
        if args.wait:
            while True:
                finished_reading = read_done.is_set()
                try:
                    for result in producer.results(timeout=0.2):
                        if not result.succeeded and result.error.startswith(REFUSAL_PREFIXES):
                            refused[result.id] = result.error
                            print(f"item {numbers.get(result.id, '?')} was not accepted: {result.error}",
                                  file=sys.stderr, flush=True)
                        else:
                            emit(result)
                except TimeoutError:
                    continue
                if finished_reading:
                    break
                read_done.wait(0.05)
        else:
            read_done.wait()
            if not reader_error:
                refused = producer.wait_accepted()
                for item_id, reason in sorted(refused.items(), key=lambda kv: numbers.get(kv[0], 0)):
                    print(f"item {numbers.get(item_id, '?')} was not accepted: {reason}", file=sys.stderr)
        if reader_error:
            raise reader_error[0]
    finally:
        producer.close()
        if handle is not None and handle is not sys.stdin.buffer:
            handle.close()

    total = len(numbers)
    line = f'{total} items: {total - len(refused)} accepted by {args.broker} on queue "{args.queue}"'
    if refused:
        line += f", {len(refused)} not accepted"
    if args.wait:
        line += f"; {counts['succeeded']} succeeded, {counts['failed']} failed"
    print(line, file=sys.stderr)
    return 1 if refused or counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
