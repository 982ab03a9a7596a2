"""One socket write per turn of the event loop for ``allotment serve``'s HTTP connections.

uvicorn writes a response's status line and headers, then its body, as two writes: two
``send`` calls, two TCP segments, and the client is woken twice. On a loopback or a VM each
such wake-up costs more than the gateway's own work on a small reply. The writes made during
one turn of the event loop are held and sent together at the end of that turn, so a
non-streamed reply leaves in one write; a stream's chunks still leave as they come.
"""

from __future__ import annotations

import asyncio
from typing import Any

# a write this large is sent at once (after what is held): joining it would copy it
DIRECT_WRITE_BYTES = 64 * 1024


class CoalescingTransport:
    """Wraps a transport: ``write`` holds data until the loop's current turn ends."""

    __slots__ = ("_transport", "_loop", "_held", "_held_bytes")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None
        self._held_bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if len(data) >= DIRECT_WRITE_BYTES:
            self.flush()
            self._transport.write(data)
            return
        if self._held is None:
            self._held = [bytes(data)]
            self._held_bytes = len(data)
            self._loop.call_soon(self.flush)
        else:
            self._held.append(bytes(data))
            self._held_bytes += len(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Send what is held now (also run by the loop at the end of the turn)."""
        held, self._held = self._held, None
        self._held_bytes = 0
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def get_write_buffer_size(self) -> int:
        return int(self._transport.get_write_buffer_size()) + self._held_bytes

    def close(self) -> None:
        self.flush()  # a reply written just before a close still goes out, first
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._held_bytes = 0
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
