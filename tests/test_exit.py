"""A process that used the async API exits cleanly: no runtime thread may call into Python while the
interpreter is being finalized (before the fix, ~40 % of such exits crashed after a quota timeout)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import asyncio, os
from pymongo.errors import WaitQueueTimeoutError
from tenantpool import AsyncUserConnectionManager

async def main():
    m = AsyncUserConnectionManager(os.environ["MONGODB_URI"], user_pool_size=1, waitQueueTimeoutMS=200)
    db = m.get_database("exit_probe")
    await db.items.insert_one({"x": 1})
    slow = asyncio.ensure_future(db.items.find_one({"$where": "sleep(400) || true"}))
    while m.get_user_stats("exit_probe")["in_flight"] < 1:
        await asyncio.sleep(0.01)
    try:
        await db.items.find_one({})
    except WaitQueueTimeoutError:
        print("quota timeout")
    await slow
    await m.close_all()

asyncio.run(main())
print("done")
"""


@pytest.mark.slow
def test_exit_after_async_work_and_a_quota_timeout_is_clean(mongodb_uri):
    env = {**os.environ, "MONGODB_URI": mongodb_uri}
    for _ in range(8):
        r = subprocess.run(
            [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.split() == ["quota", "timeout", "done"]
