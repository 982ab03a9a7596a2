"""Prometheus metrics of one gateway app, on the app's own registry (tests build many apps).

Wallet amounts (reserved, spent, limit by scope) are read from the ledger at scrape time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("allotment.gateway")

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)


def _nanos(wallet: Any, name: str) -> int:
    if isinstance(wallet, dict):
        value = wallet.get(f"{name}_nanos")
        if value is None and wallet.get(name) is not None:
            return int(Decimal(str(wallet[name])) * 1_000_000_000)
        return int(value or 0)
    return int(getattr(wallet, f"{name}_nanos", 0) or 0)


def _field(wallet: Any, name: str) -> str:
    value = wallet.get(name) if isinstance(wallet, dict) else getattr(wallet, name, None)
    return "" if value is None else str(value)


class WalletCollector(Collector):
    """Reserved, spent and limit (USD) per wallet of the current period."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        labels = ["scope", "scope_id", "period"]
        families = {
            name: GaugeMetricFamily(f"allotment_wallet_{name}_usd", f"Wallet {name} in USD", labels=labels)
            for name in ("reserved", "spent", "limit")
        }
        try:
            wallets = self.runtime.admin.budgets()
        except Exception:  # a scrape must not fail because the ledger is busy
            log.warning("could not read wallets for /metrics", exc_info=True)
            wallets = []
        for wallet in wallets:
            values = [_field(wallet, "scope"), _field(wallet, "scope_id"), _field(wallet, "period")]
            for name, family in families.items():
                family.add_metric(values, _nanos(wallet, name) / 1e9)
        yield from families.values()


class GatewayMetrics:
    def __init__(self, runtime: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "allotment_gateway_requests",
            "Calls by route, HTTP status and outcome",
            ["route", "status", "outcome"],
            registry=r,
        )
        self.denials = Counter(
            "allotment_gateway_denials", "Refused calls by error code", ["code"], registry=r
        )
        self.admit_latency = Histogram(
            "allotment_gateway_admit_seconds",
            "Time to admit a call (auth, policy, reserve)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_latency = Histogram(
            "allotment_gateway_upstream_seconds",
            "Time to the provider's answer (headers, for streams)",
            ["provider"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "allotment_gateway_overhead_seconds",
            "The gateway's own time on a call: arrival to answer, less the wait for the provider "
            "(to the first byte, for streams)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.settle_failures = Counter(
            "allotment_gateway_settle_failures",
            "Settlement attempts the ledger refused or missed (each is retried)",
            registry=r,
        )
        self.settles_abandoned = Counter(
            "allotment_gateway_settles_abandoned",
            "Calls whose settlement still failed after every retry (or at shutdown): written to the "
            "settle spool, charged by `allotment settles replay`",
            registry=r,
        )
        self.fail_open = Counter(
            "allotment_gateway_fail_open",
            "Calls let through unenforced while the ledger was unreachable (policy.ledger_unavailable: open)",
            registry=r,
        )
        r.register(WalletCollector(runtime))
        # labelled children by label values: labels() validates and locks on every call
        self._requests: dict[tuple[str, int, str], Any] = {}
        self._upstream: dict[str, Any] = {}

    def count_request(self, route: str, status: int, outcome: str) -> None:
        key = (route, status, outcome)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(route, str(status), outcome)
        child.inc()

    def observe_upstream(self, provider: str, seconds: float) -> None:
        child = self._upstream.get(provider)
        if child is None:
            child = self._upstream[provider] = self.upstream_latency.labels(provider)
        child.observe(seconds)
