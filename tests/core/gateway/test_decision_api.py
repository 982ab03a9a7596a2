"""The decision API other gateways call: authorize (no forwarding), settle, outcomes."""

from __future__ import annotations

ADMIN = {"Authorization": "Bearer test-admin"}


def test_authorize_reserves_the_worst_case_and_settle_charges_actual(client, key, fake, ledger) -> None:
    response = client.post(
        "/v1/authorize",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": "gpt-4o",
            "input_tokens": 1000,
            "max_output_tokens": 200,
            "labels": {"feature": "search"},
            "request_id": "nginx-1",
        },
    )
    assert response.status_code == 200
    body = response.json()
    # worst case: 1000 x $2.50/M + 200 x $10/M
    assert (body["request_id"], body["reserved_nanos"], body["reserved"]) == (
        "nginx-1",
        4_500_000,
        "0.0045",
    )
    assert body["labels"]["feature"] == "search"
    assert response.headers["x-allotment-person"] == body["principal"]["person_id"]
    assert ledger.person()["reserved_nanos"] == 4_500_000
    assert fake.requests == []

    settled = client.post(
        "/v1/settle",
        headers=ADMIN,
        json={
            "request_id": "nginx-1",
            "format": "openai",
            "provider_usage": {"prompt_tokens": 900, "completion_tokens": 100},
        },
    )
    assert settled.status_code == 200
    assert settled.json()["cost_nanos"] == 900 * 2_500 + 100 * 10_000 == 3_250_000
    wallet = ledger.person()
    assert (wallet["spent_nanos"], wallet["reserved_nanos"]) == (3_250_000, 0)
    again = client.post(
        "/v1/settle", headers=ADMIN, json={"request_id": "nginx-1", "usage": {"input_tokens": 1}}
    )
    assert again.json()["cost_nanos"] == 3_250_000  # idempotent: the first settlement stands


def test_authorize_works_from_headers_alone(client, key, ledger) -> None:
    response = client.post(
        "/v1/authorize",
        headers={
            "Authorization": f"Bearer {key}",
            "X-Allotment-Model": "openai/gpt-4o",
            "X-Allotment-Input-Tokens": "100",
            "X-Allotment-Max-Output-Tokens": "10",
        },
    )
    assert response.status_code == 200
    assert response.json()["reserved_nanos"] == 100 * 2_500 + 10 * 10_000


def test_authorize_refusal_carries_the_error(client, rt) -> None:
    secret, _ = rt.admin.issue_key("tiny@acme.example")
    response = client.post(
        "/v1/authorize",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": "gpt-4o", "input_tokens": 10, "max_output_tokens": 10},
    )
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "budget_exceeded"


def test_settle_needs_the_admin_token(client, key) -> None:
    client.post(
        "/v1/authorize",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "gpt-4o", "request_id": "r-1", "max_output_tokens": 1},
    )
    response = client.post(
        "/v1/settle",
        headers={"Authorization": f"Bearer {key}"},
        json={"request_id": "r-1", "usage": {}},
    )
    assert response.status_code == 401


def test_outcomes_attach_to_a_request(client, key) -> None:
    response = client.post(
        "/v1/outcomes",
        headers={"Authorization": f"Bearer {key}"},
        json={"request_id": "req_1", "outcome": "accepted", "value_usd": "1.5"},
    )
    assert response.status_code == 201 and response.json()["outcome"] == "accepted"
    assert client.post("/v1/outcomes", headers=ADMIN, json={"outcome": "x"}).status_code == 400
