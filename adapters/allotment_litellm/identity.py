"""Who is calling, in allotment's terms, from what LiteLLM knows about the caller.

Order: an allotment key (custom auth), then LiteLLM's user (email or id), then the end user.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from allotment.errors import Denied
from allotment.runtime import Runtime
from allotment.types import Principal

TRUST_END_USER_ENV = "ALLOTMENT_LITELLM_TRUST_END_USER"
ADMIN_ROLE = "proxy_admin"
MASTER_KEY_TOKEN = "litellm_proxy_master_key"
KEY_HASH_FIELD = "allotment_key_hash"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


class IdentityMapper:
    """Maps LiteLLM callers to principals; the person lookups are cached per directory."""

    def __init__(self, runtime: Runtime, trust_end_user: bool | None = None) -> None:
        self.runtime = runtime
        self.trust_end_user = (
            _truthy(os.environ.get(TRUST_END_USER_ENV)) if trust_end_user is None else trust_end_user
        )
        self._generation = ""
        self._by_name: dict[str, Principal | None] = {}

    def principal(self, user_api_key_dict: Any, data: Mapping[str, Any]) -> Principal:
        """The principal for this request, or ``Denied(401)`` when nobody maps to it."""
        rt = self.runtime
        metadata = getattr(user_api_key_dict, "metadata", None)
        key_hash = metadata.get(KEY_HASH_FIELD) if isinstance(metadata, Mapping) else None
        if isinstance(key_hash, str) and key_hash:
            # set by our custom_auth moments ago (LiteLLM hashes the raw key it keeps)
            found = rt.find_principal_by_hash(key_hash)
            if found is None:
                raise Denied(401, "invalid_api_key", "invalid, revoked or unknown API key")
            return found
        for name in (
            getattr(user_api_key_dict, "user_email", None),
            getattr(user_api_key_dict, "user_id", None),
        ):
            found = self._person(name)
            if found is not None:
                return found
        end_user = end_user_of(user_api_key_dict, data)
        if end_user and (self.trust_end_user or _is_admin(user_api_key_dict)):
            found = self._person(end_user)
            if found is not None:
                return found
        raise Denied(
            401,
            "invalid_api_key",
            "no allotment person for this LiteLLM caller: use an allotment key (custom_auth), "
            "a LiteLLM user whose id or email is an allotment person, or the master key with "
            "the request's `user` set to a person's email",
        )

    def _person(self, name: object) -> Principal | None:
        if not isinstance(name, str) or not name.strip():
            return None
        directory = self.runtime.directory
        if directory.generation != self._generation:
            self._by_name = {}
            self._generation = directory.generation
        key = name.strip().lower()
        if key in self._by_name:
            return self._by_name[key]
        person = directory.people.get(name.strip()) or directory.person_by_email(key)
        principal = None
        if person is not None:
            found = directory.principal_for_person(person)
            principal = found if found.kind != "inactive" else None
        if len(self._by_name) < 100_000:
            self._by_name[key] = principal
        return principal


def _is_admin(user_api_key_dict: Any) -> bool:
    role = getattr(user_api_key_dict, "user_role", None)
    role_name = getattr(role, "value", role)
    return role_name == ADMIN_ROLE or getattr(user_api_key_dict, "token", None) == MASTER_KEY_TOKEN


def end_user_of(user_api_key_dict: Any, data: Mapping[str, Any]) -> str | None:
    """The client's end user: LiteLLM's resolved id, else the body's ``user``."""
    value = getattr(user_api_key_dict, "end_user_id", None)
    if not value:
        metadata = data.get("metadata")
        if isinstance(metadata, Mapping):
            value = metadata.get("user_api_key_end_user_id")
    if not value:
        value = data.get("user")
    return value if isinstance(value, str) and value else None
