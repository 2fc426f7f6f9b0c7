"""A request deadline for the server's HTTP connections, which uvicorn does not have.

uvicorn closes a kept-alive connection that stays idle (``timeout_keep_alive``) but waits forever
for a client that sends its headers or body one byte at a time, so a few hundred slow clients hold
the server's connections (a slow-loris attack). Here a request must arrive whole, headers and body,
within ``request_timeout`` seconds of its first byte (or of the connection's start); a connection
that misses the deadline is closed.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from typing_extensions import override
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for each request to arrive whole."""

    request_timeout = 30.0  # seconds; set by :func:`protocol_with_request_timeout`
    _deadline: asyncio.TimerHandle | None = None

    @override
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    @override
    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            self._disarm()  # the request has arrived whole (or the connection is ending)

    @override
    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            log.debug("Closed a connection that sent no whole request within %s s.", self.request_timeout)
            self.transport.close()


def protocol_with_request_timeout(seconds: float) -> type[DeadlineH11Protocol]:
    """The protocol class to pass as uvicorn's ``http`` setting, with this request deadline."""
    return type("DeadlineH11Protocol", (DeadlineH11Protocol,), {"request_timeout": float(seconds)})
