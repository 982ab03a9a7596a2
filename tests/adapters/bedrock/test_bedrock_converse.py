"""Converse through a governed boto3 client: exact costs, metadata on the wire, denials first."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from bedrock_wire import FakeBedrock, bedrock_client
from botocore.exceptions import ClientError, ParamValidationError
from botocore.stub import ANY, Stubber

from allotment import Denied, Outcome
from allotment.runtime import Runtime
from allotment.testing import SAMPLE_CONFIG
from allotment_bedrock import BedrockCallDenied, govern

SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
US_SONNET = "us." + SONNET
# rate_cards/bedrock/2026-06-08.yaml, in nanos per token (USD per 1M x 1000)
BASE = {"input": 3000, "output": 15000, "read": 300, "write": 3750, "write_1h": 6000}
US = {"input": 3300, "output": 16500, "read": 330, "write": 4125, "write_1h": 6600}
HELLO = [{"role": "user", "content": [{"text": "Hello there"}]}]
ALLOWED = re.compile(r"[a-zA-Z0-9\s:_@$#=/+,\-.]{0,256}")

CACHED_USAGE = {
    "inputTokens": 1000,
    "outputTokens": 200,
    "totalTokens": 8200,
    "cacheReadInputTokens": 5000,
    "cacheWriteInputTokens": 2000,
    "cacheDetails": [{"ttl": "5m", "inputTokens": 1500}, {"ttl": "1h", "inputTokens": 500}],
}
# fresh input excludes the cache: 1000 fresh, 5000 read, 1500 5-minute and 500 1-hour writes
CACHED_COST = 1000 * 3000 + 200 * 15000 + 5000 * 300 + 1500 * 3750 + 500 * 6000
assert CACHED_COST == 16_125_000


def event_of(rt: Runtime, response: dict[str, Any]) -> dict[str, Any]:
    found = rt.ledger.event(response["ResponseMetadata"]["AllotmentRequestId"])
    assert found is not None
    return found[1]


def reserved(rt: Runtime) -> int:
    return sum(w["reserved_nanos"] for w in rt.admin.budgets())


def test_converse_with_stubber_settles_the_exact_cost_with_cache_tokens(
    rt: Runtime, ada_key: str, client: Any
) -> None:
    govern(client, rt, credential=ada_key)
    with Stubber(client) as stub:
        stub.add_response(
            "converse",
            {
                "output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}},
                "stopReason": "end_turn",
                "usage": CACHED_USAGE,
                "metrics": {"latencyMs": 9},
            },
            # the stubber checks params after our injection: requestMetadata is there
            {"modelId": SONNET, "messages": HELLO, "requestMetadata": ANY},
        )
        response = client.converse(modelId=SONNET, messages=HELLO)
    event = event_of(rt, response)
    assert event["cost_nanos"] == CACHED_COST
    assert response["ResponseMetadata"]["AllotmentCostNanos"] == CACHED_COST
    assert (
        event["input_tokens"],
        event["cache_read_tokens"],
        event["cache_write_tokens"],
        event["cache_write_1h_tokens"],
        event["output_tokens"],
    ) == (1000, 5000, 1500, 500, 200)
    assert event["outcome"] == "success" and event["enforced"] is True
    assert event["provider"] == "bedrock" and event["model"] == SONNET
    assert event["person_id"] is not None and event["team_id"] == "engineering"
    assert reserved(rt) == 0


def test_metadata_is_injected_and_sanitised_on_the_wire(
    rt: Runtime, ada_key: str, client: Any, wire: FakeBedrock
) -> None:
    govern(client, rt, credential=ada_key, labels={"feature": "content-gen #2, (beta)!"})
    wire.converse({"inputTokens": 10, "outputTokens": 5, "totalTokens": 15})
    caller = {f"k{i}": f"v{i}" for i in range(20)}
    caller["bad key!"] = "x" * 300
    caller["allotment_person"] = "spoofed@example.com"
    response = client.converse(modelId=SONNET, messages=HELLO, requestMetadata=caller)
    sent = wire.last_body()["requestMetadata"]
    assert len(sent) == 16
    assert list(sent)[:6] == [
        "allotment_request_id",
        "allotment_person",
        "allotment_team",
        "allotment_cost_center",
        "allotment_label_environment",
        "allotment_label_feature",
    ]
    assert sent["allotment_request_id"] == response["ResponseMetadata"]["AllotmentRequestId"]
    assert sent["allotment_person"] == "ada@acme.example"  # ours win over the caller's
    assert sent["allotment_team"] == "engineering"
    assert sent["allotment_cost_center"] == "CC-ENG-001"
    assert sent["allotment_label_environment"] == "prod"  # the schema default
    assert sent["allotment_label_feature"] == "content-gen _2_ _beta__"
    assert list(sent)[6:] == [f"k{i}" for i in range(10)]  # the caller's, while room remains
    for key, value in sent.items():
        assert ALLOWED.fullmatch(key) and ALLOWED.fullmatch(value) and key
        assert "#" not in value and "," not in value


def test_long_or_odd_caller_metadata_is_repaired(
    rt: Runtime, ada_key: str, client: Any, wire: FakeBedrock
) -> None:
    govern(client, rt, credential=ada_key)
    wire.converse({"inputTokens": 10, "outputTokens": 5, "totalTokens": 15})
    client.converse(
        modelId=SONNET, messages=HELLO, requestMetadata={"bad key!": "é" * 300, "!!!": "dropped? no: renamed"}
    )
    sent = wire.last_body()["requestMetadata"]
    assert sent["bad key_"] == "_" * 256
    assert sent["___"] == "dropped_ no: renamed"


def test_budget_denial_raises_before_any_request_is_sent(rt: Runtime, client: Any, wire: FakeBedrock) -> None:
    rt.apply_config_text(SAMPLE_CONFIG.replace("monthly_budget: 3000\n", "monthly_budget: 0.01\n"))
    key = rt.admin.issue_key("ada@acme.example")[0]
    govern(client, rt, credential=key)
    with pytest.raises(BedrockCallDenied) as caught:
        client.converse(modelId=SONNET, messages=HELLO, inferenceConfig={"maxTokens": 1000})
    denied = caught.value
    assert isinstance(denied, Denied)
    assert (denied.status, denied.code) == (402, "budget_exceeded")
    assert denied.operation == "Converse" and denied.model_id == SONNET
    body = denied.body["error"]
    assert body["code"] == "budget_exceeded" and body["type"] == "insufficient_quota"
    assert body["scope"] == "person" and body["limit"] == "0.01"
    # the worst case: 22 input bytes bound 22 tokens at $3/1M, 1000 output tokens at $15/1M
    assert body["estimate"] == "0.015066"
    assert wire.requests == []
    assert reserved(rt) == 0


def test_a_model_outside_the_tier_is_refused_with_403(rt: Runtime, client: Any, wire: FakeBedrock) -> None:
    key = rt.admin.issue_key("sam@acme.example")[0]
    govern(client, rt, credential=key)
    with pytest.raises(BedrockCallDenied) as caught:
        client.converse(modelId=SONNET, messages=HELLO)
    assert (caught.value.status, caught.value.code) == (403, "model_not_allowed")
    assert wire.requests == []


def test_unknown_keys_and_unpriced_models_are_refused(
    rt: Runtime, ada_key: str, client: Any, wire: FakeBedrock
) -> None:
    govern(client, rt, credential="sk-not-a-key")
    with pytest.raises(BedrockCallDenied) as caught:
        client.converse(modelId=SONNET, messages=HELLO)
    assert (caught.value.status, caught.value.code) == (401, "invalid_api_key")
    other = bedrock_client()
    FakeBedrock(other)
    govern(other, rt, credential=ada_key)
    with pytest.raises(BedrockCallDenied) as caught:
        other.converse(modelId="ai21.unknown-model-v9:0", messages=HELLO)
    assert (caught.value.status, caught.value.code) == (400, "unpriced_model")
    assert wire.requests == []


def test_inference_profile_arns_and_prefixes_use_the_regional_price(
    rt: Runtime, ada_key: str, client: Any, wire: FakeBedrock
) -> None:
    govern(client, rt, credential=ada_key)
    arn = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{US_SONNET}"
    wire.converse({"inputTokens": 100, "outputTokens": 10, "totalTokens": 110})
    response = client.converse(modelId=arn, messages=HELLO)
    event = event_of(rt, response)
    assert event["model"] == US_SONNET
    assert event["cost_nanos"] == 100 * US["input"] + 10 * US["output"] == 495_000
    assert json.loads(wire.requests[-1].body)["requestMetadata"]["allotment_request_id"]


def test_application_inference_profiles_are_priced_through_the_map(
    rt: Runtime, ada_key: str, client: Any, wire: FakeBedrock
) -> None:
    profile = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"
    govern(client, rt, credential=ada_key, inference_profiles={profile: SONNET})
    wire.converse({"inputTokens": 100, "outputTokens": 10, "totalTokens": 110})
    event = event_of(rt, client.converse(modelId=profile, messages=HELLO))
    assert event["model"] == SONNET and event["cost_nanos"] == 450_000


def test_the_served_tier_is_stored_and_an_unpriced_one_flagged(
    rt: Runtime, ada_key: str, client: Any, wire: FakeBedrock
) -> None:
    govern(client, rt, credential=ada_key)
    wire.converse(
        {"inputTokens": 100, "outputTokens": 10, "totalTokens": 110}, serviceTier={"type": "priority"}
    )
    event = event_of(rt, client.converse(modelId=SONNET, messages=HELLO, serviceTier={"type": "priority"}))
    assert event["service_tier"] == "priority"
    # the bundled Bedrock card has no priority prices: standard, and never silently
    assert "service_tier_unpriced" in event["flags"].split(",")
    assert event["cost_nanos"] == 100 * 3000 + 10 * 15000 == 450_000


def test_bedrock_default_tier_is_standard(rt: Runtime, ada_key: str, client: Any, wire: FakeBedrock) -> None:
    govern(client, rt, credential=ada_key)
    wire.converse(
        {"inputTokens": 100, "outputTokens": 10, "totalTokens": 110}, serviceTier={"type": "default"}
    )
    event = event_of(rt, client.converse(modelId=SONNET, messages=HELLO))
    assert event["service_tier"] == "standard"
    assert "service_tier_unpriced" not in event["flags"].split(",")
    assert event["cost_nanos"] == 450_000


def test_a_provider_error_releases_the_reservation(
    rt: Runtime, ada_key: str, client: Any, wire: FakeBedrock
) -> None:
    govern(client, rt, credential=ada_key)
    wire.reply(
        "converse",
        status=400,
        headers={"x-amzn-errortype": "ValidationException"},
        body={"message": "The model returned an error"},
    )
    with pytest.raises(ClientError) as caught:
        client.converse(modelId=SONNET, messages=HELLO)
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    request_id = json.loads(wire.requests[-1].body)["requestMetadata"]["allotment_request_id"]
    event = rt.ledger.event(request_id)[1]
    assert event["outcome"] == Outcome.ERROR.value and event["cost_nanos"] == 0
    assert "provider_error" in event["flags"]
    assert reserved(rt) == 0


def test_invalid_parameters_reserve_nothing(
    rt: Runtime, ada_key: str, client: Any, wire: FakeBedrock
) -> None:
    govern(client, rt, credential=ada_key)
    with pytest.raises(ParamValidationError):
        client.converse(modelId=SONNET, messages="not a list")
    assert wire.requests == [] and reserved(rt) == 0


def test_governing_a_client_twice_or_another_service_is_refused(
    rt: Runtime, ada_key: str, client: Any
) -> None:
    import boto3

    from allotment.errors import InvalidRequest

    govern(client, rt, credential=ada_key)
    with pytest.raises(InvalidRequest, match="already governed"):
        govern(client, rt, credential=ada_key)
    with pytest.raises(InvalidRequest, match="bedrock-runtime"):
        govern(boto3.client("s3", region_name="us-east-1"), rt, credential=ada_key)
