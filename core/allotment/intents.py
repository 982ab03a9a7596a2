"""Adapter-neutral reading of a request for its ``CallIntent``: labels and links, token bounds.

``extract_tags`` reads labels and the trace/retry links from ``X-Allotment-*`` headers and
the body's ``metadata``; headers win over the body, and the key's default labels are merged
later by the core's admit. Token bounds and estimates need no tokenizer:

``input_upper_bound`` must never be below the real count, so a reservation always covers
the call. Byte-level BPE tokenizers (OpenAI, Anthropic, Llama) emit at least one UTF-8
byte per token, so the UTF-8 byte count of every string the model reads is a safe bound;
we add a small per-message allowance for role/separator tokens and a fixed allowance per
image (whose tokens depend on pixels, not bytes). English text runs ~4 bytes per token,
so the bound over-reserves input about 4x; the difference is released at settle.

``estimate_tokens`` (bytes / 4, rounded up) is only used when a provider never reported
usage (a dropped or cancelled stream); such usage is flagged ``estimated``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

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


REQUEST_OVERHEAD = 3  # reply priming tokens
MESSAGE_OVERHEAD = 4  # role and separator tokens around each message
IMAGE_ALLOWANCE = 2_000  # upper bound for one image (OpenAI high detail ~1.1k, Anthropic ~1.6k)
BYTES_PER_TOKEN_ESTIMATE = 4

_TEXT_KEYS = ("messages", "system", "prompt", "input", "suffix")
_SCHEMA_KEYS = ("tools", "functions", "response_format")
_IMAGE_TYPES = frozenset({"image_url", "image", "input_image", "document", "input_audio"})


def _walk(value: Any) -> tuple[int, int]:
    """(UTF-8 bytes of every string, number of image/document parts) under ``value``."""
    if isinstance(value, str):
        return len(value.encode("utf-8")) if not value.isascii() else len(value), 0
    if isinstance(value, dict):
        nbytes = images = 0
        if value.get("type") in _IMAGE_TYPES:
            images += 1
            # an inline base64 image's bytes are not its tokens; count the allowance only
            return 0, images
        for item in value.values():
            b, i = _walk(item)
            nbytes += b
            images += i
        return nbytes, images
    if isinstance(value, list):
        nbytes = images = 0
        for item in value:
            if isinstance(item, int) and not isinstance(item, bool):
                nbytes += 1  # a pre-tokenized prompt: one token per id
                continue
            b, i = _walk(item)
            nbytes += b
            images += i
        return nbytes, images
    return 0, 0


def text_bytes(body: dict[str, Any]) -> int:
    """Bytes of everything the model reads (messages, system, prompt, input, tool schemas)."""
    total = 0
    for key in _TEXT_KEYS:
        if key in body:
            total += _walk(body[key])[0]
    for key in _SCHEMA_KEYS:
        if body.get(key) is not None:
            total += len(orjson.dumps(body[key]))
    return total


def input_upper_bound(body: dict[str, Any]) -> int:
    """A safe upper bound of input tokens for a chat, completion, embedding or messages body."""
    total = REQUEST_OVERHEAD
    for key in _SCHEMA_KEYS:
        if body.get(key) is not None:
            # tool schemas are rendered as text, keys included: their JSON length bounds them
            total += len(orjson.dumps(body[key]))
    for key in _TEXT_KEYS:
        value = body.get(key)
        if value is None:
            continue
        nbytes, images = _walk(value)
        total += nbytes + images * IMAGE_ALLOWANCE
        if key == "messages" and isinstance(value, list):
            total += MESSAGE_OVERHEAD * len(value)
    return total


def estimate_tokens(nbytes: int) -> int:
    """A rough token count for ``nbytes`` of text (rounded up; 0 for nothing)."""
    return -(-nbytes // BYTES_PER_TOKEN_ESTIMATE)
