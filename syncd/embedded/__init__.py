"""Real servers started as child processes on loopback when no URL is configured."""

from syncd.embedded.mongo import EmbeddedMongo
from syncd.embedded.redis import EmbeddedRedis, find_redis_server
from syncd.embedded.server import (
    EmbeddedServer,
    configured_or_embedded,
    find_executable,
    free_port,
)

__all__ = ["EmbeddedMongo", "EmbeddedRedis", "EmbeddedServer", "configured_or_embedded",
           "find_executable", "find_redis_server", "free_port"]
