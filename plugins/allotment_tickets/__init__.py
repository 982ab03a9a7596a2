"""allotment-tickets: escalate anomalies to Jira Cloud, GitHub Issues, PagerDuty and a signed webhook.

Registered by the ``tickets`` entry point; the module's hooks delegate to one ``TicketEscalation``.
"""

from __future__ import annotations

from allotment_tickets.plugin import TicketEscalation

__all__ = ["TicketEscalation", "plugin"]

plugin = TicketEscalation()

# pluggy registers this module; these bound methods carry the instance's hook markers
runtime_opened = plugin.runtime_opened
anomaly_detected = plugin.anomaly_detected
