"""Debian 13 (trixie): the unit tests under its python3 (3.13, no `crypt` module: the
password is hashed through crypt-r), and the .deb built on Debian 12 installed by apt.

The base (tests/chroot.py) is a trixie system with Debian's packages of waprov's runtime
dependencies (setup.py's install_requires, named python3-<name>), of pytest and hypothesis,
and the tools the tests run; waagent's .debs are downloaded into its apt cache. It is
built once (about 2 minutes, network: the Debian mirror) and cached in the tests'
machine-level cache (tests/cache.py) as chroot/trixie-<key>/base.tar.
"""

from __future__ import annotations

import ast
import glob
import os
import re
from typing import Iterator, List

import pytest

from tests.chroot import base_tarball, in_chroot, in_system, ok, remove_tree, unpack
from tests.pkgfiles import ROOT, packages
from tests.test_chroot import enable_then_disable, enabled, install_beside_waagent, read_bytes

SUITE = "trixie"
BASE_FORMAT = "1"  # bump when the base's recipe changes in another way than its package lists
# Debian's test tools, and the commands the tests run that the apt variant lacks
TEST_PACKAGES = ["python3-pytest", "python3-hypothesis"]
TOOLS = [
    *["openssl", "iproute2", "procps", "passwd", "login", "sudo", "openssh-server", "openssh-client"],
    *["util-linux", "mount", "e2fsprogs"],
]

# What does not run under 3.13, and why. Everything else in tests/test_*.py does.
NOT_UNDER_313 = {
    "test_packages.py": "builds the .deb and .rpm with the Debian 12 host's tools, lints and installs them",
    "test_chroot.py": "the .deb in a bookworm chroot, made on the host",
    "test_trixie.py": "this file: it starts the 3.13 run and installs the .deb on trixie",
    "test_rpm_install.py": "builds the .rpm with the Debian 12 host's tools and installs it",
}
# Single tests left out under 3.13: their oracle cannot run there (they run under 3.11).
WA_ORACLE = "runs WALinuxAgent 2.7.3's own code, which imports distutils (gone in Python 3.12)"
NOT_TESTS_UNDER_313 = {
    "tests/test_sysconfig.py::test_the_ifcfg_rule_gives_walinuxagents_bytes": WA_ORACLE,
    "tests/test_sysconfig.py::test_the_suse_rule_gives_walinuxagents_bytes": WA_ORACLE,
}
# The files of sandboxed provisioning runs take about 5 minutes on 3.11: under 3.13 only
# these run from them, the password path end to end (the user's hash checked by openssl).
SANDBOX_FILES = "test_*_sandbox.py"
SANDBOX_TESTS_UNDER_313 = [
    "tests/test_provision_sandbox.py::test_password_user_gets_a_sha512_hash_sudo_with_password_and_password_ssh",
]


def runtime_packages() -> List[str]:
    """Debian's names of setup.py's install_requires: python3-<name>."""
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            requires = ast.literal_eval(node.value)
            break
    else:
        raise AssertionError("setup.py has no install_requires")
    return ["python3-" + re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0].lower() for r in requires]


def trixie_base() -> str:
    return base_tarball(
        SUITE, BASE_FORMAT, "waagent", ["python3", *runtime_packages(), *TEST_PACKAGES, *TOOLS]
    )


@pytest.fixture
def trixie() -> Iterator[str]:
    root = unpack(trixie_base())
    try:
        yield root
    finally:
        remove_tree(root)
    assert not os.path.exists(root)


def args_under_313() -> List[str]:
    """tests/'s files (but those of NOT_UNDER_313 and the sandbox files) and the sandbox
    tests chosen, as the inner pytest's arguments."""
    sandbox = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "tests", SANDBOX_FILES))}
    files = sorted(
        f"tests/{name}"
        for name in map(os.path.basename, glob.glob(os.path.join(ROOT, "tests", "test_*.py")))
        if name not in NOT_UNDER_313 and name not in sandbox
    )
    deselected = [arg for test in NOT_TESTS_UNDER_313 for arg in ("--deselect", test)]
    return [*files, *SANDBOX_TESTS_UNDER_313, *deselected]


def test_the_unit_tests_pass_under_trixies_python_3_13(trixie: str) -> None:
    r = in_system(
        trixie,
        "sh",
        "-c",
        'python3 -c "import sys; print(sys.version)" && exec python3 -m pytest "$@"',
        "sh",
        *["-q", "-p", "no:cacheprovider", "-rs", *args_under_313()],
        # the checkout is read-only in there: hypothesis keeps its examples in memory
        *["-W", "ignore:The database setting is not configured:hypothesis.errors.HypothesisWarning"],
        env=["PYTHONDONTWRITEBYTECODE=1"],
    )
    assert r.stdout.startswith("3.13."), r.stdout[:200] + r.stderr[-2000:]
    assert r.returncode == 0, f"rc {r.returncode}\n{r.stdout[-8000:]}\n{r.stderr[-3000:]}"
    summary = r.stdout.strip().splitlines()[-1]
    dropped = f", {len(NOT_TESTS_UNDER_313)} deselected"  # exactly those: nothing failed or skipped
    assert re.fullmatch(rf"=* ?\d+ passed{dropped} in [\d.]+s.*", summary), summary


def test_the_deb_built_on_debian_12_installs_on_trixie_beside_waagent_and_hashes_with_crypt_r(
    trixie: str,
) -> None:
    log = install_beside_waagent(trixie, packages().deb)
    assert "trying to overwrite" not in log
    status = ok(in_chroot(trixie, "dpkg-query", "-W", "-f", "${Package} ${Status}\n", "waprov", "waagent"))
    assert sorted(status.splitlines()) == ["waagent install ok installed", "waprov install ok installed"]
    assert ok(in_chroot(trixie, "dpkg", "--verify", "waprov")) == ""
    version = ok(in_chroot(trixie, "waprov", "-version")).splitlines()
    assert version[0] == f"waprov-{packages().version} running on debian 13", version
    assert (
        enabled(trixie, "waprov-local.service", "waprov.service", "waprov-resourcedisk.service")
        == ["enabled"] * 3
    )
    requests = read_bytes(os.path.join(trixie, "var/log/policy-rc.d.log")).decode()
    assert "waprov" not in requests, requests
    enable_then_disable(trixie)

    # the installed code under trixie's python3 hashes through crypt_r, and openssl agrees
    password = "Trixie-Pa55word"
    code = (
        "import sys; from waprov.steps.user import hash_password, load_crypt; "
        "print(sys.version_info[:2] == (3, 13), load_crypt().__module__, "
        "hash_password(sys.stdin.read(), '6', 16))"
    )
    is_313, module, hashed = ok(in_chroot(trixie, "python3", "-c", code, stdin=password)).split()
    assert (is_313, module) == ("True", "_crypt_r")
    salt = hashed.split("$")[2]
    check = in_chroot(trixie, "openssl", "passwd", "-6", "-salt", salt, "-stdin", stdin=password)
    assert ok(check).strip() == hashed
