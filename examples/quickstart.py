"""The design document's section 3.1 example, on tenantpool: only the import differs.

    MONGODB_URI=mongodb://127.0.0.1:27017/ python examples/quickstart.py
(`make demo` starts a throwaway local mongod and runs this for you.)
"""

import logging
import os

from tenantpool import UserConnectionManager

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)

    manager = UserConnectionManager(
        connection_string=os.environ.get("MONGODB_URI", "mongodb://localhost:27017/"),
        user_pool_size=10,  # each tenant's own pool: at most 10 connections
        idle_timeout=3600,  # a tenant's pool closes after an hour unused
    )

    # User A - its own pool
    db_a = manager.get_database("user_a")
    db_a.posts.insert_one({"title": "Hello from User A", "content": "First post"})

    # User B - its own pool, unaffected by User A
    db_b = manager.get_database("user_b")
    db_b.posts.insert_one({"title": "Hello from User B", "content": "First post"})

    # User C
    db_c = manager.get_database("user_c")
    db_c.posts.insert_one({"title": "Hello from User C", "content": "First post"})

    stats = manager.get_stats()
    print("\nConnection Stats:")
    print(f"  Total connections: {stats['total_connections']}")
    print(f"  Active users: {stats['active_users']}")
    print(f"  Potential connections: {stats['total_potential_connections']}")
    print(f"  Pools created/closed: {stats['pools']['pools_created']}/{stats['pools']['pools_closed']}")

    # Close one tenant's pool, then everything.
    manager.close_user_connection("user_a")
    print(f"  After closing user_a: {manager.get_stats()['active_users']}")
    manager.close_all()
