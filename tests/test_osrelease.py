"""os-release parsing (quoting rules of os-release(5)) and the Distro built from it."""

from __future__ import annotations

from pathlib import Path

from waprov.distro import Distro
from waprov.osrelease import parse_os_release

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


def test_distro_from_the_first_readable_file(tmp_path: Path) -> None:
    (tmp_path / "os-release").write_text(SAMPLE)
    d = Distro.detect([str(tmp_path / "missing"), str(tmp_path / "os-release")])
    assert d == Distro("flatcar", "3815.2.0", ("coreos", "rhel"))
    assert d.is_like("rhel") and d.is_like("flatcar") and not d.is_like("debian")
    assert Distro.detect([str(tmp_path / "missing")]) == Distro("unknown", "")
