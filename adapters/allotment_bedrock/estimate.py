"""Token bounds for admission and estimates for streams that end without usage.

The input bound must never be below the real count: one token is at least one UTF-8 byte.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

MESSAGE_OVERHEAD = 4  # role and separator tokens around each message
REQUEST_OVERHEAD = 3
IMAGE_ALLOWANCE = 2_000  # an image's tokens depend on pixels, not bytes
BYTES_PER_TOKEN = 4  # only for estimates of usage that was never reported

_MEDIA = ("image", "video")
_OUTPUT_LIMIT_KEYS = (
    "maxTokens",
    "max_tokens",
    "max_gen_len",
    "max_new_tokens",
    "maxTokenCount",
    "max_tokens_to_sample",
)
_NESTED_CONFIG_KEYS = ("inferenceConfig", "textGenerationConfig", "parameters")


def _walk(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, bytes | bytearray):
        return len(value)  # a document's bytes bound its text
    if isinstance(value, Mapping):
        total = 0
        for key, item in value.items():
            total += IMAGE_ALLOWANCE if key in _MEDIA else _walk(item)
        return total
    if isinstance(value, list | tuple):
        return sum(_walk(item) for item in value)
    return 0


def converse_input_bound(params: Mapping[str, Any]) -> int:
    """An upper bound of the input tokens of a Converse/ConverseStream request."""
    messages = params.get("messages") or []
    total = REQUEST_OVERHEAD + MESSAGE_OVERHEAD * (len(messages) if isinstance(messages, list) else 0)
    total += _walk(messages) + _walk(params.get("system") or [])
    for key in ("toolConfig", "promptVariables", "additionalModelRequestFields"):
        if params.get(key) is not None:
            total += len(json.dumps(params[key], default=str))
    return total


def converse_max_output(params: Mapping[str, Any]) -> int | None:
    config = params.get("inferenceConfig")
    value = config.get("maxTokens") if isinstance(config, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def body_bytes(body: Any) -> bytes | None:
    """InvokeModel's body as bytes; a seekable file is read and rewound, others are unknown."""
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    read, seek = getattr(body, "read", None), getattr(body, "seek", None)
    if callable(read) and callable(seek):
        data = read()
        seek(0)
        return data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return None


def invoke_input_bound(body: bytes | None) -> int:
    # Every string the model reads is inside the JSON body, escapes only add bytes.
    return REQUEST_OVERHEAD + (len(body) if body else 0)


def invoke_max_output(body: bytes | None) -> int | None:
    """The output limit a provider-native body asks for (Anthropic, Llama, Nova, Titan ...)."""
    try:
        document = json.loads(body) if body else None
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    places = [document] + [document[k] for k in _NESTED_CONFIG_KEYS if isinstance(document.get(k), dict)]
    for place in places:
        for key in _OUTPUT_LIMIT_KEYS:
            value = place.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def tokens_from_bytes(nbytes: int) -> int:
    return math.ceil(nbytes / BYTES_PER_TOKEN)
