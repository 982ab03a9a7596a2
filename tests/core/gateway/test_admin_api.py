"""The admin API: bearer ALLOTMENT_ADMIN_TOKEN, directory listings, keys, budgets."""

from __future__ import annotations

ADMIN = {"Authorization": "Bearer test-admin"}


def test_admin_routes_refuse_without_the_token(client, key) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {key}"}):
        response = client.get("/admin/people", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_admin_token"


def test_directory_listings(client) -> None:
    emails = {p["email"] for p in client.get("/admin/people", headers=ADMIN).json()["data"]}
    assert emails == {"dev@acme.example", "oai@acme.example", "tiny@acme.example"}
    teams = client.get("/admin/teams", headers=ADMIN).json()["data"]
    assert teams == [{"team": "eng", "name": "eng", "cost_center": "CC-1", "monthly_budget_usd": "500"}]
    tiers = {t["tier"]: t for t in client.get("/admin/tiers", headers=ADMIN).json()["data"]}
    assert tiers["openai-only"]["allow"] == ["openai/*"]


def test_issue_use_and_revoke_a_key_with_its_own_budget(client, fake) -> None:
    issued = client.post(
        "/admin/keys",
        headers=ADMIN,
        json={"email": "dev@acme.example", "name": "ci", "monthly_budget": "0.25"},
    )
    assert issued.status_code == 201
    key, key_id = issued.json()["key"], issued.json()["key_id"]
    response = client.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 200
    wallets = client.get("/admin/budgets", headers=ADMIN).json()["data"]
    key_wallet = next(w for w in wallets if w["scope"] == "key")
    assert (key_wallet["scope_id"], key_wallet["limit_usd"]) == (key_id, "0.25")
    # the fake's default usage: 12 in x $2.50/M + 6 out x $10/M
    assert key_wallet["spent_nanos"] == 12 * 2_500 + 6 * 10_000
    listed = client.get("/admin/keys", headers=ADMIN).json()["data"]
    assert [k["status"] for k in listed if k["key_id"] == key_id] == ["active"]
    assert client.post(f"/admin/keys/{key_id}/revoke", headers=ADMIN).status_code == 200
    listed = client.get("/admin/keys", headers=ADMIN).json()["data"]
    assert [k["status"] for k in listed if k["key_id"] == key_id] == ["revoked"]
    assert client.delete("/admin/keys/key_nope", headers=ADMIN).status_code == 404


def test_openapi_docs_are_served(client) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/chat/completions" in spec["paths"] and "/admin/keys" in spec["paths"]
    assert client.get("/docs").status_code == 200
