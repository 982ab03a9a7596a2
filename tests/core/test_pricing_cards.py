"""Rate-card files: the bundled cards load fast and exactly; bad cards fail naming file and line.

Expected values are written out by hand here, never computed by the code under test.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from allotment.errors import ConfigError
from allotment.pricing import RateCardBook, default_card_dirs, load_card, parse_card
from allotment.pricing import book as book_module

GOOD = """\
provider: acme
version: acme-2026-01-01
effective_from: 2026-01-01
source: "test card"
models:
  m1:
    input: 0.075
    output: 4.50
    tiers:
      - above_input_tokens: 1000
        input: 1
        output: 2
"""


def write(tmp_path: Path, text: str, name: str = "card.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_prices_are_parsed_from_the_text_exactly() -> None:
    card = parse_card(GOOD, "good.yaml")
    rates = card.models["m1"]
    assert rates.input == Decimal("0.075")  # not 0.07499999999999999722...
    assert str(rates.input) == "0.075"
    assert rates.output == Decimal("4.50")
    assert rates.batch == Decimal(1)  # absent batch = no discount
    assert card.effective_from == datetime(2026, 1, 1, tzinfo=UTC)
    assert rates.tiers[0].above_input_tokens == 1000


def test_effective_from_accepts_an_iso_datetime() -> None:
    card = parse_card(GOOD.replace("2026-01-01\nsource", "2026-01-01T12:30:00Z\nsource"), "x")
    assert card.effective_from == datetime(2026, 1, 1, 12, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("mutation", "line", "words"),
    [
        (
            lambda t: t.replace("    output: 4.50\n", "    output: 4.50\n    colour: red\n"),
            9,
            "colour",
        ),
        (lambda t: t.replace("models:\n", "defaults: {}\nmodels:\n"), 5, "defaults"),
        (lambda t: t.replace("input: 0.075", "input: -0.075"), 7, "negative"),
        (lambda t: t.replace("provider: acme\n", ""), 1, "provider"),
        (lambda t: t.replace("input: 0.075", "input: cheap"), 7, "decimal"),
        (
            lambda t: t.replace(
                "        output: 2\n",
                "        output: 2\n      - above_input_tokens: 500\n        input: 1\n        output: 2\n",
            ),
            13,
            "sorted",
        ),
        (
            lambda t: t.replace(
                "        output: 2\n",
                "        output: 2\n      - above_input_tokens: 1000\n        input: 1\n        output: 2\n",
            ),
            13,
            "distinct",
        ),
        (lambda t: t.replace("    output: 4.50\n", ""), 6, "output"),
        (lambda t: t.replace("effective_from: 2026-01-01", "effective_from: soon"), 3, "date"),
        (lambda t: t.replace("provider: acme", "provider: ACME"), 1, "lowercase"),
        (lambda t: t + "  m1:\n    input: 1\n    output: 1\n", 13, "duplicate"),
        (
            lambda t: t.replace("version: acme-2026-01-01\n", "version: acme\nversion: b\n"),
            3,
            "dup",
        ),
    ],
    ids=[
        "unknown-key",
        "unknown-top-level-key",
        "negative-price",
        "missing-provider",
        "not-a-number",
        "unsorted-tiers",
        "duplicate-threshold",
        "missing-output",
        "bad-date",
        "uppercase-provider",
        "duplicate-model",
        "duplicate-key",
    ],
)
def test_bad_cards_name_the_file_and_line(tmp_path: Path, mutation: object, line: int, words: str) -> None:
    text = mutation(GOOD)  # type: ignore[operator]
    path = write(tmp_path, text, "bad.yaml")
    with pytest.raises(ConfigError) as info:
        load_card(path)
    assert info.value.code == "invalid_rate_card"
    assert f"bad.yaml:{line}:" in info.value.message
    assert words in info.value.message


def test_duplicate_versions_across_files_are_rejected(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD.replace("effective_from: 2026-01-01", "effective_from: 2026-02-01"), "b.yaml")
    with pytest.raises(ConfigError) as info:
        RateCardBook.load([tmp_path])
    message = info.value.message
    assert "acme-2026-01-01" in message and "unique" in message
    assert "a.yaml:2" in message and "b.yaml:2" in message


def test_invalid_yaml_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+: not valid YAML"):
        load_card(write(tmp_path, "provider: [unclosed\n", "broken.yaml"))
    with pytest.raises(ConfigError, match=r"empty.yaml:1: the file is empty"):
        load_card(write(tmp_path, "", "empty.yaml"))


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such rate-card directory"):
        RateCardBook.load([tmp_path / "nope"])


def test_bundled_cards_carry_the_published_prices() -> None:
    book = RateCardBook.load(default_card_dirs())
    at = datetime(2026, 7, 1, tzinfo=UTC)
    mini = book.entry("openai", "gpt-5.4-mini", at)
    assert (mini.input, mini.cache_read, mini.output) == (
        Decimal("0.75"),
        Decimal("0.075"),
        Decimal("4.50"),
    )
    sonnet = book.entry("anthropic", "claude-sonnet-4", at)
    assert (sonnet.input, sonnet.cache_read, sonnet.cache_write, sonnet.cache_write_1h) == (
        Decimal("3.00"),
        Decimal("0.30"),
        Decimal("3.75"),
        Decimal("6.00"),
    )
    assert sonnet.tiers[0].above_input_tokens == 200_000
    assert (sonnet.tiers[0].input, sonnet.tiers[0].output) == (Decimal("6.00"), Decimal("22.50"))
    assert book.entry("anthropic", "claude-3-5-sonnet", at).deprecated
    gemini = book.entry("google", "gemini-1.5-pro", at)
    assert (gemini.input, gemini.output) == (Decimal("1.25"), Decimal("5.00"))
    assert (gemini.tiers[0].above_input_tokens, gemini.tiers[0].input) == (128_000, Decimal("2.50"))
    for card in book.cards:
        assert card.source, card.path
    providers = set(book.providers())
    assert {"openai", "anthropic", "google", "bedrock", "ollama"} <= providers


def test_default_card_dirs_adds_the_environment(tmp_path: Path) -> None:
    dirs = default_card_dirs({"ALLOTMENT_RATE_CARDS": f"{tmp_path}:{tmp_path / 'b'}"})
    assert dirs[-2:] == [tmp_path, tmp_path / "b"]
    assert (dirs[0] / "openai").is_dir()


def test_loading_the_bundled_cards_is_fast() -> None:
    book_module._LOADED.clear()
    started = time.perf_counter()
    RateCardBook.load(default_card_dirs())
    cold = time.perf_counter() - started
    started = time.perf_counter()
    RateCardBook.load(default_card_dirs())
    warm = time.perf_counter() - started
    assert cold < 0.1
    assert warm < 0.01


def test_changed_files_are_reloaded(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    first = RateCardBook.load([tmp_path])
    assert RateCardBook.load([tmp_path]) is first
    path.write_text(GOOD.replace("output: 4.50", "output: 4.60  "))
    assert RateCardBook.load([tmp_path]) is not first
