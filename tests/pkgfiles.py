"""The packages the package tests look at: dist/'s .deb and .rpm, built when needed.

`make test` builds them first (`make packages`); a test session started on its own builds
them here, through the same script (tools/build-packages --if-stale rebuilds a kind only
when dist/ lacks it or it was built from another state of the tree).
"""

from __future__ import annotations

import functools
import glob
import os
import re
import subprocess
from typing import Dict, List, NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "tools", "build-packages")
DIST = os.path.join(ROOT, "dist")
# The system tools with the system's Python: a pyenv or venv python3 first in PATH
# breaks pybuild and the linters (spec/packaging.md §3).
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8"}


class Packages(NamedTuple):
    version: str
    deb: str
    changes: str
    rpm: str


def version() -> str:
    """waprov's version, as setup.py says it."""
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
        m = re.search(r'^\s*version="([^"]+)"', f.read(), re.MULTILINE)
    assert m, "setup.py has no version"
    return m.group(1)


@functools.cache
def packages() -> Packages:
    """dist/'s packages of the current tree (built once per session if stale)."""
    r = subprocess.run(
        [BUILD, "--if-stale", "deb", "rpm"], capture_output=True, text=True, timeout=900, check=False
    )
    assert r.returncode == 0, f"tools/build-packages failed:\n{r.stdout}\n{r.stderr}"
    v = version()
    changes = glob.glob(os.path.join(DIST, f"waprov_{v}_*.changes"))  # named after the build arch
    assert len(changes) == 1, f"dist/ has {changes} as .changes files"
    pkgs = Packages(
        version=v,
        deb=os.path.join(DIST, f"waprov_{v}_all.deb"),
        changes=changes[0],
        rpm=os.path.join(DIST, f"waprov-{v}-1.noarch.rpm"),
    )
    for path in (pkgs.deb, pkgs.rpm):
        assert os.path.isfile(path), f"tools/build-packages made no {path}"
    return pkgs


def run(argv: List[str], cwd: str = ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A system tool with the clean environment; output captured, never raises on rc."""
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd, env=CLEAN_ENV
    )


def out(argv: List[str], cwd: str = ROOT) -> str:
    r = run(argv, cwd=cwd)
    assert r.returncode == 0, f"{argv}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def deb_depends(deb: str) -> List[List[str]]:
    """The .deb's Depends: one list of alternatives per comma-separated group."""
    field = out(["dpkg-deb", "-f", deb, "Depends"]).strip()
    return [[alt.strip() for alt in group.split("|")] for group in field.split(",")]


def deb_files(deb: str) -> Dict[str, str]:
    """{path: `dpkg-deb -c` mode column} for every entry but directories."""
    files = {}
    for line in out(["dpkg-deb", "-c", deb]).splitlines():
        fields = line.split()
        path = fields[5][1:]  # "./etc/x" -> "/etc/x"
        if not fields[0].startswith("d"):
            files[path] = fields[0]
    return files
