"""`waprov -enable` / `-disable` on image trees (a root prefix; the real `systemctl --root`).

Debian's layout (the WALinuxAgent README's sample waagent.conf, walinuxagent.service) and
Flatcar's (`/etc/waagent.conf -> ../usr/share/waagent/waagent.conf`, `/oem/waagent.conf`)
must come back byte-identical after -enable then -disable; every entry of the tree
(files by bytes and mode, symlinks by target, directories) is compared.
"""

from __future__ import annotations

import os
import shutil
import stat
from typing import Dict, Optional, Tuple

import pytest

from tests.conftest import DATA, ROOT
from waprov.errors import HostError
from waprov.handover import DROPIN, SSH_DROPIN, UNITS, disable, enable
from waprov.system import SubprocessRunner, System

Entry = Tuple[str, object, int]
with open(os.path.join(DATA, "walinuxagent.service"), encoding="utf-8") as _f:
    DEBIAN_GA_UNIT = _f.read()  # Debian's unit, verbatim (spec/packaging.md §1.3)
# spec WA §1.4: Flatcar's shipped config (non-comment keys, in order), with comments
FLATCAR_CONF = """\
#
# Microsoft Azure Linux Agent Configuration
#

# Enable extension handling. Do not disable this unless you do not need password reset,
# backup, monitoring, or any extension handling whatsoever.
Extensions.Enabled=y

# Which provisioning agent to use. Supported values are "auto" (default), "waagent",
# "cloud-init", or "disabled".
Provisioning.Agent=waagent

Provisioning.DeleteRootPassword=n
Provisioning.RegenerateSshHostKeyPair=n
Provisioning.SshHostKeyPairType=auto
Provisioning.MonitorHostName=y
Provisioning.DecodeCustomData=y
Provisioning.ExecuteCustomData=n
Provisioning.AllowResetSysUser=n
ResourceDisk.Format=y
ResourceDisk.Filesystem=ext4
ResourceDisk.MountPoint=/mnt/resource
ResourceDisk.EnableSwap=n
ResourceDisk.SwapSizeMB=0
ResourceDisk.MountOptions=None
LBProbeResponder=y
Logs.Verbose=n
OS.EnableFIPS=n
OS.SshDir=/etc/ssh
OS.RootDeviceScsiTimeout=300
OS.OpensslPath=None
AutoUpdate.Enabled=n
OS.EnableFirewall=y
"""


def tree(root: str) -> Dict[str, Entry]:
    """Every entry under `root`: (kind, bytes or link target, permission bits)."""
    out: Dict[str, Entry] = {}
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(base, name)
            st = os.lstat(path)
            rel = "/" + os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path), 0)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", None, stat.S_IMODE(st.st_mode))
            else:
                with open(path, "rb") as f:
                    out[rel] = ("file", f.read(), stat.S_IMODE(st.st_mode))
    return out


def put(root: str, path: str, text: str, mode: int = 0o644) -> None:
    real = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(real), exist_ok=True)
    with open(real, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.chmod(real, mode)


def link(root: str, path: str, target: str) -> None:
    real = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(real), exist_ok=True)
    os.symlink(target, real)


def install_units(root: str, unitdir: str) -> None:
    for unit in UNITS:
        real = os.path.join(root, unitdir.lstrip("/"), unit)
        os.makedirs(os.path.dirname(real), exist_ok=True)
        shutil.copy(os.path.join(ROOT, "init", unit), real)


def sample() -> str:
    """The sample waagent.conf of WALinuxAgent's README (the seed)."""
    with open(os.path.join(DATA, "readme-sample.conf"), encoding="utf-8", newline="") as f:
        return f.read()


@pytest.fixture
def debian(tmp_path: os.PathLike[str]) -> str:
    root = str(tmp_path)
    # merged /usr, as Debian 12 requires (and systemctl --root of systemd >= 255 reads
    # only /usr/lib/systemd/system: Debian 13's does not find units in a real /lib)
    os.makedirs(os.path.join(root, "usr/lib"))
    link(root, "/lib", "usr/lib")
    put(root, "/etc/waagent.conf", sample())
    put(root, "/etc/os-release", "ID=debian\nVERSION_ID=12\n")
    put(root, "/lib/systemd/system/walinuxagent.service", DEBIAN_GA_UNIT)
    # enabled by Debian's waagent package
    link(
        root,
        "/etc/systemd/system/multi-user.target.wants/walinuxagent.service",
        "/lib/systemd/system/walinuxagent.service",
    )
    install_units(root, "/lib/systemd/system")
    return root


@pytest.fixture
def flatcar(tmp_path: os.PathLike[str]) -> str:
    root = str(tmp_path)
    put(root, "/usr/share/waagent/waagent.conf", FLATCAR_CONF)
    link(root, "/etc/waagent.conf", "../usr/share/waagent/waagent.conf")
    link(root, "/oem/waagent.conf", "/etc/waagent.conf")
    put(root, "/etc/os-release", "ID=flatcar\nVERSION_ID=4152.2.0\n")
    put(root, "/etc/systemd/system/waagent.service", "[Service]\nExecStart=/usr/sbin/waagent -daemon\n")
    install_units(root, "/usr/lib/systemd/system")
    return root


# multi-user.target.wants after -enable on Debian: the GA's and all of waprov's units
WANTS = ["walinuxagent.service", "waprov-local.service", "waprov-resourcedisk.service", "waprov.service"]


def wants(root: str) -> list[str]:
    d = os.path.join(root, "etc/systemd/system/multi-user.target.wants")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def conf_text(root: str, path: str = "/etc/waagent.conf") -> str:
    with open(os.path.join(root, path.lstrip("/")), encoding="utf-8", newline="") as f:
        return f.read()


def test_debian_round_trip_is_byte_identical(debian: str) -> None:
    before = tree(debian)
    changes = enable(System(root=debian))
    assert conf_text(debian).split("\n")[2] == "Provisioning.Agent=disabled"
    lines = zip(conf_text(debian).split("\n"), sample().split("\n"))
    assert sum(a != b for a, b in lines) == 1
    for unit in ("waagent.service", "walinuxagent.service"):
        assert conf_text(debian, f"/etc/systemd/system/{unit}.d/50-waprov.conf") == DROPIN
    for unit in ("ssh@.service", "sshd@.service"):
        assert conf_text(debian, f"/etc/systemd/system/{unit}.d/50-waprov.conf") == SSH_DROPIN
    assert wants(debian) == WANTS
    assert "/etc/waagent.conf: line 3: Provisioning.Agent=auto -> Provisioning.Agent=disabled" in changes[0]
    assert changes[-3:] == [
        "waprov-local.service: enabled",
        "waprov.service: enabled",
        "waprov-resourcedisk.service: enabled",
    ]

    enabled = tree(debian)
    again = System(root=debian)
    assert "already disabled" in enable(again)[0]
    assert again.actions == [] and tree(debian) == enabled  # idempotent

    changes, problems = disable(System(root=debian))
    assert problems == []
    assert "/etc/waagent.conf: line 3: Provisioning.Agent=disabled -> Provisioning.Agent=auto" in changes
    assert tree(debian) == before
    again = System(root=debian)
    assert disable(again)[1] == [] and again.actions == [] and tree(debian) == before


def test_flatcar_symlink_becomes_a_file_and_comes_back(flatcar: str) -> None:
    before = tree(flatcar)
    enable(System(root=flatcar))
    assert not os.path.islink(os.path.join(flatcar, "etc/waagent.conf"))
    assert conf_text(flatcar) == FLATCAR_CONF.replace(
        "Provisioning.Agent=waagent", "Provisioning.Agent=disabled"
    )
    assert (
        conf_text(flatcar, "/usr/share/waagent/waagent.conf") == FLATCAR_CONF
    )  # the vendor file is read-only
    assert os.readlink(os.path.join(flatcar, "oem/waagent.conf")) == "/etc/waagent.conf"  # reads the new file
    assert os.path.isfile(os.path.join(flatcar, "etc/systemd/system/waagent.service.d/50-waprov.conf"))
    changes, problems = disable(System(root=flatcar))
    assert problems == []
    assert "/etc/waagent.conf: the symbolic link to ../usr/share/waagent/waagent.conf again" in changes
    assert tree(flatcar) == before


def test_flatcar_before_the_agent_made_its_link(flatcar: str) -> None:
    os.unlink(os.path.join(flatcar, "etc/waagent.conf"))
    before = tree(flatcar)
    changes = enable(System(root=flatcar))
    assert changes[0] == "/etc/waagent.conf: copied from /usr/share/waagent/waagent.conf"
    assert "Provisioning.Agent=disabled" in conf_text(flatcar)
    disable(System(root=flatcar))
    assert tree(flatcar) == before


def test_flatcar_file_edited_since_is_kept_as_a_file(flatcar: str) -> None:
    enable(System(root=flatcar))
    put(flatcar, "/etc/waagent.conf", conf_text(flatcar) + "Logs.Verbose=y\n")
    problems = disable(System(root=flatcar))[1]
    assert problems == ["/etc/waagent.conf: kept as a file: other lines were changed since waprov -enable"]
    assert conf_text(flatcar) == FLATCAR_CONF + "Logs.Verbose=y\n"


def test_package_dropins_are_used_and_disable_skips_the_units_by_flag(debian: str) -> None:
    for unit in ("waagent.service", "walinuxagent.service"):
        put(debian, f"/lib/systemd/system/{unit}.d/50-waprov.conf", DROPIN)
    changes = enable(System(root=debian))
    package = "/usr/lib/systemd/system/walinuxagent.service.d/50-waprov.conf"  # /lib is usr/lib
    assert f"walinuxagent.service: the package's drop-in {package} is in place" in changes
    assert not os.path.exists(os.path.join(debian, "etc/systemd/system/walinuxagent.service.d"))
    assert conf_text(debian, "/etc/systemd/system/sshd@.service.d/50-waprov.conf") == SSH_DROPIN
    changes, _ = disable(System(root=debian))
    assert not os.path.exists(os.path.join(debian, "etc/systemd/system/sshd@.service.d"))
    assert os.path.isfile(os.path.join(debian, "etc/waprov/disabled"))  # Requires= still pulls waprov in
    assert (
        "/etc/waprov/disabled: written (the package's drop-ins for waagent.service, walinuxagent.service"
        " still pull waprov-local.service and waprov.service in; the flag makes systemd skip them)"
    ) in changes
    assert conf_text(debian) == sample()
    for unit in UNITS:  # the flag skips every unit, both the drop-ins pull in among them
        with open(os.path.join(ROOT, "init", unit), encoding="utf-8") as f:
            assert "ConditionPathExists=!/etc/waprov/disabled\n" in f.read()
    changes = enable(System(root=debian))
    assert "/etc/waprov/disabled: removed" in changes
    assert not os.path.exists(os.path.join(debian, "etc/waprov/disabled"))


def test_already_disabled_conf_is_left_and_not_recorded(debian: str) -> None:
    put(debian, "/etc/waagent.conf", "Provisioning.Agent=disabled  # by the image\n")
    changes = enable(System(root=debian))
    assert changes[0] == "/etc/waagent.conf: Provisioning.Agent is already disabled (left as it is)"
    assert not os.path.exists(os.path.join(debian, "etc/waprov/swap-in.json"))
    changes, problems = disable(System(root=debian))
    assert problems == [] and changes[0].startswith("Provisioning.Agent: no record of a change")
    assert conf_text(debian) == "Provisioning.Agent=disabled  # by the image\n"


def test_line_changed_after_enable_is_not_overwritten(debian: str) -> None:
    enable(System(root=debian))
    changed = conf_text(debian).replace("Provisioning.Agent=disabled", "Provisioning.Agent=cloud-init")
    put(debian, "/etc/waagent.conf", changed)
    problems = disable(System(root=debian))[1]
    assert len(problems) == 1 and "not restored: the Provisioning.Agent line was changed since" in problems[0]
    assert conf_text(debian) == changed
    assert os.path.isfile(os.path.join(debian, "etc/waprov/swap-in.json"))  # kept for the admin
    assert wants(debian) == ["walinuxagent.service"]  # the rest was still undone


def test_missing_units_are_refused_before_any_change(debian: str) -> None:
    os.unlink(os.path.join(debian, "lib/systemd/system/waprov.service"))
    before = tree(debian)
    with pytest.raises(HostError, match=r"waprov.service is not installed \(looked in /etc/systemd/system, "):
        enable(System(root=debian))
    assert tree(debian) == before


class NothingInstalled(SubprocessRunner):
    """The real commands, but none is said to be installed."""

    def which(self, name: str) -> Optional[str]:
        return None


def test_without_systemctl_nothing_is_changed(debian: str) -> None:
    before = tree(debian)
    for command in (enable, disable):
        with pytest.raises(HostError, match="systemctl is not installed"):
            command(System(root=debian, runner=NothingInstalled()))
    assert tree(debian) == before


def test_disable_after_the_package_is_gone_still_restores_the_line(debian: str) -> None:
    enable(System(root=debian))
    for unit in UNITS:
        os.unlink(os.path.join(debian, "lib/systemd/system", unit))
    changes, problems = disable(System(root=debian, runner=NothingInstalled()))
    assert problems == [] and conf_text(debian) == sample()
    assert "/etc/waagent.conf: line 3: Provisioning.Agent=disabled -> Provisioning.Agent=auto" in changes


def test_no_guest_agent_configuration_still_enables_the_units(debian: str) -> None:
    os.unlink(os.path.join(debian, "etc/waagent.conf"))
    changes = enable(System(root=debian))
    assert changes[0].startswith("/etc/waagent.conf: not found")
    assert wants(debian) == WANTS


def test_dry_run_changes_nothing_and_plans_the_real_actions(debian: str) -> None:
    before = tree(debian)
    dry = System(root=debian, dry_run=True)
    planned = enable(dry)
    assert tree(debian) == before
    real = System(root=debian)
    assert enable(real) == planned
    assert [str(a) for a in dry.actions] == [str(a) for a in real.actions]


def test_damaged_record_is_a_clear_error(debian: str) -> None:
    enable(System(root=debian))
    put(debian, "/etc/waprov/swap-in.json", "{not json")
    from waprov.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"/etc/waprov/swap-in.json: is not a record written by waprov -enable"
    ):
        disable(System(root=debian))


SANDBOX_SETUP = """
cp tests/data/readme-sample.conf /etc/waagent.conf
mkdir -p /lib/systemd/system
cp init/waprov-local.service init/waprov.service init/waprov-resourcedisk.service /lib/systemd/system/
"""


@pytest.mark.sandbox
def test_command_on_a_real_root_in_a_sandbox() -> None:
    """The real command (root "/", systemctl --root=/) in a sandbox: output, exit codes,
    the file back to its bytes, a changed line refused (1), a damaged record (2)."""
    from tests.conftest import waprov_argv
    from tests.sandbox import sandbox_run

    w = " ".join(waprov_argv())
    script = f"""
    S=tests/data/readme-sample.conf
    {w} -enable --dry-run; echo "rc=$?"; cmp -s /etc/waagent.conf $S && echo untouched
    {w} -enable; echo "rc=$?"; {w} -enable; echo "rc=$?"
    systemctl --root=/ is-enabled waprov-local.service waprov.service waprov-resourcedisk.service
    {w} -disable; echo "rc=$?"; cmp /etc/waagent.conf $S && echo identical
    {w} -enable >/dev/null; sed -i 's/^Provisioning.Agent=disabled/Provisioning.Agent=waagent/' \
        /etc/waagent.conf
    {w} -disable; echo "rc=$?"
    echo '{{' > /etc/waprov/swap-in.json; {w} -disable; echo "rc=$?"
    """
    p = sandbox_run(["bash", "-c", script], SANDBOX_SETUP)
    out = p.stdout.split("\n")
    assert out[:10] == [
        "waprov -enable (dry run: nothing was changed):",
        "  /etc/waagent.conf: line 3: Provisioning.Agent=auto -> Provisioning.Agent=disabled"
        " (previous line kept in /etc/waprov/swap-in.json)",
        "  /etc/systemd/system/waagent.service.d/50-waprov.conf: written"
        " (waagent.service requires and follows waprov-local.service and waprov.service)",
        "  /etc/systemd/system/walinuxagent.service.d/50-waprov.conf: written"
        " (walinuxagent.service requires and follows waprov-local.service and waprov.service)",
        "  /etc/systemd/system/ssh@.service.d/50-waprov.conf: written"
        " (a socket-started ssh@.service follows waprov-local.service and waprov.service)",
        "  /etc/systemd/system/sshd@.service.d/50-waprov.conf: written"
        " (a socket-started sshd@.service follows waprov-local.service and waprov.service)",
        "  waprov-local.service: enabled",
        "  waprov.service: enabled",
        "  waprov-resourcedisk.service: enabled",
        "rc=0",
    ], p.stdout + p.stderr
    assert out[10] == "untouched"
    assert out[11:21] == ["waprov -enable:", *out[1:9], "rc=0"]
    assert out[21:25] == [
        "waprov -enable:",
        "  /etc/waagent.conf: Provisioning.Agent is already disabled (left as it is)",
        "  nothing to change: waprov is already enabled",
        "rc=0",
    ]
    assert out[25:28] == ["enabled", "enabled", "enabled"]
    assert out[28:39] == [
        "waprov -disable:",
        "  /etc/waagent.conf: line 3: Provisioning.Agent=disabled -> Provisioning.Agent=auto",
        "  /etc/systemd/system/waagent.service.d/50-waprov.conf: removed",
        "  /etc/systemd/system/walinuxagent.service.d/50-waprov.conf: removed",
        "  /etc/systemd/system/ssh@.service.d/50-waprov.conf: removed",
        "  /etc/systemd/system/sshd@.service.d/50-waprov.conf: removed",
        "  waprov-local.service: disabled",
        "  waprov.service: disabled",
        "  waprov-resourcedisk.service: disabled",
        "rc=0",
        "identical",
    ]
    assert out[39] == "waprov -disable:"
    assert any(
        line.startswith("  NOT DONE: /etc/waagent.conf: not restored: the Provisioning.Agent line")
        for line in out
    )
    assert "rc=1" in out and out[-2:] == ["rc=2", ""]
    assert "/etc/waprov/swap-in.json: is not a record written by waprov -enable" in p.stderr
    assert "Traceback" not in p.stderr


def test_ssh_dropin_beside_an_admins_own_is_removed_alone(debian: str) -> None:
    put(debian, "/etc/systemd/system/sshd@.service.d/10-admin.conf", "[Service]\nNice=5\n")
    enable(System(root=debian))
    assert conf_text(debian, "/etc/systemd/system/sshd@.service.d/50-waprov.conf") == SSH_DROPIN
    disable(System(root=debian))
    assert os.listdir(os.path.join(debian, "etc/systemd/system/sshd@.service.d")) == ["10-admin.conf"]


# Socket-activated sshd as the distributions ship it (spec/packaging.md): Debian 12's
# ssh.socket (Accept=no: it starts ssh.service), and Flatcar's sshd.socket (Accept=yes:
# one sshd@.service per connection), with a stand-in sshd.
SSH_UNITS_SETUP = """
printf '#!/bin/sh\\n' >/usr/sbin/sshd; chmod 0755 /usr/sbin/sshd
printf '#!/bin/sh\\n' >/usr/sbin/waprov; chmod 0755 /usr/sbin/waprov
mkdir -p /usr/libexec/waprov && cp init/waprov-boot-check init/waprov-wait-local /usr/libexec/waprov/
u=/etc/systemd/system
cat >$u/ssh.socket <<'EOF'
[Unit]
Description=OpenBSD Secure Shell server socket
Before=sockets.target
ConditionPathExists=!/etc/ssh/sshd_not_to_be_run

[Socket]
ListenStream=22
Accept=no

[Install]
WantedBy=sockets.target
EOF
cat >$u/ssh.service <<'EOF'
[Unit]
Description=OpenBSD Secure Shell server
After=network.target auditd.service

[Service]
ExecStart=/usr/sbin/sshd -D
Type=notify
EOF
cat >$u/sshd.socket <<'EOF'
[Unit]
Description=OpenSSH Server Socket
Conflicts=sshd.service

[Socket]
ListenStream=2222
FreeBind=true
Accept=yes

[Install]
WantedBy=sockets.target
EOF
cat >$u/sshd@.service <<'EOF'
[Unit]
Description=OpenSSH per-connection server daemon

[Service]
ExecStart=-/usr/sbin/sshd -i
StandardInput=socket
EOF
# a boot in one transaction: the provisioning units, both sockets and a connection's sshd
cat >$u/e2e-boot.target <<'EOF'
[Unit]
Wants=basic.target waprov-local.service waprov.service ssh.socket sshd.socket
Wants=sshd@0-127.0.0.1:2222-127.0.0.1:40000.service
EOF
"""


@pytest.mark.sandbox
@pytest.mark.parametrize("dropin", ["enable", "socket after waprov.service"])
def test_ssh_dropins_verify_without_an_ordering_cycle(dropin: str) -> None:
    """`systemd-analyze verify` of one transaction that starts waprov's units, Debian's
    ssh.socket, Flatcar's sshd.socket and one of its per-connection sshd@ units, after the
    real `waprov -enable`: nothing to report. The design this replaces (the socket itself
    After=waprov.service) is a cycle, which the same check reports."""
    from tests.conftest import waprov_argv
    from tests.sandbox import sandbox_run

    w = " ".join(waprov_argv())
    script = f"{w} -enable >/dev/null || exit 1\n"
    if dropin != "enable":
        script += (
            "mkdir -p /etc/systemd/system/sshd.socket.d && printf '[Unit]\\nAfter=waprov.service\\n' "
            ">/etc/systemd/system/sshd.socket.d/50-bad.conf\n"
        )
    script += "cat /etc/systemd/system/sshd@.service.d/50-waprov.conf\n"
    script += 'sh -c "systemd-analyze verify --man=no e2e-boot.target"; echo "rc=$?"'
    p = sandbox_run(["bash", "-c", script], SANDBOX_SETUP + SSH_UNITS_SETUP)
    out = p.stdout + p.stderr
    assert p.stdout.startswith(SSH_DROPIN), out
    if dropin == "enable":
        assert (p.stdout[len(SSH_DROPIN) :], p.stderr) == ("rc=0\n", ""), out
    else:
        assert "Found ordering cycle" in out, out
