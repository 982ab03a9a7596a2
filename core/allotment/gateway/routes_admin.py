"""The admin API under ``/admin`` (bearer ``ALLOTMENT_ADMIN_TOKEN``): directory, keys, budgets."""

from __future__ import annotations

import hmac
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from allotment.errors import Denied
from allotment.gateway.deps import GatewayDep, json_response
from allotment.gateway.state import GatewayState


def check_admin(request: Request, gateway: GatewayState) -> None:
    """Refuse unless the request carries the admin token as a bearer token."""
    expected = str(getattr(gateway.runtime.settings, "admin_token", "") or "")
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if (
        not expected
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(token.strip().encode(), expected.encode())
    ):
        raise Denied(
            401,
            "invalid_admin_token",
            "this route needs `Authorization: Bearer <ALLOTMENT_ADMIN_TOKEN>`",
        )


async def require_admin(request: Request, gateway: GatewayDep) -> GatewayState:
    check_admin(request, gateway)
    return gateway


AdminDep = Annotated[GatewayState, Depends(require_admin)]
router = APIRouter(prefix="/admin", tags=["admin"])


class KeyRequest(BaseModel):
    email: str
    name: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    monthly_budget: Decimal | None = Field(default=None, ge=0, description="a key wallet, USD")


@router.get("/people", summary="People in the directory")
async def people(gateway: AdminDep) -> Response:
    return json_response({"data": gateway.runtime.admin.people()})


@router.get("/teams", summary="Teams with cost centers and budgets")
async def teams(gateway: AdminDep) -> Response:
    return json_response({"data": gateway.runtime.admin.teams()})


@router.get("/tiers", summary="Tiers with budgets and model allowlists")
async def tiers(gateway: AdminDep) -> Response:
    return json_response({"data": gateway.runtime.admin.tiers()})


@router.get("/keys", summary="Issued keys (never their secrets)")
async def list_keys(gateway: AdminDep, email: str | None = None) -> Response:
    return json_response({"data": gateway.runtime.admin.list_keys(email)})


@router.post("/keys", summary="Issue a key for a person; the secret is shown once", status_code=201)
async def issue_key(body: KeyRequest, gateway: AdminDep) -> Response:
    key, key_id = gateway.runtime.admin.issue_key(
        body.email, body.name, body.labels or None, body.monthly_budget
    )
    gateway.runtime.refresh_directory()
    return json_response({"key": key, "key_id": key_id}, status=201)


@router.delete("/keys/{key_id}", summary="Revoke a key (takes effect on the next request)")
async def revoke_key(key_id: str, gateway: AdminDep) -> Response:
    gateway.runtime.admin.revoke_key(key_id)
    gateway.runtime.refresh_directory()
    return json_response({"key_id": key_id, "status": "revoked"})


@router.post("/keys/{key_id}/revoke", summary="Revoke a key (same as DELETE)")
async def revoke_key_post(key_id: str, gateway: AdminDep) -> Response:
    return await revoke_key(key_id, gateway)


@router.get("/budgets", summary="Wallets with limit, spent, reserved and status")
async def budgets(gateway: AdminDep, period: str | None = None) -> Response:
    data: list[dict[str, Any]] = gateway.runtime.admin.budgets(period)
    return json_response({"data": data})
