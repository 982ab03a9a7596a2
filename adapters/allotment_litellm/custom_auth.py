"""``general_settings.custom_auth``: the proxy accepts allotment keys and learns who is calling.

The LiteLLM master key still works (as proxy admin); any other key must be an allotment key.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth

from allotment.directory import hash_key
from allotment.errors import AllotmentError, Denied, LedgerUnavailable
from allotment_litellm.errors import refusal
from allotment_litellm.identity import KEY_HASH_FIELD

log = logging.getLogger("allotment.litellm")


def _master_key() -> str | None:
    try:
        from litellm.proxy import proxy_server
    except Exception:
        return None
    key = getattr(proxy_server, "master_key", None)
    return key if isinstance(key, str) and key else None


async def auth(request: Any, api_key: str) -> UserAPIKeyAuth:
    """Resolve ``api_key`` (``Bearer`` already stripped) to an allotment person, or refuse 401."""
    from allotment_litellm import handler

    master = _master_key()
    if master is not None and api_key and hmac.compare_digest(api_key.encode(), master.encode()):
        return UserAPIKeyAuth(api_key=api_key, user_role=LitellmUserRoles.PROXY_ADMIN)
    principal = None
    if api_key:
        try:
            rt = await handler.holder.get_async()
            principal = await asyncio.to_thread(rt.find_principal, api_key, {"litellm_custom_auth": True})
        except AllotmentError as exc:  # e.g. the ledger cannot be opened or read: 503, in our shape
            raise refusal(exc) from None
        except Exception as exc:  # fail closed, as admission does
            log.exception("allotment: authenticating a LiteLLM caller failed")
            raise refusal(LedgerUnavailable(f"allotment could not authenticate the call: {exc}")) from None
    if principal is None:
        raise refusal(Denied(401, "invalid_api_key", "invalid, revoked or unknown API key"))
    return UserAPIKeyAuth(
        api_key=api_key,
        user_id=principal.email or principal.person_id,
        user_email=principal.email,
        team_id=principal.team_id,
        key_alias=principal.key_id,
        user_role=LitellmUserRoles.INTERNAL_USER,
        metadata={
            KEY_HASH_FIELD: hash_key(api_key),
            "allotment_person_id": principal.person_id,
            "allotment_key_id": principal.key_id,
            "cost_center": principal.cost_center,
        },
    )
