"""The MongoDB target: a configured URL, or the embedded server when none is set."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pymongo
from pymongo.database import Database
from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError

from syncd.connect.reasons import mongo_reason, unreachable_reason
from syncd.connect.resets import RESETS
from syncd.embedded import EmbeddedMongo, configured_or_embedded
from syncd.embedded.diskspace import no_space
from syncd.embedded.endpoints import Endpoints
from syncd.errors import ConfigError, SyncdError
from syncd.redact import redact_url, scrub


class TargetUnreachable(ConfigError):
    """The configured MongoDB did not answer in time (a daemon may wait for it);
    `reason`: why, in one short line (syncd.connect.reasons.mongo_reason)."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class MongoTarget:
    """An open connection to the target database, and where it is (password masked)."""

    client: pymongo.MongoClient
    db: Database
    shown_url: str
    embedded: bool


def connect(url: str, timeout: float, app_name: str = "syncd") -> pymongo.MongoClient:
    """A client whose every wait is bounded by `timeout` seconds."""
    ms = int(timeout * 1000)
    return pymongo.MongoClient(
        url, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, appname=app_name,
        tz_aware=False, uuidRepresentation="standard", event_listeners=[RESETS],
    )


def _check_reachable(client: pymongo.MongoClient, shown: str, timeout: float) -> None:
    try:
        client.admin.command("ping")
    except OperationFailure as exc:
        raise ConfigError(f"--mongo-url {shown}: the server refused syncd ({scrub(str(exc))})") \
            from None
    except PyMongoError as exc:
        detail = unreachable_reason(scrub(str(exc)))
        raise TargetUnreachable(
            f"--mongo-url {shown}: not reachable within {timeout:g} s"
            + (f" ({detail})" if detail else ""), mongo_reason(exc)
        ) from None


@contextlib.contextmanager
def open_target(ends: Endpoints, give_up: Callable[[SyncdError], None] | None = None
                ) -> Iterator[MongoTarget]:
    """Connect to the configured MongoDB or to the embedded one (started if needed;
    with `give_up`, started again when it dies: syncd/embedded/supervise.py)."""
    with configured_or_embedded(ends.mongo_url, lambda: EmbeddedMongo(ends.state_dir),
                                give_up) as (url, embedded):
        shown = redact_url(url)
        try:
            client = connect(url, ends.mongo_timeout)
        except ConfigurationError as exc:
            raise ConfigError(f"--mongo-url {shown}: {scrub(str(exc))}") from None
        try:
            _check_reachable(client, shown, ends.mongo_timeout)
            yield MongoTarget(client, client[ends.database], shown, embedded)
        except PyMongoError as exc:
            full = no_space(Path(ends.state_dir).absolute() / "mongo") if embedded else None
            if full is None:
                raise
            # SecantusDB says only "internal server error" when WiredTiger cannot write.
            raise SyncdError(f"the embedded MongoDB failed ({_first_line(exc)}): {full}") \
                from None
        finally:
            client.close()


def _first_line(exc: PyMongoError) -> str:
    return scrub(str(exc)).splitlines()[0].split(", full error")[0][:200]
