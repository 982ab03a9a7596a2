"""Build the gateway's FastAPI app around an open ``Runtime``.

Core routes are added here; plugins add theirs through the ``register_routes`` hook.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from allotment import __version__
from allotment.errors import AllotmentError, InvalidRequest
from allotment.gateway import routes_admin, routes_anthropic, routes_decision, routes_openai
from allotment.gateway.deps import GatewayDep, json_response
from allotment.gateway.errors import error_response
from allotment.gateway.fastpath import ProxyRoutes
from allotment.gateway.mock_upstream import MockUpstream
from allotment.gateway.state import DEFAULT_MAX_BODY_BYTES, GatewayState
from allotment.plugins import describe_plugins
from allotment.settle_spool import has_pending, replay

log = logging.getLogger("allotment.gateway")


SPOOL_REPLAY_SECONDS = 60.0


async def _replay_spool(runtime: Any) -> None:
    """Settle what this host spooled (the ledger refused it until a run stopped, or past the
    last retry); what the ledger still cannot take stays for the next replay."""
    settings = getattr(runtime, "settings", None)
    if settings is None or not has_pending(settings):
        return
    try:
        await asyncio.to_thread(replay, runtime)
    except Exception:  # the ledger is down: the next replay, or `allotment settles replay`
        log.exception("replaying the settle spool failed; it is kept")


async def _replay_spool_every(runtime: Any, seconds: float) -> None:
    """The spool is a file on this host, so each process replays its own (the scheduled jobs
    run on one replica only): at start, then every ``seconds`` while anything is in it."""
    while True:
        await _replay_spool(runtime)
        await asyncio.sleep(seconds)


def create_app(
    runtime: Any,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    extend_interval: float | None = None,
    mock: MockUpstream | None = None,
    force_mock: bool = False,
    close_runtime: bool = False,
    run_jobs: bool = False,
    spool_replay_seconds: float = SPOOL_REPLAY_SECONDS,
) -> FastAPI:
    """The gateway app for ``runtime`` (an open ``allotment.runtime.Runtime``).

    :param max_body_bytes: larger request bodies get 413 ``request_too_large``.
    :param extend_interval: seconds between reservation extensions of a live stream
        (default: a third of the reservation TTL).
    :param mock: the offline upstream (a fresh ``MockUpstream`` by default).
    :param force_mock: answer every provider with the mock upstream (``serve --demo``).
    :param close_runtime: close ``runtime`` when the app shuts down (worker processes).
    :param run_jobs: run the scheduled jobs (expiry, outbox delivery, reports ...) while the
        app serves; with several workers or replicas one of them leads (a lock elects it).
    :param spool_replay_seconds: how often the settle spool is replayed while it holds anything.
    """
    gateway = GatewayState(
        runtime,
        max_body_bytes=max_body_bytes,
        extend_interval=extend_interval,
        mock=mock,
        force_mock=force_mock,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler, leader = None, None
        if run_jobs:
            from allotment.jobs import JobLeader, start_scheduler

            leader = JobLeader(runtime)
            scheduler = start_scheduler(runtime, leader=leader)
        replaying = asyncio.get_running_loop().create_task(
            _replay_spool_every(runtime, spool_replay_seconds), name="allotment-spool-replay"
        )
        yield
        replaying.cancel()
        await gateway.shutdown()  # settle in-flight streams before the process exits
        if scheduler is not None and leader is not None:
            scheduler.shutdown(wait=True)
            leader.release()
        if close_runtime:
            runtime.close()

    app = FastAPI(
        title="allotment gateway",
        version=__version__,
        summary="OpenAI- and Anthropic-compatible gateway with budgets reserved before each call.",
        lifespan=lifespan,
    )
    app.state.gateway = gateway

    @app.exception_handler(AllotmentError)
    async def _allotment_error(request: Request, exc: AllotmentError) -> Response:
        dialect = "anthropic" if request.url.path == "/v1/messages" else "openai"
        return error_response(exc, dialect=dialect)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(InvalidRequest(problems or "invalid request"))

    app.include_router(routes_openai.router)
    app.include_router(routes_anthropic.router)
    app.include_router(routes_decision.router)
    app.include_router(routes_admin.router)

    @app.get("/healthz", tags=["operations"], summary="Liveness and ledger reachability")
    async def healthz(gateway: GatewayDep) -> Response:
        try:
            gateway.runtime.ledger.generation()
        except Exception as exc:
            # failing closed, the gateway cannot admit anything: take it out of rotation;
            # failing open, it still serves (unenforced): keep it in, but say so
            fails_open = gateway.runtime.fails_open()
            body = {"status": "degraded", "ledger": str(exc), "fail_open": fails_open}
            return json_response(body, status=200 if fails_open else 503)
        return json_response({"status": "ok", "version": __version__, "streams": len(gateway.streams)})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics(gateway: GatewayDep) -> Response:
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/-/plugins", tags=["operations"], summary="Loaded plugins and their hooks")
    async def plugins(gateway: GatewayDep) -> Response:
        return json_response([info.to_dict() for info in describe_plugins(gateway.runtime.pm)])

    # before the plugins' hook: middleware they add still wraps the proxy routes
    app.add_middleware(ProxyRoutes)
    runtime.hooks.register_routes(app)
    return app
