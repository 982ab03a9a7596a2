"""Parse one line of the ``allotment_json`` access-log format into a typed ``LogRecord``.

Token fields are quoted in the log (an unset njs variable logs as ``""``), so they are optional ints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from allotment.types import Usage


class MalformedLine(ValueError):
    """A line that is not one of ours: counted, logged and skipped, never fatal."""


@dataclass(frozen=True, slots=True)
class LogRecord:
    request_id: str
    at: datetime | None
    status: int
    upstream_status: str
    uri: str
    model: str
    stream: bool
    key_hash: str
    person: str
    labels: dict[str, str] = field(default_factory=dict)
    trace_id: str | None = None
    usage: Usage | None = None  # None: the reply carried no usage (aborted, error, or not asked)
    usage_src: str = ""
    reservation_id: str = ""
    deny_status: str = ""
    request_length: int = 0


def _opt_int(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isdigit():
        number = int(value)
    else:
        raise MalformedLine(f"{key} is not a token count: {value!r}")
    return number


def _usage(data: dict[str, Any]) -> Usage | None:
    prompt = _opt_int(data, "prompt_tokens")
    completion = _opt_int(data, "completion_tokens")
    if prompt is None and completion is None:
        return None
    cached = _opt_int(data, "cached_tokens") or 0
    written = _opt_int(data, "cache_write_tokens") or 0
    reasoning = _opt_int(data, "reasoning_tokens") or 0
    prompt = prompt or 0
    completion = completion or 0
    if cached + written > prompt or reasoning > completion:
        raise MalformedLine("token breakdown exceeds its total")
    try:
        # the njs filter logs OpenAI's meaning: prompt_tokens includes cache reads and writes
        return Usage(
            input_tokens=prompt - cached - written,
            cache_read_tokens=cached,
            cache_write_tokens=written,
            output_tokens=completion,
            reasoning_tokens=reasoning,
        )
    except ValueError as exc:
        raise MalformedLine(str(exc)) from None


def _labels(text: Any) -> dict[str, str]:
    if not text:
        return {}
    try:
        value = orjson.loads(text) if isinstance(text, str) else text
    except orjson.JSONDecodeError:
        raise MalformedLine("labels is not a JSON object") from None
    if not isinstance(value, dict):
        raise MalformedLine("labels is not a JSON object")
    return {str(k): str(v) for k, v in value.items()}


def _ts(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        raise MalformedLine(f"bad ts {text!r}") from None


def parse_line(line: bytes | str) -> LogRecord:
    """One log line (without its newline) -> ``LogRecord``; raises ``MalformedLine``."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise MalformedLine("not JSON") from None
    if not isinstance(data, dict):
        raise MalformedLine("not a JSON object")
    request_id = data.get("request_id")
    status = data.get("status")
    if not isinstance(request_id, str) or not request_id or len(request_id) > 200:
        raise MalformedLine("missing request_id")
    if not isinstance(status, int) or isinstance(status, bool):
        raise MalformedLine("missing status")
    return LogRecord(
        request_id=request_id,
        at=_ts(data.get("ts")),
        status=status,
        upstream_status=str(data.get("upstream_status") or ""),
        uri=str(data.get("uri") or ""),
        model=str(data.get("model") or ""),
        stream=data.get("stream") == "true",
        key_hash=str(data.get("key_hash") or ""),
        person=str(data.get("person") or ""),
        labels=_labels(data.get("labels")),
        trace_id=data.get("trace_id") or None,
        usage=_usage(data),
        usage_src=str(data.get("usage_src") or ""),
        reservation_id=str(data.get("reservation_id") or ""),
        deny_status=str(data.get("deny_status") or ""),
        request_length=_opt_int(data, "request_length") or 0,
    )
