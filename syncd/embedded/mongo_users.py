"""Setting the embedded MongoDB's password: one user, `syncd`, and nobody else.

SecantusDB creates users only over the wire, and only a server without `--auth`
accepts the first one. So a data directory without syncd's user (a new one, or one
from a syncd before passwords) is served once without `--auth` on a fresh loopback
port just long enough to create (or reset) the user, then restarted with `--auth`.
Whatever another local account did in that moment is undone once the server requires
the password: every other user is dropped (no one else can ever log in), custom
roles in `admin` are dropped (none can shadow `root`), and a new data directory that
holds anything but syncd's user is refused rather than served.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pymongo
from pymongo.errors import OperationFailure, PyMongoError

from syncd.errors import SyncdError
from syncd.redact import scrub

log = logging.getLogger(__name__)

USER = "syncd"
# Databases a new SecantusDB lists by itself (its oplog) or that hold only users.
SYSTEM_DATABASES = frozenset({"local", "admin", "config"})


@contextmanager
def _client(url: str) -> Iterator[pymongo.MongoClient]:
    client: pymongo.MongoClient = pymongo.MongoClient(
        url, serverSelectionTimeoutMS=20_000, connectTimeoutMS=20_000)
    try:
        yield client
    finally:
        client.close()


def _failed(step: str, exc: PyMongoError) -> SyncdError:
    return SyncdError(f"the embedded MongoDB refused to {step} ({scrub(str(exc))[:200]})")


def logs_in(url: str, users_set: Path) -> bool:
    """Whether syncd's user logs in at `url` (False: not answering yet); a refused
    password is an error saying how to set it again."""
    client: pymongo.MongoClient = pymongo.MongoClient(
        url, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000)
    try:
        client.admin.command("connectionStatus")
        return True
    except OperationFailure as exc:
        if exc.code != 18:  # AuthenticationFailed
            return True  # logged in; whatever else failed is for the caller to meet
        raise SyncdError(
            "the embedded MongoDB refuses syncd's password (its data was set up by another "
            f"syncd or restored from a copy): remove {users_set} and syncd sets it again at "
            "the next start") from None
    except PyMongoError:
        return False
    finally:
        client.close()


def create_user(url: str, password: str) -> None:
    """On a server without --auth: create syncd's user (or reset its password and roles)."""
    with _client(url) as client:
        try:
            if client.admin.command("usersInfo", USER)["users"]:
                client.admin.command("updateUser", USER, pwd=password, roles=["root"])
            else:
                client.admin.command("createUser", USER, pwd=password, roles=["root"])
        except PyMongoError as exc:
            raise _failed("create syncd's user", exc) from None


def sweep(url: str, fresh: bool, data: str) -> None:
    """On the server now requiring the password (logged in as syncd at `url`): drop
    every other user and admin's custom roles; a `fresh` data directory must hold
    nothing else."""
    with _client(url) as client:
        try:
            users = list(client.admin["system.users"].find({}, {"user": 1, "db": 1}))
            for user in users:
                if (user.get("db"), user.get("user")) != ("admin", USER):
                    log.warning("dropping the user %r of database %r from the embedded "
                                "MongoDB: syncd's is the only one", user.get("user"),
                                user.get("db"))
                    client[user["db"]].command("dropUser", user["user"])
            if client.admin.command("rolesInfo", 1)["roles"]:
                client.admin.command("dropAllRolesFromDatabase")
            foreign = sorted(set(client.list_database_names()) - SYSTEM_DATABASES)
        except OperationFailure as exc:
            if exc.code == 18:  # AuthenticationFailed
                raise SyncdError("the embedded MongoDB refused syncd's own password right "
                                 f"after it was set: remove {data} and start again") from None
            raise _failed("list its users", exc) from None
        except PyMongoError as exc:
            raise _failed("list its users", exc) from None
    if fresh and foreign:
        raise SyncdError(
            "another process wrote to the new embedded MongoDB while syncd set its password "
            f"(databases {', '.join(foreign)}); it is not used: remove {data} and start again")
