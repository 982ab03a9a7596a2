"""Generating cards from LiteLLM's bundled price map: exact conversion, tiers, batch, skips.

Runs on the real installed map (litellm==1.106.2) and on small hand-written maps.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from allotment.cli.rates import register
from allotment.errors import ConfigError
from allotment.pricing import RateCardBook, parse_card
from allotment.pricing import litellm_import as li
from allotment.types import Usage

AT = datetime(2026, 7, 1, tzinfo=UTC)
DAY = date(2026, 6, 8)


def has_litellm() -> bool:
    try:
        li.price_map_path()
    except ConfigError:
        return False
    return True


needs_litellm = pytest.mark.skipif(not has_litellm(), reason="litellm is not installed")


def convert(entry: dict[str, Any], name: str = "m", provider: str = "p") -> dict[str, Any]:
    text = json.dumps({"litellm_provider": provider, **entry})
    model, result, reason = li.convert_entry(provider, name, json.loads(text, parse_float=Decimal), DAY)
    assert reason is None, reason
    assert result is not None
    return result


def test_per_token_prices_become_exact_per_million() -> None:
    result = convert(
        {
            "input_cost_per_token": 7.5e-08,
            "output_cost_per_token": 4.5e-06,
            "cache_read_input_token_cost": 7.5e-09,
            "max_output_tokens": 128000,
            "max_input_tokens": 272000,
            "mode": "chat",
        }
    )
    assert result["input"] == Decimal("0.075")
    assert result["output"] == Decimal("4.5")
    assert result["cache_read"] == Decimal("0.0075")
    assert (result["max_output_tokens"], result["context_window"]) == (128000, 272000)
    assert li.per_million(Decimal("1e-05")) == Decimal(10)
    assert format(li.per_million(Decimal("1e-05")), "f") == "10"


def test_threshold_keys_become_whole_request_tiers() -> None:
    result = convert(
        {
            "input_cost_per_token": 3e-06,
            "output_cost_per_token": 1.5e-05,
            "cache_read_input_token_cost": 3e-07,
            "cache_creation_input_token_cost": 3.75e-06,
            "cache_creation_input_token_cost_above_1hr": 6e-06,
            "input_cost_per_token_above_200k_tokens": 6e-06,
            "output_cost_per_token_above_200k_tokens": 2.25e-05,
            "cache_read_input_token_cost_above_200k_tokens": 6e-07,
            "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 1.2e-05,
            "input_cost_per_token_above_200k_tokens_priority": 1e-05,  # service tier: ignored
        }
    )
    assert result["cache_write_1h"] == Decimal(6)
    assert result["tiers"] == [
        {
            "above_input_tokens": 200000,
            "input": Decimal(6),
            "output": Decimal("22.5"),
            "cache_read": Decimal("0.6"),
            "cache_write": Decimal("3.75"),  # not listed above 200k: LiteLLM keeps the base rate
            "cache_write_1h": Decimal(12),
        }
    ]


def test_batch_multiplier_only_when_uniform() -> None:
    uniform = convert(
        {
            "input_cost_per_token": 2.5e-06,
            "output_cost_per_token": 1e-05,
            "input_cost_per_token_batches": 1.25e-06,
            "output_cost_per_token_batches": 5e-06,
        }
    )
    assert uniform["batch"] == Decimal("0.5")
    assert "notes" not in uniform
    mixed = convert(
        {
            "input_cost_per_token": 2.5e-06,
            "output_cost_per_token": 1e-05,
            "cache_read_input_token_cost": 2.5e-07,
            "input_cost_per_token_batches": 1.25e-06,
            "output_cost_per_token_batches": 5e-06,
            "cache_read_input_token_cost_batches": 1.3e-07,
        }
    )
    assert "batch" not in mixed
    assert "not one ratio" in mixed["notes"]


def test_skips_non_token_entries() -> None:
    image = {"litellm_provider": "p", "mode": "image_generation", "output_cost_per_image": 0.04}
    audio = {"litellm_provider": "p", "mode": "chat", "input_cost_per_second": 0.0001}
    ranges = {
        "litellm_provider": "p",
        "input_cost_per_token": 1e-06,
        "output_cost_per_token": 1e-06,
        "tiered_pricing": [{"range": [0, 32000]}],
    }
    for entry, words in ((image, "mode"), (audio, "input price"), (ranges, "tiered_pricing")):
        _, result, reason = li.convert_entry("p", "x", entry, DAY)
        assert result is None and reason is not None and words in reason
    embedding = convert({"input_cost_per_token": 2e-08, "mode": "embedding"})
    assert embedding["output"] == Decimal(0)


def test_built_cards_load_and_report_counts(tmp_path: Path) -> None:
    price_map = {
        "sample_spec": {"litellm_provider": "one of https://docs.litellm.ai/docs/providers"},
        "p/alpha": {
            "litellm_provider": "p",
            "input_cost_per_token": 1e-06,
            "output_cost_per_token": 2e-06,
        },
        "beta": {"litellm_provider": "p", "mode": "rerank", "input_cost_per_query": 0.002},
        "gamma": {"litellm_provider": "q", "input_cost_per_token": 0, "output_cost_per_token": 0},
    }
    path = tmp_path / "map.json"
    path.write_text(json.dumps(price_map))
    report = li.import_litellm(tmp_path / "out", effective_from=DAY, price_map=path)
    assert report.models_written == 2
    assert report.models_skipped == 2
    assert sorted(Path(f).relative_to(tmp_path / "out").as_posix() for f in report.files) == [
        "p/2026-06-08.yaml",
        "q/2026-06-08.yaml",
    ]
    book = RateCardBook.load([tmp_path / "out"])
    price = book.price("p", "alpha", Usage(input_tokens=1_000_000, output_tokens=1_000_000), AT)
    assert price.amount_nanos == 3_000_000_000
    assert price.card_version.startswith("litellm-p-")
    assert price.model == "alpha"  # the provider prefix is dropped from card names


@needs_litellm
def test_the_real_bundled_map_imports_and_loads(tmp_path: Path) -> None:
    report = li.import_litellm(tmp_path, effective_from=DAY)
    assert report.litellm_version == "1.106.2"
    assert report.source_revision.startswith("98fee42d")
    assert report.models_written > 2_500
    assert report.models_skipped > 0
    book = RateCardBook.load([tmp_path])
    assert len(book.cards) == len(report.files) > 50
    raw = json.loads(Path(report.price_map).read_text(), parse_float=Decimal)

    def per_m(key: str, field: str) -> Decimal:
        return Decimal(raw[key][field]) * 1_000_000

    gpt4o = book.entry("openai", "gpt-4o", AT)
    assert gpt4o.input == per_m("gpt-4o", "input_cost_per_token") == Decimal("2.5")
    assert gpt4o.output == per_m("gpt-4o", "output_cost_per_token") == Decimal(10)
    assert gpt4o.cache_read == Decimal("1.25")
    assert gpt4o.batch == Decimal("0.5")
    assert book.resolve("openai", "gpt-4o", AT).version == "litellm-openai-1.106.2"

    key = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    sonnet = book.entry("bedrock_converse", key, AT)
    assert sonnet.cache_write_1h == per_m(key, "cache_creation_input_token_cost_above_1hr")
    assert sonnet.tiers[0].above_input_tokens == 200_000
    assert sonnet.tiers[0].cache_write_1h == Decimal(12)
    # LiteLLM's verified example: gemini-2.5-pro with 250k prompt tokens costs $0.625.
    price = book.price("gemini", "gemini-2.5-pro", Usage(input_tokens=250_000), AT)
    assert price.amount_nanos == 625_000_000
    # Its claude-sonnet-4-5 example: 200 fresh + 1000 cache read + 50 out = $0.00165.
    usage = Usage(input_tokens=200, cache_read_tokens=1000, output_tokens=50)
    assert book.price("anthropic", "claude-sonnet-4-5-20250929", usage, AT).amount_nanos == 1_650_000


@needs_litellm
def test_cli_import_with_provider_filter(tmp_path: Path) -> None:
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        """test root"""

    register(root)
    args = ["rates", "import-litellm", "--out", str(tmp_path), "--provider", "anthropic"]
    args += ["--provider", "openai", "--effective-from", "2026-06-08", "--json"]
    result = CliRunner().invoke(root, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["cards"] == 2 and data["models_written"] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anthropic", "openai"]
    card = parse_card((tmp_path / "openai" / "2026-06-08.yaml").read_text(), "openai.yaml")
    assert card.version == "litellm-openai-1.106.2"
    assert "1.106.2" in card.source and "98fee42d" in card.source
    text = CliRunner().invoke(root, args[:-1])
    assert text.exit_code == 0 and "skipped" in text.stdout


def test_missing_litellm_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def not_installed(name: str) -> str:
        raise li.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(li.importlib.metadata, "version", not_installed)
    with pytest.raises(ConfigError) as info:
        li.import_litellm(tmp_path)
    assert info.value.code == "litellm_not_installed"
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        """test root"""

    register(root)
    result = CliRunner().invoke(root, ["rates", "import-litellm", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: litellm is not installed")
