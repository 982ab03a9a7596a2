"""The provider routes' short way through the app: past FastAPI's router, straight to the proxy.

Routing, the exception and exit-stack middleware and dependency solving cost more per call
than the gateway's own work; the routes stay registered for the OpenAPI documentation.
"""

from __future__ import annotations

from typing import Any

from starlette._utils import get_route_path, is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from allotment.gateway import proxy

# path -> the proxy's route name; the same table the routers declare
PROXY_ROUTES = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/messages": "messages",
}


class ProxyRoutes:
    """ASGI middleware serving ``POST`` on the proxy routes; everything else passes through.

    It is added before plugins add theirs, so their middleware still wraps every call. An
    exception the proxy raises goes to the app's exception handlers, as behind the router.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = None
        if scope["type"] == "http" and scope["method"] == "POST":
            route = PROXY_ROUTES.get(get_route_path(scope))
        if route is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        app = scope["app"]
        try:
            response = await proxy.handle(app.state.gateway, request, route)
        except Exception as exc:
            handler = _handler_for(app, exc)
            if handler is None:
                raise
            if is_async_callable(handler):
                response = await handler(request, exc)
            else:
                response = await run_in_threadpool(handler, request, exc)
        await response(scope, receive, send)


def _handler_for(app: Any, exc: Exception) -> Any:
    """The handler Starlette's exception middleware would pick (``Exception`` is not its own)."""
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None
