"""The systemd packaging: the unit's directives, `systemd-analyze verify`, the example
config, and the notify protocol (READY, WATCHDOG, STATUS, STOPPING) of a real
`syncd run` process talking to a real AF_UNIX datagram socket."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from syncd.api.run_daemon import daemon_options
from syncd.config import load_settings, section
from syncd.daemon.options import DEFAULTS
from syncd.sample import make_eeg2025
from tests.conftest import ROOT, syncd_process

UNIT = ROOT / "systemd" / "syncd.service"
EXAMPLE = ROOT / "systemd" / "syncd.toml.example"
TEMPLATE = ROOT / "systemd" / "syncd@.service"
INSTANCE_EXAMPLE = ROOT / "systemd" / "syncd@.toml.example"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Sections -> keys -> every value given (systemd keys may repeat, e.g. Environment=).
    Continuation lines (a trailing backslash) are joined; comments are skipped."""
    unit: Unit = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = unit.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"a directive outside any section: {line!r}"
        assert "=" in line, f"not a directive: {line!r}"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return unit


@pytest.fixture(scope="module")
def unit() -> Unit:
    return parse_unit(UNIT.read_text())


def one(unit: Unit, key: str, where: str = "Service") -> str:
    values = unit[where].get(key)
    assert values, f"{key}= is not set in [{where}]"
    return values[-1]


def seconds(value: str) -> float:
    """A systemd time span as used in the unit ("60", "10s", "2min")."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m)?", value)
    assert match, f"unexpected time span {value!r}"
    return float(match.group(1)) * (60 if match.group(2) in ("min", "m") else 1)


def test_unit_parses_with_configparser():
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",),
                                       comment_prefixes=("#", ";"), empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    assert parser.sections() == ["Unit", "Service", "Install"]
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_unit_is_a_notify_service_with_a_watchdog(unit):
    service = unit["Service"]
    assert one(unit, "Type") == "notify"
    assert one(unit, "NotifyAccess") == "main"
    watchdog = seconds(one(unit, "WatchdogSec"))
    # The heartbeat pings only while the loop was alive within half of WatchdogSec (a
    # backoff wait counts as alive: test_a_backoff_longer_than_the_watchdog_keeps_it_fed).
    assert watchdog / 2 > 2 * DEFAULTS["heartbeat_seconds"]
    assert one(unit, "Restart") == "on-failure"
    assert seconds(one(unit, "RestartSec")) > 0
    # SIGTERM lets syncd finish its batch and wait up to 60 s for an HDF5 warm pass.
    assert seconds(one(unit, "TimeoutStopSec")) > 60
    # The first start may be a long backfill (the watchdog starts only at READY=1).
    assert one(unit, "TimeoutStartSec") == "infinity"
    assert "WantedBy" in unit["Install"]
    assert "network-online.target" in " ".join(unit["Unit"]["After"])
    assert not any("WATCHDOG" in v for v in service.get("Environment", []))


def test_unit_runs_syncd_run_from_a_venv_with_the_config(unit):
    exec_start = one(unit, "ExecStart").split()
    binary = PurePosixPath(exec_start[0])
    assert binary.is_absolute() and binary.name == "syncd" and binary.parent.name == "bin"
    assert "venv" in str(binary)
    assert str(binary.parent.parent) in UNIT.read_text().split("[Unit]")[0]  # documented
    assert exec_start[1:] == ["run", "--config", "/etc/syncd/syncd.toml"]


def test_unit_runs_as_a_dedicated_user_with_its_state_directory(unit):
    assert one(unit, "User") == "syncd" and one(unit, "Group") == "syncd"
    assert one(unit, "StateDirectory") == "syncd"
    env = dict(v.split("=", 1) for v in unit["Service"]["Environment"])
    assert env["SYNCD_STATE_DIR"] == "/var/lib/syncd"
    assert re.fullmatch(r"0[0-7]{3}", one(unit, "UMask"))
    assert int(one(unit, "UMask"), 8) & 0o007 == 0o007  # nothing for other users


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectHome": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
}


@pytest.mark.parametrize("key", sorted(HARDENING))
def test_unit_is_hardened(unit, key):
    assert one(unit, key) == HARDENING[key]


def test_unit_restricts_address_families_but_keeps_the_notify_socket(unit):
    families = set(one(unit, "RestrictAddressFamilies").split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}  # AF_UNIX: $NOTIFY_SOCKET


def test_only_the_state_and_legacy_data_directories_are_writable(unit):
    """ProtectSystem=strict makes everything read-only but StateDirectory= and
    ReadWritePaths=, which names the legacy data directory of the example config
    (the directory: SQLite writes metadata.db-journal beside the database)."""
    assert one(unit, "ProtectSystem") == "strict"
    writable = [p for v in unit["Service"].get("ReadWritePaths", []) for p in v.split()]
    settings = load_settings({"config": str(EXAMPLE)}, environ={})
    assert writable == [str(PurePosixPath(str(settings.sqlite)).parent)]
    assert "ReadOnlyPaths" not in unit["Service"] and "InaccessiblePaths" not in unit["Service"]
    text = UNIT.read_text()
    assert "scan" in text and "read-only" in text  # says scan mode needs no write access


def test_example_config_holds_only_known_keys_and_placeholder_passwords(tmp_path):
    """Every key of the example, commented-out ones included, is one syncd accepts."""
    from syncd.hdf5.features import FEATURES_DEFAULTS
    from syncd.hdf5.options import CACHE_DEFAULTS

    text = EXAMPLE.read_text()
    uncommented = re.sub(r"(?m)^# (\[\w+\]|\w+ = .*)$", r"\1", text)
    path = tmp_path / "syncd.toml"
    path.write_text(uncommented)
    settings = load_settings({"config": str(path)}, environ={})
    assert daemon_options(settings).capture == "triggers"
    assert set(settings.extra["daemon"]) == set(DEFAULTS)  # every [daemon] key is shown
    section(settings, "cache", CACHE_DEFAULTS)
    assert section(settings, "features", FEATURES_DEFAULTS)["extractors"] == []
    for url in (settings.mongo_url, settings.redis_url):
        assert url is not None and ":CHANGE-ME@" in url


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed on this machine")
@pytest.mark.parametrize("source, name", [(UNIT, "syncd.service"),
                                          (TEMPLATE, "syncd@alpha.service")])
def test_systemd_analyze_verify_accepts_the_unit(tmp_path, source, name):
    """`verify` checks that ExecStart's binary exists: the copy runs this venv's syncd.
    User=/Group= become root so the check does not depend on a `syncd` user here. The
    template is verified as an instance of it (%i = alpha)."""
    exe = Path(sys.executable).parent / "syncd"
    if not exe.exists():
        exe = Path(shutil.which("syncd") or "")
    assert exe.is_file() and os.access(exe, os.X_OK), "the syncd console script is missing"
    text = source.read_text()
    venv_syncd = one(parse_unit(text), "ExecStart").split()[0]
    text = text.replace(venv_syncd, str(exe))
    text = re.sub(r"(?m)^User=.*$", "User=root", text)
    text = re.sub(r"(?m)^Group=.*$", "Group=root", text)
    copy = tmp_path / source.name
    copy.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    # Warnings (an unknown key, a bad value) come with exit code 0: there are none.
    assert output == "", output


# -- the notify protocol, end to end ------------------------------------------------------


def test_sdnotify_sends_datagrams_and_honours_watchdog_pid(tmp_path, monkeypatch):
    from syncd.daemon.sdnotify import notify, watchdog_seconds

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False  # not under systemd: nothing happens
    with notify_socket(tmp_path) as (sock, path):
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert notify("STATUS=hello") is True
        assert sock.recv(4096) == b"STATUS=hello"
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_seconds() == 2.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_seconds() == 2.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process (a shell wrapper)
    assert watchdog_seconds() is None


class notify_socket:
    """A bound AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, tmp_path: Path) -> None:
        path = tmp_path / "notify.sock"
        self.tmpdir: str | None = None
        if len(str(path)) > 100:  # sun_path holds 108 bytes
            self.tmpdir = tempfile.mkdtemp(prefix="sdn")
            path = Path(self.tmpdir) / "notify.sock"
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def __enter__(self) -> tuple[socket.socket, str]:
        self.sock.bind(self.path)
        self.sock.settimeout(1.0)
        return self.sock, self.path

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


class Notifications:
    """What a process sent to the socket, in order (one entry per datagram)."""

    def __init__(self, sock: socket.socket, proc: subprocess.Popen[str]) -> None:
        self.sock, self.proc = sock, proc
        self.received: list[str] = []

    def __iter__(self) -> Iterator[str]:
        return iter(self.received)

    def wait_for(self, predicate, what: str, patience: float = 120.0) -> str:
        """The next datagram matching `predicate`; fails if the process exits or after
        `patience` seconds (a guard against hanging, not a timing assertion)."""
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            try:
                message = self.sock.recv(65536).decode()
            except TimeoutError:
                if self.proc.poll() is not None:
                    _out, err = self.proc.communicate()
                    pytest.fail(f"syncd exited ({self.proc.returncode}) before {what}; "
                                f"received {self.received}; stderr: {err[-3000:]}")
                continue
            self.received.append(message)
            if predicate(message):
                return message
        pytest.fail(f"no {what} within {patience:.0f} s; received {self.received}")


def lines(message: str) -> list[str]:
    return message.split("\n")


def _reap(proc: subprocess.Popen) -> None:
    """A daemon a failed test left running: killed and waited for."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_syncd_run_speaks_the_notify_protocol(tmp_path, target_args, own_redis, monkeypatch):
    """READY=1 after the first sync, WATCHDOG=1 pings with STATUS while the loop is alive,
    STOPPING=1 on SIGTERM, then exit code 0: what Type=notify and WatchdogSec rely on."""
    db = tmp_path / "metadata.db"
    make_eeg2025(db, runs=3)
    config = tmp_path / "syncd.toml"
    config.write_text("[daemon]\nheartbeat_seconds = 0.5\n")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)  # the pings are then for syncd
    with notify_socket(tmp_path) as (sock, path):
        proc = syncd_process(
            "run", "--config", config, "--sqlite", db, "--state-dir", tmp_path / "state",
            "--redis-url", own_redis.url, *target_args,
            env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
        try:
            seen = Notifications(sock, proc)
            ready = seen.wait_for(lambda m: "READY=1" in lines(m), "READY=1")
            assert any(line.startswith("STATUS=") for line in lines(ready))
            before_ready = seen.received[:-1]
            assert any(m.startswith("STATUS=starting") for m in before_ready), before_ready

            ping = seen.wait_for(lambda m: "WATCHDOG=1" in lines(m), "a WATCHDOG=1 ping")
            status = [line for line in lines(ping) if line.startswith("STATUS=")]
            assert status and "in sync" in status[0], ping
            seen.wait_for(lambda m: "WATCHDOG=1" in lines(m), "a second WATCHDOG=1 ping")

            proc.send_signal(signal.SIGTERM)
            seen.wait_for(lambda m: "STOPPING=1" in lines(m), "STOPPING=1")
            _out, err = proc.communicate(timeout=120)
        finally:
            _reap(proc)
    assert proc.returncode == 0, err[-3000:]
    assert "stopped cleanly" in err
    assert sum("READY=1" in lines(m) for m in seen.received) == 1


# -- several sources on one host: the template unit syncd@.service --------------------------

# What an instance sets for itself; every other directive is syncd.service's.
PER_INSTANCE = {"Description", "ExecStart", "StateDirectory", "Environment", "ReadWritePaths"}


def test_template_is_the_unit_with_a_config_state_and_data_directory_per_instance(unit):
    template = parse_unit(TEMPLATE.read_text())
    assert one(template, "ExecStart").split()[1:] == ["run", "--config", "/etc/syncd/%i.toml"]
    assert one(template, "StateDirectory") == "syncd/%i"
    env = dict(v.split("=", 1) for v in template["Service"]["Environment"])
    assert env["SYNCD_STATE_DIR"] == "/var/lib/syncd/%i"
    assert one(template, "ReadWritePaths") == "/srv/%i"
    assert "%i" in one(template, "Description", "Unit")
    for where in ("Unit", "Service", "Install"):
        same = {k: v for k, v in unit[where].items() if k not in PER_INSTANCE}
        assert same == {k: v for k, v in template[where].items() if k not in PER_INSTANCE}, where


def test_instance_example_holds_known_keys_its_own_port_and_the_template_paths(tmp_path):
    text = INSTANCE_EXAMPLE.read_text().replace("NAME", "alpha")
    path = tmp_path / "alpha.toml"
    path.write_text(text)
    settings = load_settings({"config": str(path)}, environ={})
    assert str(PurePosixPath(str(settings.sqlite)).parent) == "/srv/alpha"  # ReadWritePaths=
    assert "alpha" in settings.source_id
    assert section(settings, "http", {"listen": ""})["listen"] != "127.0.0.1:9187"


def _instance(template: Unit, name: str, root: Path) -> tuple[list[str], dict[str, str]]:
    """The command and environment systemd gives instance `name` of the template, with
    /etc and /var/lib under `root` and this venv's syncd as the binary."""
    words = one(template, "ExecStart").replace("%i", name).split()
    command = [sys.executable, "-m", "syncd",
               *[w.replace("/etc/syncd", str(root / "etc")) for w in words[1:]]]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCD_", "NOTIFY_"))}
    for value in template["Service"]["Environment"]:
        key, val = value.replace("%i", name).split("=", 1)
        env[key] = val.replace("/var/lib", str(root / "var" / "lib"))
    return command, env


def _get(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except (urllib.error.URLError, OSError):
        return 0


def test_two_instances_run_two_daemons_on_their_own_ports(tmp_path, mongo_url, db_name,
                                                           own_redis):
    """Two instances of the template, each with its TOML (the example's, filled in): two
    daemons, each ready on its own port with its own state directory; a third whose TOML
    names a port already taken exits 2 saying which setting to change."""
    from syncd.embedded import free_port
    from tests.daemon_support import FAST, wait_for

    template = parse_unit(TEMPLATE.read_text())
    (tmp_path / "etc").mkdir()
    ports = {"alpha": free_port(), "beta": free_port()}
    ports["gamma"] = ports["alpha"]
    for name, port in ports.items():
        legacy = tmp_path / "srv" / name / "metadata.db"
        legacy.parent.mkdir(parents=True)
        make_eeg2025(legacy, runs=3)
        text = INSTANCE_EXAMPLE.read_text().replace("/srv/NAME", str(legacy.parent))
        text = text.replace("NAME", name).replace("127.0.0.1:9188", f"127.0.0.1:{port}")
        text = re.sub(r'(?m)^mongo_url = .*$', f'mongo_url = "{mongo_url}"', text)
        text = re.sub(r'(?m)^redis_url = .*$', f'redis_url = "{own_redis.url}"', text)
        text = re.sub(r'(?m)^database = .*$', f'database = "{db_name}"', text)
        (tmp_path / "etc" / f"{name}.toml").write_text(text + FAST)
    procs = {}
    try:
        for name in ("alpha", "beta"):
            command, env = _instance(template, name, tmp_path)
            procs[name] = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True)
        for name in ("alpha", "beta"):
            url = f"http://127.0.0.1:{ports[name]}/readyz"

            def ready(name: str = name, url: str = url) -> bool:
                if procs[name].poll() is not None:
                    pytest.fail(f"{name} exited: {procs[name].communicate()[1][-3000:]}")
                return _get(url) == 200
            wait_for(ready, 120, f"instance {name} ready on its port")
        for name in ("alpha", "beta"):
            assert (tmp_path / "var" / "lib" / "syncd" / name).is_dir()
        command, env = _instance(template, "gamma", tmp_path)
        third = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert third.returncode == 2, third.stderr[-3000:]
        line = [x for x in third.stderr.splitlines() if x.startswith("syncd: error")]
        assert len(line) == 1, third.stderr[-3000:]
        assert f"127.0.0.1:{ports['alpha']}" in line[0] and "another syncd" in line[0], line
        assert '[http] listen = "127.0.0.1:PORT" in its settings file' in line[0], line
    finally:
        said = {}
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for name, proc in procs.items():
            try:
                said[name] = proc.communicate(timeout=60)[1]
            except subprocess.TimeoutExpired:
                proc.kill()
                said[name] = proc.communicate()[1]
    assert all(p.returncode == 0 for p in procs.values()), {
        name: (p.returncode, said[name][-3000:]) for name, p in procs.items()}


def test_a_backoff_longer_than_the_watchdog_keeps_it_fed(tmp_path, own_mongo, own_redis,
                                                         monkeypatch):
    """While MongoDB is down the loop waits out its backoff (capped here at 30 s, far above
    half of the 10 s watchdog), and waiting on purpose counts as alive: every heartbeat
    of the outage pings (WATCHDOG=1, STATUS=waiting for MongoDB), none is the stale kind
    that leaves the ping out, so systemd does not kill a daemon that is only waiting
    (docs/operations.md: backoff_max_seconds need not fit under WatchdogSec)."""
    mongo, _client = own_mongo
    db = tmp_path / "metadata.db"
    make_eeg2025(db, runs=3)
    config = tmp_path / "syncd.toml"
    config.write_text("[daemon]\nheartbeat_seconds = 0.2\nbackoff_max_seconds = 30.0\n")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    waiting = "STATUS=waiting for MongoDB"  # the heartbeat's; note_outage adds ": why"
    with notify_socket(tmp_path) as (sock, path):
        proc = syncd_process(
            "run", "--config", config, "--sqlite", db, "--state-dir", tmp_path / "state",
            "--redis-url", own_redis.url, *mongo.target_args("wd", timeout=0.5),
            env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"})
        try:
            seen = Notifications(sock, proc)
            seen.wait_for(lambda m: "READY=1" in lines(m), "READY=1")
            mongo.stop()
            with sqlite3.connect(db) as conn:  # a change the loop fails to apply
                conn.execute("INSERT INTO config (key, value) VALUES ('wd', '1')")
            seen.wait_for(lambda m: waiting in lines(m), "the first heartbeat of the outage")
            start = len(seen.received) - 1
            for n in range(15):  # into the backoff's long delays (ceilings 8-30 s)
                seen.wait_for(lambda m: waiting in lines(m), f"outage heartbeat {n + 2}")
            beats = [m for m in seen.received[start:] if waiting in lines(m)]
            assert all("WATCHDOG=1" in lines(m) for m in beats), beats
            mongo.start()
            seen.wait_for(lambda m: "WATCHDOG=1" in lines(m) and any(
                line.startswith("STATUS=in sync") for line in lines(m)), "in sync again")
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=120)
        finally:
            _reap(proc)
    assert proc.returncode == 0, err[-3000:]
