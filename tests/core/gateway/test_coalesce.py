"""``allotment serve`` sends the writes of one event-loop turn as one socket write."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn

from allotment.gateway.coalesce import DIRECT_WRITE_BYTES, CoalescingTransport, coalescing_protocol


class RecordingTransport:
    """Stands in for the socket transport: records what reaches it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1234) if name == "peername" else default


def run(body: Any) -> RecordingTransport:
    async def main() -> RecordingTransport:
        raw = RecordingTransport()
        transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        await body(transport, raw)
        return raw

    return asyncio.run(main())


def test_writes_of_one_turn_leave_as_one_write_in_order() -> None:
    async def body(t: CoalescingTransport, raw: RecordingTransport) -> None:
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        t.write(b"{}")
        assert raw.writes == []  # held until the turn ends
        assert t.get_write_buffer_size() == 40
        await asyncio.sleep(0)
        assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        t.write(b"data: 1\n\n")  # a later turn: a write of its own
        await asyncio.sleep(0)

    raw = run(body)
    assert raw.writes[1:] == [b"data: 1\n\n"]


def test_a_large_write_goes_at_once_after_what_is_held() -> None:
    big = b"x" * DIRECT_WRITE_BYTES

    async def body(t: CoalescingTransport, raw: RecordingTransport) -> None:
        t.write(b"head")
        t.write(big)
        assert raw.writes == [b"head", big]  # nothing joined, nothing reordered
        await asyncio.sleep(0)
        assert raw.writes == [b"head", big]

    run(body)


def test_close_sends_what_is_held_first_and_abort_drops_it() -> None:
    async def body(t: CoalescingTransport, raw: RecordingTransport) -> None:
        t.write(b"last words")
        t.close()
        assert raw.writes == [b"last words"] and raw.closed
        await asyncio.sleep(0)
        assert raw.writes == [b"last words"]  # the end-of-turn flush finds nothing left

    run(body)

    async def aborting(t: CoalescingTransport, raw: RecordingTransport) -> None:
        t.write(b"never sent")
        t.abort()
        await asyncio.sleep(0)
        assert raw.writes == [] and raw.aborted

    run(aborting)


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_reply_from_the_real_server_arrives_in_one_segment() -> None:
    protocol = coalescing_protocol()
    assert protocol is not None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        _app, host="127.0.0.1", port=port, http=protocol, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            first = client.recv(65536)
            # status line, headers and body in the first read: one write on the server side
            assert first.startswith(b"HTTP/1.1 200 OK\r\n") and first.endswith(b"\r\n\r\nok")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
