"""Built-in behaviour, registered as ordinary plugins so third parties can override it.

Each default is a small class of ``@hookimpl`` methods bound to the runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from allotment.runtime import Runtime

BUILTIN_PREFIX = "allotment.defaults."


def default_plugins(runtime: Runtime) -> list[tuple[str, object]]:
    from allotment.defaults.anomaly import AnomalyDetector
    from allotment.defaults.auth import KeyAuthenticator
    from allotment.defaults.commands import CoreCommands
    from allotment.defaults.jobs import CoreJobs
    from allotment.defaults.ledger import SqlLedger
    from allotment.defaults.policy import TierPolicy
    from allotment.defaults.pricing import RateCardPricer
    from allotment.defaults.reporting import Reporting
    from allotment.defaults.sync import DirectorySync
    from allotment.pricing.book import RateCardBook
    from allotment.pricing.cards import default_card_dirs

    return [
        (BUILTIN_PREFIX + "auth", KeyAuthenticator(runtime)),
        (BUILTIN_PREFIX + "policy", TierPolicy(runtime)),
        (BUILTIN_PREFIX + "pricing", RateCardPricer(RateCardBook.load(default_card_dirs()))),
        (BUILTIN_PREFIX + "ledger", SqlLedger(runtime)),
        (BUILTIN_PREFIX + "jobs", CoreJobs(runtime)),
        (BUILTIN_PREFIX + "anomaly", AnomalyDetector()),
        (BUILTIN_PREFIX + "commands", CoreCommands()),
        (BUILTIN_PREFIX + "sync", DirectorySync(runtime)),
        (BUILTIN_PREFIX + "reporting", Reporting(runtime)),
    ]
