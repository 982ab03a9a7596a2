"""An offline Bedrock: real event-stream frames served to a real boto3 client via ``before-send``.

Every request the client would have sent is kept, so tests can read the wire (body, headers).
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import boto3
from botocore.awsrequest import AWSResponse

STREAM_TYPE = "application/vnd.amazon.eventstream"


def encode_event(event_type: str, payload: dict[str, Any]) -> bytes:
    """One AWS event-stream message: prelude, string headers, JSON payload, two CRC32s."""
    headers = {":message-type": "event", ":event-type": event_type, ":content-type": "application/json"}
    head = b"".join(
        struct.pack(">B", len(k)) + k.encode() + struct.pack(">BH", 7, len(v)) + v.encode()
        for k, v in headers.items()
    )
    body = json.dumps(payload).encode()
    total = 12 + len(head) + len(body) + 4
    prelude = struct.pack(">II", total, len(head))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + head + body
    return message + struct.pack(">I", zlib.crc32(message))


def encode_exception(exception_type: str, message: str) -> bytes:
    headers = {
        ":message-type": "exception",
        ":exception-type": exception_type,
        ":content-type": "application/json",
    }
    head = b"".join(
        struct.pack(">B", len(k)) + k.encode() + struct.pack(">BH", 7, len(v)) + v.encode()
        for k, v in headers.items()
    )
    body = json.dumps({"message": message}).encode()
    total = 12 + len(head) + len(body) + 4
    prelude = struct.pack(">II", total, len(head))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    msg = prelude + head + body
    return msg + struct.pack(">I", zlib.crc32(msg))


def converse_stream_events(usage: dict[str, Any], texts: list[str], **metadata: Any) -> list[bytes]:
    frames = [encode_event("messageStart", {"role": "assistant"})]
    for text in texts:
        frames.append(encode_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}}))
    frames.append(encode_event("contentBlockStop", {"contentBlockIndex": 0}))
    frames.append(encode_event("messageStop", {"stopReason": "end_turn"}))
    frames.append(encode_event("metadata", {"usage": usage, "metrics": {"latencyMs": 42}, **metadata}))
    return frames


def chunk(payload: dict[str, Any]) -> bytes:
    raw = base64.b64encode(json.dumps(payload).encode()).decode()
    return encode_event("chunk", {"bytes": raw})


class FakeRaw:
    """What botocore reads a response body from; ``piece`` splits it into small reads."""

    def __init__(self, data: bytes, piece: int | None = None) -> None:
        self.data, self.piece = data, piece

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        if not self.piece:
            yield self.data
            return
        for i in range(0, len(self.data), self.piece):
            yield self.data[i : i + self.piece]

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        return self.data

    def close(self) -> None:
        pass


@dataclass
class Canned:
    status: int
    headers: dict[str, str]
    body: bytes
    piece: int | None = None


class FakeBedrock:
    """Answers a client's requests from queued responses, by route, and records each request."""

    def __init__(self, client: Any) -> None:
        self.requests: list[Any] = []
        self.queue: dict[str, list[Canned]] = {}
        client.meta.events.register("before-send.bedrock-runtime", self._send)

    def reply(
        self,
        route: str,
        status: int = 200,
        headers: dict[str, str] | None = None,
        body: bytes | dict[str, Any] = b"",
        piece: int | None = None,
    ) -> None:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        base = {"x-amzn-requestid": f"aws-{len(self.requests)}-{route}"}
        base["content-type"] = STREAM_TYPE if route.endswith("stream") else "application/json"
        self.queue.setdefault(route, []).append(Canned(status, {**base, **(headers or {})}, data, piece))

    def converse(self, usage: dict[str, Any], text: str = "Hi!", **extra: Any) -> None:
        self.reply(
            "converse",
            body={
                "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                "stopReason": "end_turn",
                "usage": usage,
                "metrics": {"latencyMs": 12},
                **extra,
            },
        )

    def stream(self, route: str, frames: list[bytes], piece: int | None = 5) -> None:
        self.reply(route, body=b"".join(frames), piece=piece)

    def _send(self, request: Any, **_: Any) -> AWSResponse:
        self.requests.append(request)
        route = unquote(request.url).rsplit("/", 1)[-1]
        pending = self.queue.get(route)
        if not pending:
            raise AssertionError(f"unexpected request to {request.url}")
        canned = pending.pop(0)
        return AWSResponse(request.url, canned.status, canned.headers, FakeRaw(canned.body, canned.piece))

    def last_body(self) -> dict[str, Any]:
        return json.loads(self.requests[-1].body)


def bedrock_client() -> Any:
    """A real bedrock-runtime client with fake credentials (never leaves this machine)."""
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
