"""KVP records (peers §3.6): sizes, splitting, keys, staleness, locking, never failing."""

from __future__ import annotations

import fcntl
import os
import threading
import time

import pytest

from waprov.errors import HostError
from waprov.kvp import KEY_FIELD, MAX_VALUE, RECORD, VALUE_FIELD, Kvp, chunks, decode, encode


def pool_of(root: str) -> str:
    return os.path.join(root, "var/lib/hyperv/.kvp_pool_1")


@pytest.fixture
def hyperv(tmp_path: os.PathLike[str]) -> str:
    os.makedirs(os.path.join(str(tmp_path), "var/lib/hyperv"))
    return str(tmp_path)


def read_pool(root: str) -> bytes:
    with open(pool_of(root), "rb") as f:
        return f.read()


def test_a_record_is_512_plus_2048_zero_padded_bytes() -> None:
    blob = encode("k", "v")
    assert len(blob) == RECORD == 2560
    assert blob[:KEY_FIELD] == b"k" + b"\0" * 511
    assert blob[KEY_FIELD:] == b"v" + b"\0" * (VALUE_FIELD - 1)


def test_long_values_split_at_1022_bytes_on_character_boundaries() -> None:
    value = "a" * 1021 + "é" + "b" * 1500  # é straddles the 1022-byte boundary
    parts = chunks(value)
    assert [len(p) for p in parts] == [1021, 1022, 480]
    assert b"".join(parts).decode() == value
    blob = encode("key", value)
    assert len(blob) == 3 * RECORD
    assert [k for k, _ in decode(blob)] == ["key"] * 3
    assert "".join(v for _, v in decode(blob)) == value


def test_keys_are_cut_to_254_bytes() -> None:
    ((key, _),) = decode(encode("é" * 200, "v"))
    assert len(key.encode()) == 254 and key == "é" * 127


def test_nothing_is_written_without_the_pool_directory(tmp_path: os.PathLike[str]) -> None:
    kvp = Kvp("waprov-0.1.0|vm", root=str(tmp_path), boot_time=lambda: 0.0)
    kvp.event("step", result="ok")
    kvp.report("result=success")
    assert not kvp.enabled and os.listdir(str(tmp_path)) == []


def test_report_is_one_record_cut_to_the_value_limit(hyperv: str) -> None:
    kvp = Kvp("p", root=hyperv, boot_time=lambda: 0.0)
    kvp.report("result=error|reason=x|stderr=" + "z" * 3000)
    ((key, value),) = decode(read_pool(hyperv))
    assert key == "PROVISIONING_REPORT" and len(value) == MAX_VALUE and value.startswith("result=error|")


def test_events_append_with_the_prefix(hyperv: str) -> None:
    kvp = Kvp("waprov-0.1.0|vmid", root=hyperv, boot_time=lambda: 0.0)
    kvp.event("step:user", start="2026-11-21T00:00:00Z", duration=0.5, result="ok")
    kvp.event("step:sudoers", result="ok")
    records = list(decode(read_pool(hyperv)))
    assert [k for k, _ in records] == ["waprov-0.1.0|vmid|step:user", "waprov-0.1.0|vmid|step:sudoers"]
    assert records[0][1] == '{"name":"step:user","start":"2026-11-21T00:00:00Z","duration":0.5,"result":"ok"}'


def test_a_pool_from_an_earlier_boot_is_emptied_once(hyperv: str) -> None:
    with open(pool_of(hyperv), "wb") as f:
        f.write(encode("old", "from the last boot"))
    os.utime(pool_of(hyperv), (time.time() - 3600, time.time() - 3600))
    kvp = Kvp("p", root=hyperv, boot_time=lambda: time.time() - 60)
    kvp.event("a")
    kvp.event("b")
    assert [k for k, _ in decode(read_pool(hyperv))] == ["p|a", "p|b"]


def test_a_pool_of_this_boot_is_kept(hyperv: str) -> None:
    with open(pool_of(hyperv), "wb") as f:
        f.write(encode("cloud-init", "this boot"))
    Kvp("p", root=hyperv, boot_time=lambda: time.time() - 60).event("a")
    assert [k for k, _ in decode(read_pool(hyperv))] == ["cloud-init", "p|a"]


def test_a_pool_is_kept_when_the_boot_time_is_unknown(hyperv: str, caplog: pytest.LogCaptureFixture) -> None:
    with open(pool_of(hyperv), "wb") as f:
        f.write(encode("old", "maybe from the last boot"))
    os.utime(pool_of(hyperv), (time.time() - 3600, time.time() - 3600))

    def unknown() -> float:
        raise HostError("cannot read the boot time from /proc/stat: no btime line")

    kvp = Kvp("p", root=hyperv, boot_time=unknown)
    kvp.event("a")
    assert [k for k, _ in decode(read_pool(hyperv))] == ["old", "p|a"]
    assert not kvp.failed and "no btime line; the KVP pool" in caplog.text


def test_writes_wait_for_the_lock(hyperv: str) -> None:
    open(pool_of(hyperv), "wb").close()
    fd = os.open(pool_of(hyperv), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    kvp = Kvp("p", root=hyperv, boot_time=lambda: 0.0)
    t = threading.Thread(target=kvp.event, args=("a",))
    t.start()
    t.join(0.3)
    assert t.is_alive() and read_pool(hyperv) == b""  # blocked behind the other writer
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    t.join(5)
    assert [k for k, _ in decode(read_pool(hyperv))] == ["p|a"]


def test_a_failing_pool_is_a_warning_not_an_error(hyperv: str, caplog: pytest.LogCaptureFixture) -> None:
    os.mkdir(pool_of(hyperv))  # a directory where the file should be
    kvp = Kvp("p", root=hyperv, boot_time=lambda: 0.0)
    kvp.event("a")
    kvp.report("result=success")
    assert kvp.failed
    warnings = [r for r in caplog.records if "cannot write KVP telemetry" in r.getMessage()]
    assert len(warnings) == 1


def test_dry_run_writes_nothing(hyperv: str) -> None:
    Kvp("p", root=hyperv, enabled=False, boot_time=lambda: 0.0).report("result=success")
    assert os.listdir(os.path.join(hyperv, "var/lib/hyperv")) == []
