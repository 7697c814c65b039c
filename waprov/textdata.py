"""Bytes from a file or the wire to text, with one wording for every way that fails.

`decode_text()` enforces a size limit and strict UTF-8 and raises `ValueError` whose
text is the reason (`is too large …`, `is not UTF-8 text …`); callers prefix what was
read and raise their own error type.
"""

from __future__ import annotations

MIB = 1024 * 1024


def decode_text(data: bytes, limit: int = MIB) -> str:
    if len(data) > limit:
        raise ValueError(f"is too large (more than {limit} bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"is not UTF-8 text (invalid byte 0x{data[e.start]:02x} on line {line})") from None
