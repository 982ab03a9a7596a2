"""The exception a governed Bedrock client raises when allotment refuses a call.

It is raised before any HTTP request is sent, and carries the gateway's 402/403 body fields.
"""

from __future__ import annotations

from typing import Any

from allotment.errors import Denied


class BedrockCallDenied(Denied):
    """allotment refused a Bedrock call (budget, model allowlist, key); nothing was sent to AWS.

    ``status``, ``code``, ``message`` and ``details`` are those of the HTTP error body
    (``body``); ``operation`` and ``model_id`` say which call was refused.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        operation: str = "",
        model_id: str = "",
    ) -> None:
        super().__init__(status, code, message, details)
        self.operation = operation
        self.model_id = model_id

    @classmethod
    def from_denied(cls, denied: Denied, operation: str, model_id: str) -> BedrockCallDenied:
        return cls(
            denied.status,
            denied.code,
            denied.message,
            denied.details,
            operation=operation,
            model_id=model_id,
        )

    @property
    def body(self) -> dict[str, Any]:
        """The same JSON body the gateway returns with this status."""
        return {"error": self.to_dict()}

    def __str__(self) -> str:
        return f"{self.operation} {self.model_id}: {self.message} ({self.status} {self.code})"
