"""-deprovision's plan (WA §7.2) on a root-prefixed tree with scripted commands.

The dry run and the real run execute the same actions: a dry run on one copy of the tree
and a real run on another must record the same actions, and the real run must leave
exactly the expected files. Refusals happen before anything is touched.
"""

from __future__ import annotations

import io
import os
from typing import Any, Dict, List, Optional

import pytest

from tests.fakerunner import ScriptedRunner, ok
from tests.provisioning import ovf
from waprov.config import Config
from waprov.deprovision import apply, build, confirm
from waprov.distro import Distro
from waprov.errors import ConfigError
from waprov.system import System

DEBIAN = Distro("debian", "12")
FLATCAR = Distro("flatcar", "3815.2.0", flatcar=True)
UBUNTU = Distro("ubuntu", "22.04", ubuntu=True)
PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
azureuser:x:1000:1000::/home/azureuser:/bin/sh
"""
TREE = {
    "/etc/hostname": "vm1",
    "/etc/passwd": PASSWD,
    "/etc/resolv.conf": "nameserver 168.63.129.16\n",
    "/etc/machine-id": "abc\n",
    "/etc/dhcp/dhclient.conf": 'send host-name "vm1";\n',
    "/etc/sudoers.d/waagent": "azureuser ALL=(ALL) ALL\nazureuser2 ALL=(ALL) ALL\n",
    "/etc/ssh/ssh_host_rsa_key": "k",
    "/etc/ssh/ssh_host_rsa_key.pub": "k",
    "/etc/ssh/sshd_config": "PasswordAuthentication no\n",
    "/var/lib/waagent/provisioned": "id",
    "/var/lib/waagent/ovf-env.xml": ovf(),
    "/var/lib/waagent/Microsoft.Foo-1.0/status/1.status": "{}",
    "/var/log/azure/ext.log": "x",
    "/var/lib/dhcp/dhclient.leases": "lease",
    "/var/lib/waprov/provisioned": "id",
    "/var/lib/waprov/journal": "id sshd-dropin\n",
    "/var/log/waprov.log": "log",
    "/var/log/waagent.log": "log",
    "/root/.bash_history": "ls",
    "/home/azureuser/.ssh/authorized_keys": "ssh-ed25519 AAAA",
    "/lib/systemd/system/waagent.service.d/10-Slice.conf": "x",
    "/etc/ssh/sshd_config.d/80-flatcar-walinuxagent.conf": "PasswordAuthentication no\n",
}


def make_tree(root: str, extra: Optional[Dict[str, str]] = None) -> None:
    """TREE (then `extra` over it) below `root`, each home given to its account."""
    for path, text in {**TREE, **(extra or {})}.items():
        full = os.path.join(root, path.lstrip("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w", encoding="utf-8") as f:
            f.write(text)
    own_homes(root)


def own_homes(root: str) -> None:
    """Each existing home directory below /home owned by its account, as useradd leaves it."""
    with open(os.path.join(root, "etc/passwd"), encoding="utf-8") as f:
        for fields in (line.split(":") for line in f.read().splitlines()):
            home = os.path.join(root, fields[5].lstrip("/"))
            if fields[5].startswith("/home/") and os.path.isdir(home) and not os.path.islink(home):
                os.chown(home, int(fields[2]), int(fields[3]))


def files(root: str) -> List[str]:
    found = []
    for base, _, names in os.walk(root):
        found += ["/" + os.path.relpath(os.path.join(base, n), root) for n in names]
    return sorted(found)


def run(tmp: str, distro: Distro, deluser: bool, dry_run: bool, **conf: Any) -> Dict[str, Any]:
    make_tree(tmp)
    runner = ScriptedRunner(hostname=ok, touch=ok, userdel=ok, systemctl=ok)
    system = System(root=tmp, runner=runner, dry_run=dry_run)
    plan = build(system, Config(**conf), distro, deluser)
    failed = apply(system, plan)
    return {"warnings": plan.warnings, "actions": [str(a) for a in system.actions], "calls": runner.calls,
            "failed": failed, "files": files(tmp)}  # fmt: skip


def test_deprovision_user_removes_wa_list_and_waprov_state_and_dry_run_is_the_same_plan(
    tmp_path: Any,
) -> None:
    dry = run(str(tmp_path / "a"), DEBIAN, True, True)
    real = run(str(tmp_path / "b"), DEBIAN, True, False)
    assert dry["actions"] == real["actions"] and dry["warnings"] == real["warnings"]
    assert dry["files"] == sorted(TREE)  # nothing changed by the dry run
    assert real["warnings"] == [
        "WARNING! The waagent service will be stopped.",
        "WARNING! Cached DHCP leases will be deleted.",
        "WARNING! /etc/resolv.conf will be deleted.",
        "WARNING! azureuser account and entire home directory will be deleted.",
    ]
    assert [c[0] for c in real["calls"]] == ["hostname", "touch", "userdel"]
    assert real["calls"][2] == ["userdel", "-f", "-r", "azureuser"]
    gone = set(TREE) - set(real["files"])
    assert gone == {
        "/etc/resolv.conf", "/var/lib/waagent/provisioned", "/var/lib/waagent/ovf-env.xml",
        "/var/lib/waagent/Microsoft.Foo-1.0/status/1.status", "/var/log/azure/ext.log",
        "/var/lib/dhcp/dhclient.leases", "/var/lib/waprov/provisioned", "/var/lib/waprov/journal",
        "/var/log/waprov.log", "/var/log/waagent.log", "/root/.bash_history",
        "/lib/systemd/system/waagent.service.d/10-Slice.conf",
        "/etc/ssh/sshd_config.d/80-flatcar-walinuxagent.conf",  # the journal says waprov wrote it
    }  # fmt: skip
    root = str(tmp_path / "b")
    assert open(f"{root}/etc/hostname").read() == "localhost.localdomain"
    assert open(f"{root}/etc/dhcp/dhclient.conf").read() == 'send host-name "localhost.localdomain";\n'
    assert open(f"{root}/etc/sudoers.d/waagent").read() == "azureuser2 ALL=(ALL) ALL\n"
    assert os.path.isdir(f"{root}/var/lib/waagent") and os.path.isdir(f"{root}/var/log/azure")


def test_without_user_the_home_keys_and_sudoers_stay(tmp_path: Any) -> None:
    real = run(str(tmp_path), DEBIAN, False, False)
    assert "/home/azureuser/.ssh/authorized_keys" in real["files"]
    assert "userdel" not in [c[0] for c in real["calls"]]
    assert open(f"{tmp_path}/etc/sudoers.d/waagent").read() == TREE["/etc/sudoers.d/waagent"]


def test_options_and_distro_variants(tmp_path: Any) -> None:
    flat = run(str(tmp_path / "f"), FLATCAR, False, False, regenerate_ssh_host_key_pair=True,
               delete_root_password=False)  # fmt: skip
    assert flat["warnings"][-1] == "WARNING! /etc/machine-id will be removed."
    assert "WARNING! All SSH host key pairs will be deleted." in flat["warnings"]
    assert ["systemctl", "stop", "waagent"] in flat["calls"]
    assert "/etc/machine-id" not in flat["files"] and "/etc/ssh/ssh_host_rsa_key" not in flat["files"]
    ubu = run(str(tmp_path / "u"), UBUNTU, False, False)
    kept = "WARNING! /etc/resolv.conf will NOT be removed, this is a behavior change to earlier versions of"
    assert kept + " Ubuntu." in ubu["warnings"]
    assert "/etc/resolv.conf" in ubu["files"]


def test_ubuntu_before_18_04_with_resolvconf_deletes_its_tail_and_original(tmp_path: Any) -> None:
    make_tree(str(tmp_path))
    os.unlink(tmp_path / "etc/resolv.conf")
    os.makedirs(tmp_path / "run/resolvconf")
    (tmp_path / "run/resolvconf/resolv.conf").write_text("nameserver 1.1.1.1\n")
    os.symlink("../run/resolvconf/resolv.conf", tmp_path / "etc/resolv.conf")
    for name in ("tail", "original"):
        os.makedirs(tmp_path / "etc/resolvconf/resolv.conf.d", exist_ok=True)
        (tmp_path / "etc/resolvconf/resolv.conf.d" / name).write_text("x\n")
    system = System(root=str(tmp_path), runner=ScriptedRunner(hostname=ok))
    plan = build(system, Config(), Distro("ubuntu", "16.04", ubuntu=True), False)
    apply(system, plan)
    tail, original = "/etc/resolvconf/resolv.conf.d/tail", "/etc/resolvconf/resolv.conf.d/original"
    assert f"WARNING! {tail} and {original} will be deleted." in plan.warnings
    left = files(str(tmp_path))
    assert tail not in left and original not in left and os.path.islink(tmp_path / "etc/resolv.conf")


def test_missing_ovf_env_skips_the_user(tmp_path: Any) -> None:
    make_tree(str(tmp_path))
    os.unlink(tmp_path / "var/lib/waagent/ovf-env.xml")
    system = System(root=str(tmp_path), runner=ScriptedRunner(hostname=ok), dry_run=True)
    plan = build(system, Config(), DEBIAN, True)
    assert plan.warnings[-2:] == ["WARNING! ovf-env.xml is not found.", "WARNING! Skip delete user."]


@pytest.mark.parametrize(
    "value", ["/", "/etc", "", "relative", "/var/lib", "/home/azureuser", "/usr/lib/waagent"]
)
def test_dangerous_directories_are_refused_before_anything(tmp_path: Any, value: str) -> None:
    make_tree(str(tmp_path))
    runner = ScriptedRunner()
    system = System(root=str(tmp_path), runner=runner)
    for config in (Config(lib_dir=value), Config(extension_log_dir=value)):
        with pytest.raises(ConfigError, match="empties this directory"):
            build(system, config, DEBIAN, True)
    assert system.actions == [] and runner.calls == [] and files(str(tmp_path)) == sorted(TREE)


@pytest.mark.parametrize("target", ["../..", "/"])  # to the root of the tree; out of it, to /
def test_symlinked_lib_dir_to_root_is_refused(tmp_path: Any, target: str) -> None:
    os.makedirs(tmp_path / "var/lib")
    os.symlink(target, tmp_path / "var/lib/waagent")
    with pytest.raises(ConfigError, match=r"'/var/lib/waagent' \(resolves to /\)"):
        build(System(root=str(tmp_path)), Config(lib_dir="/var/lib/waagent"), DEBIAN, False)


@pytest.mark.parametrize(
    ("answer", "expected"), [("y\n", True), ("Yes\n", True), ("n\n", False), ("", False), ("\n", False)]
)
def test_confirmation(answer: str, expected: bool) -> None:
    out = io.StringIO()
    assert confirm(io.StringIO(answer), out) is expected
    assert out.getvalue().startswith("Do you want to proceed (y/n)")


# ---- which user +user deletes ----------------------------------------------------------------


def user_plan(
    tmp: str, extra: Dict[str, str], owners: Dict[str, int] | None = None, **conf: Any
) -> Dict[str, Any]:
    """build + apply (real) on TREE with `extra` files over it (and `owners`: uids set on
    paths after the homes are given to their accounts): the user warnings and calls."""
    make_tree(tmp, extra)
    for path, uid in (owners or {}).items():
        os.chown(os.path.join(tmp, path.lstrip("/")), uid, uid)
    runner = ScriptedRunner(hostname=ok, touch=ok, userdel=ok, systemctl=ok)
    system = System(root=tmp, runner=runner)
    plan = build(system, Config(**conf), DEBIAN, True)
    user = [w for w in plan.warnings if "resolv.conf" not in w and "waagent service" not in w
            and "DHCP" not in w]  # fmt: skip
    failed = apply(system, plan)
    return {"warnings": user, "userdel": [c for c in runner.calls if c[0] == "userdel"], "failed": failed,
            "sudoers": open(os.path.join(tmp, "etc/sudoers.d/waagent")).read()}  # fmt: skip


def test_the_recorded_user_is_deleted_not_the_one_named_in_ovf_env(tmp_path: Any) -> None:
    r = user_plan(str(tmp_path), {
        "/etc/passwd": PASSWD + "alice:x:1001:1001::/home/alice:/bin/sh\n",
        "/home/alice/.profile": "",
        "/var/lib/waprov/user": "VMID alice 1001 created\n",
        "/var/lib/waprov/attempt": "VMID",
        "/etc/sudoers.d/waagent": "alice ALL=(ALL) ALL\nazureuser ALL=(ALL) ALL\n",
    })  # fmt: skip
    assert r["warnings"] == ["WARNING! alice account and entire home directory will be deleted."]
    assert r["userdel"] == [["userdel", "-f", "-r", "alice"]] and r["failed"] == []
    assert r["sudoers"] == "azureuser ALL=(ALL) ALL\n"


def test_a_waprov_attempt_without_a_record_keeps_the_ovf_env_user(tmp_path: Any) -> None:
    r = user_plan(str(tmp_path), {"/var/lib/waprov/attempt": "VMID"})
    assert r["warnings"] == [
        "WARNING! azureuser is kept: waprov provisioned this VM and created or adopted no account "
        "(no /var/lib/waprov/user: the user step refused it or did not run)."
    ]
    assert r["userdel"] == [] and r["sudoers"] == TREE["/etc/sudoers.d/waagent"]


NOT_BELOW = "the home directory {} of bob is not below OS.HomeDir /home"


@pytest.mark.parametrize(
    ("entry", "files", "why"),
    [
        ("daemon:x:1:1::/usr/sbin:/bin/sh", {}, "uid 1 is below UID_MIN 1000 (a system account)"),
        ("root:x:0:0::/root:/bin/sh", {}, "uid 0 is below UID_MIN 1000 (a system account)"),
        ("nobody:x:65534:65534::/nonexistent:/bin/sh", {},
         "uid 65534 is above UID_MAX 60000 (not a regular account)"),
        ("bob:x:1500:1500::/home/bob:/bin/sh", {"/etc/login.defs": "UID_MIN\t 2000\nUID_MAX 3000\n"},
         "uid 1500 is below UID_MIN 2000 (a system account)"),
        ("bob:x:1500:1500::/:/bin/sh", {}, NOT_BELOW.format("/")),
        ("bob:x:1500:1500::/home:/bin/sh", {}, NOT_BELOW.format("/home")),
        ("bob:x:1500:1500::/home/../etc:/bin/sh", {}, NOT_BELOW.format("/home/../etc")),
        ("bob:x:1500:1500::/homebob:/bin/sh", {}, NOT_BELOW.format("/homebob")),
        ("bob:x:1500:1500::home/bob:/bin/sh", {}, NOT_BELOW.format("home/bob")),
        ("bob:x:1500:1500::/home/bob:/bin/sh", {"link /home/bob": "../etc"},
         "the home directory /home/bob of bob is a symbolic link"),
        ("bob:x:1500:1500::/home/team/bob:/bin/sh", {"link /home/team": "../etc"},
         "the home directory /home/team/bob of bob is not below OS.HomeDir /home"),
    ],
)  # fmt: skip
def test_a_system_account_or_a_home_outside_home_dir_is_kept(
    tmp_path: Any, entry: str, files: Dict[str, str], why: str
) -> None:
    """Both ways in: the user waprov recorded, and ovf-env.xml's user when WALinuxAgent
    provisioned the VM (no waprov state)."""
    name, uid = entry.split(":")[0], entry.split(":")[2]
    for source in ("record", "ovf-env"):
        root = tmp_path / source
        extra = {p: t for p, t in files.items() if not p.startswith("link ")}
        extra["/etc/passwd"] = "".join(x + "\n" for x in PASSWD.splitlines() if not x.startswith(name + ":"))
        extra["/etc/passwd"] += entry + "\n"
        extra["/etc/sudoers.d/waagent"] = f"{name} ALL=(ALL) NOPASSWD: ALL\n"
        if source == "record":
            extra["/var/lib/waprov/user"] = f"VMID {name} {uid} adopted\n"
        else:
            extra["/var/lib/waagent/ovf-env.xml"] = ovf(user=name)
        make_tree(str(root))
        for spec, target in files.items():
            if spec.startswith("link "):
                os.makedirs(root / "etc", exist_ok=True)
                os.symlink(target, root / spec[5:].lstrip("/"))
        r = user_plan(str(root), extra)
        assert r["warnings"] == [f"WARNING! {name} is kept: {why}."], source
        assert r["userdel"] == [] and r["failed"] == [], source
        assert r["sudoers"] == f"{name} ALL=(ALL) NOPASSWD: ALL\n", source  # kept with the user


def test_a_recorded_user_whose_uid_changed_is_kept(tmp_path: Any) -> None:
    r = user_plan(str(tmp_path), {"/var/lib/waprov/user": "VMID azureuser 1005 created\n"})
    assert r["warnings"] == ["WARNING! azureuser is kept: its uid is now 1000, not 1005 as when "
                             "provisioning accepted it."]  # fmt: skip
    assert r["userdel"] == []


def test_an_unreadable_record_deletes_no_user(tmp_path: Any) -> None:
    r = user_plan(str(tmp_path), {"/var/lib/waprov/user": "azureuser\n"})
    assert r["warnings"] == ["WARNING! No user is deleted: /var/lib/waprov/user is not a "
                             "'<vm id> <name> <uid> created|adopted' line."]  # fmt: skip
    assert r["userdel"] == []


def test_the_account_is_checked_again_when_the_action_runs(tmp_path: Any) -> None:
    make_tree(str(tmp_path))
    runner = ScriptedRunner(hostname=ok, touch=ok, userdel=ok, systemctl=ok)
    system = System(root=str(tmp_path), runner=runner)
    plan = build(system, Config(), DEBIAN, True)
    assert "WARNING! azureuser account and entire home directory will be deleted." in plan.warnings
    with open(tmp_path / "etc/passwd", "w", encoding="utf-8") as f:  # the name now has another uid
        f.write(PASSWD.replace("azureuser:x:1000:1000", "azureuser:x:0:0"))
    assert apply(system, plan) == ["user"]
    assert "userdel" not in runner.names()
    assert open(tmp_path / "etc/sudoers.d/waagent").read() == TREE["/etc/sudoers.d/waagent"]


BOB = "bob:x:1500:1500::/home/bob:/bin/sh\n"


def test_a_recorded_user_whose_home_another_account_owns_is_kept(tmp_path: Any) -> None:
    extra = {
        "/etc/passwd": PASSWD + BOB,
        "/home/bob/data": "x",
        "/var/lib/waprov/user": "VMID bob 1500 adopted\n",
    }
    r = user_plan(str(tmp_path), extra, owners={"/home/bob": 0})
    assert r["warnings"] == [
        "WARNING! bob is kept: the home directory /home/bob is not owned by bob (uid 1500)."
    ]
    assert r["userdel"] == []


def test_a_recorded_user_whose_home_holds_another_accounts_home_is_kept(tmp_path: Any) -> None:
    carol = "carol:x:1501:1501::/home/bob/carol:/bin/sh\n"
    extra = {"/etc/passwd": PASSWD + BOB + carol, "/home/bob/carol/data": "x",
             "/var/lib/waprov/user": "VMID bob 1500 adopted\n"}  # fmt: skip
    r = user_plan(str(tmp_path), extra)
    assert r["warnings"] == [
        "WARNING! bob is kept: its home /home/bob holds the home of carol too (/home/bob/carol)."
    ]
    assert r["userdel"] == []


def test_a_recorded_user_whose_home_is_missing_is_deleted(tmp_path: Any) -> None:
    extra = {"/etc/passwd": PASSWD + BOB, "/var/lib/waprov/user": "VMID bob 1500 created\n"}
    r = user_plan(str(tmp_path), extra)
    assert r["warnings"] == ["WARNING! bob account and entire home directory will be deleted."]
    assert r["userdel"] == [["userdel", "-f", "-r", "bob"]]


def test_a_home_another_accounts_home_resolves_into_is_kept(tmp_path: Any) -> None:
    carol = "carol:x:1501:1501::/srv/carolhome:/bin/sh\n"
    extra = {"/etc/passwd": PASSWD + BOB + carol, "/home/bob/inner/data": "x",
             "/var/lib/waprov/user": "VMID bob 1500 adopted\n"}  # fmt: skip
    os.makedirs(tmp_path / "srv")
    os.symlink("../home/bob/inner", tmp_path / "srv/carolhome")
    r = user_plan(str(tmp_path), extra)
    assert r["warnings"] == [
        "WARNING! bob is kept: its home /home/bob holds the home of carol too (/srv/carolhome)."
    ]
    assert r["userdel"] == []
