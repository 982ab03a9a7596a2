"""Rate-card files: the YAML format, its strict validator, and where bundled cards live.

A card prices one provider's models from one date; every price is an exact Decimal per 1M tokens.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

import yaml

from allotment.errors import ConfigError
from allotment.money import to_decimal
from allotment.service_tiers import valid_card_tier_name

ENV_CARD_DIRS = "ALLOTMENT_RATE_CARDS"
CARD_SUFFIXES = (".yaml", ".yml")
PER_CALL_KINDS = ("tool_call", "search_call")
GLOB_CHARS = frozenset("*?[")

_PROVIDER_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_TOP_KEYS = frozenset({"provider", "version", "effective_from", "source", "models", "notes", "bare_ids"})
_REQUIRED_TOP = ("provider", "version", "effective_from", "models")
_PRICE_KEYS = ("input", "output", "cache_read", "cache_write", "cache_write_1h")
_MODEL_KEYS = frozenset(
    {
        *_PRICE_KEYS,
        "aliases",
        "batch",
        "tiers",
        "service_tiers",
        "per_call",
        "max_output_tokens",
        "context_window",
        "deprecated",
        "mode",
        "notes",
    }
)
_TIER_KEYS = frozenset({"above_input_tokens", *_PRICE_KEYS})
_SERVICE_TIER_KEYS = frozenset({"multiplier", "tiers", "notes", *_PRICE_KEYS})
_BOOL_TEXT = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _invalid(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}", code="invalid_rate_card")


@dataclass(frozen=True, slots=True)
class Tier:
    """Prices that replace the base prices for a whole request above an input-token threshold."""

    above_input_tokens: int
    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None


@dataclass(frozen=True, slots=True)
class ServiceTierRates:
    """A model's prices on one service tier (``priority``, ``flex`` ...): one of two forms.

    ``multiplier``: every token price in force at standard (after the context tier) times it.
    Explicit: ``input`` and ``output`` (and any cache prices) replace the standard prices, and
    ``tiers`` gives this service tier's own long-context prices; a cache price it does not list
    is the standard one in force. See ``allotment.pricing.book.unit_prices``.
    """

    name: str
    multiplier: Decimal | None = None
    input: Decimal | None = None
    output: Decimal | None = None
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    notes: str | None = None

    def tier_above(self, above_input_tokens: int) -> Tier | None:
        """This service tier's own context tier at a standard threshold, if it lists one."""
        for tier in self.tiers:
            if tier.above_input_tokens == above_input_tokens:
                return tier
        return None


@dataclass(frozen=True, slots=True)
class ModelRates:
    """One model's entry in a card. Prices are USD per 1M tokens; ``None`` means "not listed"."""

    name: str
    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None
    aliases: tuple[str, ...] = ()
    batch: Decimal = Decimal(1)
    tiers: tuple[Tier, ...] = ()
    service_tiers: Mapping[str, ServiceTierRates] = field(default_factory=lambda: MappingProxyType({}))
    per_call: Mapping[str, Decimal] = field(default_factory=lambda: MappingProxyType({}))
    max_output_tokens: int | None = None
    context_window: int | None = None
    deprecated: bool = False
    mode: str | None = None
    notes: str | None = None
    line: int = 0  # where the entry starts in its file, for messages

    @property
    def is_pattern(self) -> bool:
        """True for a wildcard entry such as Ollama's ``*``."""
        return any(ch in GLOB_CHARS for ch in self.name)


@dataclass(frozen=True, slots=True)
class RateCard:
    """One provider's prices from ``effective_from`` on, identified by a unique ``version``."""

    provider: str
    version: str
    effective_from: datetime
    source: str
    models: Mapping[str, ModelRates]
    path: str = "<memory>"
    version_line: int = 0
    notes: str | None = None
    # whether a bare model id (``gpt-4o``, no ``provider/``) may resolve to this provider; a
    # card for a host reselling another provider's models (Azure) says false
    bare_ids: bool = True

    @property
    def where(self) -> str:
        return f"{self.path}:{self.version_line}"


# --- YAML node helpers: we read scalars as their source text so prices stay exact ------


def _at(path: str, node: yaml.Node) -> str:
    return f"{path}:{node.start_mark.line + 1}"


def _mapping(path: str, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise _invalid(_at(path, node), f"{what} must be a mapping")
    seen: set[str] = set()
    items: list[tuple[str, yaml.Node, yaml.Node]] = []
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise _invalid(_at(path, key_node), f"{what} has a non-scalar key")
        key = str(key_node.value)
        if key in seen:
            raise _invalid(_at(path, key_node), f"duplicate key {key!r} in {what}")
        seen.add(key)
        items.append((key, key_node, value_node))
    return items


def _scalar(path: str, node: yaml.Node, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise _invalid(_at(path, node), f"{what} must be a single value")
    return str(node.value)


def _text(path: str, node: yaml.Node, what: str) -> str:
    value = _scalar(path, node, what).strip()
    if not value:
        raise _invalid(_at(path, node), f"{what} must not be empty")
    return value


def _price(path: str, node: yaml.Node, what: str) -> Decimal:
    raw = _scalar(path, node, what)
    try:
        # The scalar's text, not a float: "0.075" must stay exactly 0.075.
        value = to_decimal(raw)
    except ValueError:
        raise _invalid(_at(path, node), f"{what} must be a decimal number, got {raw!r}") from None
    if value < 0:
        raise _invalid(_at(path, node), f"{what} must not be negative, got {raw}")
    return value


def _count(path: str, node: yaml.Node, what: str) -> int:
    raw = _scalar(path, node, what).replace("_", "")
    if not re.fullmatch(r"\d+", raw):
        raise _invalid(_at(path, node), f"{what} must be a non-negative integer, got {raw!r}")
    return int(raw)


def _bool(path: str, node: yaml.Node, what: str) -> bool:
    raw = _scalar(path, node, what).lower()
    if raw not in _BOOL_TEXT:
        raise _invalid(_at(path, node), f"{what} must be true or false, got {raw!r}")
    return _BOOL_TEXT[raw]


def _instant(path: str, node: yaml.Node) -> datetime:
    raw = _text(path, node, "effective_from")
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            return datetime.combine(date.fromisoformat(raw), datetime.min.time(), UTC)
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise _invalid(
            _at(path, node), f"effective_from must be a date or ISO datetime, got {raw!r}"
        ) from None
    if parsed.tzinfo is None:
        raise _invalid(_at(path, node), "effective_from datetime needs a timezone (e.g. Z)")
    return parsed.astimezone(UTC)


def _unknown(path: str, key: str, key_node: yaml.Node, allowed: frozenset[str], what: str) -> None:
    if key not in allowed:
        raise _invalid(
            _at(path, key_node),
            f"unknown key {key!r} in {what} (allowed: {', '.join(sorted(allowed))})",
        )


# --- the card structure -------------------------------------------------------------


def _tier(path: str, node: yaml.Node, owner: str) -> Tier:
    what = f"a tier of {owner}"
    values: dict[str, object] = {}
    for key, key_node, value_node in _mapping(path, node, what):
        _unknown(path, key, key_node, _TIER_KEYS, what)
        if key == "above_input_tokens":
            values[key] = _count(path, value_node, f"{key} of {what}")
        else:
            values[key] = _price(path, value_node, f"{key} of {what}")
    for required in ("above_input_tokens", "input", "output"):
        if required not in values:
            raise _invalid(_at(path, node), f"{what} needs {required!r}")
    return Tier(**values)  # type: ignore[arg-type]


def _tiers(path: str, node: yaml.Node, owner: str) -> tuple[Tier, ...]:
    """A context-tier list of ``owner`` (``model 'x'``, or a service tier of it)."""
    if not isinstance(node, yaml.SequenceNode):
        raise _invalid(_at(path, node), f"tiers of {owner} must be a list")
    tiers: list[Tier] = []
    for item in node.value:
        tier = _tier(path, item, owner)
        if tiers and tier.above_input_tokens <= tiers[-1].above_input_tokens:
            # Resolution picks the last tier whose threshold is exceeded: order must be strict.
            raise _invalid(
                _at(path, item),
                f"tiers of {owner} must be sorted by above_input_tokens with distinct "
                f"thresholds ({tier.above_input_tokens} after {tiers[-1].above_input_tokens})",
            )
        tiers.append(tier)
    return tuple(tiers)


def _service_tier(
    path: str, name: str, key_node: yaml.Node, node: yaml.Node, model: ModelRates
) -> ServiceTierRates:
    what = f"service tier {name!r} of model {model.name!r}"
    why = valid_card_tier_name(name)
    if why is not None:
        raise _invalid(_at(path, key_node), f"{what}: the name {why}")
    values: dict[str, object] = {"name": name}
    for key, k_node, v_node in _mapping(path, node, what):
        _unknown(path, key, k_node, _SERVICE_TIER_KEYS, what)
        if key == "multiplier":
            values[key] = _price(path, v_node, f"multiplier of {what}")
        elif key == "tiers":
            values[key] = _tiers(path, v_node, what)
        elif key == "notes":
            values[key] = _text(path, v_node, f"notes of {what}")
        else:
            values[key] = _price(path, v_node, f"{key} price of {what}")
    explicit = [key for key in (*_PRICE_KEYS, "tiers") if key in values]
    if "multiplier" in values:
        if explicit:
            raise _invalid(
                _at(path, key_node),
                f"{what} gives both a multiplier and {', '.join(explicit)}: use one form or the other",
            )
    else:
        for required in ("input", "output"):
            if required not in values:
                raise _invalid(
                    _at(path, key_node),
                    f"{what} needs a multiplier, or explicit prices with at least "
                    f"'input' and 'output' (missing {required!r})",
                )
    standard = {tier.above_input_tokens for tier in model.tiers}
    for tier in values.get("tiers", ()):  # type: ignore[attr-defined]
        if tier.above_input_tokens not in standard:
            # a request is put in its context tier by the standard thresholds: an unmatched
            # threshold here could never apply, and is almost certainly a typo
            raise _invalid(
                _at(path, key_node),
                f"{what}: tier above_input_tokens {tier.above_input_tokens} matches none of the "
                f"model's own tiers ({', '.join(map(str, sorted(standard))) or 'none'})",
            )
    return ServiceTierRates(**values)  # type: ignore[arg-type]


def _service_tiers(path: str, node: yaml.Node, model: ModelRates) -> Mapping[str, ServiceTierRates]:
    what = f"service_tiers of model {model.name!r}"
    found: dict[str, ServiceTierRates] = {}
    for name, key_node, value_node in _mapping(path, node, what):
        found[name] = _service_tier(path, name, key_node, value_node, model)
    return MappingProxyType(found)


def _aliases(path: str, node: yaml.Node, model: str) -> tuple[str, ...]:
    if isinstance(node, yaml.ScalarNode):
        return (_text(path, node, f"alias of {model!r}"),)
    if not isinstance(node, yaml.SequenceNode):
        raise _invalid(_at(path, node), f"aliases of model {model!r} must be a list of globs")
    return tuple(_text(path, item, f"alias of {model!r}") for item in node.value)


def _per_call(path: str, node: yaml.Node, model: str) -> Mapping[str, Decimal]:
    what = f"per_call of model {model!r}"
    fees: dict[str, Decimal] = {}
    for key, key_node, value_node in _mapping(path, node, what):
        _unknown(path, key, key_node, frozenset(PER_CALL_KINDS), what)
        fees[key] = _price(path, value_node, f"{key} in {what}")
    return MappingProxyType(fees)


def _model(path: str, name: str, key_node: yaml.Node, node: yaml.Node) -> ModelRates:
    what = f"model {name!r}"
    values: dict[str, object] = {"name": name, "line": key_node.start_mark.line + 1}
    service_tiers: yaml.Node | None = None
    for key, k_node, v_node in _mapping(path, node, what):
        _unknown(path, key, k_node, _MODEL_KEYS, what)
        if key == "service_tiers":
            service_tiers = v_node  # read once the model's own tiers are known
        elif key in _PRICE_KEYS:
            values[key] = _price(path, v_node, f"{key} price of {what}")
        elif key == "batch":
            values[key] = _price(path, v_node, f"batch multiplier of {what}")
        elif key == "aliases":
            values[key] = _aliases(path, v_node, name)
        elif key == "tiers":
            values[key] = _tiers(path, v_node, f"model {name!r}")
        elif key == "per_call":
            values[key] = _per_call(path, v_node, name)
        elif key in ("max_output_tokens", "context_window"):
            values[key] = _count(path, v_node, f"{key} of {what}")
        elif key == "deprecated":
            values[key] = _bool(path, v_node, f"deprecated of {what}")
        else:  # mode, notes
            values[key] = _text(path, v_node, f"{key} of {what}")
    for required in ("input", "output"):
        if required not in values:
            raise _invalid(_at(path, key_node), f"{what} needs an {required!r} price")
    rates = ModelRates(**values)  # type: ignore[arg-type]
    if service_tiers is None:
        return rates
    return replace(rates, service_tiers=_service_tiers(path, service_tiers, rates))


def parse_card(text: str, path: str = "<memory>") -> RateCard:
    """Parse and validate one card's YAML text; errors name ``path`` and the line."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        root = yaml.compose(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{line}: not valid YAML: {problem}", code="invalid_rate_card") from None
    if root is None:
        raise _invalid(f"{path}:1", "the file is empty")
    top: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key, key_node, value_node in _mapping(path, root, "a rate card"):
        _unknown(path, key, key_node, _TOP_KEYS, "a rate card")
        top[key] = (key_node, value_node)
    for required in _REQUIRED_TOP:
        if required not in top:
            raise _invalid(_at(path, root), f"missing required key {required!r}")

    provider_node = top["provider"][1]
    provider = _text(path, provider_node, "provider")
    if not _PROVIDER_RE.match(provider):
        raise _invalid(
            _at(path, provider_node),
            f"provider must be lowercase letters, digits, '_', '-' or '.', got {provider!r}",
        )
    version_node = top["version"][1]
    version = _text(path, version_node, "version")
    effective_from = _instant(path, top["effective_from"][1])
    source = _text(path, top["source"][1], "source") if "source" in top else ""
    notes = _text(path, top["notes"][1], "notes") if "notes" in top else None
    bare_ids = _bool(path, top["bare_ids"][1], "bare_ids") if "bare_ids" in top else True

    models_node = top["models"][1]
    models: dict[str, ModelRates] = {}
    for name, key_node, value_node in _mapping(path, models_node, "models"):
        models[name] = _model(path, name, key_node, value_node)
    if not models:
        raise _invalid(_at(path, models_node), "models must list at least one model")
    return RateCard(
        provider=provider,
        version=version,
        effective_from=effective_from,
        source=source,
        models=MappingProxyType(models),
        path=path,
        version_line=version_node.start_mark.line + 1,
        notes=notes,
        bare_ids=bare_ids,
    )


def load_card(path: Path | str) -> RateCard:
    """Read and validate one card file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{file}: cannot read rate card: {exc.strerror}", code="invalid_rate_card"
        ) from None
    return parse_card(text, str(file))


def iter_card_files(location: Path | str) -> Iterator[Path]:
    """Every card file under a directory (recursively, sorted), or the file itself."""
    root = Path(location)
    if root.is_file():
        yield root
        return
    if not root.is_dir():
        raise ConfigError(f"{root}: no such rate-card directory", code="invalid_rate_card")
    for file in sorted(root.rglob("*")):
        if file.suffix in CARD_SUFFIXES and file.is_file() and not file.name.startswith("."):
            yield file


def load_cards(locations: Iterable[Path | str]) -> list[RateCard]:
    """Every card in the given directories or files, in a stable order."""
    return [load_card(file) for location in locations for file in iter_card_files(location)]


def _bundled_dir() -> Path | None:
    try:
        bundled = importlib.resources.files("allotment") / "rate_cards"
    except (ModuleNotFoundError, TypeError):
        return None
    if bundled.is_dir():
        return Path(str(bundled))
    # Editable installs: the wheel's force-include is absent, the repo's folder is there.
    repo = Path(__file__).resolve().parents[3] / "rate_cards"
    return repo if repo.is_dir() else None


def default_card_dirs(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The bundled cards, then every directory listed in ``ALLOTMENT_RATE_CARDS``."""
    env = os.environ if environ is None else environ
    dirs: list[Path] = []
    bundled = _bundled_dir()
    if bundled is not None:
        dirs.append(bundled)
    for item in env.get(ENV_CARD_DIRS, "").split(os.pathsep):
        if item.strip():
            dirs.append(Path(item.strip()).expanduser())
    return dirs
