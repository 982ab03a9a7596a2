"""Parse one line of the ``allotment_json`` access-log format into a typed ``LogRecord``.

Token fields are quoted in the log (an unset njs variable logs as ``""``), so they are optional ints.
"""

from __future__ import annotations

import operator
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from allotment.service_tiers import canonical_tier
from allotment.types import MAX_TOKENS_PER_FIELD, Usage


class MalformedLine(ValueError):
    """A line that is not one of ours: counted, logged and skipped, never fatal."""


_CACHE_LIMIT = 4096  # distinct timestamps / label sets remembered (a log repeats them a lot)
_EMPTY: dict[str, str] = {}


class LogRecord(NamedTuple):
    """One parsed line. A named tuple, not a frozen dataclass: building one is ~6x cheaper."""

    request_id: str
    at: datetime | None
    status: int
    upstream_status: str
    uri: str
    model: str
    stream: bool
    key_hash: str
    person: str
    labels: dict[str, str] = _EMPTY
    trace_id: str | None = None
    tokens: tuple[int, int, int, int, int] | None = None  # prompt, completion, cached, written, reasoning
    usage_src: str = ""
    reservation_id: str = ""
    deny_status: str = ""
    delivered_bytes: int | None = None  # a stream's answer bytes that reached nginx; None: not a stream
    # the request body's bytes (request_body_bytes), checked but kept as logged (a str of
    # digits, or an int) until ``request_bytes`` reads it; on a line without it, the whole
    # request's (request_length: request line and headers too); None: not logged
    request_size: str | int | None = None
    service_tier: str | None = None  # the tier the provider reported serving on (canonical)

    @property
    def request_bytes(self) -> int | None:
        """The request body's size in bytes (see ``request_size``), or None: not logged."""
        return None if self.request_size is None else int(self.request_size)

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
            service_tier=self.service_tier,
        )


def _count(value: Any, key: str) -> int:
    """A token field: its count, or -1 when not reported (absent or ``""``)."""
    if value.__class__ is str:
        if value.isdecimal() and len(value) < 10:
            return int(value)
        if not value:
            return -1
    elif value is None:
        return -1
    elif value.__class__ is int and 0 <= value <= MAX_TOKENS_PER_FIELD:
        return int(value)
    raise MalformedLine(f"{key} is not a token count: {value!r}")


def _tokens(
    prompt: int, completion: int, cached: int, written: int, reasoning: int
) -> tuple[int, int, int, int, int] | None:
    if prompt < 0:
        if completion < 0:
            return None
        prompt = 0
    elif completion < 0:
        completion = 0
    if cached < 0:
        cached = 0
    if written < 0:
        written = 0
    if reasoning < 0:
        reasoning = 0
    return _checked(prompt, completion, cached, written, reasoning)


def _checked(
    prompt: int, completion: int, cached: int, written: int, reasoning: int
) -> tuple[int, int, int, int, int]:
    if cached + written > prompt or reasoning > completion:
        raise MalformedLine("token breakdown exceeds its total")
    if prompt > MAX_TOKENS_PER_FIELD or completion > MAX_TOKENS_PER_FIELD:
        raise MalformedLine("token count beyond any model's limits")
    return prompt, completion, cached, written, reasoning


def _parse_counts(
    prompt: Any, completion: Any, cached: Any, written: Any, reasoning: Any
) -> tuple[int, int, int, int, int] | None:
    if (
        # five quoted counts; one isdecimal() over all five checks every char
        prompt.__class__ is str
        and completion.__class__ is str
        and cached.__class__ is str
        and written.__class__ is str
        and reasoning.__class__ is str
        and prompt
        and completion
        and cached
        and written
        and reasoning
        and len(prompt) < 10
        and len(completion) < 10
        and len(cached) < 10
        and len(written) < 10
        and len(reasoning) < 10
        and (prompt + completion + cached + written + reasoning).isdecimal()
    ):
        return _checked(int(prompt), int(completion), int(cached), int(written), int(reasoning))
    return _tokens(
        _count(prompt, "prompt_tokens"),
        _count(completion, "completion_tokens"),
        _count(cached, "cached_tokens"),
        _count(written, "cache_write_tokens"),
        _count(reasoning, "reasoning_tokens"),
    )


# Counts below _SMALL in their canonical spelling ("0" ... "9999"), read by one dict lookup:
# int() of a str costs several times more, and most counts in a log are small. Anything else
# (a larger count, "", a leading zero, a JSON number, garbage) takes ``_parse_counts``.
_SMALL = 10_000
_small = {str(n): n for n in range(_SMALL)}.get


_labels_cache: dict[str, dict[str, str]] = {}
_ts_cache: dict[str, datetime] = {}


def _labels(text: Any) -> dict[str, str]:
    if not text:
        return {}
    cached = _labels_cache.get(text) if text.__class__ is str else None
    if cached is not None:
        return cached.copy()
    try:
        value = orjson.loads(text) if isinstance(text, str) else text
    except orjson.JSONDecodeError:
        raise MalformedLine("labels is not a JSON object") from None
    if not isinstance(value, dict):
        raise MalformedLine("labels is not a JSON object")
    labels = {str(k): str(v) for k, v in value.items()}
    if isinstance(text, str):
        if len(_labels_cache) >= _CACHE_LIMIT:
            _labels_cache.clear()
        _labels_cache[text] = labels
    return labels.copy()


def _ts(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        return _ts_cache[text]
    except (KeyError, TypeError):
        pass
    try:
        value = datetime.fromisoformat(str(text))
    except ValueError:
        raise MalformedLine(f"bad ts {text!r}") from None
    if len(_ts_cache) >= _CACHE_LIMIT:
        _ts_cache.clear()
    _ts_cache[str(text)] = value
    return value


def _request_length(value: Any) -> int | None:
    # nginx always logs a number here; anything else is not a size to trust (and not our field)
    if value.__class__ is int and 0 <= value <= MAX_TOKENS_PER_FIELD:
        return int(value)
    return None


_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_new = tuple.__new__
# Every field the record reads, fetched in one C call when the line has them all (nginx logs
# every field of the format on every line); a line missing some goes through ``dict.get``.
_NAMES = (
    "request_id",
    "status",
    "ts",
    "labels",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "upstream_status",
    "uri",
    "model",
    "stream",
    "key_hash",
    "person",
    "trace_id",
    "usage_src",
    "reservation_id",
    "deny_status",
    "delivered_bytes",
)
# The names as orjson's key cache spells them: a parsed line's keys are these very objects, so
# each lookup matches by identity instead of comparing characters (half the cost of the fetch).
# Should orjson ever return other objects, lookups still match, only by comparison.
_KEYS = tuple(_loads(orjson.dumps(dict.fromkeys(_NAMES))))
_fields = operator.itemgetter(*_KEYS)
# fetched apart from the rest, so a line logged before the field existed keeps the fast path
_BODY_BYTES = next(iter(_loads(b'{"request_body_bytes":0}')))


def parse_line(line: bytes | str) -> LogRecord:
    """One log line (without its newline) -> ``LogRecord``; raises ``MalformedLine``."""
    try:
        data = _loads(line)
    except _JSONDecodeError:
        raise MalformedLine("not JSON") from None
    if data.__class__ is not dict:
        raise MalformedLine("not a JSON object")
    try:
        values = _fields(data)
    except KeyError:
        values = tuple(map(data.get, _KEYS))
    (
        request_id,
        status,
        ts,
        labels,
        prompt,
        completion,
        cached,
        written,
        reasoning,
        upstream_status,
        uri,
        model,
        stream,
        key_hash,
        person,
        trace_id,
        usage_src,
        reservation_id,
        deny_status,
        delivered,
    ) = values
    if request_id.__class__ is not str or not request_id or len(request_id) > 200:
        raise MalformedLine("missing request_id")
    if status.__class__ is not int:
        raise MalformedLine("missing status")
    at = _ts_cache.get(ts) if ts.__class__ is str else None
    if at is None:
        at = _ts(ts)
    if labels:
        cached_labels = _labels_cache.get(labels) if labels.__class__ is str else None
        labels = _labels(labels) if cached_labels is None else cached_labels.copy()
    else:
        labels = {}
    try:
        # the usual line: five quoted counts below _SMALL, each read (and checked) by one lookup
        p, c = _small(prompt), _small(completion)
        ca, w, r = _small(cached), _small(written), _small(reasoning)
    except TypeError:  # an unhashable value: the general path names the field
        p = None
    if p is None or c is None or ca is None or w is None or r is None:
        tokens = _parse_counts(prompt, completion, cached, written, reasoning)
    elif ca + w > p or r > c:
        raise MalformedLine("token breakdown exceeds its total")
    else:
        tokens = (p, c, ca, w, r)
    if delivered:  # a count with the token fields' rules; "" or absent: not a stream
        count = _small(delivered) if delivered.__class__ is str else None
        delivered = count if count is not None else _count(delivered, "delivered_bytes")
    else:
        delivered = None
    body_bytes = data.get(_BODY_BYTES)
    if body_bytes:  # the same rules, checked here and read as an int only when needed
        if body_bytes.__class__ is not str or len(body_bytes) >= 10 or not body_bytes.isdecimal():
            body_bytes = _count(body_bytes, "request_body_bytes")
    else:  # "" or absent (an older line): nginx's own request_length
        body_bytes = _request_length(data.get("request_length"))
    # not in _NAMES: lines written before the field existed keep the one-call fetch
    tier = data.get("service_tier")
    # Built with tuple.__new__: the fields are in declaration order, every one given.
    return _new(
        LogRecord,
        (
            request_id,
            at,
            status,
            upstream_status or "",
            uri or "",
            model or "",
            stream == "true",
            key_hash or "",
            person or "",
            labels,
            trace_id or None,
            tokens,
            usage_src or "",
            reservation_id or "",
            deny_status or "",
            delivered,
            body_bytes,
            canonical_tier(tier) if tier else None,
        ),
    )
