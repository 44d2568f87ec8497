"""Helpers shared by the reliability tests (imported as ``from ._util import ...``)."""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import pytest
from pymongo import MongoClient


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Polls ``predicate`` until it returns a truthy value; fails the test with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last value: {value!r})")
        time.sleep(every)


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
