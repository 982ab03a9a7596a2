"""The fast line parser against a plain statement of its rules, on thousands of odd lines.

``reference`` below is the parser written the straightforward way (one ``dict.get`` per field,
every count through ``int``). ``parse_line`` takes shortcuts (fields fetched in one call, small
counts read from a table); it must give the same record, or the same ``MalformedLine`` message,
for every line.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime
from typing import Any

import orjson
import pytest

from allotment.service_tiers import canonical_tier
from allotment.types import MAX_TOKENS_PER_FIELD
from allotment_nginx.logline import LogRecord, MalformedLine, parse_line

COUNT_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


def _count(value: Any, key: str) -> int:
    if isinstance(value, str):
        if value.isdecimal() and len(value) < 10:
            return int(value)
        if not value:
            return -1
    elif value is None:
        return -1
    elif type(value) is int and 0 <= value <= MAX_TOKENS_PER_FIELD:
        return value
    raise MalformedLine(f"{key} is not a token count: {value!r}")


def reference(line: bytes) -> LogRecord:
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise MalformedLine("not JSON") from None
    if not isinstance(data, dict):
        raise MalformedLine("not a JSON object")
    request_id = data.get("request_id")
    if not isinstance(request_id, str) or not request_id or len(request_id) > 200:
        raise MalformedLine("missing request_id")
    status = data.get("status")
    if type(status) is not int:
        raise MalformedLine("missing status")
    ts = data.get("ts")
    at = None
    if ts:
        try:
            at = datetime.fromisoformat(str(ts))
        except ValueError:
            raise MalformedLine(f"bad ts {ts!r}") from None
    labels: dict[str, str] = {}
    raw = data.get("labels")
    if raw:
        try:
            value = orjson.loads(raw) if isinstance(raw, str) else raw
        except orjson.JSONDecodeError:
            raise MalformedLine("labels is not a JSON object") from None
        if not isinstance(value, dict):
            raise MalformedLine("labels is not a JSON object")
        labels = {str(k): str(v) for k, v in value.items()}
    prompt, completion, cached, written, reasoning = (_count(data.get(k), k) for k in COUNT_FIELDS)
    tokens: tuple[int, int, int, int, int] | None
    if prompt < 0 and completion < 0:
        tokens = None
    else:
        prompt, completion, cached, written, reasoning = (
            max(0, n) for n in (prompt, completion, cached, written, reasoning)
        )
        if cached + written > prompt or reasoning > completion:
            raise MalformedLine("token breakdown exceeds its total")
        if prompt > MAX_TOKENS_PER_FIELD or completion > MAX_TOKENS_PER_FIELD:
            raise MalformedLine("token count beyond any model's limits")
        tokens = (prompt, completion, cached, written, reasoning)
    raw_delivered = data.get("delivered_bytes")
    # "" or absent: not a stream; otherwise a count with the token fields' rules
    delivered = _count(raw_delivered, "delivered_bytes") if raw_delivered else None
    raw_body = data.get("request_body_bytes")
    length = data.get("request_length")
    # the same rules; "" or absent: nginx's request_length when it is a plausible number, else None
    request_bytes: str | int | None
    if raw_body:  # checked, but a str is kept as logged (read as an int when needed)
        count = _count(raw_body, "request_body_bytes")
        request_bytes = raw_body if isinstance(raw_body, str) else count
    elif type(length) is int and 0 <= length <= MAX_TOKENS_PER_FIELD:
        request_bytes = length
    else:
        request_bytes = None
    return LogRecord(
        request_id=request_id,
        at=at,
        status=status,
        upstream_status=data.get("upstream_status") or "",
        uri=data.get("uri") or "",
        model=data.get("model") or "",
        stream=data.get("stream") == "true",
        key_hash=data.get("key_hash") or "",
        person=data.get("person") or "",
        labels=labels,
        trace_id=data.get("trace_id") or None,
        tokens=tokens,
        usage_src=data.get("usage_src") or "",
        reservation_id=data.get("reservation_id") or "",
        deny_status=data.get("deny_status") or "",
        delivered_bytes=delivered,
        request_size=request_bytes,
        service_tier=canonical_tier(data.get("service_tier")),
    )


def outcome(parser: Any, line: bytes) -> tuple[str, Any]:
    try:
        return "record", tuple(parser(line))
    except MalformedLine as exc:
        return "malformed", str(exc)


FULL = {
    "ts": "2026-11-23T10:00:00+00:00",
    "request_id": "r",
    "remote": "10.0.0.7",
    "method": "POST",
    "uri": "/v1/chat/completions",
    "status": 200,
    "upstream_status": "200",
    "request_time": 0.412,
    "request_length": 1290,
    "request_body_bytes": "1001",
    "key_hash": "ab" * 32,
    "person": "",
    "key_id": "",
    "labels": '{"feature":"search"}',
    "trace_id": "",
    "model": "gpt-5.4-mini",
    "stream": "true",
    "prompt_tokens": "812",
    "completion_tokens": "120",
    "total_tokens": "",
    "cached_tokens": "200",
    "cache_write_tokens": "0",
    "reasoning_tokens": "0",
    "usage_src": "sse",
    "litellm_cost": "",
    "reservation_id": "",
    "deny_status": "",
    "delivered_bytes": "1234",
    "service_tier": "default",
}
COUNTS = [
    "0", "1", "7", "812", "9999", "10000", "123456", "99999999", "100000000", "100000001",
    "999999999", "1000000000", "", " 1", "1 ", "+1", "-1", "-0", "1_000", "007", "0000000000005",
    "1.0", "1e3", "²", "١٢", "１２", "12x", None, 0, 5, 12000, -1, MAX_TOKENS_PER_FIELD,
    MAX_TOKENS_PER_FIELD + 1, 1.5, True, False, [1], {"n": 1},
]  # fmt: skip
ODD = {
    "request_id": ["", "x" * 200, "x" * 201, 5, None, ["r"]],
    "status": [200, 499, "200", 200.0, True, None],
    "ts": ["", "2026-11-23T10:00:01+00:00", "2026-11-23T10:00:00", "yesterday", 5, None, {"at": 1}],
    "labels": ["", "{}", '{"a":"b","c":1}', "[1]", "not json", {"x": 1}, [1], 7, None],
    "upstream_status": ["", "502, 200", None, 200],
    "stream": ["true", "false", "", True, None],
    "model": ["", None, 0, "m"],
    "trace_id": ["", "t-1", None, 0],
    "reservation_id": ["", "res_1", None],
    "deny_status": ["", "402", None, 402],
    "service_tier": ["", "priority", "default", "PRIORITY", "auto", "flex", "x" * 41, 5, None, [1]],
    "delivered_bytes": [
        "",
        "0",
        "11",
        "99999",
        "123456789",
        "1234567890",
        "-1",
        "1.5",
        None,
        0,
        7,
        [1],
        True,
    ],
    "request_body_bytes": [
        "",
        "0",
        "42",
        "9999",
        "10000",
        "123456789",
        "1234567890",
        "-1",
        "1.5",
        None,
        0,
        7,
        [1],
        True,
    ],
    "request_length": [0, 385, MAX_TOKENS_PER_FIELD + 1, -1, "385", 1.5, None, True],
}


def lines(rng: random.Random, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        data: dict[str, Any] = dict(FULL, request_id=uuid.UUID(int=rng.getrandbits(128)).hex)
        # a consistent breakdown (small and large counts alike), then some fields made odd
        prompt, completion = rng.randrange(0, 30_000), rng.randrange(0, 30_000)
        cached = rng.randrange(0, prompt // 2 + 1)
        consistent = (prompt, completion, cached, rng.randrange(0, prompt - cached + 1), completion // 3)
        for field, value in zip(COUNT_FIELDS, consistent, strict=True):
            roll = rng.random()
            if roll < 0.85:
                data[field] = str(value)
            elif roll < 0.95:
                data[field] = rng.choice(COUNTS)
            else:
                del data[field]
        for field, values in ODD.items():
            if rng.random() < 0.08:
                data[field] = rng.choice(values)
        if rng.random() < 0.1:
            for field in rng.sample(sorted(data), rng.randrange(1, 6)):
                del data[field]
        out.append(orjson.dumps(data))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_the_fast_parser_agrees_with_the_reference_on_every_line(seed: int) -> None:
    rng = random.Random(seed)
    checked = {"record": 0, "malformed": 0}
    for line in lines(rng, 5_000):
        expected = outcome(reference, line)
        assert outcome(parse_line, line) == expected, line
        checked[expected[0]] += 1
    assert checked["record"] > 500 and checked["malformed"] > 500  # both paths were exercised


def test_hand_picked_lines_agree() -> None:
    picked = [
        b"not json",
        b"[1]",
        b'"a string"',
        b"null",
        b'{"status":200}',
        b'{"request_id":"r"}',
        b'{"request_id":"r","status":200}',
        b'{"request_id":"r","status":200,"prompt_tokens":"","completion_tokens":""}',
        b'{"request_id":"r","status":200,"prompt_tokens":"10"}',
        b'{"request_id":"r","status":200,"completion_tokens":"10","reasoning_tokens":"11"}',
        b'{"request_id":"r","status":200,"prompt_tokens":"10","cached_tokens":"6","cache_write_tokens":"5"}',
        orjson.dumps(dict(FULL, prompt_tokens="100000001", completion_tokens="1")),
        orjson.dumps(dict(FULL, prompt_tokens="1", completion_tokens="100000001", cached_tokens="0")),
        orjson.dumps(dict(FULL, cached_tokens="9999", prompt_tokens="9998")),
        orjson.dumps(dict(FULL, prompt_tokens=[1])),
        orjson.dumps(dict(FULL, reasoning_tokens={"n": 1})),
        orjson.dumps(FULL),
    ]
    for line in picked:
        assert outcome(parse_line, line) == outcome(reference, line), line
    assert outcome(parse_line, orjson.dumps(FULL))[1][11] == (812, 120, 200, 0, 0)


def test_the_logged_service_tier_reaches_the_usage() -> None:
    record = parse_line(orjson.dumps(dict(FULL, service_tier="priority")))
    assert record.service_tier == "priority"
    assert record.usage is not None and record.usage.service_tier == "priority"
    assert parse_line(orjson.dumps(dict(FULL, service_tier="default"))).service_tier == "standard"
    older = dict(FULL)
    del older["service_tier"]  # a line logged before the field existed
    assert parse_line(orjson.dumps(older)).service_tier is None
