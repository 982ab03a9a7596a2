"""The standalone gateway: an OpenAI- and Anthropic-compatible HTTP front with budgets built in.

``create_app(runtime)`` builds the FastAPI application that ``allotment serve`` runs.
"""

from __future__ import annotations

from allotment.gateway.app import create_app

__all__ = ["create_app"]
