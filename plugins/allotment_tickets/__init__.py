"""allotment-tickets: escalate anomalies to Jira Cloud, GitHub Issues, PagerDuty and a signed webhook.

Registered by the ``tickets`` entry point.
"""
