"""Process lifecycle: os.fork() of a process whose manager is in use (pre-fork servers such as gunicorn
--preload do this), and interpreter exit while threads are inside the manager.

In a forked child the core forgets the inherited pools (their sockets belong to the parent) and builds a
new tokio runtime. Each child reports over a pipe and leaves with os._exit; the parent kills it if it
does not finish in time, so a hang fails the test instead of blocking the run.
"""

from __future__ import annotations

import faulthandler
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback

import pytest
from tests.helpers import socket_inodes, tcp_inode_of_local_port

from tenantpool import UserConnectionManager

CHILD_TIMEOUT = 20
CHILD_WRITES = 40


def in_child(body, timeout: float = CHILD_TIMEOUT, gate: threading.Lock | None = None) -> dict:
    """Runs ``body()`` in a forked child and returns what it returned (a JSON-able dict), or
    {"hung": True, "stacks": ...} / {"error": ...}. The child never runs pytest's teardown: it always
    os._exit()s. ``gate``, if given, is held across the fork: threads that take it around their calls into
    the manager are then never inside it at the instant of the fork (see test_fork_while_other_threads...)."""
    r, w = os.pipe()
    trace_r, trace_w = os.pipe()
    pid = -1
    if gate is not None:
        gate.acquire()
    try:
        pid = os.fork()
    finally:
        if gate is not None and pid != 0:
            gate.release()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            os.close(r)
            signal.alarm(int(timeout) + 5)  # belt and braces: never outlive the parent's patience
            # Where the child's Python code is stuck, if it is, for the parent's report.
            faulthandler.dump_traceback_later(max(timeout - 1, 0.5), file=os.fdopen(trace_w, "w"))
            try:
                result = body()
            except BaseException as exc:
                result = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
            os.write(w, json.dumps(result).encode())
        except BaseException:
            code = 70
        finally:
            os._exit(code)
    os.close(w)
    os.close(trace_w)
    os.set_blocking(trace_r, False)
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    else:
        time.sleep(1.5)  # let faulthandler write the Python traceback
        try:
            # Most recent call first: the top lines say where it is stuck, the rest is pytest.
            python_trace = "\n".join(os.read(trace_r, 1 << 16).decode(errors="replace").splitlines()[:6])
        except BlockingIOError:
            python_trace = "(none)"
        stacks = native_stacks(pid)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        os.close(trace_r)
        return {"hung": True, "python": python_trace, "stacks": stacks}
    os.close(trace_r)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    if not data:
        return {"error": f"child exited with status {status} and no report"}
    out = json.loads(data)
    out["status"] = status
    return out


def native_stacks(pid: int) -> str:
    """Every thread's native stack of a hung child, via gdb, when TENANTPOOL_HANG_STACKS=1 (loading the
    extension's debug symbols takes gdb up to a minute, too slow for every run). Saved to a file too."""
    gdb = shutil.which("gdb")
    if os.environ.get("TENANTPOOL_HANG_STACKS") != "1" or not gdb:
        return "(set TENANTPOOL_HANG_STACKS=1, with gdb installed, for the native stacks)"
    try:
        out = subprocess.run(
            [gdb, "-p", str(pid), "-batch", "-ex", "thread apply all bt 40"],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"(gdb failed: {exc})"
    path = os.path.join(tempfile.gettempdir(), f"tenantpool-fork-hang-{pid}.txt")
    with open(path, "w") as f:
        f.write(out)
    return f"(full stacks in {path})\n" + out[-6000:]


def connection_inode(manager: UserConnectionManager, tenant: str) -> int | None:
    """The inode of the local socket carrying this tenant's next operation: the operation finds itself in
    $currentOp, whose `client` is our end's address. With user_pool_size=1 it is the tenant's only
    pooled connection."""
    token = f"whoami-{os.getpid()}-{time.monotonic_ns()}"
    ops = list(
        manager.get_platform_client(tenant).admin.aggregate(
            [{"$currentOp": {"allUsers": True}}, {"$match": {"command.comment": token}}], comment=token
        )
    )
    assert len(ops) == 1, ops
    port = int(ops[0]["client"].rsplit(":", 1)[1])
    return tcp_inode_of_local_port(port)


@pytest.fixture
def manager(mongodb_uri):
    with UserConnectionManager(mongodb_uri, user_pool_size=1, appName="tp-fork") as m:
        yield m


def test_manager_used_before_fork_works_in_child_and_shares_no_socket(manager, pymongo_client):
    for t in ("fk_old", "fk_par"):
        pymongo_client[f"user_{t}_db"].c.drop()
    pymongo_client["user_fk_new_db"].c.drop()
    old = manager.get_database("fk_old").c
    old.insert_one({"by": "parent", "phase": "before"})
    parent_inode_before = connection_inode(manager, "fk_old")

    # The parent keeps working on an inherited tenant and a tenant of its own while the child runs.
    stop = threading.Event()
    parent_errors: list[BaseException] = []
    parent_writes = {"fk_old": 0, "fk_par": 0}

    # The fork itself happens while the loader is between calls (as a pre-fork server forks from a master
    # with no request in flight); a fork *during* a call is test_fork_while_other_threads_are_inside_...
    gate = threading.Lock()

    def parent_load() -> None:
        while not stop.is_set():
            for t in parent_writes:
                try:
                    with gate:
                        manager.get_database(t).c.insert_one({"by": "parent", "phase": "during"})
                    parent_writes[t] += 1
                except BaseException as exc:
                    parent_errors.append(exc)
            time.sleep(0.005)

    loader = threading.Thread(target=parent_load, daemon=True)
    loader.start()

    def child() -> dict:
        inherited = socket_inodes()
        report: dict = {"inherited_sockets": len(inherited)}
        # A tenant the parent used (its pool is inherited, and must be forgotten) and a new one.
        # Long enough (~1 s) for the parent's writes to interleave with the child's.
        c_old, c_new = manager.get_database("fk_old").c, manager.get_database("fk_new").c
        for _ in range(CHILD_WRITES):
            c_old.insert_one({"by": "child"})
            c_new.insert_one({"by": "child"})
            time.sleep(0.02)
        report["old_count"] = c_old.count_documents({"by": "child"})
        report["new_doc"] = c_new.find_one({}, {"_id": 0})
        report["old_inode"] = connection_inode(manager, "fk_old")
        report["new_inode"] = connection_inode(manager, "fk_new")
        mine = socket_inodes()
        report["ops_on_inherited_socket"] = [
            i
            for i in (report["old_inode"], report["new_inode"])
            if i is None or i in inherited or i not in mine
        ]
        report["new_sockets"] = sorted(mine - inherited)
        report["stats"] = manager.get_stats()["active_users"]
        return report

    try:
        report = in_child(child, gate=gate)
    finally:
        stop.set()
        loader.join(10)
    assert not report.get("hung"), f"the forked child hung in\n{report['python']}\n{report['stacks']}"
    assert "error" not in report, report
    print(
        "fork child:",
        {k: report[k] for k in ("inherited_sockets", "old_inode", "new_inode", "new_sockets")},
        "parent writes during the child:",
        parent_writes,
    )
    assert report["status"] == 0
    assert report["old_count"] == CHILD_WRITES
    assert report["new_doc"] == {"by": "child"}
    assert report["ops_on_inherited_socket"] == [], report
    assert sorted(report["stats"]) == ["fk_new", "fk_old"]

    # The parent worked throughout and still works, on its own sockets.
    assert parent_errors == [], parent_errors[:3]
    assert min(parent_writes.values()) >= 10, parent_writes
    assert old.insert_one({"by": "parent", "phase": "after"}).acknowledged
    parent_inode_after = connection_inode(manager, "fk_old")
    assert parent_inode_after == parent_inode_before, "the parent's pooled connection was replaced"
    assert parent_inode_after in socket_inodes()
    assert parent_inode_after not in report["new_sockets"]
    assert old.count_documents({"by": "parent"}) == 2 + parent_writes["fk_old"]
    assert old.count_documents({"by": "child"}) == CHILD_WRITES
    assert pymongo_client["user_fk_new_db"].c.count_documents({"by": "child"}) == CHILD_WRITES


def test_fork_while_other_threads_are_inside_the_manager(mongodb_uri):
    """Forks at random moments of heavy use from other threads (pre-fork servers that fork on demand,
    multiprocessing with the fork start method). No child may deadlock on a lock that some parent thread
    held at the instant of the fork. Stops at the first hung child and reports its threads' stacks."""
    forks = 60
    with UserConnectionManager(
        mongodb_uri, idle_timeout=0.05, max_connections=5, appName="tp-fork-busy"
    ) as m:
        stop = threading.Event()

        def busy(i: int) -> None:
            n = 0
            while not stop.is_set():
                m.get_client(f"fb{i}_{n % 10}")
                if n % 25 == 0:
                    m.get_database(f"fb{i}_{n % 10}").c.find_one()
                n += 1

        threads = [threading.Thread(target=busy, args=(i,), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        outcomes = []
        budget = time.monotonic() + 20  # at most `forks` forks, and at most this long
        try:
            for k in range(forks):
                if time.monotonic() > budget:
                    break

                def child(k=k) -> dict:
                    m.get_client("fb_child")
                    m.get_database("fb_child").c.insert_one({"k": k})
                    return {"ok": True}

                outcomes.append(in_child(child, timeout=4))
                if not outcomes[-1].get("ok"):
                    break
        finally:
            stop.set()
            for t in threads:
                t.join(10)
    bad = [(k, o) for k, o in enumerate(outcomes) if not o.get("ok")]
    print(f"fork while busy: {len(outcomes)} forks, {len(bad)} hung or failed")
    assert not bad, f"child {bad[0][0] + 1} of {len(outcomes)} failed or hung: {bad[0][1]}"


FORK_WITH_WAITERS_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys, threading, time

    # Fork hooks run "before" callables in reverse order of registration: registered ahead of
    # tenantpool's, this one runs after tenantpool's hook has taken the core's locks, and keeps them
    # held long enough for the busy threads below to block waiting for them at the instant of the fork.
    os.register_at_fork(before=lambda: time.sleep(0.05))

    from tenantpool import UserConnectionManager

    m = UserConnectionManager(sys.argv[1], idle_timeout=0.05, max_connections=5, appName="tp-fork-wait")
    stop = threading.Event()

    def busy(i):
        n = 0
        while not stop.is_set():
            m.get_client(f"fw{i}_{n % 10}")
            if n % 25 == 0:
                m.get_database(f"fw{i}_{n % 10}").c.find_one()
            n += 1

    for i in range(4):
        threading.Thread(target=busy, args=(i,), daemon=True).start()
    time.sleep(0.2)
    outcomes = []
    for k in range(int(sys.argv[2])):
        pid = os.fork()
        if pid == 0:
            signal.alarm(30)
            try:
                m.get_client("fw_child")
                m.get_database("fw_child").c.insert_one({"k": k})
            except BaseException:
                os._exit(3)
            os._exit(0)
        deadline = time.monotonic() + 8
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                outcomes.append(os.waitstatus_to_exitcode(status))
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                outcomes.append("hung")
                break
            time.sleep(0.01)
        if outcomes[-1] != 0:
            break
    stop.set()
    print(json.dumps(outcomes), flush=True)
    os._exit(0)
""")


def test_fork_while_other_threads_wait_for_the_core_locks(mongodb_uri):
    """The deterministic form of the test above: every fork happens while other threads are blocked on the
    locks the fork hooks hold. Until the hooks held std mutexes instead of parking_lot's, the child's first
    call hung nearly every time: releasing a parking_lot lock that threads were parked on may hand it to
    one of them, and in the child none of them exists (see src/core/forklock.rs)."""
    forks = 8
    proc = subprocess.run(
        [sys.executable, "-c", FORK_WITH_WAITERS_SCRIPT, mongodb_uri, str(forks)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    outcomes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcomes == [0] * forks, f"forked children (exit codes, or hung): {outcomes}"


def test_child_does_not_see_or_close_the_parents_pools(manager):
    """Until 4ff13ec ("fork check on every core entry point") a child's stats and closes acted on the
    parent's inherited pools until its first operation."""
    manager.get_database("fk_p1").c.insert_one({})

    def child() -> dict:
        return {
            "users": manager.get_stats()["active_users"],
            "user_stats": manager.get_user_stats("fk_p1"),
            "closed": manager.close_user_connection("fk_p1"),
        }

    report = in_child(child)
    assert not report.get("hung") and "error" not in report, report
    assert report["users"] == [] and report["user_stats"] is None and report["closed"] is False, report
    assert manager.get_stats()["active_users"] == ["fk_p1"]


def test_close_all_in_child_leaves_the_parents_pools_alone(mongodb_uri):
    """A child that closes an inherited manager before using it (a worker's shutdown hook) must not shut
    down the parent's clients, whose sockets it shares."""
    with UserConnectionManager(mongodb_uri, user_pool_size=1, appName="tp-fork-close") as m:
        m.get_database("fk_close").c.insert_one({"by": "parent"})
        inode_before = connection_inode(m, "fk_close")

        def child() -> dict:
            return {"closed": m.close()}

        report = in_child(child)
        assert not report.get("hung") and "error" not in report, report
        assert m.get_stats()["active_users"] == ["fk_close"]
        assert m.get_database("fk_close").c.count_documents({"by": "parent"}) == 1
        assert connection_inode(m, "fk_close") == inode_before, "the parent's connection was replaced"


def test_cursor_opened_before_fork_does_not_hang_in_child(manager, pymongo_client):
    coll = manager.get_database("fk_cursor").c
    coll.drop()
    coll.insert_many([{"i": i} for i in range(50)])
    cursor = coll.find().sort("i", 1).batch_size(10)
    assert next(cursor)["i"] == 0

    def child() -> dict:
        from pymongo.errors import PyMongoError

        started = time.monotonic()
        try:
            rest = [d["i"] for d in cursor]
            outcome = "ok" if rest == list(range(1, 50)) else f"wrong documents {rest}"
        except PyMongoError as exc:  # failing fast is acceptable, hanging is not
            outcome = type(exc).__name__
        return {"outcome": outcome, "seconds": time.monotonic() - started}

    report = in_child(child, timeout=8)
    cursor.close()
    assert not report.get("hung"), "iterating a pre-fork cursor in the child hung"
    assert "error" not in report, report
    assert report["seconds"] < 5, report


EXIT_SCRIPT = textwrap.dedent("""
    import sys, threading
    from tenantpool import UserConnectionManager

    manager = UserConnectionManager(sys.argv[1], appName="tp-exit")
    manager.get_database("exiting").c.insert_many([{"i": i} for i in range(20)])
    started = threading.Barrier(6)

    def point_reads(k):
        started.wait()
        n = 0
        while True:
            manager.get_database(f"exiting{k}_{n % 50}").c.find_one()
            n += 1

    def cursors():
        started.wait()
        while True:
            for _ in manager.get_database("exiting").c.find().batch_size(2):
                pass

    def slow():
        started.wait()
        manager.get_database("exiting").c.find_one({"$where": "sleep(10000) || true"})

    for target, args in [(point_reads, (0,)), (point_reads, (1,)), (point_reads, (2,)), (cursors, ()),
                         (slow, ())]:
        threading.Thread(target=target, args=args, daemon=True).start()
    started.wait()
    print("bye", flush=True)
""")


def test_interpreter_exit_with_daemon_threads_in_operations(mongodb_uri):
    """Web servers and workers commonly run requests on daemon threads; exiting must not crash (exit
    status 134 and a core dump), which would also lose whatever atexit handlers had left to do.

    Until the exit drain (runtime::shutdown waits for every caller to be back in the interpreter, and
    later calls fail without letting go of the GIL) this aborted with 'FATAL: exception not rethrown'
    (pthread_exit unwinding through Rust frames) or a panic in the driver's connection requester."""
    codes = []
    started = time.monotonic()
    for _ in range(5):
        proc = subprocess.run(
            [sys.executable, "-c", EXIT_SCRIPT, mongodb_uri], capture_output=True, text=True, timeout=60
        )
        codes.append((proc.returncode, proc.stdout.strip(), proc.stderr.strip()))
    shown = [(code, out, err[:300]) for code, out, err in codes]
    assert all(code == 0 for code, _, _ in codes), shown
    assert not any("panicked" in err or "FATAL" in err for _, _, err in codes), shown
    # Exit waits at most ~2 s for the drain, not for the 10 s query.
    assert time.monotonic() - started < 5 * 6, shown
