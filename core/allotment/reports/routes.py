"""``/admin/reports/...`` and ``POST /admin/simulate``: the reports as JSON for the console.

Every route needs the admin bearer token, checked by the gateway's own admin dependency.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import PurePath
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from allotment.errors import InvalidRequest
from allotment.gateway.deps import json_response
from allotment.gateway.routes_admin import AdminDep

router = APIRouter(prefix="/admin", tags=["reports"])


def _period(gateway: Any, period: str | None) -> str:
    from allotment.reports.periods import current_period, parse_period

    if period is None:
        return current_period(gateway.runtime.directory.timezone)
    parse_period(period)
    return period


@router.get("/reports/spend", summary="The finance report for a period (YYYY-MM)")
async def spend(
    gateway: AdminDep, period: str | None = None, per_person: bool = False, shared: str = "bucket"
) -> Response:
    from allotment.reports.spend import spend_report

    rt = gateway.runtime
    data = await run_in_threadpool(
        spend_report, rt, _period(gateway, period), per_person=per_person, shared=shared
    )
    return json_response(data)


@router.get("/reports/workflows", summary="Cost by workflow, grouped by label keys")
async def workflows(
    gateway: AdminDep, period: str | None = None, group_by: str = "feature", release: str | None = None
) -> Response:
    from allotment.reports.periods import parse_day
    from allotment.reports.workflows import workflow_report

    dims = [d for d in group_by.split(",") if d.strip()]
    data = await run_in_threadpool(
        workflow_report,
        gateway.runtime,
        _period(gateway, period),
        dims,
        release=parse_day(release) if release else None,
    )
    return json_response(data)


@router.get("/reports/dashboard", summary="Usage dashboard data")
async def dashboard(gateway: AdminDep) -> Response:
    from allotment.reports.dashboard import dashboard as build

    return json_response(await run_in_threadpool(build, gateway.runtime))


@router.get("/reports/recommendations", summary="Routing recommendations (never applied)")
async def recommendations(gateway: AdminDep, days: int = 30, group_by: str = "feature") -> Response:
    from allotment.reports.recommend import recommend

    dims = [d for d in group_by.split(",") if d.strip()]
    return json_response(await run_in_threadpool(recommend, gateway.runtime, days=days, group_by=dims))


@router.get("/reports/exports/{kind}", summary="An export's file (csv: finance lines, focus: FOCUS rows)")
async def export(
    kind: str,
    gateway: AdminDep,
    period: str | None = None,
    fmt: str = Query("csv", alias="format", description="focus: csv or parquet"),
) -> Response:
    from allotment.reports.delivery import CONTENT_TYPES

    rt = gateway.runtime
    result = await run_in_threadpool(rt.hooks.export, kind, _period(gateway, period), {"format": fmt})
    if result is None or result.content is None:
        raise InvalidRequest(f"no plugin exports {kind!r}", code="unknown_export")
    name = str((result.details.get("files") or [f"{kind}-{result.period}"])[0])
    return Response(
        result.content,
        media_type=CONTENT_TYPES.get(PurePath(name).suffix, "text/csv"),
        headers={
            "content-disposition": f'attachment; filename="{name}"',
            "x-allotment-rows": str(result.rows),
        },
    )


class ProfileBody(BaseModel):
    input_tokens: Decimal = Field(ge=0)
    output_tokens: Decimal = Field(ge=0)
    calls_per_day: Decimal = Field(ge=0)
    cached_share: Decimal = Field(default=Decimal(0), ge=0, le=1)
    batch_share: Decimal = Field(default=Decimal(0), ge=0, le=1)
    monthly_growth: Decimal = Field(default=Decimal(0), gt=-1)


class SimulateBody(BaseModel):
    models: list[str] = Field(default_factory=list)
    profile: ProfileBody | None = None
    workflow: dict[str, str] | None = Field(default=None, description="labels of a workflow to measure")
    days: int = Field(default=14, ge=1, le=366)
    monthly_growth: Decimal = Field(default=Decimal(0), gt=-1)


@router.post("/simulate", summary="Price a workload profile on several models side by side")
async def simulate(body: SimulateBody, gateway: AdminDep) -> Response:
    from allotment.reports.simulate import Profile, profile_from_workflow
    from allotment.reports.simulate import simulate as run

    rt = gateway.runtime
    models = list(body.models)
    if body.profile is not None:
        profile = Profile(**body.profile.model_dump())
    elif body.workflow:
        profile, seen = await run_in_threadpool(
            profile_from_workflow, rt, body.workflow, body.days, body.monthly_growth
        )
        models = models or seen
    else:
        raise InvalidRequest("give a `profile` or a `workflow` (labels) to simulate")
    return json_response(await run_in_threadpool(run, rt, profile, models))
