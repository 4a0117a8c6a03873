"""Serve the app with uvicorn on a thread of its own, beside `syncd run`'s loop.

The socket is bound before the thread starts, so a port already in use (or an
address that does not exist here) is a clear start-up error, not a log line later.
The sync never waits for the server: it runs its own event loop, and a stop asks
uvicorn to finish open requests for a few seconds, then closes what is left. A
client that does not send a whole request's headers within `[http]
header_timeout_seconds` is disconnected (syncd.http.slow_clients).
"""

from __future__ import annotations

import errno
import logging
import socket
import threading

import uvicorn
from starlette.applications import Starlette

from syncd.errors import ConfigError
from syncd.http.options import HttpOptions
from syncd.http.slow_clients import protocol

# Connections waiting to be accepted: a burst of clients (hundreds of dashboard tabs
# reconnecting at once) must not push a probe's SYN into a retry a second later.
BACKLOG = 2048

log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        taken = exc.errno == errno.EADDRINUSE
        raise ConfigError(f"[http] listen = {host}:{port}: cannot listen there "
                          f"({exc.strerror or exc}"
                          + (": another syncd on this host?)" if taken else ")")
                          + f"; give each syncd its own port: [http] listen = \"{host}:PORT\" "
                          "in its settings file (or SYNCD_HTTP_LISTEN, or --http HOST:PORT; "
                          "syncd dashboard: --listen HOST:PORT), or listen = \"\" to turn "
                          "the server off") from None
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


class HttpServer:
    """One uvicorn server on a daemon thread; `url` once started."""

    def __init__(self, app: Starlette, options: HttpOptions,
                 sock: socket.socket | None = None) -> None:
        assert options.host is not None, "the server is off ([http] listen = \"\")"
        self.app, self.options = app, options
        self.sock = sock or bind(options.host, options.port)
        self.port: int = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                timeout_graceful_shutdown=3, server_header=False,
                                http=protocol(options.header_timeout_seconds),
                                timeout_keep_alive=5, backlog=BACKLOG)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = self.options.host or ""
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def start(self) -> HttpServer:
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self._thread.start()
        log.info("serving /metrics, /healthz, /readyz and the dashboard on %s", self.url,
                 extra={"url": self.url})
        return self

    def _serve(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except Exception:  # the sync goes on without its HTTP server
            log.exception("the HTTP server stopped; syncing goes on")

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
