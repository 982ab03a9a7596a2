"""Default ``check_policy``: tier model allowlists, the label schema, the token ceiling.

Allowlists are compiled once per directory snapshot into one regex per tier.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from allotment.hookspecs import hookimpl
from allotment.types import CallIntent, Decision, Principal

if TYPE_CHECKING:
    from allotment.runtime import Runtime


class TierPolicy:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @hookimpl(trylast=True)
    def check_policy(self, principal: Principal, intent: CallIntent) -> Decision | None:
        directory = self.runtime.directory
        tier = directory.tiers.get(principal.tier or "")
        if principal.kind == "person":
            if tier is None:
                return Decision.deny(
                    403, "model_not_allowed", f"{principal.email or principal.person_id} has no tier"
                )
            if not tier.allowlist.allows(intent.provider, intent.model):
                return Decision.deny(
                    403,
                    "model_not_allowed",
                    f"model {intent.provider}/{intent.model} is not allowed for tier {tier.id}",
                    {"model": f"{intent.provider}/{intent.model}", "tier": tier.id},
                )
        config = directory.config
        if config is not None:
            for key, schema in config.labels.items():
                value = intent.labels.get(key)
                if value is None:
                    if schema.required:
                        return Decision.deny(
                            400,
                            "label_required",
                            f"label {key!r} is required: send header X-Allotment-Label-{key.title()}",
                            {"label": key},
                        )
                    continue
                if schema.allowed is not None and value not in schema.allowed:
                    return Decision.deny(
                        400,
                        "invalid_request",
                        f"label {key}={value!r} is not one of {schema.allowed}",
                        {"label": key, "allowed": list(schema.allowed)},
                    )
        ceiling = tier.max_request_tokens if tier is not None else None
        if ceiling is None and config is not None:
            ceiling = config.policy.max_request_tokens
        if ceiling is not None:
            requested = intent.input_tokens + (intent.max_output_tokens or 0)
            if requested > ceiling:
                return Decision.deny(
                    400,
                    "invalid_request",
                    f"request asks for up to {requested} tokens; the ceiling is {ceiling}",
                    {"ceiling": ceiling, "requested": requested},
                )
        return None
