"""The types tenantpool declares are the ones users get: mypy --strict passes the typed usage files and
flags misuse of the sync and async APIs; the public methods behind those types are what they claim."""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tenantpool import Collection, Cursor, Database, UserConnectionManager
from tenantpool.asynchronous import (
    AsyncChangeStream,
    AsyncCollection,
    AsyncCommandCursor,
    AsyncCursor,
    AsyncDatabase,
    AsyncTenantClient,
    AsyncUserConnectionManager,
)
from tenantpool.cursor import CommandCursor

api = pytest.importorskip("mypy.api")

HERE = Path(__file__).parent

# Each line marked ``# E: <text>`` must get one mypy error containing <text>; no other line may get one.
MISUSE = """
from tenantpool import UserConnectionManager
from tenantpool.asynchronous import AsyncUserConnectionManager

def sync_api(manager: UserConnectionManager) -> None:
    posts = manager.get_database("a").posts
    count: str = posts.count_documents({})  # E: "int", variable has type "str"
    posts.insert_one({}).inserted_idx  # E: has no attribute "inserted_idx"
    posts.find().sort("n").to_list().append(1)
    posts.find().limit("10")  # E: incompatible type "str"; expected "int"
    session: int = manager.get_client("a").start_session()  # E: "ClientSession", variable has type "int"

async def sync_in_async(manager: UserConnectionManager) -> None:
    await manager.get_database("a").posts.insert_one({})  # E: Incompatible types in "await"
    async for doc in manager.get_database("a").posts.find():  # E: "__aiter__"
        pass

async def async_api(manager: AsyncUserConnectionManager) -> None:
    posts = manager.get_database("a").posts
    posts.insert_one({})  # E: must be used
    result = await posts.insert_one({})
    result.inserted_idx  # E: has no attribute "inserted_idx"
    docs: list[int] = posts.find().to_list()  # E: Coroutine
    async for doc in posts.find().sort("n").limit(2):
        pass
    cursor = await posts.aggregate([])
    cursor.next()  # E: must be used
    await manager.get_client("a").start_session().end_session()
"""


def _mypy(*args: str) -> tuple[str, int]:
    out, err, status = api.run(["--strict", "--no-error-summary", "--hide-error-context", *args])
    return out + err, status


def test_typed_usage_files_pass_mypy_strict() -> None:
    out, status = _mypy(str(HERE / "usage_sync.py"), str(HERE / "usage_async.py"))
    assert status == 0, out


def test_misuse_is_flagged_where_it_is(tmp_path: Path) -> None:
    source = textwrap.dedent(MISUSE)
    path = tmp_path / "misuse.py"
    path.write_text(source)
    out, _ = _mypy(str(path))
    errors: dict[int, list[str]] = {}
    for line in out.splitlines():
        if ": error: " in line:
            number = int(line.split(":")[1])
            errors.setdefault(number, []).append(line)
    expected = {
        n: text.split("# E: ", 1)[1] for n, text in enumerate(source.splitlines(), start=1) if "# E: " in text
    }
    assert set(errors) == set(expected), out
    for number, text in expected.items():
        assert any(text in e for e in errors[number]), (text, errors[number])


@pytest.mark.parametrize(
    ("sync_cls", "async_cls", "name"),
    [
        (Collection, AsyncCollection, "insert_one"),
        (Collection, AsyncCollection, "find_one_and_update"),
        (Database, AsyncDatabase, "list_collection_names"),
        (Cursor, AsyncCursor, "to_list"),
        (Cursor, AsyncCursor, "next"),
        (CommandCursor, AsyncCommandCursor, "try_next"),
        (UserConnectionManager, AsyncUserConnectionManager, "close"),
    ],
)
def test_one_declaration_is_a_blocking_method_and_a_coroutine(
    sync_cls: type[Any], async_cls: type[Any], name: str
) -> None:
    sync, coro = getattr(sync_cls, name), getattr(async_cls, name)
    assert inspect.isfunction(sync) and not inspect.iscoroutinefunction(sync)
    assert inspect.iscoroutinefunction(coro)
    assert coro.__name__ == name and sync.__name__ in (name, f"__{name}__")  # next is __next__
    assert sync.__doc__ and coro.__doc__


def test_help_shows_the_public_name_signature_and_result() -> None:
    method = Collection.insert_one
    assert method.__qualname__ == "Collection.insert_one"
    assert AsyncCollection.insert_one.__qualname__ == "AsyncCollection.insert_one"
    signature = inspect.signature(method)
    assert signature.return_annotation == "InsertOneResult"
    assert list(signature.parameters)[:2] == ["self", "document"]
    assert "Inserts" in (inspect.getdoc(method) or "")


def test_same_method_async_types_only() -> None:
    # start_session is the same function on both clients (no I/O); only its declared result differs.
    assert AsyncTenantClient.start_session is not None
    assert inspect.isfunction(AsyncTenantClient.start_session)
    assert not inspect.iscoroutinefunction(AsyncTenantClient.start_session)
    assert inspect.iscoroutinefunction(AsyncChangeStream.try_next)
