"""Bedrock model ids -> the model name allotment admits and prices.

ARNs of cross-region and foundation-model profiles carry their id; application profiles need a map.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PROVIDER = "bedrock"

_ARN = re.compile(
    r"^arn:aws[a-z-]*:bedrock:(?P<region>[^:]*):(?P<account>[^:]*):(?P<kind>[a-z-]+)/(?P<id>.+)$"
)
_SELF_DESCRIBING = ("inference-profile", "foundation-model")


def model_for(model_id: str, profiles: Mapping[str, str] | None = None) -> str:
    """The priced model for a ``modelId``: a mapped profile, the id inside an ARN, or as given.

    Cross-region prefixes (``us.``, ``eu.`` ...) are kept because their prices can differ;
    the rate-card book falls back to the base id when a card has no regional entry.
    Application inference profiles, provisioned and custom models name no model: unless
    ``profiles`` maps them they stay as given and are refused as unpriced.
    """
    profiles = profiles or {}
    mapped = profiles.get(model_id)
    if mapped:
        return mapped
    match = _ARN.match(model_id)
    if match is None:
        return model_id
    if match["kind"] in _SELF_DESCRIBING:
        return match["id"]
    return profiles.get(match["id"]) or model_id
