"""Built-in anomaly detector plugin: registers the ``detect-anomalies`` job.

The job queues ``anomaly_detected`` through the outbox; Slack and tickets plugins observe it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from allotment.hookspecs import hookimpl

if TYPE_CHECKING:
    from allotment.runtime import Runtime
    from allotment.types import Anomaly


def _detect(runtime: Runtime) -> list[Anomaly]:
    from allotment.anomaly import detect

    return detect(runtime)


class AnomalyDetector:
    @hookimpl
    def register_jobs(self, scheduler: Any) -> None:
        scheduler.add(
            "detect-anomalies",
            _detect,
            every=900,
            description="queue anomaly_detected: spend spikes, token ceilings, retry storms, verbose output",
        )
