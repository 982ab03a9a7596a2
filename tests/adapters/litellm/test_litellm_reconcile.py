"""Reading LiteLLM's log event: which deployment answered a call (no proxy needed)."""

from __future__ import annotations

import pytest

from allotment_litellm.reconcile import served_deployment, success


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # the standard logging object names the deployment and its provider
        ({"standard_logging_object": {"model": "gpt-4o", "custom_llm_provider": "openai"}}, "openai/gpt-4o"),
        ({"standard_logging_object": {"model": "anthropic/claude-sonnet-4"}}, "anthropic/claude-sonnet-4"),
        # a qualified name is kept as it is, whatever the provider field says
        (
            {
                "standard_logging_object": {
                    "model": "bedrock/anthropic.claude-x",
                    "custom_llm_provider": "bedrock",
                }
            },
            "bedrock/anthropic.claude-x",
        ),
        # no logging object: the top-level model and litellm_params' provider
        (
            {"model": "gpt-5.4-mini", "litellm_params": {"custom_llm_provider": "openai"}},
            "openai/gpt-5.4-mini",
        ),
        ({"model": "gpt-5.4-mini"}, "gpt-5.4-mini"),
        ({}, None),
        ({"standard_logging_object": {"model": ""}, "model": 7}, None),
    ],
)
def test_the_deployment_that_answered(kwargs: dict, expected: str | None) -> None:
    assert served_deployment(kwargs) == expected


def test_a_success_event_carries_its_deployment() -> None:
    kwargs = {
        "litellm_call_id": "c1",
        "standard_logging_object": {
            "model": "claude-sonnet-4",
            "custom_llm_provider": "anthropic",
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "total_tokens": 120,
        },
    }
    settlement = success(kwargs, None)
    assert settlement is not None and settlement.deployment == "anthropic/claude-sonnet-4"
    assert (settlement.usage.input_tokens, settlement.usage.output_tokens) == (100, 20)
