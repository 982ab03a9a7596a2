"""Bedrock ``requestMetadata``: allotment's attribution, sanitised to what the service accepts.

botocore validates only types, so anything AWS would refuse is repaired here instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

MAX_PAIRS = 16
MAX_CHARS = 256
MAX_HEADER_JSON = 8500  # X-Amzn-Bedrock-Request-Metadata (InvokeModel*)

# The service pattern is [a-zA-Z0-9\s:_@$#=/+,-.]; '#' and ',' are dropped too because the
# invocation-log filters of model-customisation jobs refuse them, and '\s' is narrowed to a
# space so a value never smuggles line breaks into logs.
_DISALLOWED = re.compile(r"[^a-zA-Z0-9 :_@$=/+\-.]")

REQUEST_ID = "allotment_request_id"
PERSON = "allotment_person"
TEAM = "allotment_team"
COST_CENTER = "allotment_cost_center"
LABEL_PREFIX = "allotment_label_"


def clean(text: object) -> str:
    """One key or value: disallowed characters become ``_``, at most 256 characters."""
    return _DISALLOWED.sub("_", str(text))[:MAX_CHARS]


def build(ours: Mapping[str, object], caller: Mapping[str, object] | None = None) -> dict[str, str]:
    """Our pairs first (they win on a clash), then the caller's, at most 16 in all.

    ``None`` values are left out; keys that clean to nothing are dropped (min length 1).
    """
    merged: dict[str, str] = {}
    for source in (ours, caller or {}):
        for key, value in source.items():
            if value is None or len(merged) >= MAX_PAIRS:
                continue
            name = clean(key)
            if name and name not in merged:
                merged[name] = clean(value)
    return merged


def attribution(
    request_id: str,
    person: str | None,
    team: str | None,
    cost_center: str | None,
    labels: Mapping[str, str],
) -> dict[str, str | None]:
    """The pairs allotment writes on every governed call, in priority order."""
    pairs: dict[str, str | None] = {
        REQUEST_ID: request_id,
        PERSON: person,
        TEAM: team,
        COST_CENTER: cost_center,
    }
    for name in sorted(labels):
        pairs[LABEL_PREFIX + name] = labels[name]
    return pairs


def header_json(pairs: Mapping[str, str]) -> str:
    """The compact JSON InvokeModel carries in a header, trimmed from the end to 8500 chars."""
    items = list(pairs.items())
    while True:
        text = json.dumps(dict(items), separators=(",", ":"))
        if len(text) <= MAX_HEADER_JSON or not items:
            return text
        items.pop()


def parse_header_json(text: Any) -> dict[str, str]:
    """A caller's own InvokeModel ``requestMetadata`` (a JSON object string), or ``{}``."""
    if not text:
        return {}
    if isinstance(text, Mapping):
        return {str(k): str(v) for k, v in text.items()}
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def labels_from(pairs: Mapping[str, Any]) -> dict[str, str]:
    """The allotment labels a log record's ``requestMetadata`` carries."""
    return {
        key[len(LABEL_PREFIX) :]: str(value)
        for key, value in pairs.items()
        if key.startswith(LABEL_PREFIX) and len(key) > len(LABEL_PREFIX)
    }
