"""``env:NAME`` secrets: read when used, with errors that say which setting and which variable."""

from __future__ import annotations

import pytest

from allotment.errors import ConfigError
from allotment.secrets import read_env_ref, require_secret


def test_references_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOTMENT_TEST_SECRET", "s3cret")
    assert read_env_ref("env:ALLOTMENT_TEST_SECRET") == "s3cret"
    assert require_secret("env:ALLOTMENT_TEST_SECRET", "plugins.x.api_key") == "s3cret"
    assert read_env_ref("literal-key") == "literal-key"  # a literal, for local tests
    assert read_env_ref(None) is None


def test_an_unset_or_empty_variable_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALLOTMENT_TEST_SECRET", raising=False)
    assert read_env_ref("env:ALLOTMENT_TEST_SECRET") is None
    with pytest.raises(ConfigError, match="plugins.x.api_key: environment variable ALLOTMENT_TEST_SECRET"):
        require_secret("env:ALLOTMENT_TEST_SECRET", "plugins.x.api_key")
    monkeypatch.setenv("ALLOTMENT_TEST_SECRET", "")
    assert read_env_ref("env:ALLOTMENT_TEST_SECRET") is None


@pytest.mark.parametrize("value", [None, "", 42])
def test_a_missing_setting_names_itself_and_an_example(value: object) -> None:
    expected = r"plugins.rippling.api_key is required \(e.g. env:RIPPLING_API_KEY\)"
    with pytest.raises(ConfigError, match=expected):
        require_secret(value, "plugins.rippling.api_key", "env:RIPPLING_API_KEY")
