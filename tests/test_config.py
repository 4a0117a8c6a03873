"""Bad configuration: exit 2 and one clear line naming the setting; passwords never shown."""

from __future__ import annotations

import json
import subprocess

import pytest

from syncd.config import load_settings
from syncd.embedded import free_port
from tests.conftest import Result, run_cli, syncd_process


def _one_line(result) -> str:
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result
    assert "Traceback" not in result.err
    return lines[0]


@pytest.fixture
def good_db(tmp_path):
    from syncd.sample import make_eeg2025

    path = tmp_path / "metadata.db"
    make_eeg2025(path, runs=3)
    return path


def test_missing_sqlite_file(tmp_path, target_args):
    result = run_cli("migrate", "--sqlite", tmp_path / "nope.db", *target_args)
    assert result.code == 2
    line = _one_line(result)
    assert "--sqlite" in line and "no such file" in line


def test_sqlite_not_set(target_args):
    result = run_cli("migrate", *target_args, env={"SYNCD_SQLITE": ""})
    assert result.code == 2
    assert "--sqlite is not set" in _one_line(result)


def test_not_an_sqlite_file(tmp_path, target_args):
    bogus = tmp_path / "metadata.db"
    bogus.write_text("this is a CSV file, not a database\n")
    result = run_cli("migrate", "--sqlite", bogus, *target_args)
    assert result.code == 2
    assert "not an SQLite database" in _one_line(result)


def test_empty_sqlite_file(tmp_path, target_args):
    empty = tmp_path / "metadata.db"
    empty.touch()
    result = run_cli("verify", "--sqlite", empty, *target_args)
    assert result.code == 2
    assert "empty" in _one_line(result)


def test_sqlite_is_a_directory(tmp_path, target_args):
    result = run_cli("migrate", "--sqlite", tmp_path, *target_args)
    assert result.code == 2
    assert "not a file" in _one_line(result)


def test_corrupt_sqlite_file(tmp_path, good_db, target_args):
    data = bytearray(good_db.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # wreck the schema page, keep the header
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(bytes(data))
    result = run_cli("migrate", "--sqlite", bad, *target_args)
    assert result.code == 2
    assert "--sqlite" in _one_line(result)


def test_unreachable_mongo_with_password_masked(good_db):
    port = free_port()  # nothing listens here
    url = f"mongodb://admin:s3cr3t-pw@127.0.0.1:{port}/?directConnection=true"
    result = run_cli("migrate", "--sqlite", good_db, "--mongo-url", url, "--mongo-timeout", "1")
    assert result.code == 2
    line = _one_line(result)
    assert "not reachable within 1 s" in line
    assert "s3cr3t-pw" not in result.err + result.out
    assert "admin:***@" in line


def test_status_on_an_unreachable_mongo_exits_1_without_a_local_daemon(tmp_path, good_db):
    """`syncd status` as a health check from a host that runs no daemon (no daemon.json
    in its state directory): MongoDB down is exit 1, as documented, not 2 (a settings
    mistake)."""
    url = f"mongodb://admin:s3cr3t-pw@127.0.0.1:{free_port()}/?directConnection=true"
    args = ["--sqlite", good_db, "--mongo-url", url, "--mongo-timeout", "1",
            "--state-dir", tmp_path / "state"]
    shown = run_cli("status", *args)
    assert shown.code == 1, shown
    assert "health: MongoDB is not reachable" in shown.out and "(exit 1)" in shown.out
    assert "no daemon status in" in shown.out
    as_json = run_cli("status", "--json", *args)
    assert as_json.code == 1, as_json
    assert json.loads(as_json.out)["daemon"] is None
    assert "s3cr3t-pw" not in shown.out + shown.err + as_json.out + as_json.err


def test_bad_mongo_url_scheme(good_db):
    result = run_cli("status", "--mongo-url", "http://user:hunter2@example/")
    assert result.code == 2
    line = _one_line(result)
    assert "--mongo-url" in line and "mongodb://" in line
    assert "hunter2" not in line


def test_unknown_toml_key(tmp_path, good_db):
    cfg = tmp_path / "syncd.toml"
    cfg.write_text(f'sqlite = "{good_db}"\nmongo_uri = "mongodb://x"\n')
    result = run_cli("migrate", "--config", cfg)
    assert result.code == 2
    line = _one_line(result)
    assert "unknown key 'mongo_uri'" in line and str(cfg) in line


def test_invalid_toml(tmp_path):
    cfg = tmp_path / "syncd.toml"
    cfg.write_text("sqlite = \n")
    result = run_cli("status", env={"SYNCD_CONFIG": str(cfg)})
    assert result.code == 2
    assert "not valid TOML" in _one_line(result)


def test_missing_config_file(tmp_path):
    result = run_cli("status", "--config", tmp_path / "absent.toml")
    assert result.code == 2
    assert "no such file" in _one_line(result)


@pytest.mark.parametrize(("flag", "value", "expect"), [
    ("--database", "my.db", "--database"),
    ("--timezone", "Mars/Olympus", "unknown time zone"),
    ("--chunk-size", "0", "positive"),
    ("--chunk-size", "many", "--chunk-size"),
    ("--mongo-timeout", "-3", "--mongo-timeout"),
    ("--redis-timeout", "0", "--redis-timeout"),
    ("--source-id", " ", "--source-id"),
    ("--redis-url", "http://cache", "--redis-url"),
])
def test_bad_values(flag, value, expect, good_db):
    result = run_cli("migrate", "--sqlite", good_db, flag, value)
    assert result.code == 2
    assert expect in _one_line(result)


def test_bad_environment_value_names_the_variable(good_db):
    result = run_cli("migrate", "--sqlite", good_db, env={"SYNCD_CHUNK_SIZE": "-1"})
    assert result.code == 2
    assert "SYNCD_CHUNK_SIZE" in _one_line(result)


def test_usage_error_exits_2():
    assert run_cli("migrate", "--no-such-flag").code == 2
    assert run_cli("frobnicate").code == 2


def test_layers_toml_then_env_then_flags(tmp_path):
    cfg = tmp_path / "syncd.toml"
    cfg.write_text('database = "from_toml"\nsource_id = "toml-host"\nchunk_size = 10\n'
                   'hdf5_dirs = ["/data/a", "/data/b"]\n[cache]\nmax_bytes = 1000\n')
    env = {"SYNCD_CONFIG": str(cfg), "SYNCD_DATABASE": "from_env", "SYNCD_CHUNK_SIZE": "20"}
    settings = load_settings({"chunk_size": "30"}, environ=env)
    assert settings.database == "from_env"
    assert settings.source_id == "toml-host"
    assert settings.chunk_size == 30
    assert [str(p) for p in settings.hdf5_dirs] == ["/data/a", "/data/b"]
    assert settings.extra["cache"] == {"max_bytes": 1000}
    assert {"database", "source_id", "chunk_size", "hdf5_dirs"} <= settings.explicit
    assert "mongo_url" not in settings.explicit
    env_dirs = load_settings({}, environ={"SYNCD_HDF5_DIRS": "/x:/y"})
    assert [str(p) for p in env_dirs.hdf5_dirs] == ["/x", "/y"]
    flag_dirs = load_settings({"hdf5_dirs": ["/f1", "/f2"]}, environ={})
    assert [str(p) for p in flag_dirs.hdf5_dirs] == ["/f1", "/f2"]


def test_hdf5_dir_flag_is_accepted(good_db, target_args):
    result = run_cli("migrate", "--sqlite", good_db, "--hdf5-dir", "/tmp/a", "--hdf5-dir",
                     "/tmp/b", "--dry-run", *target_args)
    assert result.code == 0, result


def test_loaded_settings_mask_their_passwords_wherever_shown():
    from syncd.redact import scrub

    settings = load_settings({"mongo_url": "mongodb://u:pw123@h/", "redis_url":
                              "redis://:pw456@h:6379/0"}, environ={})
    shown = scrub(repr(settings))
    assert "pw123" not in shown and "pw456" not in shown


def test_redis_timeout_is_its_own_setting_in_every_layer(tmp_path):
    assert load_settings({}, environ={}).redis_timeout == 5.0
    cfg = tmp_path / "syncd.toml"
    cfg.write_text("redis_timeout = 7\nmongo_timeout = 3\n")
    from_toml = load_settings({"config": str(cfg)}, environ={})
    assert (from_toml.redis_timeout, from_toml.mongo_timeout) == (7.0, 3.0)
    from_env = load_settings({"config": str(cfg)}, environ={"SYNCD_REDIS_TIMEOUT": "2.5"})
    assert from_env.redis_timeout == 2.5
    from_flag = load_settings({"config": str(cfg), "redis_timeout": "0.5"},
                              environ={"SYNCD_REDIS_TIMEOUT": "2.5"})
    assert from_flag.redis_timeout == 0.5


@pytest.mark.parametrize("table,key", [("hdf5", "debounce_second"), ("cache", "max_byte")])
@pytest.mark.parametrize("command", ["migrate", "status", "run", "verify"])
def test_a_mistyped_table_key_is_refused_by_every_command(tmp_path, good_db, target_args,
                                                          command, table, key):
    """Not only `warm` reads `[hdf5]` and `[cache]`: every command checks the whole file
    when the settings load, before it connects or starts anything (exit 2, one line)."""
    cfg = tmp_path / "syncd.toml"
    cfg.write_text(f'sqlite = "{good_db}"\n\n[{table}]\n{key} = 1\n')
    args = [command, "--config", cfg, *target_args]
    if command == "run":  # a separate process: without the check it would start following
        proc = syncd_process(*args, "--http", "")
        try:
            _out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail("syncd run started with a mistyped key in its settings")
        result = Result(proc.returncode, _out, err)
    else:
        result = run_cli(*args)
    assert result.code == 2, result
    line = _one_line(result)
    assert f"[{table}]" in line and f"unknown key {key!r}" in line and str(cfg) in line


def test_dashboard_secrets_are_masked_from_the_moment_settings_load(tmp_path):
    """Any command, not only `syncd run`, masks the [http] token and password (and
    SYNCD_HTTP_TOKEN) in what it prints: they are registered when the settings load."""
    from syncd.redact import scrub

    config = tmp_path / "syncd.toml"
    config.write_text('[http]\ntoken = "tok-4f9a2c81e7"\nusername = "ops"\n'
                      'password = "pw-b71d0e33aa"\n')
    load_settings({"config": str(config)}, environ={"SYNCD_HTTP_TOKEN": "env-5c2e9b7d41"})
    said = scrub("token tok-4f9a2c81e7, password pw-b71d0e33aa, env env-5c2e9b7d41")
    assert "tok-4f9a2c81e7" not in said and "pw-b71d0e33aa" not in said
    assert "env-5c2e9b7d41" not in said
    assert said.count("***") == 3
