"""Passwords in every URL shape syncd accepts are masked (userinfo, `?password=`, the
Sentinel and Cluster forms) and remembered; a blank HTTP token is refused at start."""

from __future__ import annotations

import subprocess

import pytest

from syncd.api.http_options import http_options
from syncd.config import load_settings
from syncd.errors import ConfigError
from syncd.redact import redact_url, register_secret, register_url, scrub
from tests.conftest import run_cli, syncd_process
from tests.hdf5_support import RedisProcess

SECRET = "Qu3ryPassw0rd"


# The password a URL gives where it is more than SECRET (an "@" inside it).
WHOLE = {f"redis://h/0?password=p@ss{SECRET}": f"p@ss{SECRET}",
         f"redis://h:6379/0?password=p@ss{SECRET}": f"p@ss{SECRET}",
         f"mongodb://u:my?token=x@{SECRET}@h/db": f"my?token=x@{SECRET}"}


@pytest.mark.parametrize("url, shown", [
    (f"redis://127.0.0.1/0?password={SECRET}", "redis://127.0.0.1/0?password=***"),
    (f"redis://h:6379/0?db=1&password={SECRET}&x=1", "redis://h:6379/0?db=1&password=***&x=1"),
    (f"redis://h/0?password=p@ss{SECRET}", "redis://h/0?password=***"),
    # Up to the last "@" could be userinfo too ("h:6379/0?password=p" before "@ss..."):
    # an "@" in a query only masks more.
    (f"redis://h:6379/0?password=p@ss{SECRET}", "redis://h:***"),
    (f"mongodb://u:my?token=x@{SECRET}@h/db", "mongodb://u:***"),
    (f"rediss://u@h:6380/0?ssl_cert_reqs=none&password={SECRET}",
     "rediss://u@h:6380/0?ssl_cert_reqs=none&password=***"),
    (f"unix:///run/redis.sock?db=2&password={SECRET}", "unix:///run/redis.sock?db=2&password=***"),
    (f"redis+sentinel://:{SECRET}@a:26379,b:26379/mymaster/0",
     "redis+sentinel://:***@a:26379,b:26379/mymaster/0"),
    (f"rediss+sentinel://user:{SECRET}@a:1/m?ssl_cert_reqs=none",
     "rediss+sentinel://user:***@a:1/m?ssl_cert_reqs=none"),
    (f"redis+sentinel://a:1/m?password={SECRET}", "redis+sentinel://a:1/m?password=***"),
    (f"redis+cluster://:{SECRET}@a:1,b:2", "redis+cluster://:***@a:1,b:2"),
    (f"mongodb://h/?tls=true&tlsCertificateKeyFilePassword={SECRET}",
     "mongodb://h/?tls=true&tlsCertificateKeyFilePassword=***"),
    (f"mongodb://h/?authMechanism=MONGODB-AWS&authMechanismProperties="
     f"AWS_SESSION_TOKEN:{SECRET}", "mongodb://h/?authMechanism=MONGODB-AWS&"
     "authMechanismProperties=***"),
    ("redis://h:6379/0?db=1", "redis://h:6379/0?db=1"),  # nothing secret: unchanged
])
def test_every_url_shape_is_masked_and_remembered(url, shown):
    assert redact_url(url) == shown
    assert redact_url(f"connecting to '{url}' failed") == f"connecting to '{shown}' failed"
    register_url(url)
    if SECRET in url:  # remembered: masked in any text, whatever test ran before
        password = WHOLE.get(url, SECRET)
        assert scrub(f"AUTH {password} refused") == "AUTH *** refused"


def test_a_percent_encoded_query_password_is_remembered_both_ways():
    register_url("redis://h/0?password=Pct%40Enc0ded")
    assert scrub("the password Pct@Enc0ded or Pct%40Enc0ded") == "the password *** or ***"


def test_blank_or_tiny_secrets_are_not_remembered():
    for garbage in (" ", "   ", "\t", "ab", " a "):
        register_secret(garbage)
    text = "a b\tab  c"
    assert scrub(text) == text  # no space, tab or "ab" turned into ***
    register_secret("a-real-t0ken")
    assert scrub("Bearer a-real-t0ken") == "Bearer ***"


def test_cache_stats_and_errors_never_show_a_query_password(tmp_path):
    server = RedisProcess(tmp_path / "redis", "--requirepass", SECRET)
    server.start()
    try:
        url = f"redis://127.0.0.1:{server.port}/0?password={SECRET}"
        stats = run_cli("cache", "stats", "--redis-url", url, "--state-dir", tmp_path / "s")
        assert stats.code == 0, stats
        assert SECRET not in stats.out + stats.err
        assert f"redis://127.0.0.1:{server.port}/0?password=***" in stats.out, stats
        wrong = url.replace(SECRET, "Wr0ngPassw0rd")
        refused = run_cli("cache", "stats", "--redis-url", wrong, "--state-dir", tmp_path / "s")
        assert refused.code == 2, refused
        assert "Wr0ngPassw0rd" not in refused.out + refused.err and "password=***" in \
            refused.err, refused
    finally:
        server.kill()
    bad = run_cli("cache", "stats", "--redis-url", f"redis+sentinel://a:1/m?password={SECRET}",
                  "--state-dir", tmp_path / "s")
    assert bad.code == 2 and "unknown option" in bad.err, bad
    assert SECRET not in bad.out + bad.err


@pytest.mark.parametrize("line", ['token = " "', 'token = ""', "token = '\t'",
                                  'username = "ops"\npassword = "  "'])
def test_a_blank_http_credential_in_the_file_is_refused(tmp_path, line):
    cfg = tmp_path / "syncd.toml"
    cfg.write_text(f"[http]\n{line}\n")
    settings = load_settings({"config": str(cfg)})
    with pytest.raises(ConfigError, match="blank"):
        http_options(settings, listen="127.0.0.1:0")


def test_a_blank_token_in_the_environment_stops_syncd_at_start(tmp_path, target_args):
    proc = syncd_process("dashboard", "--listen", "127.0.0.1:0", "--state-dir", tmp_path / "s",
                         *target_args, env={"SYNCD_HTTP_TOKEN": " "})
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("syncd dashboard started serving with a blank token")
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "SYNCD_HTTP_TOKEN" in lines[0] and "blank" in lines[0], err


def test_a_password_with_a_colon_is_masked_whole_not_in_pieces():
    """Only authMechanismProperties holds KEY:TOKEN pairs whose tokens are secrets alone.
    A password with a ':' or ',' in it is one secret: its pieces (here 'data') are
    words of ordinary log lines, which must stay readable."""
    register_url("mongodb://syncd:Pa55w0rd%2C7%3Adata@h/db")
    assert scrub("AUTH Pa55w0rd,7:data refused") == "AUTH *** refused"
    line = "the embedded MongoDB's data directory /var/lib/syncd/mongo/data"
    assert scrub(line) == line
