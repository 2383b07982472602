"""Handlers the tests' Python workers run (``python3 -m drover_client worker fleet_handlers:NAME``).

Each appends ``TEXT ATTEMPT WORKER`` to the ledger file (``ledger`` in the worker's directory,
the test's sandbox) when it starts an item, so a test can count executions.
"""

from __future__ import annotations

import os
import time

from drover_client import WorkItem

LEDGER = os.environ.get("FLEET_LEDGER", "ledger")


def record(item: WorkItem) -> None:
    """Appends one line; O_APPEND keeps lines from several threads and processes whole."""
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{item.text} {item.attempt} {item.worker}\n".encode("utf-8"))
    finally:
        os.close(fd)


def upper(item: WorkItem) -> str:
    record(item)
    return item.text.upper()


def slow_upper(item: WorkItem) -> str:
    """50 ms of work per item."""
    record(item)
    time.sleep(0.05)
    return item.text.upper()


def flaky(item: WorkItem) -> bytes:
    """Fails every item whose text starts with "bad"."""
    record(item)
    if item.text.startswith("bad"):
        raise ValueError(f"cannot handle {item.text}")
    return item.payload


def sleepy(item: WorkItem) -> str:
    """Runs for SLEEP_SECONDS (default 10): longer than a short drain deadline."""
    record(item)
    time.sleep(float(os.environ.get("SLEEP_SECONDS", "10")))
    return item.text
