"""The .deb and the .rpm (dist/, tests/pkgfiles.py) and the systemd units they ship.

- the units and the guest-agent drop-ins load without unknown keys, and verify cleanly
  where /usr/sbin/waprov exists (in a sandbox: the host gets no /usr/sbin/waprov);
- the .deb: its exact file list, nothing of WALinuxAgent's package, its Depends, and
  maintainer scripts that enable the units but start nothing; lintian clean;
- the .rpm: its file list and Requires (also as Fedora/RHEL would resolve them), scripts
  that start nothing, rpmlint clean with rpm/waprov.rpmlintrc.

Installing the .deb beside Debian's waagent package is tests/test_chroot.py; installing the
.rpm with rpm into a scratch root is tests/test_rpm_install.py.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from typing import Dict, List, Set

import pytest

from tests.conftest import DATA
from tests.pkgfiles import ROOT, Packages, deb_depends, deb_files, out, packages, run, version
from tests.sandbox import sandbox_run
from waprov.handover import DROPIN as GA_DROPIN

INIT = os.path.join(ROOT, "init")
UNITS = ["waprov-local.service", "waprov.service", "waprov-resourcedisk.service"]
GA_UNITS = ["waagent.service", "walinuxagent.service"]
DROPIN = "50-waprov.conf"
# Debian's walinuxagent.service (bookworm and sid, spec/packaging.md §1.3) and a unit
# like upstream's generic waagent.service: what the drop-in is applied to.
with open(os.path.join(DATA, "walinuxagent.service"), encoding="utf-8") as _f:
    WALINUXAGENT_SERVICE = _f.read()
WAAGENT_SERVICE = """[Unit]
Description=Azure Linux Agent
Wants=network-online.target sshd.service sshd-keygen.service
After=network-online.target
ConditionFileIsExecutable=/usr/sbin/waagent
ConditionPathExists=/etc/waagent.conf
[Service]
Type=simple
ExecStart=/usr/bin/python3 -u /usr/sbin/waagent -daemon
Restart=always
RestartSec=5
[Install]
WantedBy=multi-user.target
"""
UNIT_PROBLEMS = re.compile(r"Unknown key|Unknown section|Unknown lvalue|Failed to parse|Invalid|[Ee]rror")
# Paths of WALinuxAgent's packages (waagent, walinuxagent, WALinuxAgent, WALinuxAgent-udev)
# that waprov must never ship, so that both install side by side.
FORBIDDEN = re.compile(
    r"^(/etc/waagent\.conf|/(usr/)?s?bin/waagent[^/]*|/etc/logrotate\.d/(waagent|WALinuxAgent).*"
    r"|.*/udev/rules\.d/.*|/etc/init\.d/.*|/etc/udev/.*)$"
)
# Starting a unit or a service from a maintainer script or scriptlet.
STARTS = re.compile(
    r"deb-systemd-invoke\s+(?!stop\b)\S+|invoke-rc\.d|\bservice\s+\S+\s+(?:start|restart)"
    r"|systemctl\b[^\n]*(?:\b(?:start|restart|try-restart|reload-or-restart)\b|--now\b)"
)
REQUIRED_DEPENDS = ["python3-configobj", "python3-requests", "python3-defusedxml", "python3-psutil"]


@pytest.fixture(scope="module")
def pkgs() -> Packages:
    return packages()


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def python_files() -> Set[str]:
    """waprov's modules, relative to site-packages (what `waprov` imports at run time)."""
    found = set()
    for top, dirs, files in os.walk(os.path.join(ROOT, "waprov")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found |= {os.path.relpath(os.path.join(top, f), ROOT) for f in files if f.endswith(".py")}
    assert "waprov/steps/__init__.py" in found
    return found


def write_unit_dir(path: str, dropin: str) -> None:
    """waprov's units from init/, the two GA units, each with `dropin` as its drop-in."""
    os.makedirs(path)
    for unit in UNITS:
        shutil.copy(os.path.join(INIT, unit), path)
    for unit, text in zip(GA_UNITS, [WAAGENT_SERVICE, WALINUXAGENT_SERVICE]):
        with open(os.path.join(path, unit), "w", encoding="utf-8") as f:
            f.write(text)
        os.makedirs(os.path.join(path, unit + ".d"))
        with open(os.path.join(path, unit + ".d", DROPIN), "w", encoding="utf-8") as f:
            f.write(dropin)


def verify_with_unit_path(unit_dir: str) -> str:
    """`systemd-analyze verify` of waprov's units and the GA's, found in unit_dir first."""
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *UNITS, *GA_UNITS],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SYSTEMD_UNIT_PATH": unit_dir + ":"},
    )
    return r.stdout + r.stderr


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


# ---- the units ---------------------------------------------------------------------------


def test_units_and_drop_ins_have_no_unknown_keys(tmp_path: os.PathLike[str]) -> None:
    good = os.path.join(str(tmp_path), "good")
    write_unit_dir(good, GA_DROPIN)
    output = verify_with_unit_path(good)
    assert not UNIT_PROBLEMS.search(output), output
    # the same check sees a bad key in the drop-ins: they are loaded
    bad = os.path.join(str(tmp_path), "bad")
    write_unit_dir(bad, GA_DROPIN + "Requries=waprov.service\n")
    output = verify_with_unit_path(bad)
    for unit in GA_UNITS:
        assert f"{unit}.d/{DROPIN}:" in output and "Unknown key 'Requries'" in output, output


@pytest.mark.sandbox
def test_units_verify_cleanly_where_waprov_is_installed() -> None:
    """As installed: units and drop-ins in /lib/systemd/system, /usr/sbin/waprov and a
    stand-in /usr/sbin/waagent present (in the sandbox's overlays only)."""
    unitdir = "/lib/systemd/system"
    setup = [
        f"install -m 0755 {ROOT}/bin/waprov /usr/sbin/waprov",
        f"install -D -m 0755 {INIT}/waprov-boot-check /usr/libexec/waprov/waprov-boot-check",
        f"install -D -m 0755 {INIT}/waprov-wait-local /usr/libexec/waprov/waprov-wait-local",
        "printf '#!/bin/sh\\n' >/usr/sbin/waagent",
    ]
    setup += ["chmod 0755 /usr/sbin/waagent", "touch /etc/waagent.conf"]
    setup += [f"install -m 0644 {INIT}/{unit} {unitdir}/{unit}" for unit in UNITS]
    for unit, text in zip(GA_UNITS, [WAAGENT_SERVICE, WALINUXAGENT_SERVICE]):
        setup.append(f"cat >{unitdir}/{unit} <<'EOF'\n{text}EOF")
        setup.append(f"mkdir -p {unitdir}/{unit}.d")
        setup.append(f"cat >{unitdir}/{unit}.d/{DROPIN} <<'EOF'\n{GA_DROPIN}EOF")
    script = "\n".join(setup)
    # not as the sandbox's PID 1, where systemd-analyze fails without a word
    verify = ["sh", "-c", 'systemd-analyze verify --man=no "$@"', "sh"]
    r = sandbox_run([*verify, *UNITS, *GA_UNITS], setup=script)
    assert (r.returncode, r.stdout + r.stderr) == (0, "")
    # without the launcher, verify fails: the check above can fail
    r = sandbox_run([*verify, *UNITS], setup=script + "\nrm /usr/sbin/waprov")
    assert r.returncode != 0 and "Command /usr/sbin/waprov is not executable" in r.stdout + r.stderr
    assert not os.path.exists("/usr/sbin/waprov")


# ---- versions ----------------------------------------------------------------------------


def test_every_version_is_the_same() -> None:
    import waprov

    changelog = out(["dpkg-parsechangelog", "-l", "debian/changelog", "-SVersion"]).strip()
    spec = out(["rpmspec", "-q", "--srpm", "--qf", "%{version}\n", "rpm/waprov.spec"]).strip()
    assert {changelog, spec, waprov.__version__} == {version()}


# ---- the .deb ----------------------------------------------------------------------------


def test_deb_ships_exactly_waprovs_files(pkgs: Packages) -> None:
    files = deb_files(pkgs.deb)
    unitdirs = {os.path.dirname(p) for p in files if p.endswith("/waprov.service")}
    assert len(unitdirs) == 1 and unitdirs <= {"/lib/systemd/system", "/usr/lib/systemd/system"}, files
    unitdir = unitdirs.pop()
    site = "/usr/lib/python3/dist-packages/"
    info = f"{site}waprov-{pkgs.version}.dist-info/"
    expected = {
        "/usr/sbin/waprov",
        "/usr/libexec/waprov/waprov-boot-check",
        "/usr/libexec/waprov/waprov-wait-local",
        "/usr/share/waprov/waagent.conf",
        *(f"{unitdir}/{unit}" for unit in UNITS),
        f"{unitdir}/waagent.service.d/{DROPIN}",
        f"{unitdir}/walinuxagent.service.d/{DROPIN}",
        "/etc/logrotate.d/waprov",
        "/usr/share/man/man8/waprov.8.gz",
        "/usr/share/doc/waprov/changelog.gz",
        "/usr/share/doc/waprov/copyright",
        f"{info}METADATA",
        f"{info}RECORD",
    } | {site + p for p in python_files()}
    extra = {p for p in files if not p.startswith(info)} - expected
    assert (sorted(expected - set(files)), sorted(extra)) == ([], [])
    assert files["/usr/sbin/waprov"] == "-rwxr-xr-x"
    assert files["/usr/libexec/waprov/waprov-boot-check"] == "-rwxr-xr-x"
    assert files["/usr/libexec/waprov/waprov-wait-local"] == "-rwxr-xr-x"


def test_deb_has_nothing_of_walinuxagents_package(pkgs: Packages) -> None:
    assert [p for p in deb_files(pkgs.deb) if FORBIDDEN.match(p)] == []
    fields = out(["dpkg-deb", "-f", pkgs.deb])
    assert not re.search(r"^(Conflicts|Breaks|Replaces|Provides):", fields, re.MULTILINE), fields


def test_deb_files_are_the_trees_files(pkgs: Packages, tmp_path: os.PathLike[str]) -> None:
    root = str(tmp_path)
    out(["dpkg-deb", "-x", pkgs.deb, root])
    unitdir = (
        "/lib/systemd/system" if os.path.exists(f"{root}/lib/systemd/system") else "/usr/lib/systemd/system"
    )
    same = {
        **{f"{unitdir}/{unit}": f"init/{unit}" for unit in UNITS},
        "/etc/logrotate.d/waprov": "init/waprov.logrotate",
        "/usr/share/waprov/waagent.conf": "waagent.conf",
        "/usr/sbin/waprov": "bin/waprov",
    }
    for installed, source in same.items():
        assert sha256(root + installed) == sha256(os.path.join(ROOT, source)), installed
    for unit in GA_UNITS:  # the text `waprov -enable` writes
        assert read(f"{root}{unitdir}/{unit}.d/{DROPIN}") == GA_DROPIN, unit
    assert "waagent.log" not in read(f"{root}/etc/logrotate.d/waprov")
    assert read(f"{root}/usr/sbin/waprov").startswith("#!/usr/bin/python3\n")


def test_deb_depends(pkgs: Packages) -> None:
    groups = deb_depends(pkgs.deb)
    for name in REQUIRED_DEPENDS:
        assert [name] in groups, groups
    assert ["python3-crypt-r", "python3 (<< 3.13~)"] in groups, groups
    assert not any("waagent" in alt or "walinuxagent" in alt for group in groups for alt in group)


def maintainer_scripts(deb: str, root: str) -> Dict[str, str]:
    out(["dpkg-deb", "-e", deb, root])
    scripts = {}
    for name in ("preinst", "postinst", "prerm", "postrm"):
        path = os.path.join(root, name)
        if os.path.exists(path):
            scripts[name] = read(path)
    return scripts


def test_deb_conffiles_are_only_the_logrotate_file(pkgs: Packages, tmp_path: os.PathLike[str]) -> None:
    maintainer_scripts(pkgs.deb, str(tmp_path))
    assert read(os.path.join(str(tmp_path), "conffiles")).split() == ["/etc/logrotate.d/waprov"]


def test_deb_scripts_enable_the_units_and_start_nothing(pkgs: Packages, tmp_path: os.PathLike[str]) -> None:
    scripts = maintainer_scripts(pkgs.deb, str(tmp_path))
    for unit in UNITS:
        assert f"deb-systemd-helper enable '{unit}'" in scripts["postinst"]
        assert f"deb-systemd-helper purge '{unit}'" in scripts["postrm"]
    assert {name: STARTS.findall(text) for name, text in scripts.items()} == {name: [] for name in scripts}
    # the check above finds dh_installsystemd's and %systemd_preun's usual starts and stops
    assert STARTS.search("deb-systemd-invoke $_dh_action 'waprov.service' >/dev/null || true")
    assert STARTS.search("systemctl --no-reload disable --now waprov.service")
    assert not STARTS.search("deb-systemd-invoke stop 'waprov.service' >/dev/null || true")


def test_deb_postinst_makes_the_state_dir_private_and_postrm_keeps_it_until_purge(
    pkgs: Packages, tmp_path: os.PathLike[str]
) -> None:
    scripts = maintainer_scripts(pkgs.deb, str(tmp_path))
    assert re.search(
        r'if \[ "\$1" = configure \] && \[ ! -d /var/lib/waprov \]; then\n\s+mkdir -m 0700 /var/lib/waprov\n',
        scripts["postinst"],
    )
    purge = scripts["postrm"].split('if [ "$1" = purge ]; then')[1].split("fi")[0]
    assert "rm -rf /var/lib/waprov /etc/waprov" in purge and "/var/log/waprov.log" in purge
    assert scripts["postrm"].count("/var/lib/waprov") == 1


def test_lintian_is_clean(pkgs: Packages) -> None:
    r = run(["lintian", "--fail-on", "error,warning", "--display-info", pkgs.changes], timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not re.search(r"^[EW]: ", r.stdout, re.MULTILINE), r.stdout


# ---- the .rpm ----------------------------------------------------------------------------


def rpm_dump(rpm: str) -> Dict[str, List[str]]:
    """{path: the other `rpm -qp --dump` fields (size mtime digest mode ... link)}."""
    return {line.split()[0]: line.split()[1:] for line in out(["rpm", "-qp", "--dump", rpm]).splitlines()}


def test_rpm_ships_waprovs_files(pkgs: Packages) -> None:
    dump = rpm_dump(pkgs.rpm)
    listed = out(["rpm", "-qlp", pkgs.rpm]).split()
    assert sorted(listed) == sorted(dump)
    unit = "/usr/lib/systemd/system"
    contents = {
        **{f"{unit}/{name}": f"init/{name}" for name in UNITS},
        "/etc/logrotate.d/waprov": "init/waprov.logrotate",
        "/usr/share/waprov/waagent.conf": "waagent.conf",
        "/usr/sbin/waprov": "bin/waprov",
        "/usr/libexec/waprov/waprov-boot-check": "init/waprov-boot-check",
        "/usr/libexec/waprov/waprov-wait-local": "init/waprov-wait-local",
    }
    for path, source in contents.items():
        assert dump[path][2] == sha256(os.path.join(ROOT, source)), path
    assert dump[f"{unit}/waagent.service.d/{DROPIN}"][2] == hashlib.sha256(GA_DROPIN.encode()).hexdigest()
    assert dump[f"{unit}/walinuxagent.service.d/{DROPIN}"][-1] == f"../waagent.service.d/{DROPIN}"
    assert dump["/usr/sbin/waprov"][3] == "0100755"
    assert dump["/var/lib/waprov"][3:6] == ["040700", "root", "root"]
    assert dump["/etc/logrotate.d/waprov"][6] == "1"  # %config
    assert "/usr/share/man/man8/waprov.8.gz" in dump
    # %systemd_post enables what the preset names: every unit
    preset = "".join(f"enable {u}\n" for u in UNITS)
    assert (
        dump["/usr/lib/systemd/system-preset/90-waprov.preset"][2]
        == hashlib.sha256(preset.encode()).hexdigest()
    )
    flags = out(["rpm", "-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]", pkgs.rpm]).splitlines()
    assert "cn /etc/logrotate.d/waprov" in flags  # %config(noreplace)
    site = [p for p in dump if p.endswith("-packages/waprov/__init__.py")]
    assert len(site) == 1, sorted(dump)
    sitedir = os.path.dirname(os.path.dirname(site[0])) + "/"
    shipped = {p[len(sitedir) :] for p in dump if p.startswith(sitedir + "waprov/") and p.endswith(".py")}
    assert shipped == python_files()
    assert [p for p in dump if FORBIDDEN.match(p)] == []


def test_rpm_requires(pkgs: Packages) -> None:
    requires = out(["rpm", "-qp", "--requires", pkgs.rpm]).split("\n")
    for name in [*REQUIRED_DEPENDS, "logrotate"]:
        assert name in requires, requires
    assert "python3-crypt-r" not in requires  # Debian's rpm: neither Fedora nor RHEL
    assert not re.search(
        r"^(Conflicts|Obsoletes):", read(os.path.join(ROOT, "rpm/waprov.spec")), re.MULTILINE
    )


@pytest.mark.parametrize(
    ("distro", "crypt_r"),
    [("fedora 39", False), ("fedora 40", True), ("rhel 9", False), ("rhel 10", True)],
)
def test_rpm_requires_crypt_r_where_python_has_no_crypt(distro: str, crypt_r: bool) -> None:
    requires = out(["rpmspec", "-q", "--requires", "--define", distro, "rpm/waprov.spec"]).split()
    assert set(REQUIRED_DEPENDS) <= set(requires)
    assert ("python3-crypt-r" in requires) == crypt_r


def test_rpm_spec_uses_the_pyproject_macros_where_they_exist() -> None:
    native = ["--define", "pyproject_wheel echo WHEEL", "--define", "pyproject_install echo INSTALL"]
    for defines, expect, absent in [
        (native, "echo WHEEL", "setup.py build"),
        ([], "setup.py build", "WHEEL"),
    ]:
        parsed = out(["rpmspec", "-P", *defines, "rpm/waprov.spec"])
        assert expect in parsed and absent not in parsed


def test_rpm_scripts_start_nothing(pkgs: Packages) -> None:
    scripts = out(["rpm", "-qp", "--scripts", pkgs.rpm])
    assert STARTS.findall(scripts) == []
    spec = read(os.path.join(ROOT, "rpm/waprov.spec"))
    assert "with_restart" not in spec
    for macro in ("systemd_post", "systemd_preun", "systemd_postun"):
        assert f"%{{?{macro}:%{macro} {' '.join(UNITS)}}}" in spec
    # systemctl only in the fallbacks for Debian's rpm (no systemd-rpm-macros): preset on
    # install, disable on erase, as systemd's macros do (tests/test_rpm_install.py runs them)
    assert re.findall(r"\bsystemctl\b(?! >/dev/null;)[^\n]*", spec) == [
        "systemctl --no-reload preset %{?*} || : \\",
        "systemctl --no-reload disable %{?*} || : \\",
    ]
    assert f"systemctl --no-reload preset {' '.join(UNITS)}" in scripts
    assert f"systemctl --no-reload disable {' '.join(UNITS)}" in scripts
    # where systemd's own macros are defined (Fedora/RHEL), the fallbacks are not used
    native = ["--define", "systemd_post() NATIVE_POST %*", "--define", "systemd_preun() NATIVE_PREUN %*"]
    parsed = out(["rpmspec", "-P", *native, "rpm/waprov.spec"])
    assert f"NATIVE_POST {' '.join(UNITS)}" in parsed and f"NATIVE_PREUN {' '.join(UNITS)}" in parsed
    assert "systemctl" not in parsed


def test_rpmlint_is_clean_with_the_filters(pkgs: Packages) -> None:
    r = run(["rpmlint", "-r", "rpm/waprov.rpmlintrc", pkgs.rpm, "rpm/waprov.spec"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 errors, 0 warnings" in r.stdout
