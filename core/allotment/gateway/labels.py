"""Labels, trace and retry links from ``X-Allotment-*`` headers and the body's ``metadata``.

Headers win over the body; the key's default labels are merged later by the core's admit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from allotment.errors import InvalidRequest

LABEL_PREFIX = "x-allotment-label-"
TRACE_HEADER = "x-allotment-trace-id"
RETRY_HEADER = "x-allotment-retry-of"
MAX_LABELS = 32
MAX_LABEL_LENGTH = 200


@dataclass(frozen=True, slots=True)
class CallTags:
    labels: dict[str, str] = field(default_factory=dict)
    trace_id: str | None = None
    retry_of: str | None = None


def _norm_key(key: str) -> str:
    return key.strip().lower().replace("_", "-")


def _check(key: str, value: str) -> None:
    if not key or len(key) > MAX_LABEL_LENGTH or len(value) > MAX_LABEL_LENGTH:
        raise InvalidRequest(
            f"label {key!r} is empty or longer than {MAX_LABEL_LENGTH} characters",
            code="invalid_request",
        )


def extract_tags(headers: Mapping[str, str], body: Mapping[str, Any] | None) -> CallTags:
    """Collect labels (lower-case names, ``_`` read as ``-``) and the trace/retry links.

    Body ``metadata`` values that are strings become labels, except Anthropic's
    ``user_id`` and the reserved ``trace_id``/``retry_of`` keys which set the links.
    """
    labels: dict[str, str] = {}
    trace_id: str | None = None
    retry_of: str | None = None
    metadata = body.get("metadata") if body is not None else None
    if isinstance(metadata, Mapping):
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                continue
            name = _norm_key(key)
            if name == "trace-id":
                trace_id = value
            elif name == "retry-of":
                retry_of = value
            elif name != "user-id":
                labels[name] = value
    for key, value in headers.items():
        lower = key.lower()
        if lower.startswith(LABEL_PREFIX):
            labels[_norm_key(lower[len(LABEL_PREFIX) :])] = value.strip()
        elif lower == TRACE_HEADER:
            trace_id = value.strip() or None
        elif lower == RETRY_HEADER:
            retry_of = value.strip() or None
    if len(labels) > MAX_LABELS:
        raise InvalidRequest(f"at most {MAX_LABELS} labels per request", code="invalid_request")
    for key, value in labels.items():
        _check(key, value)
    return CallTags(labels, trace_id, retry_of)
