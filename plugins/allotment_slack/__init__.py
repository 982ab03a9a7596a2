"""allotment-slack: budget thresholds and anomalies as Slack Block Kit messages.

Registered by the ``slack`` entry point; the module's hooks delegate to one ``SlackAlerts``.
"""

from __future__ import annotations

from allotment_slack.plugin import SlackAlerts

__all__ = ["SlackAlerts", "plugin"]

plugin = SlackAlerts()

# pluggy registers this module; these bound methods carry the instance's hook markers
runtime_opened = plugin.runtime_opened
budget_threshold = plugin.budget_threshold
anomaly_detected = plugin.anomaly_detected
register_jobs = plugin.register_jobs
