"""The HTTP app served for real on a loopback port, over a test database and Redis, and
raw-socket clients (half-sent requests, live streams) to put load on it."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bson import ObjectId

from syncd.api.http_options import http_context, http_options
from syncd.config import load_settings
from syncd.http.app import build_app
from syncd.http.server import HttpServer


@contextlib.contextmanager
def serve(tmp_path: Path, db: Any, redis: Any = None, http: str = "",
          **env: str) -> Iterator[HttpServer]:
    """`build_app` + `HttpServer` on 127.0.0.1 (a free port), `http` the `[http]` lines."""
    cfg = tmp_path / "http.toml"
    cfg.write_text(f'[http]\nlisten = "127.0.0.1:0"\n{http}\n')
    settings = load_settings({"config": str(cfg), "database": db.name})
    options = http_options(settings)
    with HttpServer(build_app(http_context(settings, db, redis), options), options) as server:
        yield server


def request(server: HttpServer, path: str, headers: dict[str, str] | None = None,
            timeout: float = 10.0) -> tuple[int, dict[str, str], str]:
    """(status, headers lowercased, body) of one GET; redirects are not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        answer = conn.getresponse()
        return (answer.status, {k.lower(): v for k, v in answer.getheaders()},
                answer.read().decode(errors="replace"))
    finally:
        conn.close()


def open_stream(server: HttpServer, path: str, headers: dict[str, str] | None = None,
                timeout: float = 10.0) -> tuple[socket.socket, bytes]:
    """A live stream's socket, read up to its first event (or the whole refusal)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
    got = b""
    while b"event: " not in got and b'"error"' not in got:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return sock, got


def add_experiment(db: Any, run_id: int, epochs: list[dict[str, Any]],
                   **fields: Any) -> ObjectId:
    """An experiment with its epochs, as migration 0002 shapes them (only what pages read)."""
    oid = ObjectId()
    db["experiments"].insert_one({"_id": oid, "run_id": run_id, "challenge": 1,
                                  "status": "running", "model": {"name": "eegnet"},
                                  "metrics": {}, "config": {"batch_size": 32},
                                  "start_time": dt.datetime(2025, 10, 24), **fields})
    for epoch in epochs:
        db["epochs"].insert_one({"experiment_id": oid, "epoch": epoch["epoch"],
                                 "metrics": {k: epoch.get(k) for k in
                                             ("train_loss", "val_loss", "learning_rate")},
                                 "timestamp": epoch.get("timestamp")})
    return oid
