"""The allotment hook specifications: the public contract between the core and every plugin.

Each spec documents its default implementation and its call semantics, pytest-style.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from allotment.types import (
        Anomaly,
        CallIntent,
        Decision,
        DirectoryChanges,
        ExportResult,
        Outcome,
        Price,
        Principal,
        Reservation,
        Usage,
        UsageEvent,
        Wallet,
    )

PROJECT_NAME = "allotment"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec(firstresult=True)
def authenticate(credential: str, context: dict[str, Any]) -> Principal | None:
    """Resolve a credential (an API key, a bearer token) to the principal it belongs to.

    The default implementation looks the key's SHA-256 up among issued keys and refuses
    revoked ones by returning ``None``.

    Stops at the first non-None result.

    :param credential: the secret the caller presented.
    :param context: what the adapter knows about the request (``adapter``, ``headers``...).
    :returns: the principal, or ``None`` when this plugin does not recognise the credential.
    """


@hookspec
def check_policy(principal: Principal, intent: CallIntent) -> Decision | None:
    """Decide whether ``principal`` may make the call ``intent`` describes.

    The default implementation enforces the tier's model allowlist (globs), the label
    schema (required keys, allowed values) and the per-request token ceiling.

    Every implementation runs; any deny wins (the first deny in call order is reported).

    :param principal: the authenticated caller.
    :param intent: the call, with labels already merged from the key's defaults.
    :returns: a ``Decision`` (allow or deny), or ``None`` to abstain.
    """


@hookspec(firstresult=True)
def price(provider: str, model: str, usage: Usage, at: datetime, endpoint_mode: str) -> Price | None:
    """Price ``usage`` of ``provider/model`` at the instant ``at``.

    The default implementation uses the dated rate card in force at ``at`` (aliases,
    cache read/write, long-context tiers, service tiers, batch multiplier, per-call fees).

    Stops at the first non-None result.

    :param provider: the provider name (``openai``, ``anthropic``, ``bedrock`` ...).
    :param model: the model id as the caller named it.
    :param usage: normalized token counts (fresh input excludes cache tokens), and
        ``usage.service_tier``, the tier that served the call (None: standard).
    :param at: when the request was made (selects the card version).
    :param endpoint_mode: ``sync``, ``stream`` or ``batch`` (batch applies the multiplier).
    :returns: the exact ``Price`` in nano-dollars, or ``None`` if this plugin cannot price it.
    """


@hookspec(firstresult=True)
def reserve(principal: Principal, intent: CallIntent, amount: int) -> Reservation | None:
    """Hold ``amount`` nano-dollars on every wallet that applies to this call.

    The default implementation is the SQL ledger: one conditional UPDATE per wallet
    (org, team, person, key, label budgets) inside one transaction — all or none.

    Stops at the first non-None result. Raise ``Denied`` (402) when a wallet cannot pay.

    :param principal: the authenticated caller.
    :param intent: the admitted call.
    :param amount: the worst-case estimate in nano-dollars.
    :returns: the ``Reservation`` held, or ``None`` to let another plugin handle it.
    """


@hookspec(firstresult=True)
def reconcile(
    reservation: Reservation | None,
    intent: CallIntent,
    principal: Principal | None,
    usage: Usage,
    price: Price,
    outcome: Outcome,
    enforced: bool,
    details: dict[str, Any],
) -> UsageEvent | None:
    """Settle a call: charge its actual price, release the rest, append a usage event.

    The default implementation is the SQL ledger settle (idempotent by request id).
    ``reservation`` is ``None`` for passive records (log ingestion).

    Stops at the first non-None result.

    :param reservation: the hold made at admission, or ``None`` for a passive record.
    :param intent: the call as admitted (or as reconstructed from a log line).
    :param principal: the caller, when known.
    :param usage: the actual normalized usage.
    :param price: the actual price of ``usage``.
    :param outcome: ``success``, ``error`` or ``cancelled``.
    :param enforced: ``False`` for passive records.
    :param details: extra facts for the event: ``external_cost_nanos`` (a gateway's own
        cost figure, kept beside ours) and ``flags`` (strings such as ``"estimated_usage"``).
    :returns: the stored ``UsageEvent``.
    """


@hookspec(firstresult=True)
def export(kind: str, period: str, options: dict[str, Any]) -> ExportResult | None:
    """Produce an export of kind ``kind`` for ``period`` (``2026-03``).

    The default implementations handle ``csv`` (finance) and ``focus`` (FinOps FOCUS).
    An implementation returns ``None`` for kinds it does not handle.

    Stops at the first non-None result.

    :param kind: ``csv``, ``focus``, or a plugin's kind such as ``netsuite``.
    :param period: a calendar month ``YYYY-MM`` in the org timezone.
    :param options: kind-specific options (``destination``, ``dry_run`` ...).
    :returns: an ``ExportResult`` describing what was written.
    """


@hookspec
def usage_recorded(event: UsageEvent) -> None:
    """Observe a usage event after it was committed to the ledger.

    Delivered from the durable outbox by a job, never inside the request path; an
    implementation that raises is retried later and never affects other observers.

    :param event: the committed ``UsageEvent``.
    """


@hookspec
def budget_threshold(wallet: Wallet, fraction: str) -> None:
    """Observe a wallet crossing a configured fraction of its limit (``"0.8"``).

    Fired once per wallet, fraction and period, from the durable outbox.

    :param wallet: the wallet as it was right after the crossing.
    :param fraction: the threshold crossed, as a decimal string.
    """


@hookspec
def anomaly_detected(anomaly: Anomaly) -> None:
    """Observe an anomaly found by the detector job (spend spike, retry storm ...).

    Delivered from the durable outbox; ``anomaly.dedup_key`` identifies repeats.

    :param anomaly: what was detected, with its evidence in ``details``.
    """


@hookspec
def sync_directory(since: datetime | None, config: dict[str, Any]) -> DirectoryChanges | None:
    """Report the people an HR system knows about.

    No default implementation; the Rippling and BambooHR plugins implement it. The core's
    sync engine (``allotment.sync``) applies the results to people and keys.

    Every implementation runs; results are applied together or not at all (one raising
    aborts the whole sync before anything is written).

    :param since: the start of the last successful sync, for incremental APIs; ``None`` for a full sync.
    :param config: the ``plugins:`` section of ``allotment.yaml``; a plugin reads its own key.
    :returns: ``DirectoryChanges``, or ``None`` when the plugin is not configured.
    """


@hookspec
def runtime_opened(runtime: Any) -> None:
    """Receive the runtime once, right after it is built: keep it to read config or the ledger.

    No default implementation. Plugins that need their settings (``runtime.config.plugins``)
    or the database inside observer hooks keep a reference here.

    Every implementation runs, in the process that opened the runtime.

    :param runtime: the ``allotment.runtime.Runtime`` (``config``, ``engine``, ``admin`` ...).
    """


@hookspec
def register_jobs(scheduler: Any) -> None:
    """Add scheduled jobs with ``scheduler.add(name, func, every=... | cron=...)``.

    The core registers its own jobs (reservation expiry, outbox delivery, ledger seal)
    through this hook.

    :param scheduler: the ``allotment.jobs.JobRegistry``.
    """


@hookspec
def register_routes(app: Any) -> None:
    """Add HTTP routes to the gateway's FastAPI ``app``.

    The core registers its own routes through this hook.

    :param app: the FastAPI application being built.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``allotment`` Typer application.

    The core registers its own commands through this hook.

    :param cli: the root ``typer.Typer``.
    """
