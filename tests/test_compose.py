"""The compose stack (docker/): it parses and names what syncd needs. No Docker engine
runs here, so nothing is started; `docker compose config` is run where the compose
plugin exists (it needs no engine)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import PurePosixPath
from typing import Any

import pytest
import yaml

from syncd.api.run_daemon import daemon_options
from syncd.config import OPTIONS_BY_KEY, load_settings, section
from tests.conftest import ROOT

DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ...
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?+])([^}]*))?\}")
# What compose itself leaves alone: "$$" is a literal "$" for the container's shell.
ESCAPED = re.compile(r"\$\$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, Any]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def variables(text: str) -> list[tuple[str, str, str]]:
    """(name, operator, argument) of every interpolation in `text`."""
    return [(m.group(1), m.group(2) or "", m.group(3) or "")
            for m in VARIABLE.finditer(ESCAPED.sub("", text))]


def read_env_file(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def split_volume(spec: str) -> list[str]:
    """A short-syntax volume split at its colons, not at those inside ${...}."""
    found = [m.group(0) for m in VARIABLE.finditer(spec)]
    for i, text in enumerate(found):
        spec = spec.replace(text, f"\0{i}\0", 1)
    parts = spec.split(":")
    for i, text in enumerate(found):
        parts = [part.replace(f"\0{i}\0", text) for part in parts]
    return parts


def test_compose_has_its_services_and_named_volumes(compose, services):
    assert set(services) == {"mongo", "redis", "syncd", "syncd-b"}
    assert "version" not in compose  # obsolete in the Compose Specification
    for name, service in services.items():
        assert service.get("restart") in ("unless-stopped", "always", "on-failure"), name
        for volume in service.get("volumes", []):
            source = split_volume(str(volume))[0]
            if not source.startswith(("/", ".", "$")):
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"


def test_mongo_7_single_node_replica_set_initiated_by_its_healthcheck(services):
    mongo = services["mongo"]
    assert re.fullmatch(r"mongo:7(\.\d+){0,2}", mongo["image"]), mongo["image"]
    command = mongo["command"]
    command = command if isinstance(command, list) else command.split()
    assert command[command.index("--replSet") + 1] == "rs0"
    check = mongo["healthcheck"]["test"]
    script = " ".join(check) if isinstance(check, list) else check
    assert "rs.initiate(" in script and "'rs0'" in script and "mongo:27017" in script
    assert "rs.status()" in script  # initiates only when the set does not exist yet
    assert "isWritablePrimary" in script  # healthy once it takes writes
    assert any("/data/db" in str(v) for v in mongo["volumes"])


def test_redis_7_2_requires_a_password_from_the_environment_with_no_default(services):
    redis = services["redis"]
    assert re.fullmatch(r"redis:7\.2(\.\d+)?(-[\w.]+)?", redis["image"]), redis["image"]
    env = env_of(redis)
    [(name, op, message)] = variables(env["REDIS_PASSWORD"])
    assert (name, op) == ("REDIS_PASSWORD", ":?") and message.strip()
    command = redis["command"]
    command = " ".join(command) if isinstance(command, list) else command
    assert "requirepass" in command and "$$REDIS_PASSWORD" in command
    assert "redis-server" in command
    check = redis["healthcheck"]["test"]
    check = " ".join(check) if isinstance(check, list) else check
    assert "REDISCLI_AUTH" in check and "ping" in check  # the check authenticates
    assert any("/data" in str(v) for v in redis["volumes"])


def test_no_password_has_a_default_anywhere():
    text = COMPOSE.read_text()
    secrets = [(n, op) for n, op, _ in variables(text) if re.search("PASS|SECRET|TOKEN", n)]
    assert secrets, "the Redis password comes from the environment"
    assert all(op == ":?" for _, op in secrets), secrets
    assert not re.search(r"requirepass\s+['\"]?\w", text)  # no literal password
    assert not re.search(r"redis://:\w", text)
    assert not re.search(r"mongodb://[^/\s]*:[^/\s$]*@", text)


def test_published_ports_are_bound_to_loopback_only(services):
    published = 0
    for name, service in services.items():
        for port in service.get("ports", []):
            published += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", (name, port)
            else:
                assert str(port).startswith("127.0.0.1:"), (name, port)
        assert "network_mode" not in service, name
    assert published == 2
    assert services["mongo"]["ports"] == ["127.0.0.1:27017:27017"]
    assert services["redis"]["ports"] == ["127.0.0.1:6379:6379"]


def test_syncd_service_is_built_here_and_waits_for_healthy_servers(services):
    syncd = services["syncd"]
    build = syncd["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == \
        (DOCKER / "Dockerfile").resolve()
    assert syncd["command"] == ["run"]
    for server in ("mongo", "redis"):
        assert syncd["depends_on"][server]["condition"] == "service_healthy"
    assert "ports" not in syncd
    # SIGTERM: the batch is finished and the checkpoint saved; give it time to.
    assert syncd["stop_grace_period"] in ("2m", "120s")
    assert syncd.get("read_only") is True and syncd.get("cap_drop") == ["ALL"]
    assert "no-new-privileges:true" in syncd.get("security_opt", [])


def test_syncd_environment_names_its_settings(services):
    env = env_of(services["syncd"])
    names = {"SYNCD_MONGO_URL", "SYNCD_REDIS_URL", "SYNCD_SQLITE", "SYNCD_HDF5_DIRS",
             "SYNCD_STATE_DIR", "SYNCD_SOURCE_ID", "SYNCD_TIMEZONE"}
    assert names <= set(env)
    known = {option.env for option in OPTIONS_BY_KEY.values()} | {"SYNCD_CONFIG"}
    assert {k for k in env if k.startswith("SYNCD_")} <= known  # no made-up settings
    assert env["SYNCD_MONGO_URL"].startswith("mongodb://mongo:27017/")
    assert "replicaSet=rs0" in env["SYNCD_MONGO_URL"]
    redis_url = env["SYNCD_REDIS_URL"]
    assert re.fullmatch(r"redis://:\$\{REDIS_PASSWORD:\?[^}]+\}@redis:6379/\d+", redis_url)
    # The source id names every document: it must not default to the container's name.
    assert [op for _, op, _ in variables(env["SYNCD_SOURCE_ID"])] == [":?"]


def test_syncd_mounts_the_legacy_data_and_a_state_volume(compose, services):
    syncd = services["syncd"]
    env = env_of(syncd)
    mounts = {}
    for volume in syncd["volumes"]:
        source, target, *mode = split_volume(str(volume))
        mounts[target] = (source, mode[0] if mode else "rw")
    legacy = str(PurePosixPath(env["SYNCD_SQLITE"]).parent)
    source, mode = mounts[legacy]
    [(name, op, _)] = variables(source)
    assert (name, op) == ("LEGACY_DATA_DIR", ":?")  # required, no default path
    assert mode == "rw"  # triggers capture (the default) writes metadata.db's schema
    state, _ = mounts[env["SYNCD_STATE_DIR"]]
    assert state in compose["volumes"]
    config, config_mode = mounts[env["SYNCD_CONFIG"]]
    assert config_mode == "ro" and (DOCKER / config).is_file()


def test_two_sources_share_one_database_with_their_own_ids_files_and_state(compose,
                                                                          services):
    a, b = services["syncd"], services["syncd-b"]
    env_a, env_b = env_of(a), env_of(b)
    assert env_a["SYNCD_DATABASE"] == env_b["SYNCD_DATABASE"]
    assert env_a["SYNCD_MONGO_URL"] == env_b["SYNCD_MONGO_URL"]
    ids = [variables(e["SYNCD_SOURCE_ID"]) for e in (env_a, env_b)]
    assert ids[0][0][0] != ids[1][0][0] and all(v[0][1] == ":?" for v in ids)  # required
    mounts = [{split_volume(str(v))[1]: split_volume(str(v))[0] for v in s["volumes"]}
              for s in (a, b)]
    assert mounts[0]["/legacy"] != mounts[1]["/legacy"]
    assert mounts[0]["/var/lib/syncd"] != mounts[1]["/var/lib/syncd"]
    assert all(m["/var/lib/syncd"] in compose["volumes"] for m in mounts)
    for key in ("build", "command", "depends_on", "read_only", "cap_drop", "stop_grace_period"):
        assert a[key] == b[key], key


def test_mounted_config_is_valid_and_needs_no_torch(tmp_path):
    """The image is built without torch: the stack's syncd.toml turns features off."""
    from syncd.hdf5.features import FEATURES_DEFAULTS

    settings = load_settings({"config": str(DOCKER / "syncd.toml")}, environ={})
    assert daemon_options(settings).capture == "triggers"
    assert section(settings, "features", FEATURES_DEFAULTS)["extractors"] == []


def test_dockerfile_installs_syncd_without_the_embedded_extra():
    text = (DOCKER / "Dockerfile").read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    installs = [line for line in instructions if "pip install" in line]
    assert installs and all(re.search(r"pip install \.(\s|$)", line) for line in installs)
    assert "[embedded]" not in text and "torch" not in " ".join(installs)
    assert 'ENTRYPOINT ["syncd"]' in instructions
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and not users[-1].startswith(("root", "0"))
    ignore = [line for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]
    assert ignore[0] == "*"  # the context is the repository root: only what is needed
    for needed in ("pyproject.toml", "syncd", "legacy_adapters", "migrations"):
        assert f"!{needed}" in ignore
        assert f"COPY {needed}" in text


def test_env_example_names_every_required_variable_and_holds_no_password():
    values = read_env_file(ENV_EXAMPLE.read_text())
    for key, value in values.items():
        if re.search("PASS|SECRET|TOKEN", key):
            assert value == "", f"{key} has a value in .env.example"
    required = {n for n, op, _ in variables(COMPOSE.read_text()) if op in (":?", "?")}
    assert required == {"REDIS_PASSWORD", "LEGACY_DATA_DIR", "SYNCD_SOURCE_ID",
                        "SYNCD_TIMEZONE", "LEGACY_DATA_DIR_B", "SYNCD_SOURCE_ID_B"}
    assert required <= set(values)  # each one documented, and empty: to be filled in
    assert all(values[name] == "" for name in required)
    optional = {n for n, op, _ in variables(COMPOSE.read_text()) if op not in (":?", "?")}
    commented = set(re.findall(r"(?m)^# (\w+)=", ENV_EXAMPLE.read_text()))
    assert optional <= commented | set(values)
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "docker/.env" in ignored  # the real one, with the password, is never committed


def _compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    result = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60)
    return result.returncode == 0


@pytest.mark.skipif(not _compose_plugin(),
                    reason="the docker compose plugin is not installed (it needs no engine "
                           "for `config`, but it is not on this machine)")
def test_docker_compose_config_accepts_the_file(tmp_path):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    env = tmp_path / ".env"
    env.write_text(f"REDIS_PASSWORD=0123abcd\nLEGACY_DATA_DIR={legacy}\n"
                   f"SYNCD_SOURCE_ID=test-host\nSYNCD_TIMEZONE=UTC\nLEGACY_DATA_DIR_B={legacy}\n"
                   "SYNCD_SOURCE_ID_B=test-host-b\n")
    base = ["docker", "compose", "-f", str(COMPOSE), "--env-file", str(env)]
    result = subprocess.run([*base, "config", "--format", "yaml"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert resolved["syncd"]["environment"]["SYNCD_REDIS_URL"] == \
        "redis://:0123abcd@redis:6379/0"
    assert all(p.get("host_ip") == "127.0.0.1" for s in resolved.values()
               for p in s.get("ports", []))
    env.write_text(f"REDIS_PASSWORD=\nLEGACY_DATA_DIR={legacy}\nSYNCD_SOURCE_ID=x\n"
                   f"SYNCD_TIMEZONE=UTC\nLEGACY_DATA_DIR_B={legacy}\nSYNCD_SOURCE_ID_B=y\n")
    refused = subprocess.run([*base, "config"], capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "REDIS_PASSWORD" in refused.stderr


def test_syncd_healthcheck_asks_readyz_where_the_stack_config_listens(services):
    from syncd.api.http_options import http_options
    from syncd.http.options import DEFAULTS

    check = services["syncd"]["healthcheck"]
    command = " ".join(check["test"])
    assert check["test"][0] == "CMD" and "curl" not in command  # python:3.11-slim has none
    settings = load_settings({"config": str(DOCKER / "syncd.toml")}, environ={})
    # The file's own listen (the tests' SYNCD_HTTP_LISTEN would win otherwise).
    listen = http_options(settings, section(settings, "http", DEFAULTS)["listen"])
    assert f"{listen.url}/readyz" in command
    assert listen.host == "127.0.0.1" and not listen.auth  # loopback: no token needed
    assert re.fullmatch(r"\d+[sm]", check["start_period"])  # a first backfill takes time
