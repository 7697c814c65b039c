"""The one-line edit of WALinuxAgent's configuration that `waprov -enable` makes (pure).

`set_value(text, key, value)` changes the line WALinuxAgent reads `key` from (the last
one, by WA §1.2's rules, which `config.iter_entries` implements) and nothing else: every
other byte, comment, `\\r`, quote and inline comment stays. A missing key is appended as
one line. The returned `Edit` says exactly what changed, so `undo(text, edit)` can put
the previous bytes back — and refuses when that line was changed since.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

from waprov.config import line_key, parse_values


@dataclass(frozen=True)
class Edit:
    """One change: line `index` (0-based, lines split on `\\n`) went from `before` to
    `after`; `before` None means `after` was appended (with `separator` in front)."""

    index: int
    before: Optional[str]
    after: str
    separator: str = ""

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Edit:
        if not isinstance(data, dict):
            raise ValueError("not an object")
        index, before, after = data.get("index"), data.get("before"), data.get("after")
        separator = data.get("separator", "")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ValueError("index is not a line number")
        if not (before is None or isinstance(before, str)) or not isinstance(after, str):
            raise ValueError("before/after are not lines")
        if not isinstance(separator, str) or separator not in ("", "\n"):
            raise ValueError("separator is not a line break")
        return cls(index, before, after, separator)


def effective_line(lines: List[str], key: str) -> Optional[int]:
    """The index of the line WALinuxAgent takes `key` from (the last one), or None."""
    found = None
    for i, line in enumerate(lines):
        if line_key(line) == key:
            found = i
    return found


def value_of(text: str, key: str) -> Optional[str]:
    """The raw value as WALinuxAgent reads it (None: absent or `None`)."""
    return parse_values(text).get(key)


def _replace_value(line: str, value: str) -> str:
    key_part, _, raw = line.partition("=")
    region, hash_, comment = raw.partition("#")
    current = region.strip('" ').strip()
    if current:
        # the value is the region less leading `"`/spaces, then leading whitespace
        start = len(region) - len(region.lstrip('" ').lstrip())
        start = region.index(current, start)
        new_region = region[:start] + value + region[start + len(current) :]
    else:  # `Key=` or `Key=  ` (maybe with `\r`): the value goes before trailing space
        body = region.rstrip()
        new_region = body + value + region[len(body) :]
        if new_region.strip('" ').strip() != value:  # e.g. `"` after a control character
            new_region = value + region  # the quotes and blanks after it are stripped
    return f"{key_part}={new_region}{hash_}{comment}"


def set_value(text: str, key: str, value: str) -> Optional[tuple[str, Edit]]:
    """(new text, edit) making `key` read as `value`; None when it already does."""
    if value_of(text, key) == value:
        return None
    lines = text.split("\n")
    index = effective_line(lines, key)
    if index is not None:
        after = _replace_value(lines[index], value)
        edit = Edit(index, lines[index], after)
        lines[index] = after
        new = "\n".join(lines)
    else:
        cr = "\r" if lines[0].endswith("\r") else ""  # the file's line ends: CRLF or LF
        # an unterminated last line gets a bare `\n`: a `\r` would change how it reads
        separator = "" if text == "" or text.endswith("\n") else "\n"
        after = f"{key}={value}{cr}"
        # appended: `index` is the line the new one occupies
        edit = Edit(len(lines) - (1 if separator == "" else 0), None, after, separator)
        new = text + separator + after + "\n"
    if value_of(new, key) != value:  # a line this edit cannot express; never write it
        raise ValueError(f"cannot set {key}={value} in this file by editing one line")
    return new, edit


def undo(text: str, key: str, edit: Edit) -> str:
    """The text with `edit` taken back; ValueError (the reason) when the line that edit
    wrote is no longer the one WALinuxAgent reads `key` from, as it was written."""
    lines = text.split("\n")
    index = effective_line(lines, key)
    if index is None or index != edit.index or lines[index] != edit.after:
        now = "missing" if index is None else repr(lines[index])
        raise ValueError(f"the {key} line was changed since (expected {edit.after!r} on line "
                         f"{edit.index + 1}, found {now})")  # fmt: skip
    if edit.before is not None:
        lines[index] = edit.before
        return "\n".join(lines)
    tail = edit.separator + edit.after + "\n"
    if not text.endswith(tail):
        raise ValueError(
            f"the {key} line appended on line {edit.index + 1} is no longer the file's last line"
        )
    return text[: len(text) - len(tail)]
