"""os-release parsing (quoting rules of os-release(5))."""

from __future__ import annotations

from pathlib import Path

from waprov.osrelease import parse_os_release, read_os_release
from waprov.system import System

SAMPLE = r"""# comment
NAME="Flatcar Container Linux by Kinvolk"
ID=flatcar
ID_LIKE='coreos rhel'
VERSION_ID=3815.2.0
PRETTY_NAME="say \"hi\" \$HOME \\ done"
BROKEN=two words
"""


def test_quotes_escapes_and_bad_lines() -> None:
    f = parse_os_release(SAMPLE)
    assert f["NAME"] == "Flatcar Container Linux by Kinvolk"
    assert f["ID"] == "flatcar"
    assert f["ID_LIKE"] == "coreos rhel"
    assert f["VERSION_ID"] == "3815.2.0"
    assert f["PRETTY_NAME"] == 'say "hi" $HOME \\ done'
    assert "BROKEN" not in f


def test_the_first_readable_file_is_used(tmp_path: Path) -> None:
    (tmp_path / "os-release").write_text(SAMPLE)
    f = read_os_release(None, [str(tmp_path / "missing"), str(tmp_path / "os-release")])
    assert (f["ID"], f["VERSION_ID"]) == ("flatcar", "3815.2.0")
    assert read_os_release(None, [str(tmp_path / "missing")]) == {}


def test_through_system_the_root_applies_and_the_usual_link_is_followed(tmp_path: Path) -> None:
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/os-release").write_text(SAMPLE)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").symlink_to("../usr/lib/os-release")
    f = read_os_release(System(root=str(tmp_path)), ["/etc/os-release"])
    assert (f["ID"], f["VERSION_ID"]) == ("flatcar", "3815.2.0")
    (tmp_path / "etc/os-release").unlink()
    (tmp_path / "etc/os-release").mkdir()  # unreadable: the next file
    assert read_os_release(System(root=str(tmp_path)))["ID"] == "flatcar"
    assert read_os_release(System(root=str(tmp_path / "empty"))) == {}
