"""A small HTTP/1.1 client for the calls the gateway forwards: one POST, then its answer.

Keep-alive connections per origin, TLS, and content-length, chunked and close-delimited
bodies. It does per call a fraction of a general client's work (URL objects, header
multidicts, payload classes, tracing hooks), which is most of a forwarded call's cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

from allotment import __version__

MAX_HEAD_BYTES = 64 * 1024
_HIGH_WATER = 2 * 1024 * 1024  # stop reading from the socket past this much unread data
_COALESCE_BYTES = 64 * 1024
_USER_AGENT = f"allotment/{__version__}"


class UpstreamConnectionError(ConnectionError):
    """The provider closed the connection early or did not speak HTTP/1.1."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests for one base URL go, and the path prefix they share."""

    scheme: str
    host: str
    port: int
    base_path: str
    host_header: str

    @classmethod
    def parse(cls, base_url: str) -> Origin:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamConnectionError(f"not an http(s) URL: {base_url!r}")
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        return cls(
            parts.scheme,
            host,
            port,
            parts.path.rstrip("/"),
            shown if port == default else f"{shown}:{port}",
        )


class _Connection(asyncio.Protocol):
    """One socket: what it has received and not yet read, and whether it is still open."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.error: BaseException | None = None
        self.paused = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def more(self) -> None:
        """Wait for more data; raise when the connection has ended."""
        if self.closed:
            raise UpstreamConnectionError("the provider closed the connection") from self.error
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        waiter = self.waiter = self.loop.create_future()
        await waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UpstreamResponse:
    """Status and headers of an answer; its body is read once, whole or as it arrives."""

    def __init__(
        self,
        pool: UpstreamPool,
        origin: Origin,
        conn: _Connection,
        slots: asyncio.Semaphore,
        status: int,
        headers: list[tuple[str, str]],
        keep_alive: bool,
        read_timeout: float | None,
    ) -> None:
        self.status = status
        self.headers = headers
        self._pool = pool
        self._origin = origin
        self._conn = conn
        self._slots = slots
        self._read_timeout = read_timeout
        self._done = False
        length: int | None = None
        chunked = False
        for name, value in headers:
            if name == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif name == "content-length" and value.isdigit():
                length = int(value)
        if status < 200 or status in (204, 304):
            length, chunked = 0, False
        self._chunked = chunked
        self._length = None if chunked else length
        self._keep_alive = keep_alive and (chunked or length is not None)

    async def _more(self) -> None:
        if self._read_timeout is None:
            await self._conn.more()
        else:
            async with asyncio.timeout(self._read_timeout):
                await self._conn.more()

    async def read(self) -> bytes:
        """The whole body."""
        length, buffer = self._length, self._conn.buffer
        if length is not None and not self._chunked:
            try:
                while len(buffer) < length:
                    await self._more()
            except BaseException:
                self.close()
                raise
            data = bytes(buffer[:length])
            del buffer[:length]
            self._finish()
            return data
        return b"".join([piece async for piece in self])

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """The body in pieces as they arrive (chunked encoding removed)."""
        try:
            if self._chunked:
                async for piece in self._chunks():
                    yield piece
            elif self._length is not None:
                remaining = self._length
                buffer = self._conn.buffer
                while remaining:
                    if not buffer:
                        await self._more()
                        continue
                    piece = bytes(buffer[:remaining])
                    del buffer[: len(piece)]
                    remaining -= len(piece)
                    yield piece
            else:  # delimited by the provider closing the connection
                conn = self._conn
                while True:
                    if conn.buffer:
                        piece = bytes(conn.buffer)
                        conn.buffer.clear()
                        yield piece
                    elif conn.closed:
                        break
                    else:
                        try:
                            await self._more()
                        except UpstreamConnectionError:
                            break
        except BaseException:
            self.close()
            raise
        self._finish()

    async def _chunks(self) -> AsyncIterator[bytes]:
        buffer = self._conn.buffer
        while True:
            end = buffer.find(b"\r\n")
            while end < 0:
                await self._more()
                end = buffer.find(b"\r\n")
            line = bytes(buffer[:end]).split(b";", 1)[0].strip()
            del buffer[: end + 2]
            try:
                size = int(line, 16)
            except ValueError:
                raise UpstreamConnectionError(f"bad chunk size {line[:20]!r}") from None
            if size == 0:
                while True:  # trailers, up to the empty line
                    end = buffer.find(b"\r\n")
                    while end < 0:
                        await self._more()
                        end = buffer.find(b"\r\n")
                    del buffer[: end + 2]
                    if end == 0:
                        return
            while size:
                if not buffer:
                    await self._more()
                    continue
                piece = bytes(buffer[:size])
                del buffer[: len(piece)]
                size -= len(piece)
                yield piece
            while len(buffer) < 2:
                await self._more()
            if buffer[:2] != b"\r\n":
                raise UpstreamConnectionError("a chunk did not end with CRLF")
            del buffer[:2]

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._pool._release(self._origin, self._conn, self._slots, reuse=self._keep_alive)

    def close(self) -> None:
        """Abandon the answer: its connection is closed, never reused."""
        if not self._done:
            self._done = True
            self._pool._release(self._origin, self._conn, self._slots, reuse=False)


class UpstreamPool:
    """Keep-alive connections by origin, at most ``limit`` requests in flight at once."""

    def __init__(self, *, limit: int = 512, keepalive_seconds: float = 60.0) -> None:
        self._limit = limit
        self._keepalive = keepalive_seconds
        self._idle: dict[Origin, list[_Connection]] = {}
        self._slots = asyncio.Semaphore(limit)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ssl: ssl.SSLContext | None = None

    async def post(
        self,
        origin: Origin,
        path: str,
        body: bytes,
        headers: dict[str, str],
        *,
        connect_timeout: float,
        read_timeout: float | None,
    ) -> UpstreamResponse:
        """Send ``POST path`` and read the answer's status line and headers."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # connections and the semaphore belong to one loop
            self.close()
            self._loop = loop
        slots = self._slots
        await slots.acquire()
        conn: _Connection | None = None
        try:
            conn = await self._connection(loop, origin, connect_timeout)
            assert conn.transport is not None
            head = _request_head(origin, path, body, headers)
            if len(body) <= _COALESCE_BYTES:  # one segment for the usual small request
                conn.transport.write(head + body)
            else:  # no copy of a large body
                conn.transport.writelines((head, body))
            if read_timeout is None:
                status, response_headers, keep_alive = await _read_head(conn)
            else:
                async with asyncio.timeout(read_timeout):
                    status, response_headers, keep_alive = await _read_head(conn)
        except BaseException:
            if conn is not None:
                conn.close()
            slots.release()
            raise
        return UpstreamResponse(self, origin, conn, slots, status, response_headers, keep_alive, read_timeout)

    async def _connection(
        self, loop: asyncio.AbstractEventLoop, origin: Origin, connect_timeout: float
    ) -> _Connection:
        idle = self._idle.get(origin)
        now = loop.time()
        while idle:
            conn = idle.pop()
            if conn.closed or conn.buffer or now - conn.idle_since > self._keepalive:
                conn.close()
                continue
            return conn
        tls: ssl.SSLContext | None = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        async with asyncio.timeout(connect_timeout):
            _, conn = await loop.create_connection(
                lambda: _Connection(loop),
                origin.host,
                origin.port,
                ssl=tls,
                server_hostname=origin.host if tls is not None else None,
            )
        return conn

    def _release(self, origin: Origin, conn: _Connection, slots: asyncio.Semaphore, *, reuse: bool) -> None:
        if reuse and slots is self._slots and not conn.closed and not conn.buffer:
            conn.idle_since = conn.loop.time()
            self._idle.setdefault(origin, []).append(conn)
        else:
            conn.close()
        slots.release()

    def close(self) -> None:
        """Close the idle connections; answers still being read close theirs when done."""
        for conns in self._idle.values():
            for conn in conns:
                with contextlib.suppress(RuntimeError):  # its loop may be closed already
                    conn.close()
        self._idle.clear()
        self._slots = asyncio.Semaphore(self._limit)


def _request_head(origin: Origin, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {origin.base_path}{path} HTTP/1.1", f"Host: {origin.host_header}"]
    for name, value in headers.items():
        if "\n" in value or "\r" in value:
            raise UpstreamConnectionError(f"the {name} header holds a line break")
        lines.append(f"{name}: {value}")
    lines.append("Accept: */*")
    lines.append("Accept-Encoding: identity")
    lines.append(f"User-Agent: {_USER_AGENT}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_head(conn: _Connection) -> tuple[int, list[tuple[str, str]], bool]:
    """Status, headers (names lower-cased) and keep-alive of the next final answer."""
    buffer = conn.buffer
    while True:
        end = buffer.find(b"\r\n\r\n")
        while end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                raise UpstreamConnectionError("the provider's response headers are too large")
            await conn.more()
            end = buffer.find(b"\r\n\r\n")
        lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        del buffer[: end + 4]
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise UpstreamConnectionError(f"not an HTTP/1.1 response: {lines[0][:60]!r}")
        status = int(code)
        if 100 <= status < 200 and status != 101:
            continue  # an interim answer (100 Continue ...); the final one follows
        headers: list[tuple[str, str]] = []
        connection = ""
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise UpstreamConnectionError(f"bad response header line {line[:60]!r}")
            name = name.strip().lower()
            value = value.strip()
            if name == "connection":
                connection = value.lower()
            headers.append((name, value))
        # HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 only when asked
        keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        return status, headers, keep_alive
