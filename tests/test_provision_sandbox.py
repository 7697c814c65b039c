"""The real `waprov -provision` in a sandbox against the fake fabric (design.md level 2).

Real useradd, usermod, passwd, visudo, ssh-keygen, openssl and sshd run in private
namespaces; expected values come from WALinuxAgent's behaviour (spec §2-§5), written out
here, or are derived independently (the tenant key's public half from `ssh-keygen -y`).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import json
import os
import subprocess
from typing import Any, Dict

import pytest

from tests.fakefabric import IMDS_KEY
from tests.inside import SNAPSHOT
from tests.provisioning import PASSWORD, files, health_states, ovf, scenario, text, user_key
from waprov.provision import STEP_NAMES

SWAPPED_ID = "D0DF4C54-4ECB-4A4B-9954-5BDF3ED5C3B8"  # WA §2.4's example, byte-swapped
HOME_KEYS = "/home/azureuser/.ssh/authorized_keys"


def run(tmp_path: Any, **spec: Any) -> Dict[str, Any]:
    return scenario(str(tmp_path), spec)


def uid_of(result: Dict[str, Any], user: str) -> int:
    for line in text(result, "/etc/passwd").splitlines():
        parts = line.split(":")
        if parts[0] == user:
            return int(parts[2])
    raise AssertionError(f"{user} not in /etc/passwd")


def shadow_field(result: Dict[str, Any], user: str) -> str:
    for line in text(result, "/etc/shadow").splitlines():
        if line.startswith(user + ":"):
            return line.split(":")[1]
    raise AssertionError(f"{user} not in /etc/shadow")


def test_password_user_gets_a_sha512_hash_sudo_with_password_and_password_ssh(tmp_path: Any) -> None:
    priv, pub = user_key(str(tmp_path))
    r = run(
        tmp_path,
        ovf=ovf(password=PASSWORD, disable_password_auth="false", keys=[(HOME_KEYS, None, pub)]),
        sshd={"user": "azureuser", "key": priv},
        search=PASSWORD,
    )
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    hashed = shadow_field(r, "azureuser")
    assert hashed.startswith("$6$") and len(hashed.split("$")[2]) == 10
    assert verified_hash(hashed)
    assert text(r, "/etc/sudoers.d/waagent") == "azureuser ALL=(ALL) ALL\n"
    assert files(r)["/etc/sudoers.d/waagent"]["mode"] == 0o440
    assert r["sshd"]["key_rc"] == 0 and r["sshd"]["key_stdout"] == "azureuser"
    assert "password" in r["sshd"]["methods"]
    assert r["hostname"] == "waprov-vm"
    assert text(r, "/etc/hostname") == "waprov-vm"
    assert text(r, "/var/lib/waagent/published_hostname") == "waprov-vm"
    assert "<UserPassword>*</UserPassword>" in text(r, "/var/lib/waagent/ovf-env.xml")
    assert files(r)["/var/lib/waagent/ovf-env.xml"]["mode"] == 0o600
    assert text(r, "/var/lib/waagent/provisioned") == SWAPPED_ID
    assert health_states(r) == ["NotReady/Provisioning", "Ready"]
    assert r["found_in"] == []  # the password is in no file the run wrote, log included
    assert PASSWORD not in r["runs"][0]["stderr"] + "".join(x["body"] for x in r["requests"])


def test_key_only_user_has_nopasswd_sudo_a_locked_password_and_no_password_ssh(tmp_path: Any) -> None:
    priv, pub = user_key(str(tmp_path))
    r = run(
        tmp_path,
        ovf=ovf(keys=[("$HOME/azureuser/.ssh/authorized_keys", None, pub)]),
        sshd={"user": "azureuser", "key": priv},
    )
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    assert shadow_field(r, "azureuser").startswith("!")
    assert text(r, "/etc/sudoers.d/waagent") == "azureuser ALL=(ALL) NOPASSWD: ALL\n"
    uid = uid_of(r, "azureuser")
    snap = files(r)
    assert (snap["/home/azureuser/.ssh"]["mode"], snap["/home/azureuser/.ssh"]["uid"]) == (0o700, uid)
    assert (snap[HOME_KEYS]["mode"], snap[HOME_KEYS]["uid"]) == (0o644, uid)
    assert snap[HOME_KEYS]["bytes"].decode().splitlines()[0] == pub
    assert r["sshd"]["key_rc"] == 0, r["sshd"]
    assert r["sshd"]["methods"] == "publickey"
    sshd_config = text(r, "/etc/ssh/sshd_config").split("\n")
    assert "PasswordAuthentication no" in sshd_config and "ChallengeResponseAuthentication no" in sshd_config
    assert "ClientAliveInterval 180" in sshd_config


def test_existing_user_is_left_untouched_but_gets_keys_and_sudoers(tmp_path: Any) -> None:
    _, pub = user_key(str(tmp_path))
    r = run(
        tmp_path,
        setup=["useradd -m -s /bin/sh -c 'made by the image' azureuser"],
        ovf=ovf(keys=[(HOME_KEYS, None, pub)]),
    )
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    entry = next(line for line in text(r, "/etc/passwd").splitlines() if line.startswith("azureuser:"))
    assert entry.endswith(":made by the image:/home/azureuser:/bin/sh")
    assert "User azureuser already exists, skip useradd" in r["runs"][0]["stderr"]
    assert pub in text(r, HOME_KEYS)


def test_fingerprint_key_and_key_pair_come_from_the_wireserver_certificates(tmp_path: Any) -> None:
    r = run(
        tmp_path,
        ovf=ovf(
            keys=[(HOME_KEYS, "{THUMBPRINT}", None)],
            key_pairs=[("$HOME/azureuser/.ssh/id_rsa", "{THUMBPRINT}")],
        ),
    )
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    snap = files(r)
    uid = uid_of(r, "azureuser")
    line = snap[HOME_KEYS]["bytes"].decode().strip()
    assert line.split()[:2] == r["tenant_ssh_key"].split()[:2]
    assert snap["/home/azureuser/.ssh/id_rsa"]["bytes"] == base64.b64decode(r["tenant_key"])
    assert (snap["/home/azureuser/.ssh/id_rsa"]["mode"], snap["/home/azureuser/.ssh/id_rsa"]["uid"]) == (
        0o600,
        uid,
    )
    assert snap["/home/azureuser/.ssh/id_rsa.pub"]["bytes"].startswith(b"-----BEGIN PUBLIC KEY-----")
    assert snap[f"/var/lib/waagent/{r['thumbprint']}.crt"]["mode"] == 0o600
    assert snap[f"/var/lib/waagent/{r['thumbprint']}.pub"]["mode"] == 0o600
    assert any(x["route"] == "certificates" for x in r["requests"])


def test_imds_alone_provisions_when_there_is_no_dvd(tmp_path: Any) -> None:
    r = run(tmp_path, ovf=None)
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    assert r["hostname"] == "imds-host"
    assert "imds-test-key" in text(r, HOME_KEYS)
    assert "/var/lib/waagent/ovf-env.xml" not in r["snapshot"]
    assert health_states(r) == ["NotReady/Provisioning", "Ready"]


SCRIPT = "#!/bin/sh\necho ran >> /var/lib/customdata-ran\n"


def test_custom_data_is_decoded_and_executed_once(tmp_path: Any) -> None:
    r = run(
        tmp_path,
        conf="Provisioning.ExecuteCustomData=y\n",
        ovf=ovf(custom_data=base64.b64encode(SCRIPT.encode()).decode()),
        snapshot=["/var/lib/waagent/CustomData", "/var/lib/customdata-ran"],
        runs=[{"crash_after": "customdata"}, {}],
    )
    assert r["runs"][1]["rc"] == 0, r["runs"][1]["stderr"]
    snap = files(r)
    assert snap["/var/lib/waagent/CustomData"]["bytes"] == SCRIPT.encode()
    assert snap["/var/lib/waagent/CustomData"]["mode"] == 0o700
    assert snap["/var/lib/customdata-ran"]["bytes"] == b"ran\n"  # not again after the crash


def test_custom_data_that_is_not_utf8_is_written_as_bytes(tmp_path: Any) -> None:
    blob = bytes(range(256))
    r = run(
        tmp_path,
        conf="Provisioning.DecodeCustomData=y\n",
        ovf=ovf(custom_data=base64.b64encode(blob).decode()),
        snapshot=["/var/lib/waagent/CustomData"],
    )
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    assert files(r)["/var/lib/waagent/CustomData"]["bytes"] == blob


def test_custom_data_is_kept_as_base64_without_decode(tmp_path: Any) -> None:
    r = run(tmp_path, ovf=ovf(custom_data="Q3VzdG9tRGF0YQ=="), snapshot=["/var/lib/waagent/CustomData"])
    assert files(r)["/var/lib/waagent/CustomData"]["bytes"] == b"Q3VzdG9tRGF0YQ=="


def test_delete_root_password_puts_the_lock_line_first_keeping_mode_and_owner(tmp_path: Any) -> None:
    r = run(
        tmp_path,
        conf="Provisioning.DeleteRootPassword=y\n",
        ovf=ovf(),
        setup=["usermod -p '$6$x$y' root", "stat -c '%a %u %g' /etc/shadow > /var/lib/shadow-stat"],
        snapshot=["/etc/shadow", "/var/lib/shadow-stat"],
    )
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    lines = text(r, "/etc/shadow").split("\n")
    assert lines[0] == "root:*LOCK*:14600::::::"
    assert [line for line in lines if line.startswith("root:")] == ["root:*LOCK*:14600::::::"]
    entry = files(r)["/etc/shadow"]
    mode, uid, gid = text(r, "/var/lib/shadow-stat").split()
    assert (entry["mode"], entry["uid"], entry["gid"]) == (int(mode, 8), int(uid), int(gid))


def test_guest_agent_false_writes_an_empty_disable_agent(tmp_path: Any) -> None:
    r = run(tmp_path, ovf=ovf(provision_guest_agent="False"))
    assert files(r)["/var/lib/waagent/disable_agent"]["bytes"] == b""
    r2 = run(tmp_path / "2", ovf=ovf(provision_guest_agent="true"))
    assert "/var/lib/waagent/disable_agent" not in r2["snapshot"]


def test_a_second_run_on_the_same_vm_does_nothing_and_reports_nothing(tmp_path: Any) -> None:
    r = run(tmp_path, ovf=ovf(), runs=[{}, {}])
    assert [x["rc"] for x in r["runs"]] == [0, 0]
    assert "Provisioning already completed, skipping." in r["runs"][1]["stderr"]
    assert health_states(r) == ["NotReady/Provisioning", "Ready"]  # only the first run's
    first_run_requests = len([x for x in r["requests"] if x["route"] in ("imds", "versions", "goalstate")])
    assert first_run_requests == 3  # the second run asked the fabric nothing at all (speed: make bench)


def test_a_vm_provisioned_before_waprov_was_installed_is_adopted_not_reprovisioned(tmp_path: Any) -> None:
    r = run(
        tmp_path,
        ovf=ovf(),
        setup=[f"mkdir -p /var/lib/waagent && printf {SWAPPED_ID} > /var/lib/waagent/provisioned"],
        runs=[{}, {}],
    )
    assert [x["rc"] for x in r["runs"]] == [0, 0]
    assert "provisioned before waprov was installed" in r["runs"][0]["stderr"]
    assert "Provisioning already completed, skipping." in r["runs"][1]["stderr"]
    assert "/home/azureuser" not in r["snapshot"]
    assert text(r, "/var/lib/waprov/provisioned") == SWAPPED_ID
    assert health_states(r) == [] and r["requests"] == []  # the GA reports; waprov asked nothing


def test_a_provisioned_file_written_after_waprov_started_does_not_count_as_done(tmp_path: Any) -> None:
    """waprov started on this VM (its attempt record), then the GA wrote `provisioned`
    (no drop-ins, so it ran after waprov's failure): the next run still provisions."""
    r = run(
        tmp_path,
        ovf=ovf(),
        setup=[
            f"mkdir -p /var/lib/waagent && printf {SWAPPED_ID} > /var/lib/waagent/provisioned",
            f"mkdir -p -m 0700 /var/lib/waprov && printf {SWAPPED_ID} > /var/lib/waprov/attempt",
        ],
    )
    assert r["runs"][0]["rc"] == 0
    assert "/home/azureuser" in r["snapshot"]
    assert health_states(r) == ["NotReady/Provisioning", "Ready"]


@pytest.mark.parametrize("agent", ["auto", "waagent", "cloud-init"])
def test_when_the_guest_agent_provisions_waprov_does_nothing(tmp_path: Any, agent: str) -> None:
    r = run(tmp_path, ovf=ovf(), conf=f"Provisioning.Agent={agent}\n")
    assert r["runs"][0]["rc"] == 0
    assert f"Provisioning.Agent={agent} in /etc/waagent.conf: " in r["runs"][0]["stderr"]
    assert "`waprov -enable` hands provisioning over); nothing to do" in r["runs"][0]["stderr"]
    assert "/home/azureuser" not in r["snapshot"] and "/var/lib/waprov" not in r["snapshot"]
    assert health_states(r) == [] and r["requests"] == []


def test_another_vms_id_clears_cached_state_reports_ready_and_provisions_nothing(tmp_path: Any) -> None:
    setup = [
        "mkdir -p /var/lib/waagent /var/lib/waprov /var/lib/waagent/Ext.Handler-1.2.3/status",
        "printf 11111111-2222-3333-4444-555555555555 > /var/lib/waagent/provisioned",
        "touch /var/lib/waagent/GoalState.1.xml /var/lib/waagent/Incarnation /var/lib/waagent/CustomData",
        "touch /var/lib/waagent/Ext.Handler-1.2.3/status/0.status /var/lib/waagent/Ext.Handler-1.2.3/keep",
    ]
    r = run(tmp_path, ovf=ovf(), setup=setup)
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    snap = r["snapshot"]
    assert "/home/azureuser" not in snap  # not re-provisioned
    for gone in ("GoalState.1.xml", "Incarnation", "Ext.Handler-1.2.3/status/0.status"):
        assert f"/var/lib/waagent/{gone}" not in snap
    for kept in ("CustomData", "Ext.Handler-1.2.3/keep"):
        assert f"/var/lib/waagent/{kept}" in snap
    assert text(r, "/var/lib/waagent/provisioned") == SWAPPED_ID
    assert health_states(r) == ["Ready"]
    assert "the VM unique identifier has changed" in r["runs"][0]["stderr"]


def test_each_host_key_type_is_regenerated(tmp_path: Any) -> None:
    setup = ["ssh-keygen -A", "sha256sum /etc/ssh/ssh_host_*_key > /var/lib/before"]
    for kind in ("rsa", "ecdsa", "ed25519", "dsa", "auto"):
        r = run(
            tmp_path / kind,
            conf=f"Provisioning.RegenerateSshHostKeyPair=y\nProvisioning.SshHostKeyPairType={kind}\n",
            ovf=ovf(),
            setup=setup,
            snapshot=["/etc/ssh", "/var/lib/before"],
        )
        assert r["runs"][0]["rc"] == 0, (kind, r["runs"][0]["stderr"])
        keys = sorted(p for p in r["snapshot"] if "/ssh_host_" in p)
        before = dict(line.split()[::-1] for line in text(r, "/var/lib/before").splitlines())
        if kind == "auto":  # ssh-keygen -A: the default set, all new
            assert {os.path.basename(p) for p in keys} >= {"ssh_host_rsa_key", "ssh_host_ed25519_key"}
        else:
            assert keys == [f"/etc/ssh/ssh_host_{kind}_key", f"/etc/ssh/ssh_host_{kind}_key.pub"], kind
        for p in keys:
            if p in before:
                assert hashlib.sha256(files(r)[p]["bytes"]).hexdigest() != before[p], p


def test_host_keys_are_begun_first_and_left_whole_when_provisioning_fails(tmp_path: Any) -> None:
    conf = "Provisioning.RegenerateSshHostKeyPair=y\nProvisioning.SshHostKeyPairType=auto\n"
    setup = ["ssh-keygen -A", "sha256sum /etc/ssh/ssh_host_*_key > /var/lib/before"]
    good = run(tmp_path / "good", conf=conf, ovf=ovf(), setup=setup, snapshot=["/var/lib/waprov/report.json"])
    assert good["runs"][0]["rc"] == 0, good["runs"][0]["stderr"]
    commands = json.loads(text(good, "/var/lib/waprov/report.json"))["commands"]
    useradd = next(i for i, c in enumerate(commands) if c.startswith("useradd"))
    keygen = [i for i, c in enumerate(commands) if c.endswith(" ssh-keygen -A")]
    assert len(keygen) == 1 and keygen[0] < useradd  # begun before the user step, waited for later

    snap = ["/etc/ssh", "/var/lib/before", "/var/lib/waprov/journal"]
    bad = run(tmp_path / "bad", conf=conf, ovf=ovf(user="daemon"), setup=setup, snapshot=snap)
    assert bad["runs"][0]["rc"] == 1
    assert health_states(bad)[-1] == "NotReady/ProvisioningFailed"
    before = dict(line.split()[::-1] for line in text(bad, "/var/lib/before").splitlines())
    assert set(before) >= {"/etc/ssh/ssh_host_rsa_key", "/etc/ssh/ssh_host_ed25519_key"}
    for path, digest in before.items():  # every key made again, and whole: its public half derives
        data = files(bad)[path]["bytes"]
        assert hashlib.sha256(data).hexdigest() != digest, path
        copy = tmp_path / os.path.basename(path)
        copy.write_bytes(data)
        copy.chmod(0o600)
        derived = subprocess.run(["ssh-keygen", "-y", "-f", str(copy)], capture_output=True, text=True)
        assert derived.returncode == 0, (path, derived.stderr)
        assert derived.stdout.split()[1] == text(bad, path + ".pub").split()[1], path
    journal = files(bad).get("/var/lib/waprov/journal", {"bytes": b""})["bytes"]
    assert b"hostkeys" not in journal  # not marked done: the next run makes them again


def test_the_local_phase_imports_nothing_of_the_http_side(tmp_path: Any) -> None:
    """The local phase runs before the network at every first boot, and imports cost
    seconds under emulation: the whole `-provision -local` process never loads requests,
    the wireserver, IMDS or the certificates (its sys.modules as it exits). network.py (the
    route table for the host name's interface) imports only the standard library."""
    _, pub = user_key(str(tmp_path))
    conf = "Provisioning.RegenerateSshHostKeyPair=y\nProvisioning.SshHostKeyPairType=rsa\n"
    spec_ovf = ovf(password=PASSWORD, keys=[(HOME_KEYS, None, pub)], custom_data="ZWNobyBoaQ==")
    r = run(tmp_path, conf=conf, ovf=spec_ovf, runs=[{"args": ["-provision", "-local"], "modules": True}])
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"][-2000:]
    assert "Local phase done" in r["runs"][0]["stderr"]
    imported = set(r["runs"][0]["modules"])
    # the probe sees the run: all of the local phase's steps
    steps = {"hostkeys", "user", "keys", "sshd", "customdata", "hostname"}
    assert {"waprov.config", "waprov.ovf", *(f"waprov.steps.{s}" for s in steps)} <= imported
    http = {"requests", "urllib3", "http.client", "ssl", "waprov.http", "waprov.health",
            "waprov.imds", "waprov.wireserver", "waprov.certs"}  # fmt: skip
    assert not imported & http, sorted(imported & http)
    assert r["requests"] == []  # and nothing was sent


def test_sshd_settings_are_checked_while_the_host_keys_are_remade(tmp_path: Any) -> None:
    conf = "Provisioning.RegenerateSshHostKeyPair=y\nProvisioning.SshHostKeyPairType=auto\n"
    r = run(
        tmp_path, conf=conf, ovf=ovf(), setup=["ssh-keygen -A"], snapshot=["/run/waprov", "/var/lib/waprov"]
    )
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    assert "without a check" not in r["runs"][0]["stderr"]
    commands = json.loads(text(r, "/var/lib/waprov/report.json"))["commands"]
    throwaway = [c for c in commands if "-t ed25519 -f /run/waprov/sshd-check/" in c]
    keygen = next(i for i, c in enumerate(commands) if c.endswith(" ssh-keygen -A"))
    assert len(throwaway) == 1 and commands.index(throwaway[0]) > keygen
    left = [p for p in r["snapshot"] if p.startswith("/run/waprov/")]
    assert left == ["/run/waprov/lock"], left  # the throwaway key is gone; the run lock stays


def test_a_missing_host_public_key_is_generated(tmp_path: Any) -> None:
    r = run(tmp_path, ovf=ovf(), setup=["rm -f /etc/ssh/ssh_host_*"], snapshot=["/etc/ssh"])
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    assert "/etc/ssh/ssh_host_rsa_key.pub" in r["snapshot"]


FLATCAR = 'ID=flatcar\nVERSION_ID=3815.2.0\nNAME="Flatcar Container Linux by Kinvolk"\n'


def test_flatcar_gets_the_drop_in_and_an_untouched_sshd_config(tmp_path: Any) -> None:
    r = run(
        tmp_path,
        files={"/etc/os-release": FLATCAR},
        setup=["mkdir -p /etc/ssh/sshd_config.d", "cp /etc/ssh/sshd_config /var/lib/sshd_config.orig"],
        ovf=ovf(disable_password_auth="true"),
        snapshot=["/etc/ssh", "/var/lib/sshd_config.orig", "/var/lib/waprov/journal"],
    )
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    assert " sshd-dropin\n" in text(r, "/var/lib/waprov/journal")  # so -deprovision removes it
    dropin = files(r)["/etc/ssh/sshd_config.d/80-flatcar-walinuxagent.conf"]["bytes"]
    assert dropin == b"PasswordAuthentication no\nChallengeResponseAuthentication no\nClientAliveInterval 180"
    assert text(r, "/etc/ssh/sshd_config") == text(r, "/var/lib/sshd_config.orig")
    assert "systemctl" not in r["runs"][0]["stderr"]  # nothing restarted on Flatcar


MATCH_CONFIG = (
    "# test config\n"
    "PasswordAuthentication yes\n"
    "#PasswordAuthentication no\n"
    "  PasswordAuthentication indented\n"
    "UsePAM yes\n"
    "Match User backup\n"
    "    PasswordAuthentication yes\n"
    "X11Forwarding no"
)
MATCH_EXPECTED = (  # WA §5.6: replaced outside Match; inserted before the open Match block
    "# test config\n"
    "PasswordAuthentication no\n"
    "#PasswordAuthentication no\n"
    "  PasswordAuthentication indented\n"
    "UsePAM yes\n"
    "ChallengeResponseAuthentication no\n"
    "ClientAliveInterval 180\n"
    "Match User backup\n"
    "    PasswordAuthentication yes\n"
    "X11Forwarding no"
)
PLAIN_CONFIG = "Port 22\nUsePAM yes"  # no trailing newline: WA inserts before the last line
PLAIN_EXPECTED = (
    "Port 22\nPasswordAuthentication no\n"
    "ChallengeResponseAuthentication no\nClientAliveInterval 180\nUsePAM yes"
)


def test_debian_edits_sshd_config_in_place_with_match_block_and_no_trailing_newline(tmp_path: Any) -> None:
    for name, config, expected in (
        ("match", MATCH_CONFIG, MATCH_EXPECTED),
        ("plain", PLAIN_CONFIG, PLAIN_EXPECTED),
    ):
        r = run(
            tmp_path / name,
            files={"/etc/ssh/sshd_config": config},
            ovf=ovf(disable_password_auth="true"),
            snapshot=["/etc/ssh/sshd_config"],
            runs=[{"crash_after": "sshd"}, {}],  # the edit applied twice gives the same bytes
        )
        assert r["runs"][1]["rc"] == 0, r["runs"][1]["stderr"]
        assert text(r, "/etc/ssh/sshd_config") == expected, name


@pytest.mark.parametrize("regenerate", ["n", "y"])
def test_an_sshd_config_that_sshd_rejects_is_rolled_back(tmp_path: Any, regenerate: str) -> None:
    """Also while the run remakes the host keys (there are none to check with: a throwaway
    key stands in, and is gone afterwards)."""
    r = run(
        tmp_path,
        conf=f"OS.SshClientAliveInterval=not-a-number\nProvisioning.RegenerateSshHostKeyPair={regenerate}\n",
        setup=["ssh-keygen -A", "cp /etc/ssh/sshd_config /var/lib/sshd_config.orig"],
        ovf=ovf(),
        snapshot=["/etc/ssh/sshd_config", "/var/lib/sshd_config.orig", "/var/lib/waprov", "/run/waprov"],
    )
    assert r["runs"][0]["rc"] == 1
    assert "sshd -t rejects the edited /etc/ssh/sshd_config" in r["runs"][0]["stderr"]
    left = [p for p in r["snapshot"] if p.startswith("/run/waprov/")]
    assert left == ["/run/waprov/lock"], left  # the throwaway key is gone; the run lock stays
    assert text(r, "/etc/ssh/sshd_config") == text(r, "/var/lib/sshd_config.orig")
    assert health_states(r) == ["NotReady/ProvisioningFailed"]  # a local step: before NotReady/Provisioning
    assert "reason=failed to update sshd config|" in r["requests"][-1]["body"]
    assert failure_report(r)["step"] == "sshd"
    assert "/var/lib/waprov/provisioned" not in r["snapshot"]


def failure_report(r: Dict[str, Any]) -> Dict[str, str]:
    """The ProvisioningFailed description as key=value items; /var/lib/waprov/report.json
    (issue 8) must record the same failure: its line, step and reason."""
    body = r["requests"][-1]["body"]
    desc = html.unescape(body.split("<Description>", 1)[1].split("</Description>", 1)[0])
    row = next(csv.reader([desc], delimiter="|"))
    items = dict(item.split("=", 1) for item in row)
    doc = json.loads(text(r, "/var/lib/waprov/report.json"))
    assert doc["result"] == "error" and doc["report_line"] == desc
    assert (doc["error"]["step"], doc["error"]["reason"]) == (items["step"], items["reason"])
    assert doc["health_reports"][-1]["substatus"] == "ProvisioningFailed"
    assert doc["health_reports"][-1]["http_status"] == 200
    return items


def test_a_failing_useradd_is_reported_as_provisioning_failed_with_the_command(tmp_path: Any) -> None:
    r = run(tmp_path, ovf=ovf(password=PASSWORD), setup=["groupadd azureuser"], search=PASSWORD)
    assert r["runs"][0]["rc"] == 1
    assert health_states(r) == ["NotReady/ProvisioningFailed"]  # a local step: before NotReady/Provisioning
    report = failure_report(r)
    assert report["result"] == "error" and report["reason"] == "failed to provision user"
    assert report["step"] == "user" and report["command"] == "useradd -m azureuser"
    assert report["exit_code"] == "9" and "group azureuser exists" in report["stderr"]
    assert report["vm_id"] == SWAPPED_ID and report["agent"].startswith("waprov/")
    assert report["documentation_url"] == "https://aka.ms/linuxprovisioningerror"
    assert "/var/lib/waprov/provisioned" not in r["snapshot"]
    assert "/var/lib/waagent/provisioned" not in r["snapshot"]
    assert r["found_in"] == []


def test_certificates_that_cannot_be_decrypted_fail_provisioning(tmp_path: Any) -> None:
    r = run(
        tmp_path,
        ovf=ovf(keys=[(HOME_KEYS, "{THUMBPRINT}", None)]),
        faults={"certificates": [["undecryptable"], ["undecryptable"]]},
    )
    assert r["runs"][0]["rc"] == 1
    assert health_states(r) == ["NotReady/ProvisioningFailed"]
    report = failure_report(r)
    assert (report["reason"], report["step"]) == ("failed to get the certificates", "certificates")
    assert HOME_KEYS not in r["snapshot"]  # the user comes before the network, no key without its certificate


def test_an_unreachable_wireserver_fails_the_run_without_a_marker(tmp_path: Any) -> None:
    r = run(tmp_path, ovf=ovf(), faults={"versions": [["status", 503]] * 3000})
    assert r["runs"][0]["rc"] == 1
    assert health_states(r) == []
    assert "No protocol found" in r["runs"][0]["stderr"]
    assert "/var/lib/waprov/provisioned" not in r["snapshot"]


def test_a_410_on_the_in_progress_report_is_a_warning_and_ready_follows_a_fresh_goal_state(
    tmp_path: Any,
) -> None:
    r = run(tmp_path, ovf=ovf(), faults={"health": [["status", 410]]})
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    assert health_states(r) == ["NotReady/Provisioning", "Ready"]
    routes = [x["route"] for x in r["requests"] if x["route"] in ("goalstate", "health")]
    assert routes == ["goalstate", "health", "goalstate", "health"]  # fetched again before Ready
    stderr = r["runs"][0]["stderr"]
    assert " WARNING Reporting NotReady (Provisioning) failed, going on without it: " in stderr
    doc = json.loads(text(r, "/var/lib/waprov/report.json"))
    assert doc["result"] == "success"
    (failed, ready) = doc["health_reports"]
    assert (failed["substatus"], failed["http_status"]) == ("Provisioning", 410)
    assert "HTTP 410" in failed["error"]
    assert (ready["state"], ready["http_status"]) == ("Ready", 200)
    assert "/var/lib/waprov/provisioned" in r["snapshot"]


def test_a_connection_closed_on_the_first_health_report_is_retried_at_once_with_a_warning(
    tmp_path: Any,
) -> None:
    r = run(tmp_path, ovf=ovf(), faults={"health": [["close"]]}, scale=1.0)  # real waits
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    assert health_states(r) == ["NotReady/Provisioning", "NotReady/Provisioning", "Ready"]
    assert r["runs"][0]["seconds"] < 15, r["runs"][0]["stderr"]  # not WALinuxAgent's 30 s back-off
    warning = " WARNING health report (in progress): POST http://127.0.0.1:"
    line = next(x for x in r["runs"][0]["stderr"].splitlines() if warning in x)  # without -verbose
    assert line.endswith("/machine?comp=health attempt 1 failed: connection closed without a response")


def test_bad_input_is_refused_with_a_clear_reason(tmp_path: Any) -> None:
    cases = {
        "system": (ovf(user="daemon"), "system user refused", "User daemon is a system user"),
        "name": (ovf(user="-rf"), "invalid user name", "is not a valid user name"),
        "host": (ovf(hostname="bad_host!"), "invalid hostname", "is not a valid host name"),
        "outside": (
            ovf(keys=[("/root/.ssh/authorized_keys", None, IMDS_KEY)]),
            "failed to deploy ssh keys",
            "outside",
        ),
        "badkey": (
            ovf(keys=[(HOME_KEYS, None, "ssh-rsa bm90IGEga2V5")]),
            "failed to deploy ssh keys",
            "Bad public key",
        ),
        "link": (
            ovf(keys=[(HOME_KEYS, None, IMDS_KEY)]),
            "failed to deploy ssh keys",
            "symbolic link",
        ),
    }
    for name, (document, reason, words) in cases.items():
        setup = ["mkdir -p /etc/skel/.ssh && ln -s /root/.ssh/authorized_keys /etc/skel/.ssh/authorized_keys"]
        r = run(
            tmp_path / name,
            ovf=document,
            setup=setup if name == "link" else [],
            snapshot=["/root/.ssh", "/etc/passwd", "/var/lib/waprov"],
        )
        assert r["runs"][0]["rc"] == 1, name
        report = failure_report(r)
        assert report["reason"] == reason, (name, report)
        assert words in report["error"], (name, report)
        assert "Traceback" not in r["runs"][0]["stderr"]
        assert "/root/.ssh/authorized_keys" not in r["snapshot"], name


def test_a_system_user_is_allowed_with_allow_reset_sys_user(tmp_path: Any) -> None:
    r = run(
        tmp_path,
        conf="Provisioning.AllowResetSysUser=y\n",
        ovf=ovf(user="daemon", password=PASSWORD),
        imds=None,
    )
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    assert shadow_field(r, "daemon").startswith("$6$")


RANDOM_FILES = {  # made anew by every protocol detection, as WALinuxAgent does (WA §11.29)
    "/var/lib/waprov/report.json",  # and the last run's report: its times (tests/test_record_sandbox.py)
    "/var/lib/waagent/TransportCert.pem",
    "/var/lib/waagent/TransportPrivate.pem",
    "/var/lib/waagent/Certificates.p7m",
    "/var/lib/waagent/Certificates.xml",
}
FULL_CONF = "Provisioning.ExecuteCustomData=y\nProvisioning.DeleteRootPassword=y\n"


def full_ovf(pub: str) -> str:
    return ovf(
        password=PASSWORD,
        disable_password_auth="false",
        keys=[(HOME_KEYS, None, pub), (HOME_KEYS, "{THUMBPRINT}", None)],
        key_pairs=[("/home/azureuser/.ssh/id_rsa", "{THUMBPRINT}")],
        custom_data=base64.b64encode(SCRIPT.encode()).decode(),
        provision_guest_agent="false",
    )


def verified_hash(hashed: str) -> bool:
    salt = hashed.split("$")[2]  # checked with openssl, not with the crypt waprov uses
    p = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, PASSWORD], capture_output=True, text=True)
    return p.stdout.strip() == hashed


def end_state(r: Dict[str, Any]) -> Dict[str, Any]:
    """Every file as (type, mode, owner, bytes); the user's hash, whose salt is random per
    run, becomes "<verified>" once openssl confirms it is the password's."""
    out = {}
    for path, entry in files(r).items():
        data = entry.get("bytes")
        if path == "/etc/shadow" and data is not None:
            hashed = shadow_field(r, "azureuser")
            assert verified_hash(hashed)
            data = data.replace(hashed.encode(), b"<verified>")
        if path not in RANDOM_FILES:
            out[path] = (entry["type"], entry["mode"], entry["uid"], entry["gid"], data)
    return out


def test_a_kill_after_any_step_then_a_rerun_leaves_the_same_end_state(tmp_path: Any) -> None:
    # one tenant for every sandbox: the session's (tests/conftest.py)
    _, pub = user_key(str(tmp_path))
    common = {"conf": FULL_CONF, "ovf": full_ovf(pub), "snapshot": [*SNAPSHOT, "/var/lib/customdata-ran"]}
    clean = run(tmp_path / "clean", **common)
    assert clean["runs"][0]["rc"] == 0, clean["runs"][0]["stderr"]
    reference = end_state(clean)
    assert "/var/lib/customdata-ran" in reference and "/var/lib/waprov/provisioned" in reference
    for step in STEP_NAMES:
        r = run(tmp_path / step, runs=[{"crash_after": step}, {}], **common)
        assert r["runs"][0]["rc"] == -9, (step, r["runs"][0]["stderr"])  # really killed
        assert r["runs"][1]["rc"] == 0, (step, r["runs"][1]["stderr"])
        state = end_state(r)
        diff = sorted(p for p in set(state) | set(reference) if state.get(p) != reference.get(p))
        assert diff == [], (step, diff)
        assert health_states(r)[-1] == "Ready"


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Any) -> None:
    _, pub = user_key(str(tmp_path))
    r = run(
        tmp_path,
        ovf=ovf(password=PASSWORD, keys=[(HOME_KEYS, None, pub)]),
        runs=[{"args": ["-provision", "--dry-run"]}],
        setup=["cat /etc/hostname > /var/tmp/hostname.before"],
        snapshot=[*SNAPSHOT, "/var/tmp/hostname.before"],
        search=PASSWORD,
    )
    out = r["runs"][0]["stdout"]
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    plan = out.splitlines()
    assert plan[0].startswith("Plan (dry run")
    expected_in_order = [
        "write  /etc/hostname",
        "run    useradd -m azureuser",
        "run    usermod -p '<redacted>' azureuser",
        "write  /etc/sudoers.d/waagent",
        "write  /etc/ssh/sshd_config",
        "write  /home/azureuser/.ssh/authorized_keys",
        "write  /var/lib/waagent/provisioned",
        "report Ready",
    ]
    positions = [next(i for i, line in enumerate(plan) if line.startswith(e)) for e in expected_in_order]
    assert positions == sorted(positions)
    assert "report NotReady Provisioning" in out
    assert "/home/azureuser" not in r["snapshot"]
    assert text(r, "/etc/hostname") == text(r, "/var/tmp/hostname.before")
    assert not any(x["route"] in ("health", "goalstate", "certificates") for x in r["requests"])
    assert r["found_in"] == []
