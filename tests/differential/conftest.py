from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from tenantpool import UserConnectionManager

# pytest runs with --import-mode=importlib, which leaves sys.path alone: make the harness importable by
# this directory's test modules.
sys.path.insert(0, str(Path(__file__).parent))
from _harness import Comparison, compare, database_state, run_case


class Differ:
    """Runs a case on pymongo and on tenantpool against the same server and compares the outcomes."""

    def __init__(self, uri: str, admin: MongoClient) -> None:
        self._uri = uri
        self._admin = admin
        self._clients: dict[tuple, MongoClient] = {}
        self._managers: dict[tuple, UserConnectionManager] = {}
        self._numbers = itertools.count()
        # dropDatabase waits on the replica set's commit point (~0.1 s): done in the background, so the
        # next case runs meanwhile, on databases of its own.
        self._dropper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="differential-drop")
        # Each case drops its databases when done; these are leftovers of an interrupted run.
        for name in admin.list_database_names():
            if name.startswith(("diff_pm_", "diff_tp_")):
                admin.drop_database(name)

    def _pair(self, options: dict[str, Any]) -> tuple[MongoClient, UserConnectionManager]:
        key = tuple(sorted(options.items()))
        if key not in self._clients:
            self._clients[key] = MongoClient(self._uri, **options)
            # isolation="off": the cases compare pymongo's behaviour, which knows no tenant scope, and
            # some reach admin (fail points) or name databases freely; tests/test_isolation.py and
            # tests/unit cover the scope.
            self._managers[key] = UserConnectionManager(
                self._uri, db_name_template="diff_tp_{user_id}", isolation="off", **options
            )
        return self._clients[key], self._managers[key]

    def check(
        self, case: Callable[[Any], Any], state: bool = True, template: bool = False, **options: Any
    ) -> Comparison:
        """Asserts ``case`` gives the same outcome, and leaves the same database, on both libraries.

        ``options`` go to both ``MongoClient`` and ``UserConnectionManager``. tenantpool's database is
        named explicitly (``get_database("differential", name)``), or with ``template`` it is the tenant's
        own database from the manager's ``db_name_template``, on a pool of its own.
        """
        client, manager = self._pair(options)
        suffix = f"{case.__name__.removeprefix('case_')[:40]}_{next(self._numbers)}"
        pm_name, tp_name = f"diff_pm_{suffix}", f"diff_tp_{suffix}"
        tp_db = manager.get_database(suffix) if template else manager.get_database("differential", tp_name)
        assert tp_db.name == tp_name
        try:
            expected = run_case(case, client[pm_name])
            actual = run_case(case, tp_db)
            result = compare(expected, actual)
            if state:
                compare(
                    database_state(self._admin, pm_name),
                    database_state(self._admin, tp_name),
                    "database",
                    out=result,
                )
        finally:
            for name in (pm_name, tp_name):
                self._dropper.submit(self._admin.drop_database, name)
            if template:
                manager.close_user_connection(suffix)
        assert not (result.differences or result.notes), "\n".join(
            [
                "pymongo and tenantpool differ:",
                *result.differences,
                *(f"{note} (in error details)" for note in result.notes),
                f"pymongo outcome: {expected!r}",
                f"tenantpool outcome: {actual!r}",
            ]
        )
        return result

    def close(self) -> None:
        self._dropper.shutdown(wait=True)
        for client in self._clients.values():
            client.close()
        for manager in self._managers.values():
            manager.close_all()


@pytest.fixture(scope="session")
def differ(mongodb_uri: str, pymongo_client: MongoClient) -> Iterator[Differ]:
    d = Differ(mongodb_uri, pymongo_client)
    yield d
    d.close()
