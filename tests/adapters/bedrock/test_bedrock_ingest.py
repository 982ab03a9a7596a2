"""``allotment ingest bedrock``: passive, idempotent records from invocation logs, and drift.

Logs come as JSON lines, gzip, CloudWatch exports and S3 objects (moto), as AWS delivers them.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from bedrock_wire import FakeBedrock, converse_stream_events
from moto import mock_aws
from typer.testing import CliRunner

from allotment.cli import build_app
from allotment.runtime import Runtime
from allotment.testing import SAMPLE_CONFIG, temporary_runtime
from allotment_bedrock import govern
from allotment_bedrock.ingest import ingest

SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
ROLE = "arn:aws:sts::123456789012:assumed-role/support-bot/"
CONFIG = (
    SAMPLE_CONFIG
    + f"""
plugins:
  bedrock:
    arn_map:
      "{ROLE}*": sam@acme.example
"""
)


def record(
    request_id: str,
    *,
    fresh: int = 100,
    read: int = 0,
    write: int = 0,
    output: int = 10,
    metadata: dict[str, str] | None = None,
    arn: str = "arn:aws:iam::123456789012:user/x",
    model: str = SONNET,
    **extra: Any,
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "schemaType": "ModelInvocationLog",
        "schemaVersion": "1.0",
        "timestamp": "2026-06-15T12:00:00Z",
        "accountId": "123456789012",
        "identity": {"arn": arn},
        "region": "us-east-1",
        "requestId": request_id,
        "operation": "Converse",
        "modelId": model,
        "input": {
            "inputContentType": "application/json",
            "inputTokenCount": fresh,
            "cacheReadInputTokenCount": read,
            "cacheWriteInputTokenCount": write,
        },
        "output": {"outputContentType": "application/json", "outputTokenCount": output},
        **extra,
    }
    if metadata is not None:
        rec["requestMetadata"] = metadata
    return rec


def lines(*records: dict[str, Any] | str) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n"


@pytest.fixture
def rt(tmp_path: Path) -> Any:
    with temporary_runtime(tmp_path, config=CONFIG) as runtime:
        yield runtime


def event(rt: Runtime, request_id: str) -> dict[str, Any]:
    found = rt.ledger.event(request_id)
    assert found is not None
    return found[1]


SAMPLE_LOG = lines(
    record(
        "aws-1",
        fresh=2,
        read=95_500,
        write=0,
        output=300,
        metadata={"allotment_person": "ada@acme.example", "allotment_label_feature": "search"},
    ),
    record("aws-2", arn=ROLE + "session-7", model="meta.llama3-1-70b-instruct-v1:0", fresh=1000, output=1000),
    record("aws-3"),  # an identity nobody mapped
    "{not json",
    json.dumps({"requestId": "aws-4", "timestamp": "2026-06-15T12:00:00Z"}),  # no modelId
    record("aws-5", fresh=-3),  # a negative count is garbage
)


def test_ingest_records_passively_and_a_second_run_changes_nothing(rt: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text(SAMPLE_LOG)
    first = ingest(rt, str(path)).to_dict()
    assert {k: first[k] for k in ("records", "recorded", "duplicates", "malformed", "unattributed")} == {
        "records": 6,
        "recorded": 3,
        "duplicates": 0,
        "malformed": 3,
        "unattributed": 1,
    }
    assert first["drift"] == []
    ada = event(rt, "bedrock-log-aws-1")
    # the cache read dwarfs the fresh input: 2 x $3 + 95,500 x $0.30 + 300 x $15 per 1M
    assert ada["cost_nanos"] == 2 * 3000 + 95_500 * 300 + 300 * 15000 == 33_156_000
    assert ada["enforced"] is False and ada["team_id"] == "engineering"
    assert json.loads(ada["labels"])["feature"] == "search"
    assert "bedrock_invocation_log" in ada["flags"]
    sam = event(rt, "bedrock-log-aws-2")
    assert sam["team_id"] == "support"  # mapped from the role ARN, passive spend is not refused
    assert sam["cost_nanos"] == 1000 * 720 + 1000 * 720
    assert event(rt, "bedrock-log-aws-3")["person_id"] is None
    spent = {w["scope"]: w["spent_nanos"] for w in rt.admin.budgets() if w["scope"] == "org"}
    second = ingest(rt, str(path)).to_dict()
    assert (second["recorded"], second["duplicates"], second["malformed"]) == (0, 3, 3)
    assert {w["scope"]: w["spent_nanos"] for w in rt.admin.budgets() if w["scope"] == "org"} == spent


def test_gzip_and_cloudwatch_exports_are_read(rt: Runtime, tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    (folder / "s3").mkdir(parents=True)
    (folder / "s3" / "a.json.gz").write_bytes(gzip.compress(lines(record("gz-1")).encode()))
    # CloudWatch Logs export task: "<timestamp> <message>" per line
    (folder / "export.txt").write_text(f"2026-06-15T12:00:00.000Z {json.dumps(record('cw-1'))}\n")
    # aws logs filter-log-events --output json: messages are JSON strings
    (folder / "events.json").write_text(
        json.dumps({"events": [{"timestamp": 1, "message": json.dumps(record("cw-2"))}]}, indent=2)
    )
    # a subscription delivery, pretty-printed
    (folder / "sub.json").write_text(
        json.dumps(
            {
                "messageType": "DATA_MESSAGE",
                "logEvents": [{"id": "1", "message": json.dumps(record("cw-3"))}],
            },
            indent=2,
        )
    )
    (folder / "broken.gz").write_bytes(b"\x1f\x8b not really gzip")
    summary = ingest(rt, str(folder)).to_dict()
    assert (summary["recorded"], summary["malformed"]) == (4, 1)
    for request in ("gz-1", "cw-1", "cw-2", "cw-3"):
        assert event(rt, f"bedrock-log-{request}")["cost_nanos"] == 100 * 3000 + 10 * 15000


def test_drift_between_a_settled_call_and_its_log_is_reported_not_recharged(
    rt: Runtime, client: Any, wire: FakeBedrock, tmp_path: Path
) -> None:
    key = rt.admin.issue_key("ada@acme.example")[0]
    govern(client, rt, credential=key)
    # a stream the caller abandoned: charged from an estimate; the log knows the truth
    wire.stream("converse-stream", converse_stream_events({"inputTokens": 50, "outputTokens": 30}, ["Hi"]))
    response = client.converse_stream(
        modelId=SONNET, messages=[{"role": "user", "content": [{"text": "Hello there"}]}]
    )
    response["stream"].close()
    abandoned = response["ResponseMetadata"]["AllotmentRequestId"]
    wire.converse({"inputTokens": 100, "outputTokens": 10, "totalTokens": 110})
    exact = client.converse(modelId=SONNET, messages=[{"role": "user", "content": [{"text": "x"}]}])
    exact_id = exact["ResponseMetadata"]["AllotmentRequestId"]
    sent = json.loads(wire.requests[0].body)["requestMetadata"]
    path = tmp_path / "log.jsonl"
    path.write_text(
        lines(
            record("aws-a", fresh=50, output=30, metadata=sent),
            record("aws-b", fresh=100, output=10, metadata={"allotment_request_id": exact_id}),
        )
    )
    before = event(rt, abandoned)
    summary = ingest(rt, str(path)).to_dict()
    assert (summary["recorded"], summary["duplicates"]) == (0, 2)
    assert summary["drift"] == [
        {
            "request_id": abandoned,
            "aws_request_id": "aws-a",
            "model": SONNET,
            "outcome": "cancelled",
            "settled": {
                "input_tokens": 6,
                "cache_read_tokens": 0,
                "cache_write_tokens": 0,
                "output_tokens": 0,
            },
            "logged": {
                "input_tokens": 50,
                "cache_read_tokens": 0,
                "cache_write_tokens": 0,
                "output_tokens": 30,
            },
            "settled_cost_nanos": 6 * 3000,
            "logged_cost_nanos": 50 * 3000 + 30 * 15000,
        }
    ]
    assert event(rt, abandoned) == before  # reported, never edited or charged twice


def test_a_governed_call_never_settled_is_settled_from_its_log(rt: Runtime, tmp_path: Path) -> None:
    from allotment.testing import intent

    key = rt.admin.issue_key("ada@acme.example")[0]
    admitted = rt.admit(intent(key, model=SONNET, provider="bedrock", request_id="bedrock-lost-1"))
    assert admitted.reservation.amount_nanos > 0
    path = tmp_path / "log.jsonl"
    path.write_text(
        lines(record("aws-z", fresh=70, output=7, metadata={"allotment_request_id": "bedrock-lost-1"}))
    )
    summary = ingest(rt, str(path)).to_dict()
    assert (summary["settled"], summary["recorded"]) == (1, 0)
    settled = event(rt, "bedrock-lost-1")
    assert settled["enforced"] is True and settled["cost_nanos"] == 70 * 3000 + 7 * 15000
    assert sum(w["reserved_nanos"] for w in rt.admin.budgets()) == 0


@pytest.fixture
def path_style_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # moto answers path-style S3 requests reliably; virtual-host routing varies by version
    config = tmp_path / "aws-config"
    config.write_text("[default]\ns3 =\n    addressing_style = path\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))


@mock_aws
def test_cli_ingests_an_s3_prefix_twice_idempotently(tmp_path: Path, path_style_s3: None) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    with temporary_runtime(database_url=url, config=CONFIG):
        pass
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="logs")
    prefix = "AWSLogs/123456789012/BedrockModelInvocationLogs/us-east-1/2026/06/15/12"
    s3.put_object(
        Bucket="logs",
        Key=f"{prefix}/a.json.gz",
        Body=gzip.compress(lines(record("s3-1"), record("s3-2"), "garbage").encode()),
    )
    s3.put_object(
        Bucket="logs", Key="elsewhere/b.json.gz", Body=gzip.compress(lines(record("s3-9")).encode())
    )
    runner = CliRunner()
    args = ["ingest", "bedrock", "s3://logs/AWSLogs/", "--json", "--database-url", url]
    first = runner.invoke(build_app(), args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert (summary["records"], summary["recorded"], summary["malformed"]) == (3, 2, 1)
    again = json.loads(runner.invoke(build_app(), args).stdout)
    assert (again["recorded"], again["duplicates"]) == (0, 2)
    text = runner.invoke(build_app(), ["ingest", "bedrock", "s3://logs/AWSLogs/", "--database-url", url])
    assert "records 3  recorded 0  settled 0  duplicates 2  malformed 1" in text.stdout


def test_cli_reports_a_missing_path_as_an_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    result = CliRunner().invoke(
        build_app(), ["ingest", "bedrock", str(tmp_path / "nope"), "--database-url", url]
    )
    assert result.exit_code == 2
    assert "no such file or directory" in result.output
