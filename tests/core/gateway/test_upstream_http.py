"""The gateway's upstream HTTP/1.1 client against a raw socket server scripted byte by byte."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from allotment.gateway.forwarding import Forwarder, Target, UpstreamError
from allotment.gateway.upstream_http import Origin, UpstreamConnectionError, UpstreamPool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


def ok(body: bytes, *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + b"".join(extra) + b"content-length: %d\r\n\r\n" % len(body) + body


class Server:
    """Counts connections; ``handler(reader, writer, connection_number)`` serves each one."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self.closed_by_client = asyncio.Event()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self.connections)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client.set()
        finally:
            writer.close()

    async def __aenter__(self) -> Origin:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return Origin.parse(f"http://127.0.0.1:{port}/v1")

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


async def post(pool: UpstreamPool, origin: Origin, *, read_timeout: float | None = None) -> Any:
    return await pool.post(
        origin,
        "/chat/completions",
        b'{"model": "m"}',
        {"content-type": "application/json", "authorization": "Bearer sk-x"},
        connect_timeout=5,
        read_timeout=read_timeout,
    )


def test_request_names_path_host_and_length_and_keeps_the_connection_for_the_next_call() -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
            while True:
                head, body = await read_request(reader)
                server.heads.append(head + body)
                writer.write(ok(b'{"n": %d}' % len(server.heads), b"x-request-id: r1\r\n"))

        server = Server(handler)
        pool = UpstreamPool()
        async with server as origin:
            first = await post(pool, origin)
            assert (first.status, await first.read()) == (200, b'{"n": 1}')
            assert ("x-request-id", "r1") in first.headers
            second = await post(pool, origin)
            assert await second.read() == b'{"n": 2}'
            pool.close()
        assert server.connections == 1
        request = server.heads[0]
        assert request.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert f"Host: {origin.host_header}\r\n".encode() in request
        assert b"authorization: Bearer sk-x\r\n" in request and b"Content-Length: 14\r\n" in request
        assert request.endswith(b'\r\n\r\n{"model": "m"}')

    run(scenario())


def test_chunked_answer_is_decoded_with_extensions_and_trailers() -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
            while True:
                await read_request(reader)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n"
                )

        server = Server(handler)
        pool = UpstreamPool()
        async with server as origin:
            assert await (await post(pool, origin)).read() == b"hello world"
            assert await (await post(pool, origin)).read() == b"hello world"
            pool.close()
        assert server.connections == 1

    run(scenario())


def test_close_delimited_answers_and_connection_close_are_not_reused() -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
            await read_request(reader)
            if number == 1:
                writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
            else:
                writer.write(ok(b"closing", b"connection: close\r\n"))
            await writer.drain()

        server = Server(handler)
        pool = UpstreamPool()
        async with server as origin:
            assert await (await post(pool, origin)).read() == b"until the end"
            assert await (await post(pool, origin)).read() == b"closing"
            assert await (await post(pool, origin)).read() == b"closing"
            pool.close()
        assert server.connections == 3

    run(scenario())


def test_interim_answers_are_skipped() -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final"))
            await reader.read()

        server = Server(handler)
        pool = UpstreamPool()
        async with server as origin:
            response = await post(pool, origin)
            assert (response.status, await response.read()) == (200, b"final")
            pool.close()

    run(scenario())


def test_an_idle_connection_the_provider_closed_is_not_reused() -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
            await read_request(reader)
            writer.write(ok(b"answer %d" % number))
            await writer.drain()  # then close: the pooled connection goes stale

        server = Server(handler)
        pool = UpstreamPool()
        async with server as origin:
            assert await (await post(pool, origin)).read() == b"answer 1"
            pooled = pool._idle[origin][0]
            for _ in range(500):  # until the client's loop has seen the provider's FIN
                if pooled.closed:
                    break
                await asyncio.sleep(0.01)
            assert pooled.closed
            assert await (await post(pool, origin)).read() == b"answer 2"
            pool.close()

    run(scenario())


def test_stream_pieces_arrive_before_the_answer_ends_and_abandoning_closes_the_connection() -> None:
    async def scenario() -> None:
        second = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n7\r\ndata: 1\r\n")
            await second.wait()
            writer.write(b"7\r\ndata: 2\r\n")
            await reader.read()  # until the client hangs up
            server.closed_by_client.set()

        server = Server(handler)
        pool = UpstreamPool()
        async with server as origin:
            response = await post(pool, origin, read_timeout=5)
            pieces = response.__aiter__()
            assert await pieces.__anext__() == b"data: 1"
            second.set()
            assert await pieces.__anext__() == b"data: 2"
            response.close()
            await asyncio.wait_for(server.closed_by_client.wait(), 5)
            await pieces.aclose()
            pool.close()

    run(scenario())


def test_a_body_cut_short_raises_a_connection_error() -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
            await writer.drain()

        server = Server(handler)
        pool = UpstreamPool()
        async with server as origin:
            response = await post(pool, origin)
            with pytest.raises(UpstreamConnectionError):
                await response.read()
            pool.close()

    run(scenario())


def test_silence_past_the_read_timeout_raises_timeout() -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
            await read_request(reader)
            await reader.read()

        server = Server(handler)
        pool = UpstreamPool()
        async with server as origin:
            with pytest.raises(TimeoutError):
                await post(pool, origin, read_timeout=0.05)
            pool.close()

    run(scenario())


def test_not_http_is_refused() -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
            await read_request(reader)
            writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
            await writer.drain()

        server = Server(handler)
        pool = UpstreamPool()
        async with server as origin:
            with pytest.raises(UpstreamConnectionError, match="not an HTTP/1.1 response"):
                await post(pool, origin)
            pool.close()

    run(scenario())


def test_origin_parsing() -> None:
    assert Origin.parse("https://api.openai.com/v1/") == Origin(
        "https", "api.openai.com", 443, "/v1", "api.openai.com"
    )
    assert Origin.parse("http://10.0.0.5:8000/v1").host_header == "10.0.0.5:8000"
    assert Origin.parse("http://[::1]:11434").host_header == "[::1]:11434"
    with pytest.raises(UpstreamConnectionError):
        Origin.parse("ftp://example.com")


def test_forwarder_maps_an_unreachable_provider_to_502_and_silence_to_504() -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
            await read_request(reader)
            await reader.read()

        forwarder = Forwarder()
        closed = Target("openai", "openai", f"http://127.0.0.1:{unused_port()}/v1", "sk-x", 5)
        with pytest.raises(UpstreamError) as refused:
            await forwarder.send(closed, "/chat/completions", b"{}", {}, stream=False)
        assert (refused.value.status, refused.value.code) == (502, "upstream_unavailable")
        async with Server(handler) as origin:
            silent = Target("openai", "openai", f"http://{origin.host_header}/v1", "sk-x", 0.05)
            for stream in (False, True):
                with pytest.raises(UpstreamError) as timed_out:
                    await forwarder.send(silent, "/chat/completions", b"{}", {}, stream=stream)
                assert (timed_out.value.status, timed_out.value.code) == (504, "upstream_timeout")
        await forwarder.close()

    run(scenario())


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_large_body_arrives_whole() -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
            _, body = await read_request(reader)
            writer.write(ok(b"%d %d" % (len(body), body.count(b"x"))))
            await reader.read()

        pool = UpstreamPool()
        async with Server(handler) as origin:
            body = b"x" * 1_000_000
            response = await pool.post(origin, "/embeddings", body, {}, connect_timeout=5, read_timeout=5)
            assert await response.read() == b"1000000 1000000"
            pool.close()

    run(scenario())
