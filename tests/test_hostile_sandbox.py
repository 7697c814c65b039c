"""Hostile input and hostile users against the real `waprov -provision`, in sandboxes.

Each test is one way an attacker (a tenant's ovf-env.xml, a local user racing a rerun) or
a careless image got waprov to write where it must not; the assertions are about the
host's files after the run, not about waprov's own account of it.
"""

from __future__ import annotations

import base64
import os
import struct
from typing import Any, Dict, List, Tuple
from xml.etree import ElementTree

from tests.fakefabric import IMDS_KEY
from tests.provisioning import files, health_states, ovf, scenario, text

HOME_KEYS = "/home/azureuser/.ssh/authorized_keys"
TARGET = "/etc/waprov-race"  # a root-owned directory the racing user points ~/.ssh at

# Runs as the user azureuser, as a local user attacking a rerun of `waprov -provision`
# would: when root opens ~/.ssh/authorized_keys (inotify IN_OPEN), ~/.ssh is swapped for a
# symbolic link to TARGET (renameat2 RENAME_EXCHANGE: atomic), and swapped back a moment
# later; until /tmp/stop exists. The file is large, so that root is still reading it when
# the swap comes: a write made by path afterwards lands in TARGET.
RACER = r"""
import ctypes, os, select, time
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE, IN_OPEN = -100, 2, 0x20
os.chdir(os.path.expanduser("~"))
os.symlink("/etc/waprov-race", ".ssh-link")
watch = libc.inotify_init1(os.O_NONBLOCK)
assert libc.inotify_add_watch(watch, b".ssh/authorized_keys", IN_OPEN) >= 0
def swap():
    assert libc.renameat2(AT_FDCWD, b".ssh", AT_FDCWD, b".ssh-link", RENAME_EXCHANGE) == 0
def drain():
    try:
        while os.read(watch, 65536):
            pass
    except BlockingIOError:
        pass
swaps = 0
open("/tmp/racer-started", "w").close()
while not os.path.exists("/tmp/stop"):
    if select.select([watch], [], [], 0.05)[0]:
        swap()
        time.sleep(1.5)
        swap()
        drain()
        swaps += 1
with open("/tmp/racer-stopped", "w") as f:
    f.write(str(swaps))
"""


def fake_keys(n: int) -> List[str]:
    """`n` distinct, well-formed ssh-ed25519 public key lines (random key material)."""
    keys = []
    for i in range(n):
        blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + os.urandom(32)
        keys.append(f"ssh-ed25519 {base64.b64encode(blob).decode()} key{i}")
    return keys


def entries(result: Dict[str, Any], top: str) -> Dict[str, Tuple[str, int, int]]:
    """(type, mode, uid) of every path at or below `top` in a run's snapshot."""
    return {
        p: (e["type"], e["mode"], e["uid"])
        for p, e in files(result).items()
        if p == top or p.startswith(top + "/")
    }


def test_a_user_swapping_ssh_for_a_symlink_during_reruns_never_gets_root_to_write_elsewhere(
    tmp_path: Any,
) -> None:
    key = fake_keys(1)[0]
    filler = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGcQZxJ52KBCCrbKNTGnXoO5c0MmCaCcI869YxPrOxw+ filler"
    fill = (
        "install -d -o azureuser -g azureuser -m 0700 /home/azureuser/.ssh && "
        f"seq 10000 | sed 's|.*|{filler}|' > /home/azureuser/.ssh/authorized_keys && "
        "chown azureuser:azureuser /home/azureuser/.ssh/authorized_keys"
    )
    again = "sleep 2; rm -f /var/lib/waagent/provisioned /var/lib/waprov/provisioned"
    start = (
        "setpriv --reuid=azureuser --regid=azureuser --init-groups --reset-env "
        "python3 /var/lib/racer.py >/var/lib/racer.log 2>&1 &"
    )
    wait = "for i in $(seq 100); do [ -e /tmp/racer-started ] && break; sleep 0.05; done"
    stop = "touch /tmp/stop; for i in $(seq 100); do [ -e /tmp/racer-stopped ] && break; sleep 0.05; done"
    runs: List[Dict[str, Any]] = [{"before": [start, wait]}, {"before": [again]}, {"before": [again]}]
    runs.append({"before": [stop, again]})  # the racer gone: the same rerun provisions cleanly
    r = scenario(
        str(tmp_path),
        {
            "ovf": ovf(keys=[(HOME_KEYS, None, key)]),
            "imds": None,
            "files": {"/var/lib/racer.py": RACER},
            "setup": ["useradd -m azureuser", fill, f"mkdir -m 0755 {TARGET} && echo keep > {TARGET}/keep"],
            "runs": runs,
            "snapshot": [TARGET, "/home/azureuser", "/tmp/racer-stopped", "/var/lib/racer.log"],
        },
        timeout=600,
    )
    assert text(r, "/var/lib/racer.log") == ""
    assert int(text(r, "/tmp/racer-stopped")) >= 1  # the attack ran: root's open set it off
    # the directory the symlink pointed at is exactly as it was: no file, no mode, no owner
    assert entries(r, TARGET) == {TARGET: ("dir", 0o755, 0), f"{TARGET}/keep": ("file", 0o644, 0)}
    for run in r["runs"][:-1]:  # each raced run either provisioned or refused the link
        assert run["rc"] == 0 or "symbolic link" in run["stderr"], run["stderr"][-2000:]
    last = r["runs"][-1]
    assert last["rc"] == 0, last["stderr"][-2000:]
    written = text(r, HOME_KEYS).splitlines()
    assert written == [filler] * 10000 + [key]
    assert files(r)["/home/azureuser/.ssh"]["type"] == "dir"


def test_a_home_of_slash_gets_no_keys_and_fails_the_keys_step(tmp_path: Any) -> None:
    r = scenario(
        str(tmp_path),
        {
            "ovf": ovf(user="alice", keys=[("/root/.ssh/authorized_keys", None, IMDS_KEY)]),
            "imds": None,
            "setup": ["useradd -M -d / -u 1500 alice"],
            "snapshot": ["/root/.ssh", "/var/lib/waprov"],
        },
    )
    run = r["runs"][0]
    assert run["rc"] == 1
    assert "not below OS.HomeDir /home" in run["stderr"]
    assert health_states(r)[-1] == "NotReady/ProvisioningFailed"
    assert not any(p.startswith("/root/.ssh") for p in r["snapshot"])


def test_a_home_the_user_does_not_own_gets_no_keys(tmp_path: Any) -> None:
    r = scenario(
        str(tmp_path),
        {
            "ovf": ovf(keys=[(HOME_KEYS, None, IMDS_KEY)]),
            "imds": None,
            "setup": ["useradd -m azureuser", "chown root:root /home/azureuser"],
            "snapshot": ["/home"],
        },
    )
    assert r["runs"][0]["rc"] == 1
    assert "the home directory /home/azureuser is not owned by azureuser (uid" in r["runs"][0]["stderr"]
    assert "/home/azureuser/.ssh" not in r["snapshot"]


def test_fingerprints_that_are_paths_are_refused_before_any_file_is_read_or_written(tmp_path: Any) -> None:
    make_cert = (
        "openssl req -x509 -nodes -subj /CN=x -days 1 -newkey rsa:2048 "
        "-keyout /srv/x/evil.key -out /srv/x/evil.crt 2>/dev/null"
    )
    cases = {
        "pair": ovf(key_pairs=[("$HOME/azureuser/.ssh/id_rsa", "/root/secretkey")]),
        "key": ovf(keys=[(HOME_KEYS, "../../../srv/x/evil", None)]),
    }
    for name, document in cases.items():
        r = scenario(
            str(tmp_path / name),
            {
                "ovf": document,
                "imds": None,
                "setup": [
                    "mkdir -p /root /srv/x && echo ROOT-ONLY-PRIVATE-KEY > /root/secretkey.prv",
                    "chmod 600 /root/secretkey.prv",
                    make_cert,
                ],
                "snapshot": ["/home", "/srv/x", "/var/lib/waagent"],
                "search": "ROOT-ONLY-PRIVATE-KEY",
            },
        )
        run = r["runs"][0]
        assert run["rc"] == 1, name
        assert "is not a certificate thumbprint (40 hexadecimal digits)" in run["stderr"], name
        assert "Fingerprint of SSH" in run["stderr"], name
        assert health_states(r) == ["NotReady/ProvisioningFailed"], name
        assert "/srv/x/evil.pub" not in r["snapshot"], name
        assert r["found_in"] == ["/run/sandbox/_root/upper/secretkey.prv"], name  # only its own file
        assert not any(p.startswith("/home/azureuser/.ssh") for p in r["snapshot"]), name


def test_a_host_name_longer_than_the_kernel_allows_runs_as_its_first_label(tmp_path: Any) -> None:
    fqdn = "averylonghostlabel-0123456789." + ".".join(["sub-domain-part"] * 4) + ".example.com"
    assert 64 < len(fqdn) <= 253
    r = scenario(str(tmp_path), {"ovf": ovf(hostname=fqdn), "imds": None})
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    assert r["hostname"] == "averylonghostlabel-0123456789"
    assert text(r, "/etc/hostname") == "averylonghostlabel-0123456789"
    assert text(r, "/var/lib/waagent/published_hostname") == "averylonghostlabel-0123456789"
    assert "is longer than 64 characters" in r["runs"][0]["stderr"]


def custom_data_run(tmp_path: Any, script: str, **spec: Any) -> Dict[str, Any]:
    """A sandbox run whose OVF carries `script` as custom data, with ExecuteCustomData=y."""
    data = base64.b64encode(script.encode()).decode()
    base = {"conf": "Provisioning.ExecuteCustomData=y\n", "ovf": ovf(custom_data=data), "imds": None}
    return scenario(str(tmp_path), {**base, **spec})


def test_custom_data_output_never_follows_a_symlink_planted_at_its_log(tmp_path: Any) -> None:
    script = "#!/bin/sh\necho FORGED-LINE\ntouch /var/lib/custom-data-ran\n"
    r = custom_data_run(
        tmp_path,
        script,
        setup=[
            "mkdir -m 0700 /etc/victim && echo original > /etc/victim/file && chmod 600 /etc/victim/file",
            "ln -s /etc/victim/file /var/log/waprov-customdata.log",
        ],
        snapshot=["/etc/victim", "/var/lib/custom-data-ran"],
    )
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    assert text(r, "/etc/victim/file") == "original\n"
    assert "Cannot append command output to /var/log/waprov-customdata.log" in r["runs"][0]["stderr"]
    assert "/var/lib/custom-data-ran" in r["snapshot"]  # it ran all the same, its output to /dev/null


def test_custom_data_that_leaves_a_process_behind_does_not_hold_provisioning(tmp_path: Any) -> None:
    script = "#!/bin/sh\nnohup sleep 120 &\necho started-from-custom-data\n"
    r = custom_data_run(
        tmp_path,
        script,
        logs=["/var/log/waprov.log", "/var/log/waprov-customdata.log"],
    )
    run = r["runs"][0]
    assert run["rc"] == 0, run["stderr"]
    assert run["seconds"] < 60, run["seconds"]  # held until `sleep 120` ended before
    assert health_states(r) == ["NotReady/Provisioning", "Ready"]
    assert "started-from-custom-data" in r["logs"]["/var/log/waprov-customdata.log"]  # its own file
    assert "started-from-custom-data" not in r["logs"]["/var/log/waprov.log"]


def test_custom_data_that_reboots_the_vm_runs_once_and_the_next_boot_reaches_ready(tmp_path: Any) -> None:
    # the "reboot": the script kills waprov itself, as a power cycle would end the run
    script = (
        "#!/bin/sh\necho ran >> /var/lib/custom-data-runs\npkill -KILL -f 'bin/waprov -provision'\nsleep 5\n"
    )
    r = custom_data_run(
        tmp_path,
        script,
        runs=[{}, {}],
        snapshot=["/var/lib/custom-data-runs", "/var/lib/waprov"],
    )
    first, second = r["runs"]
    assert first["rc"] == -9, first["stderr"]
    assert second["rc"] == 0, second["stderr"]
    assert text(r, "/var/lib/custom-data-runs") == "ran\n"
    assert health_states(r)[-1] == "Ready"


def test_goal_state_ids_with_markup_give_health_reports_that_parse_with_the_ids_intact(tmp_path: Any) -> None:
    ids = {"incarnation": "7&amp;8", "container_id": "c&lt;/ContainerId&gt;x", "instance_id": "i&amp;&lt;j"}
    r = scenario(str(tmp_path), {"ovf": ovf(), "imds": None, "goal_state": ids})
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    bodies = [x["body"] for x in r["requests"] if x["route"] == "health"]
    assert len(bodies) == 2
    for body in bodies:
        root = ElementTree.fromstring(body)  # noqa: S314 (our own fake's traffic)
        assert root.findtext("GoalStateIncarnation") == "7&8"
        assert root.findtext("Container/ContainerId") == "c</ContainerId>x"
        assert root.findtext("Container/RoleInstanceList/Role/InstanceId") == "i&<j"


def test_a_thousand_keys_for_one_file_are_written_once_and_one_more_is_refused(tmp_path: Any) -> None:
    lines = fake_keys(1001)
    many = scenario(str(tmp_path / "many"), {"ovf": ovf(keys=[(HOME_KEYS, None, k) for k in lines[:1000]]),
                                             "imds": None, "snapshot": ["/home/azureuser/.ssh"]})  # fmt: skip
    assert many["runs"][0]["rc"] == 0, many["runs"][0]["stderr"][-2000:]
    assert text(many, HOME_KEYS).splitlines() == lines[:1000]
    assert many["runs"][0]["seconds"] < 60
    over = scenario(str(tmp_path / "over"), {"ovf": ovf(keys=[(HOME_KEYS, None, k) for k in lines]),
                                             "imds": None, "snapshot": ["/home"]})  # fmt: skip
    assert over["runs"][0]["rc"] == 1
    assert "1001 SSH keys and key pairs are listed: waprov deploys at most 1000" in over["runs"][0]["stderr"]
    assert HOME_KEYS not in over["snapshot"]


def test_an_authorized_keys_hard_linked_to_a_root_file_is_refused_and_not_copied(tmp_path: Any) -> None:
    r = scenario(
        str(tmp_path),
        {
            "ovf": ovf(keys=[(HOME_KEYS, None, IMDS_KEY)]),
            "imds": None,
            "setup": [
                "useradd -m azureuser",
                # a root-only file on the home's file system, linked where fs.protected_hardlinks is off
                "echo ROOT-ONLY-SECRET > /home/.root-secret && chmod 600 /home/.root-secret",
                "install -d -o azureuser -m 0700 /home/azureuser/.ssh",
                "ln /home/.root-secret /home/azureuser/.ssh/authorized_keys",
            ],
            "snapshot": ["/home/azureuser/.ssh"],
        },
    )
    assert r["runs"][0]["rc"] == 1
    assert "has 2 hard links" in r["runs"][0]["stderr"]
    entry = files(r)[HOME_KEYS]  # still root's 0600 file, not a copy of it readable by the user
    assert (entry["mode"], entry["uid"], entry["bytes"]) == (0o600, 0, b"ROOT-ONLY-SECRET\n")


def test_a_directory_at_the_old_fixed_temp_name_does_not_block_a_rerun(tmp_path: Any) -> None:
    r = scenario(
        str(tmp_path),
        {
            "ovf": ovf(),
            "imds": None,
            "setup": ["mkdir /etc/.hostname.waprov-tmp"],
            "snapshot": ["/etc/hostname"],
        },
    )
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    assert text(r, "/etc/hostname") == "waprov-vm"
