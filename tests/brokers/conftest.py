"""The brokers' tests share one real redis-server per module, flushed by whoever needs it clean."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.brokers.redis_server import RedisServer, require_redis_server


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    require_redis_server()
    server = RedisServer().start()
    yield server
    server.cleanup()
