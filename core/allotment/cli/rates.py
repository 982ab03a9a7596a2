"""``allotment price`` and ``allotment rates list|check|import-litellm``: rate cards from a shell.

No database: every command builds a ``RateCardBook`` from the bundled and given card directories.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer

from allotment.errors import AllotmentError, ConfigError, InvalidRequest
from allotment.money import usd_string
from allotment.pricing.book import RateCardBook
from allotment.pricing.cards import (
    ModelRates,
    RateCard,
    ServiceTierRates,
    Tier,
    default_card_dirs,
    iter_card_files,
    load_card,
)
from allotment.types import Usage

CardsOption = Annotated[
    list[Path] | None,
    typer.Option("--cards", help="Extra rate-card directory (repeatable).", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
AtOption = Annotated[
    str | None,
    typer.Option("--at", help="Instant to price at: YYYY-MM-DD or ISO datetime (default: now)."),
]


@contextmanager
def _cli_errors() -> Iterator[None]:
    """Turn an allotment error into one ``error: ...`` line on stderr and exit status 2."""
    try:
        yield
    except AllotmentError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None


def _instant(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"--at must be YYYY-MM-DD or an ISO datetime, got {text!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _book(extra: list[Path] | None) -> RateCardBook:
    return RateCardBook.load([*default_card_dirs(), *(extra or [])])


def _plain(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _tier_dict(tier: Tier) -> dict[str, Any]:
    out: dict[str, Any] = {"above_input_tokens": tier.above_input_tokens}
    for name in ("input", "output", "cache_read", "cache_write", "cache_write_1h"):
        value = getattr(tier, name)
        if value is not None:
            out[name] = _plain(value)
    return out


def _service_tier_dict(tier: ServiceTierRates) -> dict[str, Any]:
    if tier.multiplier is not None:
        return {"multiplier": _plain(tier.multiplier)}
    out: dict[str, Any] = {}
    for name in ("input", "output", "cache_read", "cache_write", "cache_write_1h"):
        value = getattr(tier, name)
        if value is not None:
            out[name] = _plain(value)
    if tier.tiers:
        out["tiers"] = [_tier_dict(context) for context in tier.tiers]
    return out


def _entry_dict(card: RateCard, rates: ModelRates) -> dict[str, Any]:
    return {
        "provider": card.provider,
        "model": rates.name,
        "card_version": card.version,
        "effective_from": card.effective_from.isoformat(),
        "input": _plain(rates.input),
        "output": _plain(rates.output),
        "cache_read": _plain(rates.cache_read),
        "cache_write": _plain(rates.cache_write),
        "cache_write_1h": _plain(rates.cache_write_1h),
        "batch": _plain(rates.batch),
        "tiers": [_tier_dict(tier) for tier in rates.tiers],
        "service_tiers": {name: _service_tier_dict(tier) for name, tier in rates.service_tiers.items()},
        "per_call": {k: _plain(v) for k, v in rates.per_call.items()},
        "aliases": list(rates.aliases),
        "max_output_tokens": rates.max_output_tokens,
        "context_window": rates.context_window,
        "deprecated": rates.deprecated,
    }


def price_command(
    provider: Annotated[str, typer.Option("--provider", help="Provider, e.g. openai.")],
    model: Annotated[str, typer.Option("--model", help="Model id as the caller names it.")],
    input_tokens: Annotated[int, typer.Option("--input", help="Fresh (uncached) input tokens.")] = 0,
    cached: Annotated[int, typer.Option("--cached", help="Cache-read input tokens.")] = 0,
    cache_write: Annotated[int, typer.Option("--cache-write", help="5-minute cache writes.")] = 0,
    cache_write_1h: Annotated[int, typer.Option("--cache-write-1h", help="1-hour cache writes.")] = 0,
    output: Annotated[int, typer.Option("--output", help="Output tokens (reasoning included).")] = 0,
    tool_calls: Annotated[int, typer.Option("--tool-calls", help="Billed tool calls.")] = 0,
    search_calls: Annotated[int, typer.Option("--search-calls", help="Billed web searches.")] = 0,
    batch: Annotated[bool, typer.Option("--batch", help="Price as a batch request.")] = False,
    service_tier: Annotated[
        str | None,
        typer.Option("--service-tier", help="Served service tier: priority, flex ... (default standard)."),
    ] = None,
    at: AtOption = None,
    as_json: JsonOption = False,
    cards: CardsOption = None,
) -> None:
    """Price one request exactly from the rate card in force (USD and nano-dollars)."""
    with _cli_errors():
        usage = Usage(
            input_tokens=input_tokens,
            cache_read_tokens=cached,
            cache_write_tokens=cache_write,
            cache_write_1h_tokens=cache_write_1h,
            output_tokens=output,
            tool_calls=tool_calls,
            search_calls=search_calls,
            service_tier=service_tier,
        )
        when = _instant(at)
        mode = "batch" if batch else "sync"
        price = _book(cards).price(provider, model, usage, when, mode)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "provider": price.provider,
                    "model": price.model,
                    "cost_usd": usd_string(price.amount_nanos),
                    "cost_nanos": price.amount_nanos,
                    "card_version": price.card_version,
                    "components": price.components,
                    "endpoint_mode": mode,
                    "service_tier": usage.service_tier,
                    "at": when.isoformat(),
                    "flags": list(price.flags),
                }
            )
        )
        return
    typer.echo(f"cost_usd: {usd_string(price.amount_nanos)}")
    typer.echo(f"cost_nanos: {price.amount_nanos}")
    typer.echo(f"model: {price.provider}/{price.model}")
    typer.echo(f"card_version: {price.card_version}")
    if usage.service_tier is not None:
        typer.echo(f"service_tier: {usage.service_tier}")
    if price.flags:
        typer.echo(f"flags: {','.join(price.flags)}")
    parts = " ".join(f"{name}={nanos}" for name, nanos in price.components.items() if nanos)
    typer.echo(f"components_nanos: {parts or '-'}")


def list_command(
    provider: Annotated[str | None, typer.Option("--provider", help="Only this provider.")] = None,
    at: AtOption = None,
    as_json: JsonOption = False,
    cards: CardsOption = None,
) -> None:
    """List every model priced at an instant, with its prices (USD per 1M) and card version."""
    with _cli_errors():
        book = _book(cards)
        when = _instant(at)
        rows = []
        for prov, name in book.models(when):
            if provider is not None and prov != provider.lower():
                continue
            resolution = book.find(prov, name, when)
            if resolution is not None and resolution.rates.name == name:
                rows.append(_entry_dict(resolution.card, resolution.rates))
    if as_json:
        typer.echo(json.dumps(rows))
        return
    header = ("provider", "model", "input", "cache_read", "output", "batch", "tiers", "card")
    table = [header] + [
        (
            r["provider"],
            r["model"] + (" (deprecated)" if r["deprecated"] else ""),
            r["input"],
            r["cache_read"] or "=input",
            r["output"],
            r["batch"],
            ",".join(f">{t['above_input_tokens']}" for t in r["tiers"]) or "-",
            r["card_version"],
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        cells = (str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        typer.echo("  ".join(cells).rstrip())


def check_command(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Card files or directories (default: the bundled and configured ones)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Validate rate-card files; exits non-zero naming the file and line of each problem."""
    errors: list[str] = []
    loaded: list[RateCard] = []
    locations = list(paths) if paths else default_card_dirs()
    for location in locations:
        try:
            files = list(iter_card_files(location))
        except ConfigError as exc:
            errors.append(exc.message)
            continue
        for file in files:
            try:
                loaded.append(load_card(file))
            except ConfigError as exc:
                errors.append(exc.message)
    if not errors:
        try:
            RateCardBook(loaded)  # cross-card rules: unique versions
        except ConfigError as exc:
            errors.append(exc.message)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ok": not errors,
                    "cards": len(loaded),
                    "models": sum(len(card.models) for card in loaded),
                    "errors": errors,
                }
            )
        )
    else:
        for message in errors:
            typer.echo(f"error: {message}", err=True)
        if not errors:
            models = sum(len(card.models) for card in loaded)
            typer.echo(f"ok: {len(loaded)} cards, {models} models")
    if errors:
        raise typer.Exit(2)


def import_litellm_command(
    out: Annotated[
        Path, typer.Option("--out", help="Directory to write <provider>/<date>.yaml into.")
    ] = Path("litellm_rate_cards"),
    provider: Annotated[
        list[str] | None,
        typer.Option("--provider", help="Only this LiteLLM provider (repeatable)."),
    ] = None,
    effective_from: Annotated[
        str | None,
        typer.Option("--effective-from", help="Card date, YYYY-MM-DD (default: today, UTC)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Generate rate cards from the price map bundled in the installed litellm package."""
    from allotment.pricing.litellm_import import import_litellm

    with _cli_errors():
        when = _instant(effective_from).date() if effective_from else datetime.now(UTC).date()
        report = import_litellm(out, providers=provider, effective_from=when)
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
        return
    typer.echo(
        f"wrote {len(report.files)} cards ({report.models_written} models) to {out} from "
        f"litellm {report.litellm_version} (map {report.source_revision[:12]}); "
        f"skipped {report.models_skipped} models"
    )
    for reason, count in sorted(report.skipped.items(), key=lambda item: -item[1]):
        typer.echo(f"  skipped {count}: {reason}")
    if report.batch_not_uniform:
        typer.echo(f"  {report.batch_not_uniform} models: batch prices not one ratio, priced as sync")


def register(cli: typer.Typer) -> None:
    """Add ``price`` and the ``rates`` group to the root ``allotment`` app."""
    cli.command("price")(price_command)
    rates = typer.Typer(help="Inspect, validate and generate rate cards.", no_args_is_help=True)
    rates.command("list")(list_command)
    rates.command("check")(check_command)
    rates.command("import-litellm")(import_litellm_command)
    cli.add_typer(rates, name="rates")
