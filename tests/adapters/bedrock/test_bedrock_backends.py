"""The adapter on both ledgers (SQLite and PostgreSQL), its rate cards, and its registration.

``runtime`` is parametrized by the root conftest over both databases.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bedrock_wire import FakeBedrock, bedrock_client, converse_stream_events

from allotment.plugins import create_plugin_manager, describe_plugins
from allotment.runtime import Runtime
from allotment_bedrock import govern
from allotment_bedrock.ingest import ingest

HAIKU = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
HELLO = [{"role": "user", "content": [{"text": "Hello there"}]}]


def test_governed_stream_and_its_log_on_both_databases(runtime: Runtime, tmp_path: Path) -> None:
    key = runtime.admin.issue_key("ada@acme.example")[0]
    client = bedrock_client()
    wire = FakeBedrock(client)
    govern(client, runtime, credential=key)
    usage = {
        "inputTokens": 400,
        "outputTokens": 100,
        "totalTokens": 3500,
        "cacheReadInputTokens": 2000,
        "cacheWriteInputTokens": 1000,
        "cacheDetails": [{"ttl": "1h", "inputTokens": 1000}],
    }
    wire.stream("converse-stream", converse_stream_events(usage, ["Hi"]))
    response = client.converse_stream(modelId=HAIKU, messages=HELLO)
    list(response["stream"])
    request_id = response["ResponseMetadata"]["AllotmentRequestId"]
    event = runtime.ledger.event(request_id)[1]
    # rate_cards/bedrock/2026-06-08-claude-haiku-opus.yaml, us. profile: $1.10 in, $5.50 out,
    # $0.11 cache read, $2.20 1-hour cache write per 1M tokens
    assert event["cost_nanos"] == 400 * 1100 + 100 * 5500 + 2000 * 110 + 1000 * 2200 == 3_410_000
    assert event["cache_write_1h_tokens"] == 1000
    log = tmp_path / "log.jsonl"
    sent = json.loads(wire.requests[0].body)["requestMetadata"]
    log.write_text(
        json.dumps(
            {
                "timestamp": "2026-06-15T12:00:00Z",
                "requestId": "aws-1",
                "modelId": HAIKU,
                "operation": "ConverseStream",
                "requestMetadata": sent,
                "input": {
                    "inputTokenCount": 400,
                    "cacheReadInputTokenCount": 2000,
                    "cacheWriteInputTokenCount": 1000,
                },
                "output": {"outputTokenCount": 100},
            }
        )
        + "\n"
    )
    for _ in range(2):
        summary = ingest(runtime, str(log)).to_dict()
    assert (summary["duplicates"], summary["recorded"], summary["drift"]) == (1, 0, [])
    assert sum(w["reserved_nanos"] for w in runtime.admin.budgets()) == 0


def test_the_bedrock_plugin_is_registered_by_entry_point() -> None:
    infos: dict[str, Any] = {info.name: info for info in describe_plugins(create_plugin_manager())}
    assert "register_commands" in infos["bedrock"].hooks
