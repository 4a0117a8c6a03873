"""The SQLite backends satisfy the boundary protocols the engine and daemon are typed against."""

from __future__ import annotations

import inspect
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from legacy_adapters.base import Source
from legacy_adapters.changelog import ChangeLog
from legacy_adapters.sqlite import SQLiteSource
from legacy_adapters.sqlite_capture import Capture


def protocol_methods(protocol: type) -> dict[str, Any]:
    """The methods a protocol declares (its own body, not object's or Protocol's)."""
    return {name: member for name, member in vars(protocol).items()
            if callable(member) and not name.startswith("_")}


def shape(func: Any) -> list[tuple[str, Any, bool]]:
    """A signature as (name, kind, has default) per parameter: what callers rely on."""
    return [(p.name, p.kind, p.default is not inspect.Parameter.empty)
            for p in inspect.signature(func).parameters.values()]


@pytest.mark.parametrize(("protocol", "backend"), [(Source, SQLiteSource),
                                                   (ChangeLog, Capture)])
def test_backend_has_every_protocol_method(protocol: type, backend: type) -> None:
    methods = protocol_methods(protocol)
    assert methods, "the protocol declares no methods"
    for name, declared in methods.items():
        impl = getattr(backend, name, None)
        assert callable(impl), f"{backend.__name__} lacks {protocol.__name__}.{name}"
        assert shape(impl) == shape(declared), (
            f"{backend.__name__}.{name}{inspect.signature(impl)} does not match "
            f"{protocol.__name__}.{name}{inspect.signature(declared)}")


def test_instances_are_recognised(tmp_path: Path) -> None:
    path = tmp_path / "metadata.db"
    sqlite3.connect(path).close()
    source = SQLiteSource(path)
    capture = Capture(path, source=source)
    try:
        assert isinstance(source, Source)
        assert isinstance(capture, ChangeLog)
        assert not isinstance(object(), Source)
    finally:
        capture.close()
        source.close()


def test_read_transaction_is_a_context_manager(tmp_path: Path) -> None:
    """The protocol promises a context manager; the change log reads inside it."""
    path = tmp_path / "metadata.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (a INTEGER)")
    conn.commit()
    conn.close()
    source: Source = SQLiteSource(path)
    log: ChangeLog = Capture(path, source=source)
    try:
        with source.read_transaction(), source.read_transaction():
            assert isinstance(source.data_version(), int)
            assert isinstance(source.schema_version(), int)
            assert not log.log_exists()
    finally:
        log.close()
        source.close()
