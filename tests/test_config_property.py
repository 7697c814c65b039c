"""Property-based: the reader equals an independent statement of WA §1.2 on any file."""

from __future__ import annotations

from typing import Optional

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ruleref import reference_int, reference_str, reference_switch, reference_values
from waprov.config import KEY_TABLE, config_from_values, parse_values

KEYS = [s.key for s in KEY_TABLE]
TRICKY = "#=\"' \t\r\x0b\x0c\x1c\x85\u00a0\u2028yYnN019-+_.xNoe/"

keys = st.one_of(st.sampled_from(KEYS), st.text(alphabet=TRICKY + "AB", max_size=6))
pads = st.text(alphabet=" \t\"'", max_size=3)
values = st.one_of(
    st.sampled_from(
        [
            "y",
            "Y",
            "n",
            "N",
            "yes",
            "true",
            "1",
            "",
            "None",
            "none",
            "42",
            "-3",
            "+7",
            "1_000",
            "0x10",
            "4.5",
            "/var/lib/x",
            "'q'",
            "a # b",
            "a=b",
            "\u0663",
        ]
    ),
    st.text(alphabet=TRICKY + "abc", max_size=12),
)


@st.composite
def conf_line(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.text(alphabet=TRICKY + "abc", max_size=20))  # anything at all
    lead = draw(st.sampled_from(["", "", "", "#", "  #", " "]))
    line = lead + draw(keys) + draw(pads) + "=" + draw(pads) + draw(values) + draw(pads)
    if draw(st.booleans()):
        line += draw(st.sampled_from(["#", " # c", "#c=d", "\r", '"\r', " \r"]))
    return line


conf_text = st.lists(conf_line(), max_size=25).map("\n".join)


@settings(max_examples=600, deadline=None)
@given(conf_text)
def test_raw_values_equal_the_reference(text: str) -> None:
    assert parse_values(text) == reference_values(text)


@settings(max_examples=600, deadline=None)
@given(conf_text)
def test_typed_values_equal_the_reference(text: str) -> None:
    raw = reference_values(text)
    cfg = config_from_values(parse_values(text))
    for spec in KEY_TABLE:
        got = getattr(cfg, spec.attr)
        default = spec.default
        if spec.default_from:  # WALinuxAgent's default for these is another key's value
            other = next(s for s in KEY_TABLE if s.key == spec.default_from)
            default = getattr(cfg, other.attr)
        if spec.kind == "switch":
            assert isinstance(default, bool)
            assert got == reference_switch(raw, spec.key, default), spec.key
        elif spec.kind == "int":
            assert default is None or isinstance(default, int)
            assert got == reference_int(raw, spec.key, default), spec.key
        else:
            assert default is None or isinstance(default, str)
            expected: Optional[str] = reference_str(raw, spec.key, default)
            assert got == expected, spec.key


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_unicode_text_reads_like_the_reference(text: str) -> None:
    assert parse_values(text) == reference_values(text)
