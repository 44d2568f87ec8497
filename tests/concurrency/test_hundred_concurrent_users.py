"""100 users at once under every pool strategy (shared, per-user, grouped): every request must succeed
and each user sees only its own post. This is the design document's section 5.1 comparison (a shared
single client versus independent connections)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tenantpool import UserConnectionManager

USERS = 100


def process_user(manager: UserConnectionManager, user_id: int) -> bool:
    db = manager.get_database(f"user_{user_id}")
    db.posts.insert_one({"user_id": user_id, "title": f"Post by user {user_id}"})
    posts = list(db.posts.find({"user_id": user_id}))
    return len(posts) == 1 and posts[0]["title"] == f"Post by user {user_id}"


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"strategy": "shared", "shared_pool_size": 10}, id="single-shared-client"),
        pytest.param({"strategy": "per_user"}, id="independent-per-user"),
        pytest.param({"strategy": "grouped", "groups": 10}, id="grouped"),
    ],
)
def test_hundred_users_at_once(mongodb_uri, pymongo_client, options):
    with UserConnectionManager(mongodb_uri, user_pool_size=10, **options) as manager:
        with ThreadPoolExecutor(max_workers=USERS) as pool:
            results = list(pool.map(lambda u: process_user(manager, u), range(USERS)))
        assert results == [True] * USERS
        assert manager.get_stats()["pools"]["operation_errors"] == 0
    for u in range(USERS):
        pymongo_client.drop_database(f"user_user_{u}_db")
