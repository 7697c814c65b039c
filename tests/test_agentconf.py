"""The one-line edit `waprov -enable` makes to WALinuxAgent's configuration, and its undo."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings

from tests.conftest import DATA
from tests.ruleref import reference_values
from tests.test_config_property import conf_text
from waprov.agentconf import Edit, set_value, undo, value_of

KEY = "Provisioning.Agent"


def _disable(text: str) -> tuple[str, Edit]:
    result = set_value(text, KEY, "disabled")
    assert result is not None
    return result


def test_readme_sample_changes_one_line_and_undoes_to_the_same_bytes() -> None:
    with open(os.path.join(DATA, "readme-sample.conf"), encoding="utf-8") as f:
        text = f.read()
    new, edit = _disable(text)
    old_lines, new_lines = text.split("\n"), new.split("\n")
    assert len(old_lines) == len(new_lines)
    diff = [i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b]
    assert diff == [2]
    assert (old_lines[2], new_lines[2]) == ("Provisioning.Agent=auto", "Provisioning.Agent=disabled")
    assert edit == Edit(2, "Provisioning.Agent=auto", "Provisioning.Agent=disabled")
    assert undo(new, KEY, edit) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Provisioning.Agent=auto\n", "Provisioning.Agent=disabled\n"),
        (
            "Provisioning.Agent = waagent  # who provisions\n",
            "Provisioning.Agent = disabled  # who provisions\n",
        ),
        ('Provisioning.Agent="cloud-init"\n', 'Provisioning.Agent="disabled"\n'),
        ("A=1\r\nProvisioning.Agent=auto\r\nB=2\r\n", "A=1\r\nProvisioning.Agent=disabled\r\nB=2\r\n"),
        ("Provisioning.Agent=None\n", "Provisioning.Agent=disabled\n"),
        ("Provisioning.Agent=\n", "Provisioning.Agent=disabled\n"),
        ("Provisioning.Agent=  \r\n", "Provisioning.Agent=disabled  \r\n"),
        # the last duplicate is the one WALinuxAgent reads: only it changes
        (
            "Provisioning.Agent=auto\nX=1\nProvisioning.Agent=waagent\n",
            "Provisioning.Agent=auto\nX=1\nProvisioning.Agent=disabled\n",
        ),
        # commented-out lines are not the key; a missing key is appended as one line
        ("#Provisioning.Agent=auto\nX=1\n", "#Provisioning.Agent=auto\nX=1\nProvisioning.Agent=disabled\n"),
        ("X=1", "X=1\nProvisioning.Agent=disabled\n"),
        ("X=1\r\n", "X=1\r\nProvisioning.Agent=disabled\r\n"),
        ("", "Provisioning.Agent=disabled\n"),
    ],
)
def test_the_effective_line_is_edited_in_place(text: str, expected: str) -> None:
    new, edit = _disable(text)
    assert new == expected
    assert value_of(new, KEY) == "disabled"
    assert undo(new, KEY, edit) == text


def test_already_disabled_is_no_edit() -> None:
    assert set_value("Provisioning.Agent=disabled # set by hand\n", KEY, "disabled") is None
    assert set_value('Provisioning.Agent= "disabled"\n', KEY, "disabled") is None


def test_undo_refuses_a_line_changed_since() -> None:
    new, edit = _disable("A=1\nProvisioning.Agent=auto\n")
    changed = new.replace("Provisioning.Agent=disabled", "Provisioning.Agent=waagent")
    with pytest.raises(ValueError, match=r"line was changed since .*line 2.*Provisioning.Agent=waagent"):
        undo(changed, KEY, edit)
    with pytest.raises(ValueError, match="found missing"):
        undo("A=1\n", KEY, edit)
    with pytest.raises(ValueError, match="changed since"):  # a later duplicate now wins
        undo(new + "Provisioning.Agent=auto\n", KEY, edit)


def test_undo_of_an_appended_line_needs_it_last() -> None:
    new, edit = _disable("A=1\n")
    assert undo(new, KEY, edit) == "A=1\n"
    with pytest.raises(ValueError, match="no longer the file's last line"):
        undo(new + "B=2\n", KEY, edit)


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"index": -1, "before": None, "after": "x"},
        {"index": True, "before": None, "after": "x"},
        {"index": 1, "before": 3, "after": "x"},
        {"index": 1, "before": None, "after": "x", "separator": "?"},
    ],
)
def test_a_damaged_record_is_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        Edit.from_json(bad)


def test_record_round_trips() -> None:
    _, edit = _disable("X=1")
    assert Edit.from_json(edit.to_json()) == edit


@pytest.mark.parametrize(
    "text", ['Provisioning.Agent=\x1c"', 'Provisioning.Agent= "\x1c', "Provisioning.Agent=\x1f\r\n"]
)
def test_an_empty_value_beside_a_control_character_is_set_too(text: str) -> None:
    # Python's strip() takes \x1c-\x1f for blanks: a value after them could read otherwise
    result = set_value(text, KEY, "disabled")
    assert result is not None
    new, edit = result
    assert reference_values(new)[KEY] == "disabled" and undo(new, KEY, edit) == text


@settings(max_examples=400, deadline=None)
@given(conf_text)
def test_any_file_one_line_changes_and_undo_gives_the_same_bytes(text: str) -> None:
    result = set_value(text, KEY, "disabled")
    if result is None:
        assert reference_values(text).get(KEY) == "disabled"
        return
    new, edit = result
    before, after = reference_values(text), reference_values(new)
    assert after[KEY] == "disabled"  # as WALinuxAgent's own rules read it
    assert {k: v for k, v in after.items() if k != KEY} == {k: v for k, v in before.items() if k != KEY}
    old_lines, new_lines = text.split("\n"), new.split("\n")
    changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b]
    if edit.before is None:  # appended: every old line kept, one added at the end
        assert new.startswith(text) and len(new_lines) - len(old_lines) in (1, 2)
    else:
        assert changed == [edit.index] and len(old_lines) == len(new_lines)
    assert undo(new, KEY, edit) == text
