"""Runs real processes for one test — the Swift ``drover`` executable (``$DROVER_BIN``, default
``.build/debug/drover``) and Python workers (``python3 -m drover_client worker``) — each with
its output in files of the test's own directory, and kills every one when the test ends
(``addCleanup``, so also on failure).

Ports are chosen by the OS: every listener binds ``tcp://127.0.0.1:*`` (port 0) and the
process writes the endpoint it got to its ready file, which the test reads, so parallel runs
never collide. Nothing here sleeps to synchronise: waits are on a ready file, a process's exit,
or a condition polled until a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

TESTS = Path(__file__).resolve().parent
CLIENT = TESTS.parent
REPOSITORY = CLIENT.parent.parent
if str(CLIENT) not in sys.path:
    sys.path.insert(0, str(CLIENT))


def drover_bin() -> Path:
    """``$DROVER_BIN``, relative to the current directory (the repository, when the suite runs
    as documented) or else to the repository."""
    configured = Path(os.environ.get("DROVER_BIN", ".build/debug/drover"))
    if configured.is_absolute() or configured.exists():
        return configured.resolve()
    return (REPOSITORY / configured).resolve()


def require_drover(test: unittest.TestCase) -> Path:
    """The drover executable; the test is skipped (saying why) when it does not exist."""
    path = drover_bin()
    if not os.access(path, os.X_OK):
        test.skipTest(f"no drover executable at {path} (set DROVER_BIN)")
    return path


def eventually(condition: Callable[[], bool], seconds: float, every: float = 0.02) -> bool:
    """Polls ``condition`` until it holds or ``seconds`` pass; returns whether it held."""
    limit = time.monotonic() + seconds
    while True:
        if condition():
            return True
        if time.monotonic() >= limit:
            return False
        time.sleep(every)


class Finished(NamedTuple):
    status: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> List[str]:
        return [line for line in self.stdout.split("\n") if line]


class Process:
    """One child process, its stdout and stderr in files."""

    def __init__(self, name: str, argv: Sequence[str], directory: Path, stdin: Optional[str],
                 environment: Dict[str, str]) -> None:
        self.name = name
        self.stdout_path = directory / f"{name}.stdout"
        self.stderr_path = directory / f"{name}.stderr"
        stdin_handle = subprocess.DEVNULL
        if stdin is not None:
            stdin_path = directory / f"{name}.stdin"
            stdin_path.write_text(stdin)
            stdin_handle = open(stdin_path, "rb")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(list(argv), stdin=stdin_handle, stdout=out, stderr=err,
                                          env=environment, cwd=directory)
        if stdin is not None:
            stdin_handle.close()  # type: ignore[union-attr]

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def exit_status(self) -> Optional[int]:
        return self.popen.poll()

    def wait(self, seconds: float) -> Optional[int]:
        """The exit status, or ``None`` when still running after ``seconds``."""
        try:
            return self.popen.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, number: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(number)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


class Sandbox:
    """Processes and files for one test; torn down by the test's cleanup."""

    def __init__(self, test: unittest.TestCase) -> None:
        self.test = test
        self.drover = require_drover(test)
        self.directory = Path(tempfile.mkdtemp(prefix=f"drover-py-{test.id().rsplit('.', 1)[-1]}-"))
        self.processes: List[Process] = []
        self.counter = 0
        test.addCleanup(self.tear_down)

    def tear_down(self) -> None:
        for process in reversed(self.processes):
            process.kill()
        if os.environ.get("DROVER_KEEP_TEST_FILES") != "1":
            shutil.rmtree(self.directory, ignore_errors=True)

    def path(self, name: str) -> str:
        return str(self.directory / name)

    def environment(self) -> Dict[str, str]:
        """This process's environment without ``DROVER_*`` settings (every drover flag can
        come from one), with the client and the tests' handlers importable."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DROVER_") and k not in ("XDG_STATE_HOME", "STATE_DIRECTORY")}
        # A home of the test's own, so a broker's default data directory is the test's.
        env["HOME"] = str(self.directory)
        env["PYTHONPATH"] = os.pathsep.join([str(CLIENT), str(TESTS)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, name: str, argv: Sequence[str], stdin: Optional[str] = None,
              environment: Optional[Dict[str, str]] = None) -> Process:
        env = self.environment()
        env.update(environment or {})
        process = Process(name, argv, self.directory, stdin, env)
        self.processes.append(process)
        return process

    def run_drover(self, arguments: Sequence[str], stdin: Optional[str] = None, timeout: float = 60) -> Finished:
        """Runs ``drover ARGUMENTS…`` to its end; fails the test if it takes over ``timeout`` s."""
        self.counter += 1
        process = self.start(f"run-{self.counter}", [str(self.drover), *arguments], stdin=stdin)
        status = process.wait(timeout)
        if status is None:
            process.kill()
            self.test.fail(f"drover {' '.join(arguments)} did not finish within {timeout} s; stderr: {process.stderr}")
        return Finished(status, process.stdout, process.stderr)

    def wait_for_file(self, path: str, process: Process, seconds: float = 30) -> List[str]:
        """Waits for a ready file (the event), failing early if its process dies."""
        lines: List[str] = []

        def ready() -> bool:
            nonlocal lines
            if os.path.exists(path):
                lines = Path(path).read_text().split()
                return bool(lines)
            if process.exit_status is not None:
                raise AssertionError(f"{process.name} exited with {process.exit_status} before it was ready: {process.stderr}")
            return False
        if not eventually(ready, seconds):
            self.test.fail(f"{process.name} was not ready within {seconds} s: {process.stderr}")
        return lines

    # MARK: Roles

    def broker(self, extra: Sequence[str] = (), bind: str = "tcp://127.0.0.1:*") -> Tuple[Process, str]:
        """A broker on an OS-chosen port (or ``bind``); returns it and its endpoint once it listens."""
        self.counter += 1
        ready = self.path(f"broker-{self.counter}.ready")
        process = self.start(f"broker-{self.counter}", [str(self.drover), "broker", "--bind", bind, "--ready-file", ready, *extra])
        return process, self.wait_for_file(ready, process)[0]

    def controller(self, broker: str) -> Tuple[Process, str, str]:
        """A controller; returns it, its publish endpoint and its command endpoint."""
        ready = self.path("controller.ready")
        process = self.start("controller", [str(self.drover), "controller", "--broker", broker, "--publish", "tcp://127.0.0.1:*",
                                            "--bind", "tcp://127.0.0.1:*", "--ready-file", ready])
        publish, commands = self.wait_for_file(ready, process)[:2]
        return process, publish, commands

    def swift_worker(self, name: str, broker: str, extra: Sequence[str], control: Optional[str] = None) -> Process:
        """A ``drover worker``, once registered with the broker."""
        ready = self.path(f"{name}.ready")
        argv = [str(self.drover), "worker", "--broker", broker, "--name", name, "--ready-file", ready]
        if control:
            argv += ["--control", control]
        process = self.start(name, argv + list(extra))
        self.wait_for_file(ready, process)
        return process

    def python_worker(self, name: str, broker: str, handler: str, extra: Sequence[str] = (),
                      control: Optional[str] = None, environment: Optional[Dict[str, str]] = None) -> Process:
        """A ``python3 -m drover_client worker`` running ``handler`` (from ``fleet_handlers``),
        once registered with the broker."""
        ready = self.path(f"{name}.ready")
        argv = [sys.executable, "-m", "drover_client", "worker", "--broker", broker, "--name", name, "--ready-file", ready]
        if control:
            argv += ["--control", control]
        process = self.start(name, argv + list(extra) + [handler], environment=environment)
        self.wait_for_file(ready, process)
        return process

    def keygen(self, name: str, role: str, directory: str = "keys") -> Tuple[str, str]:
        """``drover keygen NAME --role ROLE`` into ``directory`` of the sandbox (made if
        missing); returns the paths of NAME.key (secret) and NAME.pub."""
        path = self.directory / directory
        path.mkdir(exist_ok=True)
        made = self.run_drover(["keygen", name, "--role", role, "--dir", str(path)], timeout=30)
        self.test.assertEqual(made.status, 0, made.stderr)
        return str(path / f"{name}.key"), str(path / f"{name}.pub")

    def status(self, broker: str) -> dict:
        """The broker's books (``drover status --json``)."""
        finished = self.run_drover(["status", "--broker", broker, "--json"], timeout=30)
        self.test.assertEqual(finished.status, 0, finished.stderr)
        return json.loads(finished.stdout)

    def ledger(self, name: str = "ledger") -> List[List[str]]:
        """The lines handlers appended to the ledger file, split into words."""
        path = Path(self.path(name))
        return [line.split() for line in path.read_text().splitlines() if line] if path.exists() else []


def kill_hard(process: Process) -> None:
    """SIGKILL, and reap it."""
    process.signal(signal.SIGKILL)
    process.wait(10)
