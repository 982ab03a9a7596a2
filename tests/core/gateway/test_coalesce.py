"""``allotment serve`` sends a reply's head and body as one socket write; stream chunks at once."""

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


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


def test_a_head_and_its_body_leave_as_one_write_and_stream_chunks_at_once() -> None:
    async def body(t: CoalescingTransport, raw: RecordingTransport) -> None:
        t.write(HEAD)
        assert raw.writes == []  # held for its body
        assert t.get_write_buffer_size() == len(HEAD)
        t.write(b"{}")
        assert raw.writes == [HEAD + b"{}"]  # no wait for the end of the turn
        t.write(HEAD.replace(b"content-length: 2", b"transfer-encoding: chunked"))
        await asyncio.sleep(0)  # no body in this turn: the head leaves alone at its end
        assert len(raw.writes) == 2
        t.write(b"9\r\ndata: 1\n\n\r\n")  # a stream's chunk: at once
        assert raw.writes[2:] == [b"9\r\ndata: 1\n\n\r\n"]

    run(body)


def test_a_large_body_is_not_copied_into_its_head() -> None:
    big = b"x" * DIRECT_WRITE_BYTES

    async def body(t: CoalescingTransport, raw: RecordingTransport) -> None:
        t.write(HEAD)
        t.write(big)
        assert raw.writes == [HEAD, big]  # nothing joined, nothing reordered
        await asyncio.sleep(0)
        assert raw.writes == [HEAD, big]

    run(body)


def test_close_sends_what_is_held_first_and_abort_drops_it() -> None:
    async def body(t: CoalescingTransport, raw: RecordingTransport) -> None:
        t.write(HEAD)
        t.close()
        assert raw.writes == [HEAD] and raw.closed
        await asyncio.sleep(0)
        assert raw.writes == [HEAD]  # the end-of-turn flush finds nothing left

    run(body)

    async def aborting(t: CoalescingTransport, raw: RecordingTransport) -> None:
        t.write(HEAD)
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
