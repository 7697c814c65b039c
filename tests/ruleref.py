"""An independent statement of WALinuxAgent's waagent.conf rules (WA §1.2), for tests.

Written from the specification's prose with regular expressions, deliberately not the
way waprov/config.py does it, so that the two can be compared on any input.
"""

from __future__ import annotations

import re
from typing import Dict, Optional, Union

# A used line: not starting with '#', has an '='; key = text before the first '=',
# value = text after it up to the first '#'.
_LINE = re.compile(r"(?P<key>[^=]*)=(?P<value>[^#]*)(?:#.*)?", re.DOTALL)
# Rule 2: '"' and ' ' peeled off both ends, then all whitespace off both ends.
_PEEL = re.compile(r'[" ]*(?P<mid>.*?)[" ]*', re.DOTALL)
_WS = re.compile(r"\s*(?P<mid>.*?)\s*", re.DOTALL)


def reference_values(text: str) -> Dict[str, Optional[str]]:
    values: Dict[str, Optional[str]] = {}
    for line in re.split(r"\n", text):
        if line[:1] == "#":
            continue
        m = _LINE.fullmatch(line)
        if m is None:
            continue
        peeled = _PEEL.fullmatch(m.group("value"))
        assert peeled is not None
        clean = _WS.fullmatch(peeled.group("mid"))
        assert clean is not None
        key_m = _WS.fullmatch(m.group("key"))
        assert key_m is not None
        value = clean.group("mid")
        values[key_m.group("mid")] = None if value == "None" else value
    return values


Typed = Union[bool, int, str, None]


def reference_switch(values: Dict[str, Optional[str]], key: str, default: bool) -> bool:
    return {"y": True, "Y": True, "n": False, "N": False}.get(values.get(key) or "", default)


def reference_int(values: Dict[str, Optional[str]], key: str, default: Optional[int]) -> Optional[int]:
    raw = values.get(key)
    if raw is None:
        return default
    try:
        return int(raw)  # WALinuxAgent's rule is Python's int() itself
    except ValueError:
        return default


def reference_str(values: Dict[str, Optional[str]], key: str, default: Optional[str]) -> Optional[str]:
    raw = values.get(key)
    return default if raw is None else raw
