"""Service-tier names: every provider's spelling of the tier a call was asked for or served on.

One canonical lower-case name per tier, so cards, the ledger and reports agree across providers.
"""

from __future__ import annotations

import re

STANDARD = "standard"
BATCH = "batch"
AUTO = "auto"  # only ever a *requested* tier: the provider picks; never stored as served
PRIORITY = "priority"
FLEX = "flex"
# Committed capacity (OpenAI Scale Tier, Bedrock reserved): paid through the commitment, so a
# card that does not price the tier prices such a call at standard and flags it.
COMMITTED = frozenset({"scale", "reserved"})

# Event flags.
SERVICE_TIER_UNPRICED = "service_tier_unpriced"  # served on a tier the card does not price
COMMITTED_CAPACITY = "committed_capacity"  # served on committed capacity, priced at standard

# Provider spellings that mean "standard": OpenAI "default" (what "auto" resolves to without
# priority), Anthropic "standard" / "standard_only", Bedrock "default", on-demand spellings.
_STANDARD_SYNONYMS = frozenset({"standard", "default", "standard_only", "on_demand", "ondemand", "on-demand"})
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def canonical_tier(value: object, *, requested: bool = False) -> str | None:
    """The canonical name of a provider's tier value, or None when there is none to read.

    A served tier of ``auto`` means the provider did not say: standard. A *requested* ``auto``
    is kept (``requested=True``): the runtime decides what it may be served at. Values that are
    not a short name (garbage from a provider) give None rather than failing the call.
    """
    if not isinstance(value, str):
        return None
    name = value.strip().lower().replace("-", "_")
    if not name:
        return None
    if name in _STANDARD_SYNONYMS:
        return STANDARD
    if name == AUTO:
        return AUTO if requested else STANDARD
    return name if _NAME.match(name) else None


def is_standard(tier: str | None) -> bool:
    """Whether a canonical served tier is priced at the model's own (standard) prices."""
    return tier is None or tier == STANDARD


def valid_card_tier_name(name: str) -> str | None:
    """Why ``name`` cannot be a ``service_tiers`` key in a rate card, or None when it can."""
    if not _NAME.match(name):
        return "must be lower-case letters, digits and '_' (at most 40), starting with a letter"
    if name in _STANDARD_SYNONYMS or name == AUTO:
        return "means standard: standard prices are the model's own input/output/cache prices"
    if name == BATCH:
        return "is priced by the model's `batch` multiplier, not a service tier"
    return None
