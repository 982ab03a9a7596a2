"""Default ``authenticate``: SHA-256 of the presented key looked up among issued keys.

Revoked keys and keys of inactive people resolve to nobody.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from allotment.directory import hash_key
from allotment.hookspecs import hookimpl
from allotment.types import Principal

if TYPE_CHECKING:
    from allotment.runtime import Runtime


class KeyAuthenticator:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @hookimpl(trylast=True)
    def authenticate(self, credential: str, context: dict[str, Any]) -> Principal | None:
        principal = self.runtime.directory.principal_for_key(hash_key(credential))
        if principal is None or principal.kind == "inactive":
            return None
        return principal
