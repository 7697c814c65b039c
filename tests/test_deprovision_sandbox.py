"""-deprovision for real: a full provisioning in a sandbox, then each deprovision form.

The host after each run is compared with WA §7.2's list: files gone, files kept (the
user's home without +user), commands run; the dry-run plan equals the actions the real
run reports; then the next boot (a new VM id) provisions from scratch.
"""

from __future__ import annotations

import base64
from typing import Any, Dict, List

import pytest

from tests.provisioning import PASSWORD, ovf, scenario, user_key

SNAP = ["/etc/passwd", "/etc/hostname", "/etc/sudoers.d", "/home", "/var/lib/waagent", "/var/lib/waprov",
        "/var/log/waprov.log", "/etc/resolv.conf", "/var/log/azure"]  # fmt: skip
NEW_VM = "11111111-2222-3333-4444-555555555555"


def spec(tmp: str, runs: List[Dict[str, Any]], **extra: Any) -> Dict[str, Any]:
    _, pub = user_key(tmp)
    document = ovf(password=PASSWORD, keys=[("/home/azureuser/.ssh/authorized_keys", None, pub)])
    setup = [
        "echo 'nameserver 127.0.0.53' > /etc/resolv.conf",
        "mkdir -p /var/log/azure && echo x > /var/log/azure/a.log",
    ]
    return {"ovf": document, "snapshot": [], "setup": setup, "runs": [{"snapshot": SNAP}, *runs], **extra}


def names(run: Dict[str, Any]) -> set[str]:
    return set(run["snapshot"])


def users(run: Dict[str, Any]) -> List[str]:
    passwd = base64.b64decode(run["snapshot"]["/etc/passwd"]["data"]).decode()
    return [line.split(":")[0] for line in passwd.splitlines()]


def plan_lines(stdout: str, header: str) -> List[str]:
    lines = stdout.splitlines()
    return lines[lines.index(header) + 1 :]


def test_deprovision_user_after_provisioning_then_the_next_boot_provisions_again(tmp_path: Any) -> None:
    runs: List[Dict[str, Any]] = [
        {"args": ["-deprovision+user", "--dry-run"], "snapshot": SNAP},
        {"args": ["-deprovision+user", "-force"], "snapshot": SNAP},
        {"env": {"WAPROV_VM_ID": NEW_VM}, "snapshot": SNAP},
    ]
    r = scenario(str(tmp_path), spec(str(tmp_path), runs))
    provisioned, dry, real, again = r["runs"]
    assert provisioned["rc"] == 0, provisioned["stderr"]
    assert dry["rc"] == 0 and real["rc"] == 0, real["stderr"]
    assert dry["snapshot"] == provisioned["snapshot"]  # the dry run changed nothing
    plan = plan_lines(dry["stdout"], "Plan (dry run: nothing was changed):")
    done = plan_lines(real["stdout"], "Done:")
    assert plan == done and plan  # one mechanism: the same actions
    assert "WARNING! azureuser account and entire home directory will be deleted." in real["stdout"]
    assert "azureuser" in users(provisioned) and "azureuser" not in users(real)
    gone = names(provisioned) - names(real)
    for path in ("/home/azureuser/.ssh/authorized_keys", "/var/lib/waagent/provisioned",
                 "/var/lib/waagent/ovf-env.xml", "/var/lib/waprov/provisioned", "/var/log/waprov.log",
                 "/etc/resolv.conf", "/var/log/azure/a.log"):  # fmt: skip
        assert path in gone, path
    assert {"/var/lib/waagent", "/var/log/azure"} <= names(real)  # emptied, kept
    assert any("userdel -f -r azureuser" in line for line in done)
    # the next boot of a new VM provisions from scratch
    assert again["rc"] == 0, again["stderr"]
    assert "azureuser" in users(again) and "/home/azureuser/.ssh/authorized_keys" in names(again)


def test_deprovision_keeps_the_user_and_asks_first(tmp_path: Any) -> None:
    runs: List[Dict[str, Any]] = [
        {"args": ["-deprovision"], "stdin": "n\n", "snapshot": SNAP},
        {"args": ["-deprovision"], "snapshot": SNAP},  # stdin closed: "no"
        {"args": ["-deprovision"], "sigint_after": 1.5, "snapshot": SNAP},
        {"args": ["-deprovision"], "stdin": "y\n", "snapshot": SNAP},
    ]
    r = scenario(str(tmp_path), spec(str(tmp_path), runs))
    provisioned, no, closed, interrupted, yes = r["runs"]
    for run in (no, closed, interrupted):
        assert run["rc"] == 0 and run["snapshot"] == provisioned["snapshot"], run["stderr"]
        assert "Do you want to proceed (y/n)" in run["stdout"] or run is interrupted
    assert "Deprovision is interrupted." in interrupted["stdout"]
    assert yes["rc"] == 0, yes["stderr"]
    assert "azureuser" in users(yes) and "/home/azureuser/.ssh/authorized_keys" in names(yes)
    assert "/var/lib/waagent/provisioned" not in names(yes)


def test_sigint_during_the_actions_is_ignored_and_a_read_only_directory_is_reported(tmp_path: Any) -> None:
    script = '#!/bin/sh\\nkill -INT $PPID\\nexec /usr/sbin/userdel "$@"\\n'
    fake = "/usr/local/sbin/userdel"
    fake_userdel = f"mkdir -p /usr/local/sbin && printf '{script}' > {fake}; chmod 755 {fake}"
    runs = [{
        "args": ["-deprovision+user", "-force"], "snapshot": SNAP,
        "before": [fake_userdel, "mount --bind -o ro /var/log/azure /var/log/azure"],
        "env": {"PATH": "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"},
    }]  # fmt: skip
    r = scenario(str(tmp_path), spec(str(tmp_path), runs))
    run = r["runs"][1]
    assert "Deprovisioning may not be interrupted." in run["stdout"]
    assert run["rc"] == 1
    assert "deprovision: lib dirs:" in run["stderr"] and "a.log" in run["stderr"]
    assert "/var/log/azure/a.log" in names(run)  # read-only: kept, reported
    assert "azureuser" not in users(run) and "/var/lib/waprov/provisioned" not in names(run)  # the rest ran


def test_a_user_that_no_longer_exists_is_not_an_error(tmp_path: Any) -> None:
    runs = [{"args": ["-deprovision+user", "-force"], "before": ["userdel -r azureuser"], "snapshot": SNAP}]
    r = scenario(str(tmp_path), spec(str(tmp_path), runs))
    run = r["runs"][1]
    assert run["rc"] == 0, run["stderr"]
    assert "/var/lib/waagent/provisioned" not in names(run)


# ---- which account +user deletes --------------------------------------------------------------

# Before a deprovision that a regression could turn into `userdel -r` of a system account or
# of `/`: every mount the sandbox shares with the host (/dev, /dev/shm, /sys/fs/cgroup/...) is
# made read-only in this mount namespace only (a bind remount), and /dev is checked.
PROTECT = (
    "for m in $(findmnt -rn -o TARGET); do case $m in /|/run|/run/*|/etc|/home|/root|/var|/usr|/mnt|/srv"
    '|/opt|/tmp) ;; *) mount -o remount,bind,ro "$m" 2>/dev/null || true;; esac; done; '
    "if mkdir /dev/.waprov-probe 2>/dev/null; then rmdir /dev/.waprov-probe; exit 1; fi"
)
KEPT_SNAP = [
    "/etc/passwd",
    "/etc/sudoers.d",
    "/usr/sbin/userdel",
    "/root/.waprov-marker",
    "/etc/ssh/sshd_config",
]


def deprovision_runs() -> List[Dict[str, Any]]:
    return [
        {"args": ["-deprovision+user", "--dry-run"], "before": [PROTECT]},
        {"args": ["-deprovision+user", "-force"], "snapshot": KEPT_SNAP},
    ]


@pytest.mark.parametrize(
    ("user", "kept"), [("daemon", "/usr/sbin/userdel"), ("root", "/root/.waprov-marker")]
)
def test_a_user_provisioning_refused_is_kept_by_deprovision_user(tmp_path: Any, user: str, kept: str) -> None:
    r = scenario(str(tmp_path), {
        "ovf": ovf(user=user), "setup": ["echo keep > /root/.waprov-marker"], "snapshot": [],
        "runs": [{}, *deprovision_runs()],
    })  # fmt: skip
    provisioned, dry, real = r["runs"]
    assert provisioned["rc"] == 1 and "system user refused" in provisioned["stderr"]
    warning = (f"WARNING! {user} is kept: waprov provisioned this VM and created or adopted no account "
               "(no /var/lib/waprov/user: the user step refused it or did not run).")  # fmt: skip
    for run in (dry, real):
        assert run["rc"] == 0, run["stderr"]
        assert warning in run["stdout"].splitlines()
        assert not any("userdel" in line for line in run["stdout"].splitlines()), run["stdout"]
    assert "Plan (dry run: nothing was changed):" in dry["stdout"]
    assert user in users(real) and kept in names(real)
    assert "/var/lib/waagent/ovf-env.xml" not in names(real)  # the rest of -deprovision ran


def test_an_adopted_user_whose_home_is_the_root_directory_is_kept(tmp_path: Any) -> None:
    r = scenario(str(tmp_path), {
        "ovf": ovf(user="webadm"), "imds": None,  # no keys: provisioning adopts it, writes nothing in /
        "setup": ["useradd -M -d / -u 1500 webadm"], "snapshot": [],
        "runs": [{"snapshot": ["/var/lib/waprov/user"]}, *deprovision_runs()],
    })  # fmt: skip
    provisioned, dry, real = r["runs"]
    assert provisioned["rc"] == 0, provisioned["stderr"]
    warning = "WARNING! webadm is kept: the home directory / of webadm is not below OS.HomeDir /home."
    for run in (dry, real):
        assert run["rc"] == 0, run["stderr"]
        assert warning in run["stdout"].splitlines()
        assert not any("userdel" in line for line in run["stdout"].splitlines()), run["stdout"]
    assert "webadm" in users(real)
    assert {"/usr/sbin/userdel", "/etc/ssh/sshd_config"} <= names(real)
    sudoers = base64.b64decode(real["snapshot"]["/etc/sudoers.d/waagent"]["data"]).decode()
    assert sudoers == "webadm ALL=(ALL) NOPASSWD: ALL\n"  # kept with its user
    record = base64.b64decode(provisioned["snapshot"]["/var/lib/waprov/user"]["data"]).decode()
    assert record.split()[1:] == ["webadm", "1500", "adopted"]


@pytest.mark.parametrize(
    ("user", "deleted", "warning"),
    [
        ("alice", True, "WARNING! alice account and entire home directory will be deleted."),
        ("daemon", False, "WARNING! daemon is kept: uid 1 is below UID_MIN 1000 (a system account)."),
    ],
)
def test_on_a_vm_walinuxagent_provisioned_the_ovf_env_user_is_deleted_unless_a_system_account(
    tmp_path: Any, user: str, deleted: bool, warning: str
) -> None:
    r = scenario(str(tmp_path), {
        "files": {"/var/lib/waagent/ovf-env.xml": ovf(user=user), "/var/lib/waagent/provisioned": "x"},
        "setup": ["useradd -m alice", f"echo '{user} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/waagent"],
        "snapshot": [], "runs": [{"args": ["-deprovision+user", "-force"], "before": [PROTECT],
                                  "snapshot": [*KEPT_SNAP, "/home/alice"]}],
    })  # fmt: skip
    run = r["runs"][0]
    assert run["rc"] == 0, run["stderr"]
    assert warning in run["stdout"].splitlines()
    sudoers = base64.b64decode(run["snapshot"]["/etc/sudoers.d/waagent"]["data"]).decode()
    if deleted:
        assert "alice" not in users(run) and "/home/alice" not in names(run)
        assert any(line.endswith("userdel -f -r alice") for line in run["stdout"].splitlines())
        assert sudoers == ""
    else:
        assert "daemon" in users(run) and "/usr/sbin/userdel" in names(run) and "/home/alice" in names(run)
        assert sudoers == "daemon ALL=(ALL) NOPASSWD: ALL\n"
