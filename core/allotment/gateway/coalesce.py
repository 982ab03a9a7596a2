"""A reply's head and body in one socket write on ``allotment serve``'s HTTP connections.

uvicorn writes a response's status line and headers, then its body, as two writes: two
``send`` calls, two TCP segments, and the client is woken twice. On a loopback or a VM each
such wake-up costs more than the gateway's own work on a small reply. So a response head is
held until the next write (its body) and both leave together; a head with no body written
in the same turn of the event loop leaves at the end of that turn. Every other write (a
stream's chunks) leaves at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

# a body this large follows its held head as a write of its own: joining would copy it
DIRECT_WRITE_BYTES = 64 * 1024


class CoalescingTransport:
    """Wraps a transport: ``write`` holds a response head until its body (or the turn's end)."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        held = self._held
        if held is not None:  # the body after a held head: both leave now, as one write
            self._held = None
            if len(data) >= DIRECT_WRITE_BYTES:
                self._transport.write(held)
                self._transport.write(data)
            else:
                self._transport.write(held + bytes(data))
        elif data[:5] == b"HTTP/":  # a response head: wait for its body within this turn
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:  # a stream's chunk, or anything else: no delay
            self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Send a held head now (also run by the loop at the end of the turn)."""
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def get_write_buffer_size(self) -> int:
        return int(self._transport.get_write_buffer_size()) + len(self._held or b"")

    def close(self) -> None:
        self.flush()  # a reply written just before a close still goes out, first
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def coalescing_protocol() -> type | None:
    """uvicorn's httptools protocol over a ``CoalescingTransport``; None without httptools."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools is an optional speed-up
        return None

    class CoalescingHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    return CoalescingHttpToolsProtocol
