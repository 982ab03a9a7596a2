"""Invocation-log ingestion: passive, idempotent records, and drift against what was settled.

A governed call's log record carries its allotment request id, so it is compared, never re-charged.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from allotment.errors import AllotmentError, InvalidRequest
from allotment.types import CallIntent, EndpointMode, Outcome, Principal, Usage
from allotment.usage_parsers import from_bedrock_invocation_log
from allotment_bedrock import logs, metadata
from allotment_bedrock.models import PROVIDER, model_for

LOG_FLAG = "bedrock_invocation_log"
MAX_PROBLEMS = 20
_COMPARED = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")


@dataclass
class IngestSummary:
    records: int = 0  # every record seen, malformed ones included
    recorded: int = 0  # new passive events
    settled: int = 0  # governed calls whose reservation was settled from the log
    duplicates: int = 0  # already in the ledger (a second ingest, or settled by the wrapper)
    malformed: int = 0
    unattributed: int = 0
    drift: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "recorded": self.recorded,
            "settled": self.settled,
            "duplicates": self.duplicates,
            "malformed": self.malformed,
            "unattributed": self.unattributed,
            "drift": self.drift,
            "problems": self.problems,
        }

    def _problem(self, where: str, reason: str) -> None:
        self.malformed += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{where}: {reason}")


class Ingestor:
    """Ingests records into one runtime; settings come from ``plugins.bedrock`` in the config."""

    def __init__(self, runtime: Any, *, arn_map: Mapping[str, str] | None = None) -> None:
        self.runtime = runtime
        config = runtime.config
        settings = (config.plugins.get("bedrock") if config is not None else None) or {}
        if not isinstance(settings, dict):
            raise InvalidRequest("plugins.bedrock must be a mapping")
        self.arn_map: dict[str, str] = {**(settings.get("arn_map") or {}), **(arn_map or {})}
        self.profiles: dict[str, str] = dict(settings.get("inference_profiles") or {})
        self.summary = IngestSummary()

    def ingest_location(self, location: str, s3_client: Any = None) -> IngestSummary:
        for name, blob in logs.iter_blobs(location, s3_client):
            try:
                text = logs.decode(blob)
            except InvalidRequest as exc:
                self.summary.records += 1
                self.summary._problem(name, exc.message)
                continue
            self.ingest_text(text, name)
        return self.summary

    def ingest_text(self, text: str, name: str = "<text>") -> IngestSummary:
        for record, reason in logs.iter_items(text):
            self.summary.records += 1
            if record is None:
                self.summary._problem(name, reason or "unreadable")
                continue
            try:
                self.ingest_record(record)
            except AllotmentError as exc:
                self.summary._problem(f"{name} {record.get('requestId', '?')}", exc.message)
        return self.summary

    def ingest_record(self, record: Mapping[str, Any]) -> None:
        """Record one log record; raise ``AllotmentError`` (and change nothing) when malformed."""
        aws_id, model_id = record.get("requestId"), record.get("modelId")
        if not isinstance(aws_id, str) or not aws_id or not isinstance(model_id, str) or not model_id:
            raise InvalidRequest("missing requestId or modelId")
        at = _timestamp(record.get("timestamp"))
        usage, outcome = _usage(record)
        pairs = record.get("requestMetadata")
        pairs = pairs if isinstance(pairs, Mapping) else {}
        ours = pairs.get(metadata.REQUEST_ID)
        request_id = ours if isinstance(ours, str) and ours else f"bedrock-log-{aws_id}"
        operation = str(record.get("operation") or "")
        intent = CallIntent(
            request_id=request_id,
            provider=PROVIDER,
            model=model_for(model_id, self.profiles),
            endpoint_mode=EndpointMode.STREAM if "Stream" in operation else EndpointMode.SYNC,
            labels=metadata.labels_from(pairs),
            at=at,
        )
        ledger = self.runtime.ledger
        existing = ledger.event(request_id)
        if existing is not None:
            self.summary.duplicates += 1
            self._compare(existing[1], intent, usage, aws_id)
            return
        if ours and ledger.reservation(request_id) is not None:
            # a governed call that was never settled (the process died): the log says what it used
            self.runtime.settle(request_id, usage, outcome, flags=(LOG_FLAG, "settled_from_log"))
            self.summary.settled += 1
            return
        principal = self._principal(pairs, record)
        if principal is None:
            self.summary.unattributed += 1
        self.runtime.record(intent, usage, outcome, principal=principal, flags=(LOG_FLAG,))
        self.summary.recorded += 1

    def _principal(self, pairs: Mapping[str, Any], record: Mapping[str, Any]) -> Principal | None:
        directory = self.runtime.directory
        email = pairs.get(metadata.PERSON)
        person = directory.person_by_email(email) if isinstance(email, str) and email else None
        identity = record.get("identity")
        arn = identity.get("arn") if isinstance(identity, Mapping) else None
        if person is None and isinstance(arn, str):
            mapped = self.arn_map.get(arn) or next(
                (email for pattern, email in self.arn_map.items() if fnmatch.fnmatchcase(arn, pattern)),
                None,
            )
            person = directory.person_by_email(mapped) if mapped else None
        return directory.principal_for_person(person) if person is not None else None

    def _compare(self, stored: Mapping[str, Any], intent: CallIntent, usage: Usage, aws_id: str) -> None:
        settled = {name: int(stored.get(name) or 0) for name in _COMPARED}
        settled["cache_write_tokens"] += int(stored.get("cache_write_1h_tokens") or 0)
        logged = {name: getattr(usage, name) for name in _COMPARED}
        logged["cache_write_tokens"] += usage.cache_write_1h_tokens
        if settled == logged:
            return
        price = self.runtime.hooks.price(PROVIDER, intent.model, usage, intent.at, intent.endpoint_mode.value)
        self.summary.drift.append(
            {
                "request_id": intent.request_id,
                "aws_request_id": aws_id,
                "model": intent.model,
                "outcome": stored.get("outcome"),
                "settled": settled,
                "logged": logged,
                "settled_cost_nanos": int(stored.get("cost_nanos") or 0),
                "logged_cost_nanos": price.amount_nanos if price is not None else None,
            }
        )


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str) or not value:
        raise InvalidRequest("missing timestamp")
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"bad timestamp {value!r}") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _usage(record: Mapping[str, Any]) -> tuple[Usage, Outcome]:
    failed = bool(record.get("errorCode"))
    try:
        usage = from_bedrock_invocation_log(record)
    except InvalidRequest:
        if not failed:
            raise
        return Usage(), Outcome.ERROR  # a failed call may log no output section: nothing billed
    return usage, Outcome.ERROR if failed else Outcome.SUCCESS


def ingest(runtime: Any, location: str, *, s3_client: Any = None) -> IngestSummary:
    """Ingest every invocation-log record under ``location`` (a path or ``s3://bucket/prefix``)."""
    return Ingestor(runtime).ingest_location(location, s3_client)
