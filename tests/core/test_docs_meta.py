"""Meta-tests that keep the hook contract honest: every hookspec is documented and tested.

Adding a hook to ``allotment.hookspecs`` fails these until docs/hooks.md and a test catch up.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from allotment import hookspecs

ROOT = Path(__file__).resolve().parents[2]
SPEC_MARKER = hookspecs.PROJECT_NAME + "_spec"


def _hookspecs() -> dict[str, list[str]]:
    specs = {
        name: list(inspect.signature(func).parameters)
        for name, func in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(func, SPEC_MARKER)
    }
    assert len(specs) >= 10, "hookspecs were not found: did the marker's attribute name change?"
    return specs


HOOKSPECS = _hookspecs()


def _sections(markdown: str) -> dict[str, str]:
    """``## `name` `` headings mapped to the text up to the next level-2 heading."""
    sections: dict[str, str] = {}
    for match in re.finditer(r"^## `(\w+)`\s*$(.*?)(?=^## |\Z)", markdown, re.M | re.S):
        sections[match.group(1)] = match.group(2)
    return sections


@pytest.mark.parametrize("name", sorted(HOOKSPECS))
def test_every_hookspec_is_documented_with_its_parameters(name: str) -> None:
    sections = _sections((ROOT / "docs" / "hooks.md").read_text(encoding="utf-8"))
    assert name in sections, f"docs/hooks.md has no '## `{name}`' section"
    body = sections[name]
    signature = f"{name}({', '.join(HOOKSPECS[name])})"
    missing = [param for param in HOOKSPECS[name] if not re.search(rf"\b{param}\b", body)]
    assert not missing, f"the {name} section does not mention {missing}"
    assert re.search(rf"\b{name}\(", body), f"the {name} section does not show its signature {signature}"


def test_every_documented_hook_exists() -> None:
    sections = _sections((ROOT / "docs" / "hooks.md").read_text(encoding="utf-8"))
    stale = sorted(set(sections) - set(HOOKSPECS))
    assert not stale, f"docs/hooks.md documents hooks that no longer exist: {stale}"


def test_every_hookspec_has_a_test() -> None:
    defined = {
        match.group(1)
        for path in (ROOT / "tests").rglob("test_*.py")
        for match in re.finditer(
            r"^\s*(?:async\s+)?def test_hook_(\w+)\(", path.read_text(encoding="utf-8"), re.M
        )
    }
    missing = sorted(set(HOOKSPECS) - defined)
    assert not missing, f"no test_hook_<name> under tests/ for: {missing}"
