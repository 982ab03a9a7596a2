"""Generate rate cards from the price map bundled inside the installed ``litellm`` package.

Reads the JSON file itself with exact Decimals: litellm is never imported, the network never used.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from allotment.errors import ConfigError
from allotment.pricing.cards import GLOB_CHARS

PRICE_MAP_FILE = "model_prices_and_context_window_backup.json"
TOKEN_MODES = frozenset({"chat", "completion", "embedding", "responses"})
_NO_OUTPUT_MODES = frozenset({"embedding"})
_MILLION = Decimal(1_000_000)
_PROVIDER_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
# Longest prefix first: "cache_creation_input_token_cost_above_1hr" must win over its stem.
_TIER_KEY = re.compile(
    r"^(?P<kind>input_cost_per_token|output_cost_per_token|cache_read_input_token_cost|"
    r"cache_creation_input_token_cost_above_1hr|cache_creation_input_token_cost)"
    r"_above_(?P<n>\d+(?:\.\d+)?)(?P<k>k?)_tokens$"
)
_TIER_FIELDS = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cache_read",
    "cache_creation_input_token_cost": "cache_write",
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h",
}
# Service-tier prices: a price key, optionally at a threshold, with the tier as a suffix
# ("input_cost_per_token_priority", "output_cost_per_token_above_272k_tokens_flex").
SERVICE_TIER_SUFFIXES = ("flex", "priority", "ultrafast", "decisions", "balanced")
_SERVICE_TIER_KEY = re.compile(
    r"^(?P<kind>input_cost_per_token|output_cost_per_token|cache_read_input_token_cost|"
    r"cache_creation_input_token_cost_above_1hr|cache_creation_input_token_cost)"
    r"(?:_above_(?P<n>\d+(?:\.\d+)?)(?P<k>k?)_tokens)?"
    r"_(?P<tier>" + "|".join(SERVICE_TIER_SUFFIXES) + r")$"
)
_BASE_FIELDS = {
    "cache_read": "cache_read_input_token_cost",
    "cache_write": "cache_creation_input_token_cost",
    "cache_write_1h": "cache_creation_input_token_cost_above_1hr",
}


@dataclass
class ImportReport:
    """What an import wrote and skipped, with reasons; ``to_dict`` is the ``--json`` shape."""

    litellm_version: str
    source_revision: str
    price_map: str
    effective_from: date
    files: list[str] = field(default_factory=list)
    models_written: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    batch_not_uniform: int = 0

    @property
    def models_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "litellm_version": self.litellm_version,
            "source_revision": self.source_revision,
            "price_map": self.price_map,
            "effective_from": self.effective_from.isoformat(),
            "cards": len(self.files),
            "files": self.files,
            "models_written": self.models_written,
            "models_skipped": self.models_skipped,
            "skipped_by_reason": dict(sorted(self.skipped.items())),
            "batch_not_uniform": self.batch_not_uniform,
        }


# --- locating the map -------------------------------------------------------------------


def litellm_version() -> str:
    """The installed litellm version; ConfigError when litellm is not installed."""
    try:
        return importlib.metadata.version("litellm")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            "litellm is not installed; install it (pip install 'allotment[litellm]') to import "
            "its bundled price map",
            code="litellm_not_installed",
        ) from None


def price_map_path() -> Path:
    """The bundled JSON inside the installed litellm package, found without importing it."""
    litellm_version()
    spec = importlib.util.find_spec("litellm")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / PRICE_MAP_FILE
        if candidate.is_file():
            return candidate
    raise ConfigError(f"the installed litellm package has no {PRICE_MAP_FILE}", code="litellm_not_installed")


def git_blob_id(data: bytes) -> str:
    """The git blob id of ``data``: the revision LiteLLM itself reports for its map."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's id


def load_price_map(path: Path) -> tuple[dict[str, Any], str]:
    """The map with every float parsed as an exact Decimal, and its git blob id."""
    data = path.read_bytes()
    try:
        parsed = json.loads(data, parse_float=Decimal)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}", code="invalid_price_map") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"{path}: expected a JSON object", code="invalid_price_map")
    return parsed, git_blob_id(data)


# --- converting one entry ---------------------------------------------------------------


def _decimal(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        return None
    return Decimal(value)


def per_million(per_token: Decimal) -> Decimal:
    """USD per token -> USD per 1M tokens, exactly (2.5e-06 -> 2.5)."""
    value = (per_token * _MILLION).normalize()
    # normalize() can leave an exponent ("1E+1"); quantize back to a plain integer then.
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value


def _tiers(entry: Mapping[str, Any], base: dict[str, Decimal | None]) -> list[dict[str, Any]]:
    by_threshold: dict[int, dict[str, Decimal]] = {}
    for key, value in entry.items():
        match = _TIER_KEY.match(key)
        price = _decimal(value)
        if match is None or price is None:
            continue
        threshold = int(Decimal(match["n"]) * (1000 if match["k"] else 1))
        by_threshold.setdefault(threshold, {})[_TIER_FIELDS[match["kind"]]] = price
    tiers: list[dict[str, Any]] = []
    carried = dict(base)
    for threshold in sorted(by_threshold):
        found = by_threshold[threshold]
        if "input" not in found:
            continue  # LiteLLM keys a tier on its input price; cache-only thresholds don't exist
        # LiteLLM falls back to the rate in force below the threshold for anything unlisted.
        current = {name: found.get(name, carried.get(name)) for name in _TIER_FIELDS.values()}
        tier: dict[str, Any] = {"above_input_tokens": threshold}
        for name in ("input", "output", "cache_read", "cache_write", "cache_write_1h"):
            if current.get(name) is not None:
                tier[name] = current[name]
        tiers.append(tier)
        carried = current
    return tiers


def _service_tiers(entry: Mapping[str, Any], thresholds: set[int]) -> dict[str, dict[str, Any]]:
    """``service_tiers`` of a card entry from the map's ``_<tier>``-suffixed prices (per 1M).

    A tier needs its own input and output price (else it is left out: priced at standard and
    flagged). Its long-context prices are kept at the thresholds the entry's own ``tiers``
    have (a request's context tier is chosen by those), each needing input and output too.
    """
    found: dict[str, dict[int | None, dict[str, Decimal]]] = {}
    for key, value in entry.items():
        match = _SERVICE_TIER_KEY.match(key)
        price = _decimal(value)
        if match is None or price is None or price < 0:
            continue
        threshold = None
        if match["n"] is not None:
            threshold = int(Decimal(match["n"]) * (1000 if match["k"] else 1))
        prices = found.setdefault(match["tier"], {}).setdefault(threshold, {})
        prices[_TIER_FIELDS[match["kind"]]] = price
    result: dict[str, dict[str, Any]] = {}
    for tier in sorted(found):
        levels = found[tier]
        own = levels.get(None, {})
        if "input" not in own or "output" not in own:
            continue
        rendered: dict[str, Any] = {
            name: per_million(own[name]) for name in _TIER_FIELDS.values() if name in own
        }
        context = [
            {"above_input_tokens": threshold}
            | {name: per_million(prices[name]) for name in _TIER_FIELDS.values() if name in prices}
            for threshold, prices in sorted((t, p) for t, p in levels.items() if t is not None)
            if threshold in thresholds and "input" in prices and "output" in prices
        ]
        if context:
            rendered["tiers"] = context
        result[tier] = rendered
    return result


def _batch(entry: Mapping[str, Any]) -> tuple[Decimal | None, bool]:
    """The uniform batch ratio, and whether batch prices existed but were not uniform."""
    pairs = [
        ("input_cost_per_token", "input_cost_per_token_batches"),
        ("output_cost_per_token", "output_cost_per_token_batches"),
        ("cache_read_input_token_cost", "cache_read_input_token_cost_batches"),
        ("cache_creation_input_token_cost", "cache_creation_input_token_cost_batches"),
    ]
    if "input_cost_per_token_batches" not in entry and "output_cost_per_token_batches" not in entry:
        return None, False
    ratios: set[Decimal] = set()
    for sync_key, batch_key in pairs:
        sync, batch = _decimal(entry.get(sync_key)), _decimal(entry.get(batch_key))
        if sync is None or (batch is None and sync_key.startswith("cache")):
            continue
        if batch is None:
            return None, True
        if sync == 0:
            if batch != 0:
                return None, True
            continue
        ratios.add((batch / sync).normalize())
    if not ratios:
        return None, False
    if len(ratios) != 1:
        return None, True
    return ratios.pop(), False


def _search_fee(entry: Mapping[str, Any]) -> Decimal | None:
    fees = entry.get("search_context_cost_per_query")
    if not isinstance(fees, Mapping):
        return None
    values = {_decimal(value) for value in fees.values()}
    # Only a single price per query maps onto a flat per-call fee.
    return values.pop() if len(values) == 1 and None not in values else None


def convert_entry(
    provider: str, name: str, entry: Mapping[str, Any], effective_from: date
) -> tuple[str, dict[str, Any] | None, str | None]:
    """One map entry -> (card model name, card entry or None, skip reason or None)."""
    model = name[len(provider) + 1 :] if name.startswith(f"{provider}/") else name
    mode = entry.get("mode")
    if any(ch in GLOB_CHARS for ch in model):
        return model, None, "glob characters in the model name"
    if mode is not None and mode not in TOKEN_MODES:
        return model, None, f"mode {mode} is not priced per token"
    if "tiered_pricing" in entry:
        return model, None, "tiered_pricing ranges are not supported"
    input_price = _decimal(entry.get("input_cost_per_token"))
    output_price = _decimal(entry.get("output_cost_per_token"))
    if input_price is None:
        return model, None, "no per-token input price"
    if output_price is None:
        if mode not in _NO_OUTPUT_MODES:
            return model, None, "no per-token output price"
        output_price = Decimal(0)
    base: dict[str, Decimal | None] = {"input": input_price, "output": output_price}
    for field_name, key in _BASE_FIELDS.items():
        base[field_name] = _decimal(entry.get(key))
    if any(value is not None and value < 0 for value in base.values()):
        return model, None, "negative price"

    result: dict[str, Any] = {name_: per_million(value) for name_, value in base.items() if value is not None}
    tiers = _tiers(entry, base)
    if tiers:
        result["tiers"] = [
            {k: (v if k == "above_input_tokens" else per_million(v)) for k, v in tier.items()}
            for tier in tiers
        ]
    service_tiers = _service_tiers(entry, {tier["above_input_tokens"] for tier in tiers})
    if service_tiers:
        result["service_tiers"] = service_tiers
    batch, not_uniform = _batch(entry)
    if batch is not None and batch != 1:
        result["batch"] = batch
    if not_uniform:
        result["notes"] = "batch prices in the LiteLLM map are not one ratio; batch priced as sync"
    fee = _search_fee(entry)
    if fee:
        result["per_call"] = {"search_call": fee}
    for key, target in (
        ("max_output_tokens", "max_output_tokens"),
        ("max_input_tokens", "context_window"),
    ):
        value = entry.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            result[target] = value
    if isinstance(mode, str):
        result["mode"] = mode
    deprecation = entry.get("deprecation_date")
    if (
        isinstance(deprecation, str)
        and re.fullmatch(r"\d{4}-\d{2}-\d{2}", deprecation)
        and date.fromisoformat(deprecation) <= effective_from
    ):
        result["deprecated"] = True
    return model, result, None


# --- rendering and writing --------------------------------------------------------------


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")  # plain digits: the loader reads this text exactly
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # a JSON string is a valid YAML double-quoted scalar


def _render_tiers(tiers: list[dict[str, Any]], indent: str) -> list[str]:
    lines = [f"{indent}tiers:"]
    for tier in tiers:
        items = list(tier.items())
        first_key, first_value = items[0]
        lines.append(f"{indent}  - {first_key}: {_scalar(first_value)}")
        lines.extend(f"{indent}    {k}: {_scalar(v)}" for k, v in items[1:])
    return lines


def render_card(
    provider: str, version: str, effective_from: date, source: str, models: Mapping[str, Any]
) -> str:
    """YAML text for one card, in the bundled cards' layout."""
    lines = [
        f"provider: {provider}",
        f"version: {_scalar(version)}",
        f"effective_from: {effective_from.isoformat()}",
        f"source: {_scalar(source)}",
        "models:",
    ]
    for model in sorted(models):
        lines.append(f"  {_scalar(model)}:")
        for key, value in models[model].items():
            if key == "tiers":
                lines.extend(_render_tiers(value, "    "))
            elif key == "service_tiers":
                lines.append("    service_tiers:")
                for tier_name, prices in value.items():
                    lines.append(f"      {tier_name}:")
                    for price_key, price in prices.items():
                        if price_key == "tiers":
                            lines.extend(_render_tiers(price, "        "))
                        else:
                            lines.append(f"        {price_key}: {_scalar(price)}")
            elif key == "per_call":
                inner = ", ".join(f"{k}: {_scalar(v)}" for k, v in value.items())
                lines.append(f"    per_call: {{{inner}}}")
            else:
                lines.append(f"    {key}: {_scalar(value)}")
    return "\n".join(lines) + "\n"


def build_cards(
    price_map: Mapping[str, Any],
    *,
    litellm_version: str,
    revision: str,
    effective_from: date,
    providers: Iterable[str] | None = None,
    report: ImportReport | None = None,
) -> dict[str, str]:
    """Card YAML text per provider (``litellm-<provider>-<version>``), counting skips."""
    wanted = {p.lower() for p in providers} if providers else None
    grouped: dict[str, dict[str, dict[str, Any]]] = {}
    for name, entry in price_map.items():
        if not isinstance(entry, Mapping):
            continue
        provider = entry.get("litellm_provider")
        if not isinstance(provider, str) or not _PROVIDER_RE.match(provider):
            if report is not None:
                report.skipped["no valid litellm_provider"] += 1
            continue
        if wanted is not None and provider not in wanted:
            continue
        model, converted, reason = convert_entry(provider, name, entry, effective_from)
        models = grouped.setdefault(provider, {})
        if converted is not None and model in models:
            converted, reason = None, "duplicate model name after removing the provider prefix"
        if converted is None:
            if report is not None:
                report.skipped[reason or "skipped"] += 1
            continue
        models[model] = converted
        if report is not None:
            report.models_written += 1
            report.batch_not_uniform += "notes" in converted
    source = (
        f"LiteLLM {litellm_version} bundled {PRICE_MAP_FILE} (git blob {revision}), "
        f"imported by allotment; effective_from {effective_from.isoformat()} chosen at import"
    )
    return {
        provider: render_card(
            provider, f"litellm-{provider}-{litellm_version}", effective_from, source, models
        )
        for provider, models in sorted(grouped.items())
        if models
    }


def import_litellm(
    out_dir: Path | str,
    *,
    providers: Iterable[str] | None = None,
    effective_from: date | None = None,
    price_map: Path | None = None,
) -> ImportReport:
    """Write ``<out_dir>/<provider>/<effective_from>.yaml`` for every provider in the map."""
    path = price_map or price_map_path()
    version = litellm_version() if price_map is None else _version_or_unknown()
    when = effective_from or date.today()
    data, revision = load_price_map(path)
    report = ImportReport(version, revision, str(path), when)
    cards = build_cards(
        data,
        litellm_version=version,
        revision=revision,
        effective_from=when,
        providers=providers,
        report=report,
    )
    root = Path(out_dir)
    for provider, text in cards.items():
        target = root / provider / f"{when.isoformat()}.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        report.files.append(str(target))
    return report


def _version_or_unknown() -> str:
    try:
        return importlib.metadata.version("litellm")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
