"""Closing connections that never finish a request (slowloris, half-open sockets).

uvicorn's h11 protocol times out a keep-alive connection between requests, but not a
new connection that has not sent its request's headers yet, nor one that sent half
of them: any received byte cancels its timer. Each such connection holds a socket
(a file descriptor) for as long as the client likes; a thousand of them exhaust the
process' descriptors, and then no probe gets in. This protocol gives every request
`header_timeout` seconds from the connection (or the previous response) to its last
header line, then closes the connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderTimeoutProtocol(H11Protocol):
    """H11Protocol with a deadline for each request's headers."""

    header_timeout: float = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _expired(self) -> None:
        self._header_deadline = None
        idle = self.cycle is None or self.cycle.response_complete  # no request under way
        if idle and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's headers arrived: its cycle started
            self._disarm()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._arm()  # before the parent runs a pipelined request (which disarms)
        super().on_response_complete()


def protocol(header_timeout: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class uvicorn builds for each connection, with this deadline."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,),
                {"header_timeout": header_timeout})
