"""The Nginx adapter: enforce budgets with ``auth_request``-style pre-authorization in njs,
and reconcile every call from Nginx's own JSON access log (``allotment tail nginx``).
"""

from __future__ import annotations

__all__: list[str] = []
