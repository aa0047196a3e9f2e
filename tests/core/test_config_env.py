"""The environment knobs every service reads through ``arbor_core.config``."""

from __future__ import annotations

import pytest

from arbor_core.config import env_flag, env_float, env_int, load_settings


def test_unset_or_blank_knobs_take_their_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARBOR_TEST_KNOB", raising=False)
    assert env_int("ARBOR_TEST_KNOB", 7) == 7
    assert env_float("ARBOR_TEST_KNOB", 0.5) == 0.5
    assert env_flag("ARBOR_TEST_KNOB", True) is True
    monkeypatch.setenv("ARBOR_TEST_KNOB", "  ")
    assert env_int("ARBOR_TEST_KNOB", 7) == 7 and env_flag("ARBOR_TEST_KNOB", False) is False


@pytest.mark.parametrize(
    ("raw", "on"),
    [("1", True), ("true", True), (" YES ", True), ("on", True), ("0", False), ("off", False)],
)
def test_flags_read_the_usual_spellings(
    monkeypatch: pytest.MonkeyPatch, raw: str, on: bool
) -> None:
    monkeypatch.setenv("ARBOR_TEST_KNOB", raw)
    assert env_flag("ARBOR_TEST_KNOB", not on) is on


def test_numbers_are_parsed_and_values_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBOR_TEST_KNOB", " 12 ")
    assert env_int("ARBOR_TEST_KNOB", 0) == 12
    assert env_float("ARBOR_TEST_KNOB", 0.0) == 12.0
    monkeypatch.setenv("ARBOR_SPLIT_PORT", " 50999 ")
    assert load_settings("split").port == 50999
