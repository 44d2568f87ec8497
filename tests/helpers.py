"""Helpers shared by the test modules (``from tests.helpers import ...``): waiting for a state the server
or a background task reaches on its own schedule, the server's view of a client's connections and
sockets, the event loops the async tests run on, and web servers started as subprocesses."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pymongo import MongoClient

T = TypeVar("T")

# Generous: a busy machine must slow the async tests down, not fail them.
PATIENT = {"serverSelectionTimeoutMS": 30000, "connectTimeoutMS": 20000}

# The event loops the async tests run on: asyncio's, and uvloop's where it is installed.
LOOPS = ["asyncio"]
try:
    import uvloop  # noqa: F401

    LOOPS.append("uvloop")
except ImportError:
    pass


def run(coro: Awaitable[T], loop: str = "asyncio") -> T:
    """Runs ``coro`` to completion on a new event loop of the kind ``loop`` (one of ``LOOPS``)."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coro)  # type: ignore[no-any-return]
    return asyncio.run(coro)  # type: ignore[arg-type]


def _settled(value: Any, deadline: float, timeout: float, what: str) -> bool:
    """Whether a poll that returned ``value`` ends the wait; fails the test once ``deadline`` is past."""
    if value:
        return True
    if time.monotonic() > deadline:
        pytest.fail(f"timed out after {timeout}s waiting for {what} (last value: {value!r})")
    return False


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Polls ``predicate`` until it returns a truthy value, which it returns; fails the test naming
    ``what`` after ``timeout`` seconds. Blocking: it runs no event loop."""
    deadline = time.monotonic() + timeout
    while not _settled(value := predicate(), deadline, timeout, what):
        time.sleep(every)
    return value


async def eventually(
    predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition", every: float = 0.05
) -> Any:
    """``wait_until`` for a coroutine: the event loop runs between polls."""
    deadline = time.monotonic() + timeout
    while not _settled(value := predicate(), deadline, timeout, what):
        await asyncio.sleep(every)
    return value


def app_connections(client: MongoClient, app_name: str) -> int:
    """The server's connections (pooled and monitoring) opened by clients with this appName."""
    ops = client.admin.aggregate(
        [{"$currentOp": {"allUsers": True, "idleConnections": True}}, {"$match": {"appName": app_name}}]
    )
    return len(list(ops))


def wait_app_connections(
    client: MongoClient, app_name: str, expected: Callable[[int], bool], timeout: float, what: str
) -> int:
    """Polls the appName's connection count until ``expected(count)``; returns the count."""
    last: list[int] = []

    def check() -> bool:
        last[:] = [app_connections(client, app_name)]
        return expected(last[0])

    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out after {timeout}s waiting for {what}: {last[0]} connections from {app_name!r}"
            )
        time.sleep(0.1)
    return last[0]


def socket_inodes(pid: int | str = "self") -> set[int]:
    """Inodes of the sockets open in a process, from /proc/<pid>/fd."""
    out = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def tcp_inode_of_local_port(port: int) -> int | None:
    """The inode of this network namespace's established TCP socket bound locally to ``port`` (TIME_WAIT
    leftovers of earlier connections on the same port have inode 0 and are skipped)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local = fields[1]
                    if int(local.rsplit(":", 1)[1], 16) == port and fields[3] == "01" and int(fields[9]):
                        return int(fields[9])
        except OSError:
            continue
    return None


class ServerProcess:
    """A web server run as a subprocess that logs to ``log``. It is started on port 0 (the kernel picks a
    free port and the server logs it, so no other process can take it between choosing and binding);
    ``url`` is set once the log shows the ``listening`` line, whose group 1 is the port."""

    def __init__(
        self, name: str, argv: list[str], listening: str, log: Path, env: dict[str, str], cwd: Path
    ) -> None:
        self.name = name
        self.log = log
        self._listening = re.compile(listening)
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        port = wait_until(self._port, 30, f"{name} to listen")
        self.url = f"http://127.0.0.1:{port}"

    def _port(self) -> int | None:
        if self.proc.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.output()}")
        m = self._listening.search(self.output())
        return int(m.group(1)) if m else None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@contextmanager
def profiled(client: MongoClient, db_name: str) -> Iterator[Any]:
    """Profiles every command on ``db_name`` (level 2) while the block runs; yields ``system.profile``."""
    db = client[db_name]
    db.command("profile", 0)
    db.system.profile.drop()
    db.command("profile", 2)
    try:
        yield db.system.profile
    finally:
        db.command("profile", 0)


def block(client: MongoClient, app: str, ms: int) -> None:
    """Holds every `find` of `app` for `ms` on the server (failCommand blockConnection)."""
    client.admin.command(
        "configureFailPoint",
        "failCommand",
        mode="alwaysOn",
        data={"failCommands": ["find"], "blockConnection": True, "blockTimeMS": ms, "appName": app},
    )


def run_concurrently(manager: Any, tenant: str, n: int) -> list[BaseException]:
    errors: list[BaseException] = []

    def op() -> None:
        try:
            manager.get_database(tenant).c.find_one()
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=op) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return errors
