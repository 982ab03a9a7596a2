"""The LiteLLM proxy adapter: hard budgets, allowlists, labels and the ledger from one config line.

``callbacks: allotment_litellm.handler`` (and optionally ``custom_auth: allotment_litellm.auth``).
"""

from __future__ import annotations

from allotment_litellm.custom_auth import auth
from allotment_litellm.logger import AllotmentLogger

TESTED_LITELLM_VERSION = "1.106.2"

handler = AllotmentLogger()

__all__ = ["TESTED_LITELLM_VERSION", "AllotmentLogger", "auth", "handler"]
