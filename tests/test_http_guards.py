"""The HTTP server under hostile or careless clients (issue 20, items 4 and 5), all over
real HTTP against the real app: live streams past their cap, probes while streams are
open, half-sent requests, foreign Host headers (DNS rebinding), the browser headers,
redirects, auth scheme case, and query values no stored value could match."""

from __future__ import annotations

import base64
import json
import socket

import pytest

from tests.daemon_support import wait_for
from tests.http_support import add_experiment, open_stream, request, serve


def test_streams_past_the_cap_get_a_clear_503_and_the_probes_still_answer(tmp_path, db,
                                                                          rclient):
    """60 open pages made /healthz wait a second for a thread; now the streams have
    threads of their own, and the 61st of a cap of 60 is refused with a reason."""
    add_experiment(db, 1, [{"epoch": 1, "train_loss": 0.5}])
    with serve(tmp_path, db, rclient, "max_streams = 60") as server:
        opened = [open_stream(server, "/api/experiments/1/events") for _ in range(60)]
        try:
            assert all(b"event: ready" in got for _, got in opened), opened[-1][1]
            sock, refused = open_stream(server, "/api/experiments/1/events")
            sock.close()
            head, _, body = refused.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503"), refused
            error = json.loads(body)["error"]
            assert "too many live streams" in error and "max_streams" in error, error
            for path in ("/healthz", "/metrics", "/readyz"):
                code, _, _ = request(server, path, timeout=5)  # a timeout fails the test
                assert code in (200, 503) if path == "/readyz" else code == 200
        finally:
            for sock, _ in opened:
                sock.close()
        # Closed pages give their places back.
        _, got = open_stream(server, "/api/experiments/1/events")
        assert b"event: ready" in got


def test_a_half_sent_request_is_cut_off(tmp_path, db):
    with serve(tmp_path, db, http="header_timeout_seconds = 1.0") as server:
        half = socket.create_connection(("127.0.0.1", server.port), timeout=15)
        half.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=15)
        # A keep-alive connection that starts a second request and stalls.
        again = socket.create_connection(("127.0.0.1", server.port), timeout=15)
        again.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = b""
        while not first.endswith(b"}"):  # the whole first answer (JSON)
            first += again.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        again.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        for sock in (half, silent, again):
            with sock:
                try:
                    assert sock.recv(65536) == b""  # closed by the server
                except TimeoutError:
                    pytest.fail("the server kept a half-sent request's connection open")
        assert request(server, "/healthz")[0] == 200


def test_only_this_servers_own_host_names_are_answered(tmp_path, db):
    """A page of another site that rebinds its name to 127.0.0.1 sends its own name as
    Host: refused. Loopback names (any port) and configured ones are answered."""
    with serve(tmp_path, db, http='allowed_hosts = ["TrainHost.lab", "10.1.2.3"]') as server:
        for host in ("evil.example", "evil.example:9187", "127.0.0.1.evil.example",
                     "localhost.evil.example", "[::2]:80"):
            code, _, body = request(server, "/api/health", {"Host": host})
            assert code == 400, (host, code)
            assert "allowed_hosts" in body and len(body.strip().splitlines()) == 1, body
        for host in ("localhost", "LOCALHOST:80", "127.0.0.1", f"127.0.0.1:{server.port}",
                     "[::1]", "[::1]:9187", "trainhost.lab:9187", "10.1.2.3"):
            assert request(server, "/healthz", {"Host": host})[0] == 200, host


def test_every_response_tells_the_browser_what_it_may_run(tmp_path, db):
    with serve(tmp_path, db, http='token = "t0k-3xample"') as server:
        auth = {"Authorization": "Bearer t0k-3xample"}
        answers = [request(server, path, auth) for path in
                   ("/experiments", "/api/experiments", "/static/dashboard.js", "/healthz",
                    "/metrics", "/favicon.ico", "/no/such/page")]
        answers.append(request(server, "/experiments"))  # 401
        answers.append(request(server, "/experiments", {**auth, "Host": "evil.example"}))
        assert [a[0] for a in answers] == [200, 200, 200, 200, 200, 200, 404, 401, 400]
        # the browser's own /favicon.ico: an icon served here (no 404 in its console)
        assert answers[5][1]["content-type"] == "image/x-icon", answers[5][1]
        for code, headers, _ in answers:
            csp = headers.get("content-security-policy", "")
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, (code, csp)
            assert "unsafe-inline" not in csp
            assert headers.get("x-frame-options") == "DENY", code
            assert headers.get("x-content-type-options") == "nosniff", code
        page = answers[0][2]
        assert "<script" in page and "<script>" not in page  # only src= scripts
        assert " on" + "change=" not in page and "style=" not in page


def test_redirects_are_relative_not_built_from_the_host_header(tmp_path, db):
    with serve(tmp_path, db, http='allowed_hosts = ["trainhost.lab"]') as server:
        code, headers, _ = request(server, "/experiments/", {"Host": "trainhost.lab:1"})
        assert code in (301, 307, 308) and headers["location"] == "/experiments", headers
        code, headers, _ = request(server, "//evil.example/", {"Host": "trainhost.lab"})
        if code in (301, 307, 308):
            assert headers["location"].startswith("/") and \
                not headers["location"].startswith("//"), headers


def test_auth_scheme_names_are_case_insensitive(tmp_path, db):
    with serve(tmp_path, db, http='token = "t0k-3xample"\nusername = "ops"\n'
                                  'password = "pw-3xample"') as server:
        basic = base64.b64encode(b"ops:pw-3xample").decode()
        by_token = base64.b64encode(b"anyone:t0k-3xample").decode()
        for header in ("bearer t0k-3xample", "BEARER t0k-3xample", "Bearer  t0k-3xample",
                       f"basic {basic}", f"BASIC {basic}", f"bAsIc {by_token}"):
            assert request(server, "/healthz", {"Authorization": header})[0] == 200, header
        wrong = base64.b64encode(b"ops:nope").decode()
        for header in ("bearer nope", f"basic {wrong}", "t0k-3xample", "Token t0k-3xample",
                       "basic !!!", f"bearer {basic}"):
            assert request(server, "/healthz", {"Authorization": header})[0] == 401, header


def test_query_values_no_stored_value_can_match_are_a_400_or_404(tmp_path, db, rclient):
    """A number too large for BSON was a 500 and a traceback per request."""
    add_experiment(db, 1, [{"epoch": 1, "train_loss": 0.5}])
    huge = "99999999999999999999"
    with serve(tmp_path, db, rclient) as server:
        for path in (f"/api/experiments?challenge={huge}", f"/experiments?challenge={huge}",
                     f"/experiments?challenge=-{huge}&status=running",
                     "/api/experiments?challenge=" + "9" * 5000):  # (int() refuses these)
            code, _, body = request(server, path)
            assert code == 400 and "challenge" in body and "Traceback" not in body, (path, body)
        code, _, body = request(server, f"/api/experiments?challenge={huge}")
        assert len(json.loads(body)["error"].splitlines()) == 1
        for path in (f"/api/experiments/{huge}", f"/experiments/{huge}",
                     f"/api/experiments/{huge}/epochs", f"/api/experiments/{huge}/events",
                     f"/api/experiments/-{huge}"):
            code, _, body = request(server, path)
            assert code == 404 and "no experiment" in body, (path, code, body)
        assert request(server, "/api/experiments?challenge=1")[0] == 200
        # A Last-Event-ID Redis cannot read starts the stream at the newest entry.
        for last in ("abc", f"1-{huge}", f"{huge}{huge}-0", "0-0 junk"):
            sock, got = open_stream(server, "/api/experiments/1/events",
                                    {"Last-Event-ID": last})
            sock.close()
            assert b"event: ready" in got and b"unavailable" not in got, (last, got)


def _read_until(sock: socket.socket, marker: bytes, got: bytes = b"") -> bytes:
    sock.settimeout(10)
    while marker not in got:
        chunk = sock.recv(65536)  # a timeout fails the test
        if not chunk:
            break
        got += chunk
    return got


def test_more_pages_than_the_redis_pool_has_connections_all_follow(tmp_path, db, rclient):
    """A blocking read per page took one pooled Redis connection each: past redis-py's
    100, pages got `unavailable: Too many connections` (and the pool was the daemon's).
    The pages now share one reader; each still gets the events about its experiment,
    and a page that reconnects with Last-Event-ID gets what it missed."""
    from syncd.sinks.events import STREAM

    oid = add_experiment(db, 1, [{"epoch": 1, "train_loss": 0.5}])
    event = json.dumps({"type": "batch", "collection": "experiments", "operation": "update",
                        "ids": [str(oid)]})
    with serve(tmp_path, db, rclient, "max_streams = 150") as server:
        pages = [open_stream(server, f"/api/experiments/{oid}/events") for _ in range(120)]
        try:
            assert all(b"event: ready" in got for _, got in pages)
            before = rclient.xadd(STREAM, {"event": event}).decode()
            for sock, got in pages:
                got = _read_until(sock, b"event: change", got)
                assert b"event: change" in got and b"unavailable" not in got, got[-300:]
            missed = rclient.xadd(STREAM, {"event": event}).decode()
            sock, got = open_stream(server, f"/api/experiments/{oid}/events",
                                    {"Last-Event-ID": before})
            with sock:
                got = _read_until(sock, b"event: change", got)
            assert f"id: {missed}".encode() in got, got
        finally:
            for sock, _ in pages:
                sock.close()


def test_a_page_opened_after_all_others_closed_starts_at_the_newest_event(tmp_path, db,
                                                                        rclient):
    """(The pages' shared reader must not resume where the last page left off.)"""
    from syncd.sinks.events import STREAM

    oid = add_experiment(db, 1, [])
    event = json.dumps({"type": "batch", "collection": "experiments", "operation": "update",
                        "ids": [str(oid)]})
    with serve(tmp_path, db, rclient, "max_streams = 1") as server:
        sock, got = open_stream(server, f"/api/experiments/{oid}/events")
        sock.close()
        old = rclient.xadd(STREAM, {"event": event}).decode()

        def reopened() -> tuple[socket.socket, bytes] | None:
            sock, got = open_stream(server, f"/api/experiments/{oid}/events")
            if b"event: ready" in got:
                return sock, got
            sock.close()  # refused: the closed page's place is not given back yet
            return None

        sock, got = wait_for(reopened, 30, "the closed page's place given back")
        with sock:
            new = rclient.xadd(STREAM, {"event": event}).decode()
            got = _read_until(sock, b"event: change", got)
        assert f"id: {new}".encode() in got and f"id: {old}".encode() not in got, got
