"""A second LiteLLM callback for the contract tests: records what LiteLLM hands to its hooks.

Copied next to the proxy's config.yaml (LiteLLM loads ``<module>.py`` from there first).
"""

from __future__ import annotations

import json
import os
from typing import Any

from litellm.integrations.custom_logger import CustomLogger


def _slo(kwargs: dict[str, Any]) -> dict[str, Any]:
    slo = kwargs.get("standard_logging_object") or {}
    metadata = slo.get("metadata") or {}
    return {
        "keys": sorted(slo),
        "litellm_call_id": slo.get("litellm_call_id"),
        "response_cost": slo.get("response_cost"),
        "stream": slo.get("stream"),
        "usage_object": metadata.get("usage_object"),
    }


class Probe(CustomLogger):
    def _write(self, record: dict[str, Any]) -> None:
        with open(os.environ["ALLOTMENT_CONTRACT_PROBE_FILE"], "a", encoding="utf-8") as out:
            out.write(json.dumps(record, default=str) + "\n")

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> None:
        self._write(
            {
                "hook": "pre_call",
                "call_id": data.get("litellm_call_id"),
                "data_keys": sorted(data),
                "metadata_keys": sorted(data.get("metadata") or {}),
                "user_api_key_metadata": getattr(user_api_key_dict, "metadata", None),
                "api_key_is_hashed": getattr(user_api_key_dict, "api_key", None)
                == getattr(user_api_key_dict, "token", None),
            }
        )

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._write(
            {
                "hook": "log_success",
                "call_id": kwargs.get("litellm_call_id"),
                "kwargs_keys": sorted(kwargs),
                "response_cost": kwargs.get("response_cost"),
                "client_disconnected": ((kwargs.get("litellm_params") or {}).get("metadata") or {}).get(
                    "client_disconnected"
                ),
                "slo": _slo(kwargs),
            }
        )

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._write(
            {
                "hook": "log_failure",
                "call_id": kwargs.get("litellm_call_id"),
                "kwargs_keys": sorted(kwargs),
                "slo": _slo(kwargs),
            }
        )


probe = Probe()
