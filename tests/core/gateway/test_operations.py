"""Operations: health, Prometheus metrics, the plugin listing and plugin-added routes."""

from __future__ import annotations

import re
import time
from pathlib import Path

from fastapi.testclient import TestClient

from allotment import hookimpl
from allotment.gateway import create_app
from allotment.testing import temporary_runtime
from allotment.testing.fake_upstream import FakeUsage, Script


def test_healthz(client) -> None:
    assert client.get("/healthz").json()["status"] == "ok"


def test_metrics_count_calls_denials_and_wallets(client, auth) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    client.post("/v1/chat/completions", headers=auth, json=body)
    client.post("/v1/chat/completions", headers={"Authorization": "Bearer nope"}, json=body)
    text = client.get("/metrics").text
    assert 'allotment_gateway_requests_total{outcome="success",route="chat",status="200"} 1.0' in text
    assert 'allotment_gateway_denials_total{code="invalid_api_key"} 1.0' in text
    assert "allotment_gateway_admit_seconds_count 1.0" in text
    assert 'allotment_gateway_upstream_seconds_count{provider="openai"} 1.0' in text
    # 12 in x $2.50/M + 6 out x $10/M = $0.00009 on the org wallet
    assert "allotment_wallet_spent_usd{period=" in text and 'scope="org"' in text
    assert any(
        line.startswith("allotment_wallet_spent_usd") and 'scope="org"' in line and line.endswith(" 9e-05")
        for line in text.splitlines()
    )


def test_plugins_listing(client) -> None:
    plugins = client.get("/-/plugins").json()
    assert any(p["builtin"] for p in plugins)
    assert all({"name", "hooks"} <= set(p) for p in plugins)


class HelloRoutes:
    @hookimpl
    def register_routes(self, app) -> None:  # type: ignore[no-untyped-def]
        @app.get("/hello")
        async def hello() -> dict[str, str]:
            return {"hello": "plugin"}


def test_plugins_add_routes_through_the_hook(tmp_path: Path) -> None:
    with (
        temporary_runtime(tmp_path, plugins=[("hello", HelloRoutes())]) as rt,
        TestClient(create_app(rt)) as client,
    ):
        assert client.get("/hello").json() == {"hello": "plugin"}
        assert "hello" in {p["name"] for p in client.get("/-/plugins").json()}


def test_overhead_header_is_the_gateways_own_time_not_the_providers(client, auth, fake) -> None:
    """``x-allotment-overhead-ms`` leaves out the wait for the provider (here 300 ms), for an
    answer, a stream (up to its first byte) and a refusal; the metric counts each of them."""
    fake.default = Script(delay=0.3, usage=FakeUsage(input_tokens=12, output_tokens=6))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    started = time.perf_counter()
    reply = client.post("/v1/chat/completions", headers=auth, json=body)
    assert reply.status_code == 200 and time.perf_counter() - started >= 0.3
    with client.stream("POST", "/v1/chat/completions", headers=auth, json={**body, "stream": True}) as stream:
        assert stream.status_code == 200
        stream_overhead = stream.headers["x-allotment-overhead-ms"]
        stream.read()
    refused = client.post("/v1/chat/completions", headers={"Authorization": "Bearer nope"}, json=body)
    assert refused.status_code == 401
    for value in (reply.headers["x-allotment-overhead-ms"], stream_overhead):
        assert re.fullmatch(r"\d+\.\d{3}", value)
        assert 0 <= float(value) < 250
    assert 0 < float(refused.headers["x-allotment-overhead-ms"]) < 250
    assert "allotment_gateway_overhead_seconds_count 3.0" in client.get("/metrics").text
