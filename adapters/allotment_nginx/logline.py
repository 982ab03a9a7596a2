"""Parse one line of the ``allotment_json`` access-log format into a typed ``LogRecord``.

Token fields are quoted in the log (an unset njs variable logs as ``""``), so they are optional ints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from allotment.types import MAX_TOKENS_PER_FIELD, Usage


class MalformedLine(ValueError):
    """A line that is not one of ours: counted, logged and skipped, never fatal."""


_TOKEN_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
_CACHE_LIMIT = 4096  # distinct timestamps / label sets remembered (a log repeats them a lot)


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
    tokens: tuple[int, int, int, int, int] | None = None  # prompt, completion, cached, written, reasoning
    usage_src: str = ""
    reservation_id: str = ""
    deny_status: str = ""

    @property
    def usage(self) -> Usage | None:
        """Normalized usage, or None: the reply carried none (aborted, error, or never asked)."""
        if self.tokens is None:
            return None
        prompt, completion, cached, written, reasoning = self.tokens
        # the njs filter logs OpenAI's meaning: prompt_tokens includes cache reads and writes
        return Usage(
            input_tokens=prompt - cached - written,
            cache_read_tokens=cached,
            cache_write_tokens=written,
            output_tokens=completion,
            reasoning_tokens=reasoning,
        )


def _tokens(data: dict[str, Any]) -> tuple[int, int, int, int, int] | None:
    values = []
    for key in _TOKEN_FIELDS:
        value = data.get(key)
        if value is None or value == "":
            values.append(-1)
        elif value.__class__ is str and value.isdigit() and len(value) < 10:
            values.append(int(value))
        elif value.__class__ is int and 0 <= value <= MAX_TOKENS_PER_FIELD:
            values.append(value)
        else:
            raise MalformedLine(f"{key} is not a token count: {value!r}")
    prompt, completion, cached, written, reasoning = values
    if prompt < 0 and completion < 0:
        return None
    prompt, completion = max(prompt, 0), max(completion, 0)
    cached, written, reasoning = max(cached, 0), max(written, 0), max(reasoning, 0)
    if cached + written > prompt or reasoning > completion:
        raise MalformedLine("token breakdown exceeds its total")
    if prompt > MAX_TOKENS_PER_FIELD or completion > MAX_TOKENS_PER_FIELD:
        raise MalformedLine("token count beyond any model's limits")
    return prompt, completion, cached, written, reasoning


_labels_cache: dict[str, dict[str, str]] = {}
_ts_cache: dict[str, datetime] = {}


def _labels(text: Any) -> dict[str, str]:
    if not text:
        return {}
    cached = _labels_cache.get(text)
    if cached is not None:
        return dict(cached)
    try:
        value = orjson.loads(text) if isinstance(text, str) else text
    except orjson.JSONDecodeError:
        raise MalformedLine("labels is not a JSON object") from None
    if not isinstance(value, dict):
        raise MalformedLine("labels is not a JSON object")
    labels = {str(k): str(v) for k, v in value.items()}
    if len(_labels_cache) >= _CACHE_LIMIT:
        _labels_cache.clear()
    _labels_cache[text] = labels
    return dict(labels)


def _ts(text: Any) -> datetime | None:
    if not text:
        return None
    cached = _ts_cache.get(text)
    if cached is not None:
        return cached
    try:
        value = datetime.fromisoformat(str(text))
    except ValueError:
        raise MalformedLine(f"bad ts {text!r}") from None
    if len(_ts_cache) >= _CACHE_LIMIT:
        _ts_cache.clear()
    _ts_cache[text] = value
    return value


def parse_line(line: bytes | str) -> LogRecord:
    """One log line (without its newline) -> ``LogRecord``; raises ``MalformedLine``."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise MalformedLine("not JSON") from None
    if data.__class__ is not dict:
        raise MalformedLine("not a JSON object")
    get = data.get
    request_id = get("request_id")
    status = get("status")
    if request_id.__class__ is not str or not request_id or len(request_id) > 200:
        raise MalformedLine("missing request_id")
    if status.__class__ is not int:
        raise MalformedLine("missing status")
    return LogRecord(
        request_id,
        _ts(get("ts")),
        status,
        get("upstream_status") or "",
        get("uri") or "",
        get("model") or "",
        get("stream") == "true",
        get("key_hash") or "",
        get("person") or "",
        _labels(get("labels")),
        get("trace_id") or None,
        _tokens(data),
        get("usage_src") or "",
        get("reservation_id") or "",
        get("deny_status") or "",
    )
