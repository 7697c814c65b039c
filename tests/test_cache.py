"""tests/cache.py: the machine-level test cache (chroot bases, e2e image bases)."""

from __future__ import annotations

import json
import os
import threading
from typing import Callable, List

import pytest

from tests import cache


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.ENV, os.path.join(str(tmp_path), "cache"))


def builder(calls: List[str], content: bytes = b"base") -> Callable[[str], None]:
    def build(work: str) -> None:
        calls.append(work)
        with open(os.path.join(work, "base.tar"), "wb") as f:
            f.write(content)

    return build


def test_an_entry_is_built_once_then_found() -> None:
    calls: List[str] = []
    first = cache.entry("chroot", "bookworm", cache.key("a"), builder(calls))
    again = cache.entry("chroot", "bookworm", cache.key("a"), builder(calls))
    assert first == again and len(calls) == 1
    assert first == os.path.join(cache.directory(), "chroot", f"bookworm-{cache.key('a')}")
    with open(os.path.join(first, "base.tar"), "rb") as f:
        assert f.read() == b"base"
    with open(os.path.join(first, cache.MARKER), encoding="utf-8") as f:
        assert json.load(f) == {"files": {"base.tar": 4}}
    assert not calls[0].startswith(first)  # built beside it, renamed into place


def test_the_key_depends_on_every_part_and_their_boundaries() -> None:
    assert cache.key("a", "b") != cache.key("a", "c")
    assert cache.key("ab", "c") != cache.key("a", "bc")
    assert cache.key(b"x") == cache.key("x") and len(cache.key("x")) == 16


def test_an_entry_without_its_record_is_built_again() -> None:
    calls: List[str] = []
    path = cache.entry("chroot", "trixie", "0" * 16, builder(calls))
    os.unlink(os.path.join(path, cache.MARKER))  # as a build killed before the record
    cache.entry("chroot", "trixie", "0" * 16, builder(calls, b"new"))
    assert len(calls) == 2
    with open(os.path.join(path, "base.tar"), "rb") as f:
        assert f.read() == b"new"


def test_a_damaged_entry_is_built_again() -> None:
    calls: List[str] = []
    path = cache.entry("e2e", "waprov", "1" * 16, builder(calls))
    with open(os.path.join(path, "base.tar"), "ab") as f:
        f.write(b"more")
    assert not cache.is_complete(path)
    cache.entry("e2e", "waprov", "1" * 16, builder(calls))
    assert len(calls) == 2 and cache.is_complete(path)


def test_a_failed_build_leaves_nothing() -> None:
    def fails(work: str) -> None:
        with open(os.path.join(work, "base.tar"), "wb") as f:
            f.write(b"half")
        raise RuntimeError("mmdebstrap failed")

    with pytest.raises(RuntimeError):
        cache.entry("e2e", "trixie", "2" * 16, fails)
    assert os.listdir(os.path.join(cache.directory(), "e2e")) == [".trixie.lock"]


def test_older_entries_of_a_name_go_but_the_last_used_and_other_names_stay() -> None:
    calls: List[str] = []
    for k in ("a", "b", "c"):
        cache.entry("e2e", "waprov", cache.key(k), builder(calls))
    cache.entry("e2e", "waprov-nm", cache.key("a"), builder(calls))
    cache.entry("e2e", "waprov", cache.key("d"), builder(calls))
    left = sorted(n for n in os.listdir(os.path.join(cache.directory(), "e2e")) if not n.startswith("."))
    expected = [f"waprov-{cache.key('c')}", f"waprov-{cache.key('d')}", f"waprov-nm-{cache.key('a')}"]
    assert left == sorted(expected)


def test_two_builders_at_once_build_it_once() -> None:
    calls: List[str] = []
    started = threading.Event()

    def slow(work: str) -> None:
        started.set()
        threading.Event().wait(0.3)
        builder(calls)(work)

    paths: List[str] = []
    t = threading.Thread(target=lambda: paths.append(cache.entry("chroot", "bookworm", "3" * 16, slow)))
    t.start()
    started.wait(5)
    paths.append(cache.entry("chroot", "bookworm", "3" * 16, builder(calls)))
    t.join(5)
    assert len(calls) == 1 and paths[0] == paths[1]
