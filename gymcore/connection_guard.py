"""What keeps ``gym serve`` answering while clients misbehave (slow-loris and the like).

aiohttp times out neither a client that sends its headers a byte at a time nor one that
never sends its body, and it accepts connections until the process runs out of file
descriptors (then authorised requests fail too). So every connection goes through a
:class:`ConnectionGuard`:

* a connection not inside a request (its headers not yet complete, or idle between
  requests) is closed after ``read_timeout`` seconds; a request body gets as long
  (:func:`gymcore.server.read_body`);
* at most ``max_connections`` are open: a new one past the cap closes the connection that
  has waited longest without sending a complete request, so a flood of slow connections
  churns among itself while a client that sends its request at once is served; when every
  connection is inside a request, the new one is answered 503 with ``Retry-After``;
* strangers (no token, another origin) are answered and closed at once (the server's
  middleware does that).

The guard sits between asyncio and aiohttp's own protocol (:class:`GuardedSite`), and
learns which connections are inside a request from :meth:`ConnectionGuard.middleware`.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any, Callable

import orjson
from aiohttp import web

from .limits import HEADROOM

#: ``--read-timeout``: seconds for a request's headers (from connecting, or from the end of
#: the previous request) and again for its body. Longer than clients keep idle connections
#: (``gym collect --server``: 5 s; aiohttp's default: 15 s), so none is closed under them.
DEFAULT_READ_TIMEOUT = 30.0


def accept_backlog(open_files: int | None) -> int:
    """The listen backlog, which is also how many connections asyncio accepts in one go
    before the guard sees any of them: small enough that a burst cannot exhaust the files."""
    if open_files is None:
        return 128
    return max(8, min(128, (open_files - HEADROOM) // 8))


def default_max_connections(open_files: int | None) -> int:
    """Half of what the process may open (each served rollout also holds a connection to the
    model), less room for its own files and for a burst of accepts; 65,536 without a limit."""
    if open_files is None:
        return 65536
    return max(16, (open_files - HEADROOM) // 2 - 2 * accept_backlog(open_files))


class _Connection:
    __slots__ = ("transport", "in_requests", "timer")

    def __init__(self, transport: asyncio.Transport):
        self.transport = transport
        self.in_requests = 0
        self.timer: asyncio.TimerHandle | None = None


class ConnectionGuard:
    """Open connections, which of them wait for a request (oldest first), and their timers."""

    def __init__(self, max_connections: int | None = None, read_timeout: float = DEFAULT_READ_TIMEOUT):
        self.max_connections = max_connections  # None: set by the site from the open-file limit
        self.read_timeout = read_timeout
        self.open: dict[asyncio.BaseTransport, _Connection] = {}
        self._waiting: OrderedDict[_Connection, None] = OrderedDict()
        self.stats = {"connections_timed_out": 0, "connections_evicted": 0, "connections_refused": 0}

    # --- called by the protocol ----------------------------------------------------------

    def admit(self, transport: asyncio.Transport) -> bool:
        """A new connection: make room for it, or answer 503 and close it (``False``)."""
        if self.max_connections is not None and len(self.open) >= self.max_connections:
            if self._waiting:
                oldest = next(iter(self._waiting))
                self._forget(oldest)
                oldest.transport.close()
                self.stats["connections_evicted"] += 1
            else:
                self.stats["connections_refused"] += 1
                transport.write(_full_response(self.max_connections))
                transport.close()
                return False
        connection = _Connection(transport)
        self.open[transport] = connection
        self._wait(connection)
        return True

    def closed(self, transport: asyncio.BaseTransport) -> None:
        connection = self.open.get(transport)
        if connection is not None:
            self._forget(connection)

    # --- requests ------------------------------------------------------------------------

    def middleware(self) -> Callable[..., Any]:
        """Marks a connection as inside a request while its handler runs."""

        @web.middleware
        async def inside_a_request(request: web.Request, handler):
            connection = self.open.get(request.transport) if request.transport is not None else None
            if connection is None:
                return await handler(request)
            self._busy(connection)
            try:
                return await handler(request)
            finally:
                connection.in_requests -= 1
                if connection.in_requests == 0 and connection.transport in self.open:
                    self._wait(connection)

        return inside_a_request

    # --- the bookkeeping -------------------------------------------------------------------

    def _wait(self, connection: _Connection) -> None:
        self._waiting[connection] = None
        self._waiting.move_to_end(connection)
        if connection.timer is not None:
            connection.timer.cancel()
        connection.timer = asyncio.get_running_loop().call_later(self.read_timeout, self._expire, connection)

    def _busy(self, connection: _Connection) -> None:
        connection.in_requests += 1
        self._waiting.pop(connection, None)
        if connection.timer is not None:
            connection.timer.cancel()
            connection.timer = None

    def _expire(self, connection: _Connection) -> None:
        connection.timer = None
        if connection in self._waiting:
            self._forget(connection)
            connection.transport.close()
            self.stats["connections_timed_out"] += 1

    def _forget(self, connection: _Connection) -> None:
        self.open.pop(connection.transport, None)
        self._waiting.pop(connection, None)
        if connection.timer is not None:
            connection.timer.cancel()
            connection.timer = None


def _full_response(max_connections: int) -> bytes:
    """The 503 a connection past the cap gets when no other can be closed for it."""
    body = orjson.dumps({"error": {"type": "too_many_connections", "message": (
        f"this runner holds --max-connections {max_connections} connections, every one inside a request; "
        "retry later")}})
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, admitted and watched by the guard."""

    def __init__(self, guard: ConnectionGuard, make_handler: Callable[[], asyncio.Protocol]):
        self.guard, self.make_handler = guard, make_handler
        self.handler: asyncio.Protocol | None = None
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self.guard.admit(transport):  # type: ignore[arg-type]
            self.handler = self.make_handler()
            self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received() if self.handler is not None else None

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.closed(self.transport)  # type: ignore[arg-type]
        if self.handler is not None:
            self.handler.connection_lost(exc)


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through ``guard``."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard, *,
                 open_files: int | None = None):
        super().__init__(runner, backlog=accept_backlog(open_files))
        self._host, self._port, self._guard = host, port, guard
        if guard.max_connections is None:
            guard.max_connections = default_max_connections(open_files)

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        make_handler = self._runner.server
        assert make_handler is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _GuardedProtocol(self._guard, make_handler), self._host, self._port, backlog=self._backlog)
