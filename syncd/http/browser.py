"""What a browser needs to be told: whose pages these are, and what they may run.

The dashboard listens on loopback without a password by default, so any web page the
user opens could reach it by DNS rebinding (a name of the attacker's that resolves
to 127.0.0.1): `HostCheck` answers only the Host names this server is known by.
`BrowserHeaders` puts a Content-Security-Policy (no inline script, no framing) and
`nosniff` on every response, and turns redirects into relative ones, so that no
Location is ever built from what a client put in its Host header.
"""

from __future__ import annotations

import struct
import zlib
from urllib.parse import urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from syncd.http.options import HttpOptions

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
HEADERS = ((b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
           (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"))


def _icon() -> bytes:
    """A 16x16 square of the dashboard's blue as an ICO holding a PNG (what every browser
    reads): its own request for /favicon.ico gets an icon, not a 404 in the console."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    pixels = b"".join(b"\x00" + b"\x25\x63\xeb\xff" * 16 for _ in range(16))  # RGBA rows
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 6, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(pixels, 9)) + chunk(b"IEND", b""))
    return struct.pack("<HHHBBBBHHII", 0, 1, 1, 16, 16, 0, 0, 1, 32, len(png), 22) + png


FAVICON = _icon()


def favicon(request: Request) -> Response:
    """/favicon.ico: the icon above (served here, nothing fetched from elsewhere)."""
    return Response(FAVICON, media_type="image/x-icon",
                    headers={"Cache-Control": "max-age=86400"})


def host_name(value: str) -> str:
    """The host of a Host header (or of a configured name), lowercased, without its
    port; IPv6 addresses keep (or get) their brackets."""
    text = value.strip().lower()
    if text.startswith("["):
        return text[:text.find("]") + 1] if "]" in text else text
    if text.count(":") > 1:  # a bare IPv6 address (a setting, not a header)
        return f"[{text}]"
    name, sep, port = text.rpartition(":")
    return name if sep and port.isdigit() else text


def allowed_hosts(options: HttpOptions) -> frozenset[str] | None:
    """The Host names this server answers to; None: any (`[http] allowed_hosts = ["*"]`)."""
    if "*" in options.allowed_hosts:
        return None
    names = set(LOOPBACK_NAMES) | {host_name(h) for h in options.allowed_hosts}
    if options.host:
        names.add(host_name(options.host))
    return frozenset(names)


class HostCheck:
    """A request whose Host is not one of this server's names gets a 400 (a request
    without one is no browser's, and passes)."""

    def __init__(self, app: ASGIApp, options: HttpOptions) -> None:
        self.app, self.names = app, allowed_hosts(options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.names is not None:
            raw = dict(scope["headers"]).get(b"host")
            host = raw.decode("latin-1") if raw is not None else None
            if host is not None and host_name(host) not in self.names:
                shown = host[:100].encode("ascii", "backslashreplace").decode()
                response = PlainTextResponse(
                    f"Host {shown!r} is not a name of this server: add it to [http] "
                    "allowed_hosts\n", 400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def relative(location: str) -> str:
    """A redirect's target without scheme and host: the browser keeps the address it used
    (and one leading slash: `//name` would be another host's address)."""
    parts = urlsplit(location)
    return urlunsplit(("", "", "/" + parts.path.lstrip("/"), parts.query, parts.fragment))


class BrowserHeaders:
    """The security headers on every response; redirects made relative."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = []
                for name, value in message.get("headers", []):
                    if name.lower() == b"location":
                        value = relative(value.decode("latin-1")).encode("latin-1")
                    headers.append((name, value))
                have = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in HEADERS if name not in have]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
