"""Reading Bedrock model-invocation log records from files, directories and S3.

Accepts JSON lines, concatenated or pretty-printed objects, arrays, gzip, and CloudWatch exports.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from allotment.errors import InvalidRequest

# (record, None) for a candidate record, (None, reason) for something unreadable
Item = tuple[dict[str, Any] | None, str | None]

_DECODER = json.JSONDecoder()


def iter_blobs(location: str, s3_client: Any = None) -> Iterator[tuple[str, bytes]]:
    """(name, raw bytes) of every file under ``location`` (a path or ``s3://bucket/prefix``)."""
    if location.startswith("s3://"):
        yield from _s3_blobs(location, s3_client)
        return
    path = Path(location)
    if path.is_file():
        yield str(path), path.read_bytes()
    elif path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            yield str(file), file.read_bytes()
    else:
        raise InvalidRequest(f"{location}: no such file or directory")


def _s3_blobs(location: str, s3_client: Any) -> Iterator[tuple[str, bytes]]:
    bucket, _, prefix = location[len("s3://") :].partition("/")
    if not bucket:
        raise InvalidRequest(f"{location}: expected s3://bucket/prefix")
    if s3_client is None:
        import boto3

        s3_client = boto3.client("s3")
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for item in page.get("Contents", ()):
            key = item["Key"]
            if key.endswith("/"):
                continue
            body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
            yield f"s3://{bucket}/{key}", body


def decode(data: bytes) -> str:
    """Text of a blob, gunzipped when it is gzip (S3 delivery writes ``.json.gz``)."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise InvalidRequest(f"corrupt gzip: {exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"not UTF-8 text: {exc}") from None


def iter_items(text: str) -> Iterator[Item]:
    """Every JSON value in ``text``, unwrapped to candidate records.

    A line that does not start with JSON may carry one leading token (the timestamp a
    CloudWatch Logs export to S3 puts before each message); anything else is unreadable.
    """
    pos, size = 0, len(text)
    while True:
        while pos < size and text[pos].isspace():
            pos += 1
        if pos >= size:
            return
        line_end = text.find("\n", pos)
        line_end = size if line_end == -1 else line_end
        if text[pos] not in "{[":
            space = text.find(" ", pos, line_end)
            if space != -1 and text[space + 1 : space + 2] == "{":
                pos = space + 1
            else:
                yield None, f"line {text.count(chr(10), 0, pos) + 1}: not JSON"
                pos = line_end
                continue
        try:
            document, end = _DECODER.raw_decode(text, pos)
        except ValueError:
            yield None, f"line {text.count(chr(10), 0, pos) + 1}: not JSON"
            pos = line_end
            continue
        yield from unwrap(document)
        pos = end


def unwrap(document: Any) -> Iterator[Item]:
    """Records inside arrays and CloudWatch envelopes (``logEvents``, ``events``, ``message``)."""
    if isinstance(document, list):
        for item in document:
            yield from unwrap(item)
        return
    if not isinstance(document, dict):
        yield None, "not a JSON object"
        return
    for key in ("logEvents", "events"):
        if isinstance(document.get(key), list):
            for item in document[key]:
                yield from unwrap(item)
            return
    message = document.get("message")
    if isinstance(message, str) and "requestId" not in document:
        try:
            inner = json.loads(message)
        except ValueError:
            yield None, "CloudWatch message is not JSON"
            return
        yield from unwrap(inner)
        return
    yield document, None
