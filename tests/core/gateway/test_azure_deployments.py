"""Azure OpenAI through the gateway: owner-named deployments, priced as the model they serve."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.core.gateway.conftest import gateway_config

from allotment.errors import ConfigError
from allotment.gateway import create_app
from allotment.testing import temporary_runtime
from allotment.testing.fake_upstream import FakeUpstream, FakeUsage, Script

HELLO = [{"role": "user", "content": "hello"}]
API_VERSION = "2024-10-21"


def azure_config(fake: FakeUpstream) -> str:
    dev_tier = gateway_config(fake).replace('["openai/*", "anthropic/*"]', '["openai/*", "azure/*"]', 1)
    return (
        dev_tier
        + f"""
  azure:
    api_key: env:TEST_AZURE_KEY
    api_base: "{fake.url}"
    timeout_seconds: 5
    extra: {{api_version: "{API_VERSION}"}}
    deployments:
      prod-gpt4o: gpt-4o
      eu-mini: eu/gpt-4o-mini
"""
    )


@pytest.fixture
def azure_client(
    tmp_path: Path, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, dict[str, str], Any]]:
    monkeypatch.setenv("TEST_AZURE_KEY", "azure-secret")
    with temporary_runtime(tmp_path, config=azure_config(fake), admin_token="test-admin") as runtime:
        key, _ = runtime.admin.issue_key("dev@acme.example")
        with TestClient(create_app(runtime)) as client:
            yield client, {"Authorization": f"Bearer {key}"}, runtime


def test_a_call_to_an_azure_deployment_reaches_its_url_and_is_priced_as_the_model_it_serves(
    azure_client: tuple[TestClient, dict[str, str], Any], fake: FakeUpstream
) -> None:
    client, auth, rt = azure_client
    fake.default = Script(usage=FakeUsage(input_tokens=1000, cache_read_tokens=200, output_tokens=500))
    response = client.post(
        "/v1/chat/completions",
        headers=auth,
        json={"model": "azure/prod-gpt4o", "max_tokens": 600, "messages": HELLO},
    )
    assert response.status_code == 200, response.text
    sent = fake.requests_to("/openai/deployments/prod-gpt4o/chat/completions")
    assert len(sent) == 1
    assert sent[0].query["api-version"] == API_VERSION
    assert sent[0].headers["api-key"] == "azure-secret"  # read from the environment when used
    event = rt.event(response.headers["x-allotment-request-id"])
    assert (event.provider, event.model) == ("azure", "gpt-4o")
    assert event.card_version == "azure-2026-06-08"
    # gpt-4o on Azure (Global/Standard): 1000 fresh x $2.50/M + 200 cached x $1.25/M + 500 x $10/M
    assert event.cost_nanos == 2_500_000 + 250_000 + 5_000_000
    assert response.headers["x-allotment-cost"] == "0.00775"


def test_a_data_zone_deployment_is_priced_at_the_data_zone_price(
    azure_client: tuple[TestClient, dict[str, str], Any], fake: FakeUpstream
) -> None:
    client, auth, rt = azure_client
    # (litellm stops a stream that repeats one chunk 100 times; the fake's words repeat)
    fake.default = Script(usage=FakeUsage(input_tokens=1000, output_tokens=80))
    response = client.post(
        "/v1/chat/completions",
        headers=auth,
        json={"model": "azure/eu-mini", "max_tokens": 1000, "messages": HELLO, "stream": True},
    )
    assert response.status_code == 200, response.text
    assert "[DONE]" in response.text, response.text[-3000:]
    assert len(fake.requests_to("/openai/deployments/eu-mini/chat/completions")) == 1
    event = rt.event(response.headers["x-allotment-request-id"])
    assert event.model == "us/gpt-4o-mini"  # the card's Data Zone entry (us/ and eu/ share it)
    # 1000 x $0.165/M + 80 x $0.66/M
    assert event.usage.output_tokens == 80
    assert event.cost_nanos == 165_000 + 52_800


def test_an_unmapped_deployment_is_refused_before_anything_is_sent(
    azure_client: tuple[TestClient, dict[str, str], Any], fake: FakeUpstream
) -> None:
    client, auth, rt = azure_client
    response = client.post(
        "/v1/chat/completions",
        headers=auth,
        json={"model": "azure/someone-elses-deployment", "max_tokens": 10, "messages": HELLO},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unpriced_model"
    assert fake.requests == []
    assert all(w["spent_nanos"] == 0 and w["reserved_nanos"] == 0 for w in rt.admin.budgets())


def test_a_bare_model_id_still_means_openai_with_an_azure_card_loaded(
    azure_client: tuple[TestClient, dict[str, str], Any], fake: FakeUpstream
) -> None:
    client, auth, rt = azure_client
    response = client.post(
        "/v1/chat/completions", headers=auth, json={"model": "gpt-4o", "max_tokens": 10, "messages": HELLO}
    )
    assert response.status_code == 200, response.text
    assert len(fake.requests_to("/v1/chat/completions")) == 1
    assert rt.event(response.headers["x-allotment-request-id"]).provider == "openai"


@pytest.mark.parametrize(
    ("upstream", "message"),
    [
        ("{api_key: x, extra: {api_key: y}}", "api_key cannot be set in `extra`"),
        ("{api_key: x, deployments: {prod: ''}}", "must not be empty"),
        ("{api_key: x, deployments: [prod]}", "deployments"),
    ],
)
def test_a_bad_upstream_section_is_refused_with_a_clear_error_and_applies_nothing(
    tmp_path: Path, fake: FakeUpstream, upstream: str, message: str
) -> None:
    with temporary_runtime(tmp_path, config=gateway_config(fake), admin_token="test-admin") as runtime:
        before = runtime.config
        bad = gateway_config(fake) + f"  azure: {upstream}\n"
        with pytest.raises(ConfigError, match=message):
            runtime.apply_config_text(bad)
        assert runtime.config == before


def test_the_model_list_offers_the_deployments_not_the_cards_azure_entries(
    azure_client: tuple[TestClient, dict[str, str], Any],
) -> None:
    client, auth, _ = azure_client
    ids = [m["id"] for m in client.get("/v1/models", headers=auth).json()["data"]]
    assert "azure/prod-gpt4o" in ids and "azure/eu-mini" in ids
    assert [i for i in ids if i.startswith("azure/")] == ["azure/eu-mini", "azure/prod-gpt4o"]
    assert "openai/gpt-4o" in ids
