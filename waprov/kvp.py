"""Hyper-V KVP records: telemetry the Azure host reads over VMBus (peers §3.6).

A record is a 512-byte key field and a 2048-byte value field, UTF-8, zero padded; the
kernel's UTF-16 conversion makes keys ≤ 254 and values ≤ 1022 bytes the safe sizes, so
longer values are split into several records under the same key (on UTF-8 boundaries).
Records are appended to `/var/lib/hyperv/.kvp_pool_1` under `flock`; a pool file older
than this boot is emptied first, once. Nothing is written when `/var/lib/hyperv` does not
exist (not a Hyper-V guest), and a failure to write is logged, never raised: telemetry
must not fail provisioning. Not a host change in System's sense (no plan entry): like the
log, an append-only side channel; a dry run writes nothing.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from typing import Callable, Iterator, List, Tuple

from waprov.errors import HostError

POOL = "/var/lib/hyperv/.kvp_pool_1"
KEY_FIELD, VALUE_FIELD = 512, 2048
RECORD = KEY_FIELD + VALUE_FIELD
MAX_KEY, MAX_VALUE = 254, 1022
REPORT_KEY = "PROVISIONING_REPORT"
log = logging.getLogger("waprov")


def _cut(data: bytes, limit: int) -> int:
    """The largest length ≤ limit that does not split a UTF-8 character."""
    if len(data) <= limit:
        return len(data)
    end = limit
    while end > 0 and (data[end] & 0xC0) == 0x80:  # a continuation byte starts the rest
        end -= 1
    return end


def chunks(value: str, limit: int = MAX_VALUE) -> List[bytes]:
    """`value` as UTF-8 pieces of at most `limit` bytes (at least one piece)."""
    data, out = value.encode("utf-8"), []
    while True:
        end = _cut(data, limit)
        out.append(data[:end])
        data = data[end:]
        if not data:
            return out


def encode(key: str, value: str) -> bytes:
    """The records for one key/value: the key cut to 254 bytes, the value split."""
    raw_key = key.encode("utf-8")
    raw_key = raw_key[: _cut(raw_key, MAX_KEY)]
    return b"".join(
        raw_key.ljust(KEY_FIELD, b"\0") + part.ljust(VALUE_FIELD, b"\0") for part in chunks(value)
    )


def decode(data: bytes) -> Iterator[Tuple[str, str]]:
    """(key, value) per record of a pool file, as hv_kvp_daemon reads it (for tests and
    for whoever inspects a pool)."""
    for off in range(0, len(data) - len(data) % RECORD, RECORD):
        key = data[off : off + KEY_FIELD].split(b"\0", 1)[0]
        value = data[off + KEY_FIELD : off + RECORD].split(b"\0", 1)[0]
        yield key.decode("utf-8", "replace"), value.decode("utf-8", "replace")


class Kvp:
    """The pool writer of one run. `root` prefixes paths (tests); `boot_time` gives when
    this boot began (seconds since the epoch); `enabled=False` (dry run) writes nothing.
    The pool is opened directly, not through System: it is hv_kvp_daemon's file, appended
    in place under its lock, where System replaces files."""

    def __init__(
        self,
        key_prefix: str,
        *,
        root: str = "/",
        enabled: bool = True,
        boot_time: Callable[[], float],
    ) -> None:
        self.key_prefix = key_prefix
        self.pool = os.path.join(root, POOL.lstrip("/"))
        self.enabled = enabled and os.path.isdir(os.path.dirname(self.pool))
        self._boot_time = boot_time
        self._checked_stale = False
        self.failed = False

    def _append(self, blob: bytes) -> None:
        if not self.enabled or self.failed:
            return
        try:
            fd = os.open(
                self.pool, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644
            )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not self._checked_stale:
                    self._checked_stale = True
                    if self._left_by_earlier_boot(fd):
                        os.ftruncate(fd, 0)
                os.write(fd, blob)
            finally:
                os.close(fd)  # releases the lock
        except OSError as e:
            self.failed = True  # one warning, then quiet: telemetry never fails a run
            log.warning("cannot write KVP telemetry to %s: %s (provisioning goes on)", POOL, e.strerror)

    def _left_by_earlier_boot(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_mtime < self._boot_time()
        except HostError as e:  # no boot time: keep the records rather than guess
            log.warning("%s; the KVP pool %s is kept as it is", e, POOL)
            return False

    def event(self, name: str, **fields: object) -> None:
        """One record keyed `<prefix>|<name>`, the value compact JSON."""
        value = json.dumps({"name": name, **fields}, separators=(",", ":"), sort_keys=False)
        self._append(encode(f"{self.key_prefix}|{name}", value))

    def report(self, line: str) -> None:
        """`PROVISIONING_REPORT`: the structured line, one record (the host reads one value;
        a longer line is cut at 1022 bytes)."""
        raw = line.encode("utf-8")
        self._append(encode(REPORT_KEY, raw[: _cut(raw, MAX_VALUE)].decode("utf-8")))
