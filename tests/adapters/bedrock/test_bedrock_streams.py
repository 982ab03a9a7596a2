"""Streaming and InvokeModel through a governed client, over real event-stream frames.

Frames are served in 5-byte reads, so botocore's real parser reassembles every message.
"""

from __future__ import annotations

import gc
import json
from typing import Any

import pytest
from bedrock_wire import FakeBedrock, chunk, converse_stream_events, encode_event, encode_exception
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import EventStreamError

from allotment.runtime import Runtime
from allotment_bedrock import GovernedStream, govern
from allotment_bedrock import governor as govern_module

SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
US_SONNET = "us." + SONNET
HELLO = [{"role": "user", "content": [{"text": "Hello there"}]}]
# the input bound of HELLO: 3 request + 4 message overhead + "user" (4) + "Hello there" (11)
HELLO_BOUND = 22
STREAM_USAGE = {"inputTokens": 50, "outputTokens": 30, "totalTokens": 1080, "cacheReadInputTokens": 1000}
STREAM_COST = 50 * 3000 + 30 * 15000 + 1000 * 300  # base sonnet card, nanos per token


def stored(rt: Runtime, request_id: str) -> dict[str, Any] | None:
    found = rt.ledger.event(request_id)
    return None if found is None else found[1]


def reserved(rt: Runtime) -> int:
    return sum(w["reserved_nanos"] for w in rt.admin.budgets())


def test_our_frames_decode_with_botocores_own_parser() -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(encode_event("metadata", {"usage": STREAM_USAGE}))
    message = next(iter(buffer))
    assert message.headers[":event-type"] == "metadata"
    assert json.loads(message.payload) == {"usage": STREAM_USAGE}


def test_converse_stream_settles_when_the_metadata_event_arrives(
    rt: Runtime, ada_key: str, client: Any, wire: FakeBedrock
) -> None:
    govern(client, rt, credential=ada_key)
    wire.stream("converse-stream", converse_stream_events(STREAM_USAGE, ["Hel", "lo!"]))
    response = client.converse_stream(modelId=SONNET, messages=HELLO)
    request_id = response["ResponseMetadata"]["AllotmentRequestId"]
    assert isinstance(response["stream"], GovernedStream)
    assert stored(rt, request_id) is None  # after-call fires before the stream is read
    assert reserved(rt) > 0
    texts = [e["contentBlockDelta"]["delta"]["text"] for e in response["stream"] if "contentBlockDelta" in e]
    assert texts == ["Hel", "lo!"]
    event = stored(rt, request_id)
    assert event is not None and event["cost_nanos"] == STREAM_COST == 900_000
    assert (event["outcome"], event["endpoint_mode"], event["estimated"]) == ("success", "stream", False)
    assert response["stream"].usage_event.cost_nanos == STREAM_COST
    assert reserved(rt) == 0
    assert json.loads(wire.requests[0].body)["requestMetadata"]["allotment_request_id"] == request_id


def test_a_closed_stream_is_charged_as_cancelled_for_what_was_delivered(
    rt: Runtime, ada_key: str, client: Any, wire: FakeBedrock
) -> None:
    govern(client, rt, credential=ada_key)
    wire.stream("converse-stream", converse_stream_events(STREAM_USAGE, ["Hello, ", "world"]))
    response = client.converse_stream(modelId=SONNET, messages=HELLO)
    with response["stream"] as stream:
        assert "messageStart" in next(stream)
        assert next(stream)["contentBlockDelta"]["delta"]["text"] == "Hello, "
    event = stored(rt, response["ResponseMetadata"]["AllotmentRequestId"])
    assert event is not None
    # estimated: ceil(22 / 4) = 6 input tokens, ceil(7 delivered bytes / 4) = 2 output tokens
    assert (event["input_tokens"], event["output_tokens"], event["estimated"]) == (6, 2, True)
    assert event["cost_nanos"] == 6 * 3000 + 2 * 15000 == 48_000
    assert event["outcome"] == "cancelled" and "stream_abandoned" in event["flags"]
    assert reserved(rt) == 0


def test_a_dropped_stream_is_charged_as_cancelled(
    rt: Runtime, ada_key: str, client: Any, wire: FakeBedrock
) -> None:
    govern(client, rt, credential=ada_key)
    wire.stream("converse-stream", converse_stream_events(STREAM_USAGE, ["Hi"]))
    response = client.converse_stream(modelId=SONNET, messages=HELLO)
    request_id = response["ResponseMetadata"]["AllotmentRequestId"]
    for _ in response["stream"]:
        break  # the caller stops reading and forgets the response
    del response, _
    gc.collect()
    event = stored(rt, request_id)
    assert event is not None and event["outcome"] == "cancelled"
    assert event["cost_nanos"] == 6 * 3000  # nothing delivered yet: the input only
    assert reserved(rt) == 0


def test_a_stream_that_fails_midway_settles_as_error(
    rt: Runtime, ada_key: str, client: Any, wire: FakeBedrock
) -> None:
    govern(client, rt, credential=ada_key)
    frames = converse_stream_events(STREAM_USAGE, ["abcdefgh"])[:2]
    frames.append(encode_exception("modelStreamErrorException", "the model stopped"))
    wire.stream("converse-stream", frames)
    response = client.converse_stream(modelId=SONNET, messages=HELLO)
    with pytest.raises(EventStreamError):
        list(response["stream"])
    event = stored(rt, response["ResponseMetadata"]["AllotmentRequestId"])
    assert event is not None and event["outcome"] == "error" and "stream_error" in event["flags"]
    assert event["cost_nanos"] == 6 * 3000 + 2 * 15000  # 8 delivered bytes -> 2 tokens


def test_invoke_model_settles_from_the_token_headers(
    rt: Runtime, ada_key: str, client: Any, wire: FakeBedrock
) -> None:
    govern(client, rt, credential=ada_key, labels={"feature": "search"})
    wire.reply(
        "invoke",
        headers={
            "x-amzn-bedrock-input-token-count": "100",
            "x-amzn-bedrock-output-token-count": "50",
            "x-amzn-bedrock-cache-read-input-token-count": "1000",
            "x-amzn-bedrock-cache-write-input-token-count": "200",
            "x-amzn-bedrock-service-tier": "flex",
        },
        body={"content": [{"type": "text", "text": "hi"}]},
    )
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 300, "messages": HELLO})
    response = client.invoke_model(modelId=SONNET, body=body)
    assert json.loads(response["body"].read())["content"][0]["text"] == "hi"
    event = stored(rt, response["ResponseMetadata"]["AllotmentRequestId"])
    assert event is not None
    assert event["cost_nanos"] == 100 * 3000 + 50 * 15000 + 1000 * 300 + 200 * 3750 == 2_100_000
    assert event["service_tier"] == "flex"
    assert "service_tier_unpriced" in event["flags"]  # the bundled card prices no flex tier
    assert json.loads(event["labels"])["feature"] == "search"
    header = wire.requests[0].headers["X-Amzn-Bedrock-Request-Metadata"].decode()
    sent = json.loads(header)
    assert sent["allotment_request_id"] == event["request_id"]
    assert sent["allotment_label_feature"] == "search"
    assert header == json.dumps(sent, separators=(",", ":"))  # compact, as the service expects


def test_invoke_model_on_older_botocore_sets_a_signed_metadata_header(
    rt: Runtime, ada_key: str, client: Any, wire: FakeBedrock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(govern_module, "invoke_metadata_is_modelled", lambda client: False)
    govern(client, rt, credential=ada_key)
    wire.reply(
        "invoke",
        headers={
            "x-amzn-bedrock-input-token-count": "10",
            "x-amzn-bedrock-output-token-count": "5",
        },
        body={},
    )
    response = client.invoke_model(modelId=SONNET, body=b'{"max_tokens": 10}')
    request = wire.requests[0]
    sent = json.loads(request.headers["X-Amzn-Bedrock-Request-Metadata"])
    assert sent["allotment_request_id"] == response["ResponseMetadata"]["AllotmentRequestId"]
    assert "x-amzn-bedrock-request-metadata" in request.headers["Authorization"].decode()  # SigV4 covers it
    assert stored(rt, sent["allotment_request_id"])["cost_nanos"] == 10 * 3000 + 5 * 15000


def test_invoke_model_with_response_stream_settles_from_the_invocation_metrics(
    rt: Runtime, ada_key: str, client: Any, wire: FakeBedrock
) -> None:
    govern(client, rt, credential=ada_key)
    metrics = {
        "inputTokenCount": 20,
        "outputTokenCount": 10,
        "cacheReadInputTokenCount": 100,
        "cacheWriteInputTokenCount": 0,
        "invocationLatency": 300,
        "firstByteLatency": 100,
    }
    wire.stream(
        "invoke-with-response-stream",
        [
            chunk({"type": "message_start", "message": {"usage": {"input_tokens": 20}}}),
            chunk({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}}),
            chunk({"type": "message_stop", "amazon-bedrock-invocationMetrics": metrics}),
        ],
    )
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100, "messages": HELLO})
    response = client.invoke_model_with_response_stream(modelId=US_SONNET, body=body)
    chunks = [json.loads(e["chunk"]["bytes"]) for e in response["body"]]
    assert chunks[-1]["type"] == "message_stop"
    event = stored(rt, response["ResponseMetadata"]["AllotmentRequestId"])
    assert event is not None and event["model"] == US_SONNET
    # the us. cross-region profile carries a 10% uplift on the card: $3.30 / $16.50 / $0.33
    assert event["cost_nanos"] == 20 * 3300 + 10 * 16500 + 100 * 330 == 264_000
    assert event["endpoint_mode"] == "stream"
    assert reserved(rt) == 0


def test_invoke_model_without_token_headers_reads_the_body_usage(
    rt: Runtime, ada_key: str, client: Any, wire: FakeBedrock
) -> None:
    govern(client, rt, credential=ada_key)
    wire.reply(
        "invoke", body={"content": [{"text": "hi"}], "usage": {"input_tokens": 40, "output_tokens": 8}}
    )
    response = client.invoke_model(modelId=SONNET, body=b'{"max_tokens": 10}')
    assert json.loads(response["body"].read())["usage"]["output_tokens"] == 8  # still readable
    event = stored(rt, response["ResponseMetadata"]["AllotmentRequestId"])
    assert event["cost_nanos"] == 40 * 3000 + 8 * 15000
    assert "usage_from_body" in event["flags"]
