"""Contract: the LiteLLM behaviour the adapter depends on. A LiteLLM upgrade that changes any
of it must fail here, loudly, before it silently stops enforcing budgets.
"""

from __future__ import annotations

import hashlib
import inspect
from importlib.metadata import version

import httpx
import pytest
from litellm_stack import Stack, wait_for

from allotment.testing.fake_upstream import FakeUpstream, FakeUsage, Script
from allotment_litellm import TESTED_LITELLM_VERSION, AllotmentLogger
from allotment_litellm.identity import KEY_HASH_FIELD
from allotment_litellm.logger import HOOKS


def test_the_installed_litellm_is_the_tested_version() -> None:
    assert version("litellm") == TESTED_LITELLM_VERSION, (
        "LiteLLM changed: re-run this suite, re-verify docs/litellm.md, then bump TESTED_LITELLM_VERSION"
    )


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_signatures_match_litellms(hook: str) -> None:
    from litellm.integrations.custom_logger import CustomLogger

    theirs = list(inspect.signature(getattr(CustomLogger, hook)).parameters)
    ours = list(inspect.signature(getattr(AllotmentLogger, hook)).parameters)
    assert ours == theirs
    # LiteLLM runs only hooks declared on the registered object's own class
    assert hook in vars(AllotmentLogger)


def test_litellm_hashes_the_key_it_keeps_but_passes_custom_auth_metadata_through() -> None:
    from litellm.proxy._types import UserAPIKeyAuth

    auth = UserAPIKeyAuth(api_key="sk-allot-secret", metadata={KEY_HASH_FIELD: "h"})
    assert auth.api_key == hashlib.sha256(b"sk-allot-secret").hexdigest()
    assert auth.metadata == {KEY_HASH_FIELD: "h"}


def test_proxy_exception_carries_status_headers_and_openai_code() -> None:
    from litellm.proxy._types import ProxyException

    params = inspect.signature(ProxyException.__init__).parameters
    assert {"message", "type", "param", "code", "headers", "openai_code"} <= set(params)
    exc = ProxyException(message="m", type="t", param=None, code=402, headers={"a": "b"})
    assert (exc.code, exc.headers) == ("402", {"a": "b"})


def test_litellm_cancels_a_slow_log_callback_and_we_wait_within_that_limit() -> None:
    # a log callback is cancelled past this limit: settle attempts run in a task of their own
    from litellm.constants import LOGGING_WORKER_MAX_TIME_PER_COROUTINE
    from litellm.litellm_core_utils.logging_worker import LoggingWorker

    timeout = inspect.signature(LoggingWorker.__init__).parameters["timeout"].default
    assert timeout == LOGGING_WORKER_MAX_TIME_PER_COROUTINE == 20.0
    assert AllotmentLogger().settle_wait_seconds == LOGGING_WORKER_MAX_TIME_PER_COROUTINE / 2


@pytest.mark.slow
def test_pre_call_and_log_event_payloads_have_the_fields_we_read(stack: Stack, fake: FakeUpstream) -> None:
    key, _ = stack.key()
    fake.default = Script(usage=FakeUsage(input_tokens=47, cache_read_tokens=64, output_tokens=222))
    raw = stack.raw_chat(
        key, max_tokens=300, metadata={"feature": "x"}, extra_headers={"x-litellm-tags": "environment=dev"}
    )
    call_id = raw.headers["x-litellm-call-id"]
    records = wait_for(
        lambda: (r := stack.probe_records(call_id)) and len(r) >= 2 and r, 20, "the probe saw no log event"
    )
    assert [r["hook"] for r in records] == ["pre_call", "log_success"]
    pre, success = records
    assert {"litellm_call_id", "model", "messages", "metadata", "proxy_server_request"} <= set(
        pre["data_keys"]
    )
    assert {"requester_metadata", "tags"} <= set(pre["metadata_keys"])
    assert pre["api_key_is_hashed"] is True
    assert pre["user_api_key_metadata"][KEY_HASH_FIELD] == hashlib.sha256(key.encode()).hexdigest()
    assert {"litellm_call_id", "standard_logging_object", "response_cost", "litellm_params"} <= set(
        success["kwargs_keys"]
    )
    slo = success["slo"]
    assert slo["litellm_call_id"] == call_id
    assert slo["response_cost"] == pytest.approx(0.0024175)
    usage = slo["usage_object"]  # cache tokens live only here, not on the SLO's top level
    assert usage["prompt_tokens"] == 111 and usage["completion_tokens"] == 222
    assert usage["prompt_tokens_details"]["cached_tokens"] == 64
    event = stack.wait_event(call_id)
    assert event.labels["feature"] == "x" and event.labels["environment"] == "dev"


@pytest.mark.slow
def test_a_stream_logs_one_success_and_a_disconnect_is_marked(stack: Stack, fake: FakeUpstream) -> None:
    key, _ = stack.key()
    fake.default = Script(usage=FakeUsage(input_tokens=10, output_tokens=100), chunk_delay=0.05)
    with stack.stream(key, max_tokens=200) as response:
        call_id = response.headers["x-litellm-call-id"]
        for index, _ in enumerate(response.iter_lines()):
            if index >= 6:
                break
    records = wait_for(
        lambda: [r for r in stack.probe_records(call_id) if r["hook"] != "pre_call"],
        20,
        "no log event after a disconnect",
    )
    assert [r["hook"] for r in records] == ["log_success"]
    assert records[0]["client_disconnected"] is True
    assert records[0]["slo"]["stream"] is True


@pytest.mark.slow
def test_our_refusal_keeps_its_status_body_and_headers_through_the_proxy(stack: Stack) -> None:
    key, _ = stack.key("sam@acme.example")
    reply = httpx.post(
        stack.proxy.openai_base_url + "/chat/completions",
        timeout=30,
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert reply.status_code == 403
    assert reply.headers["x-should-retry"] == "false"
    error = reply.json()["error"]
    assert error["code"] == "model_not_allowed" and error["type"] == "permission_error"
    assert error["message"]
