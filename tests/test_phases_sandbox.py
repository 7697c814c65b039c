"""The two phases in sandboxes: `waprov -provision -local` (waprov-local.service, before the
network) then `waprov -provision` (waprov.service), as the units run them at a first boot;
a kill in and between them; dry runs; IMDS alone; a DVD that shows up late; the host name
without hostnamectl; the done check of every later boot (/run/waprov/done)."""

from __future__ import annotations

import json
import re
import sys
from typing import Any, Dict, List

import pytest

from tests.provisioning import PASSWORD, ROOT, files, health_states, ovf, scenario, text, user_key
from waprov.provision import LOCAL, NETWORK, STEPS

HOME_KEYS = "/home/azureuser/.ssh/authorized_keys"
LOCAL_RUN: Dict[str, Any] = {"args": ["-provision", "-local"]}
LAUNCHER = f"{sys.executable} bin/waprov"
# how many requests the fake fabric has had (its log), run after a run has ended
REQUESTS_SO_FAR = "cat /run/fabric/requests.jsonl 2>/dev/null | wc -l"
LOCAL_NAMES = [s.name for s in STEPS if s.phase == LOCAL]
SNAP = [
    "/etc/passwd",
    "/etc/hostname",
    "/home",
    "/var/lib/waprov",
    "/var/lib/waagent",
    "/run/waprov",
    "/etc/ssh",
]


def run(tmp_path: Any, **spec: Any) -> Dict[str, Any]:
    return scenario(str(tmp_path), spec)


def stderr(r: Dict[str, Any], i: int) -> str:
    return str(r["runs"][i]["stderr"])


def report(r: Dict[str, Any]) -> Dict[str, Any]:
    doc: Dict[str, Any] = json.loads(text(r, "/var/lib/waprov/report.json"))
    return doc


def journal(r: Dict[str, Any]) -> List[str]:
    return [line.split(" ", 1)[1] for line in text(r, "/var/lib/waprov/journal").splitlines()]


def test_the_local_phase_applies_the_dvd_before_the_network_and_the_network_phase_finishes(
    tmp_path: Any,
) -> None:
    _, pub = user_key(str(tmp_path))
    conf = "Provisioning.RegenerateSshHostKeyPair=y\nProvisioning.SshHostKeyPairType=ed25519\n"
    r = run(
        tmp_path,
        conf=conf,
        ovf=ovf(hostname="phase-vm", password=PASSWORD, keys=[(HOME_KEYS, None, pub)]),
        runs=[
            dict(
                LOCAL_RUN,
                after=[REQUESTS_SO_FAR, "hostname", "cat /etc/ssh/ssh_host_ed25519_key.pub || true"],
            ),
            {"after": [f"{LAUNCHER} -status"]},
        ],
        snapshot=SNAP,
        search=PASSWORD,
    )
    local, network = r["runs"]
    assert local["rc"] == 0, stderr(r, 0)
    assert [a["stdout"].strip() for a in local["after"][:2]] == ["0", "phase-vm"]  # nothing sent; named
    assert "the first DHCP request carries it" in stderr(r, 0)
    assert "azureuser" in text(r, "/etc/passwd")
    assert network["rc"] == 0, stderr(r, 1)
    assert health_states(r) == ["NotReady/Provisioning", "Ready"]
    assert "nothing to re-announce" in stderr(r, 1) and "Re-announced" not in stderr(r, 1)
    # the keys were made once, by the keygen the local phase began; the network phase took its result
    made = [c for c in report(r)["commands"] if "-f /etc/ssh/ssh_host_ed25519_key" in c]
    assert len(made) == 1 and made[0].startswith("/bin/sh -c "), made
    # the host key made by the local phase's wrapper, named after the new host, whole
    pub_key = text(r, "/etc/ssh/ssh_host_ed25519_key.pub")
    assert pub_key.split()[2] == "root@phase-vm"
    assert [p for p in r["snapshot"] if p.startswith("/run/waprov/hostkeys")] == []  # taken and cleared
    assert {"phase:local", "hostname:before-network", "hostkeys"} <= set(journal(r))
    doc = report(r)
    assert doc["result"] == "success"
    assert [(p["name"], p["result"]) for p in doc["phases"]] == [(LOCAL, "ok"), (NETWORK, "ok")]
    phases = {s["name"]: s["phase"] for s in doc["steps"]}
    assert phases == {s.name: s.phase for s in STEPS}  # every step once, with its phase
    assert [s["name"] for s in doc["steps"]] == [s.name for s in STEPS]
    shown = network["after"][0]["stdout"]
    assert "phases:" in shown and "  local " in shown and "  network " in shown
    assert "  hostname           local " in shown and "  ready              network " in shown
    assert r["found_in"] == []  # the password is nowhere but its hash


@pytest.mark.parametrize("step", LOCAL_NAMES)
def test_a_kill_inside_the_local_phase_resumes_at_the_next_boot(tmp_path: Any, step: str) -> None:
    _, pub = user_key(str(tmp_path))
    conf = "Provisioning.RegenerateSshHostKeyPair=y\nProvisioning.SshHostKeyPairType=ed25519\n"
    r = run(
        tmp_path,
        conf=conf,
        ovf=ovf(password=PASSWORD, keys=[(HOME_KEYS, None, pub)], custom_data="ZWNobyBoaQ=="),
        runs=[dict(LOCAL_RUN, crash_after=step), LOCAL_RUN, {}],
        snapshot=SNAP,
    )
    assert r["runs"][0]["rc"] == -9, stderr(r, 0)
    assert [x["rc"] for x in r["runs"][1:]] == [0, 0], (stderr(r, 1), stderr(r, 2))
    assert health_states(r) == ["NotReady/Provisioning", "Ready"]
    assert pub in text(r, HOME_KEYS)
    assert text(r, "/var/lib/waprov/provisioned")
    assert text(r, "/etc/ssh/ssh_host_ed25519_key.pub").split()[2] == "root@waprov-vm"


@pytest.mark.parametrize("step", [s.name for s in STEPS if s.phase == NETWORK])
def test_a_kill_inside_the_network_phase_after_the_local_one_resumes(tmp_path: Any, step: str) -> None:
    _, pub = user_key(str(tmp_path))
    r = run(
        tmp_path,
        ovf=ovf(keys=[(HOME_KEYS, None, pub)]),
        runs=[LOCAL_RUN, {"crash_after": step}, LOCAL_RUN, {}],
        snapshot=SNAP,
    )
    assert r["runs"][1]["rc"] == -9, stderr(r, 1)
    assert [r["runs"][i]["rc"] for i in (0, 2, 3)] == [0, 0, 0], stderr(r, 3)
    ready = [s for s in health_states(r) if s == "Ready"]
    assert len(ready) == (2 if step == "ready" else 1)  # killed after Ready was sent: sent again
    assert text(r, "/var/lib/waprov/provisioned")
    assert "local phase is done for this VM already" in stderr(r, 2)


def test_a_dry_run_of_each_phase_changes_nothing_and_shows_its_plan(tmp_path: Any) -> None:
    r = run(
        tmp_path,
        ovf=ovf(password=PASSWORD),
        runs=[
            dict(LOCAL_RUN, args=["-provision", "-local", "--dry-run"], snapshot=SNAP),
            {"args": ["-provision", "--dry-run"], "snapshot": SNAP},
        ],
        snapshot=SNAP,
        search=PASSWORD,
    )
    local, network = r["runs"]
    assert local["rc"] == 0 and network["rc"] == 0, (stderr(r, 0), stderr(r, 1))
    assert "useradd" in local["stdout"] and "hostname" in local["stdout"]
    assert "report" not in local["stdout"]  # the local phase sends nothing
    assert "useradd" in network["stdout"] and "Ready" in network["stdout"]
    assert r["requests"] == [] or all(q["route"] != "health" for q in r["requests"])
    assert (
        "/var/lib/waprov/journal" not in r["snapshot"] and "/var/lib/waprov/report.json" not in r["snapshot"]
    )
    assert "azureuser" not in text(r, "/etc/passwd")
    assert r["found_in"] == []


def test_without_a_dvd_the_local_phase_ends_and_imds_provisions_with_a_reannounce(tmp_path: Any) -> None:
    # a route (here through lo): the network is up when the name is set (IMDS alone), so the
    # name is re-announced (where: loopback only here, which the re-announce says)
    setup = ["ip route add 10.9.0.0/24 dev lo"]
    r = run(
        tmp_path, ovf=None, setup=setup, runs=[dict(LOCAL_RUN, snapshot=["/etc/passwd"]), {}], snapshot=SNAP
    )
    local, network = r["runs"]
    assert local["rc"] == 0, stderr(r, 0)
    assert "No provisioning DVD yet" in stderr(r, 0)
    assert "azureuser" not in text(local, "/etc/passwd")  # nothing applied without data
    assert network["rc"] == 0, stderr(r, 1)
    assert health_states(r) == ["NotReady/Provisioning", "Ready"]
    assert "azureuser" in text(r, "/etc/passwd")  # IMDS's adminUsername
    assert "nothing to re-announce" not in stderr(r, 1)
    assert "the host name is not re-announced" in stderr(r, 1)  # the re-announce ran: no NIC to do it on
    assert "hostname:before-network" not in journal(r)
    doc = report(r)
    assert doc["sources"] == ["imds"]
    steps = [s["name"] for s in doc["steps"]]
    assert steps.index("notready") < steps.index("user")  # the local steps after NotReady, with IMDS's data


def test_a_dvd_that_shows_up_late_is_read_by_the_network_phase(tmp_path: Any) -> None:
    _, pub = user_key(str(tmp_path))
    late = dict(LOCAL_RUN, env={"WAPROV_OVF_DIR": "/run/not-yet"}, before=["mkdir -p /run/not-yet"])
    r = run(
        tmp_path, ovf=ovf(hostname="late-vm", keys=[(HOME_KEYS, None, pub)]), runs=[late, {}], snapshot=SNAP
    )
    assert [x["rc"] for x in r["runs"]] == [0, 0], stderr(r, 1)
    assert "No provisioning DVD yet" in stderr(r, 0)
    assert text(r, "/etc/hostname") == "late-vm" and r["hostname"] == "late-vm"
    assert pub in text(r, HOME_KEYS)
    assert report(r)["sources"] == ["dvd", "imds"]
    assert health_states(r) == ["NotReady/Provisioning", "Ready"]


RHEL9 = 'NAME="Red Hat Enterprise Linux"\nID="rhel"\nID_LIKE="fedora"\nVERSION_ID="9.4"\n'


@pytest.mark.parametrize("how", ["missing", "failing", "no-dbus"])
def test_the_running_host_name_is_set_without_hostnamectl(tmp_path: Any, how: str) -> None:
    """RHEL's command is `hostnamectl set-hostname <name> --static`; without it (missing,
    failing, or no D-Bus yet) `hostname <name>` sets the running name."""
    setup = {
        "missing": [
            "rm -f /usr/bin/hostnamectl /bin/hostnamectl",
            "mkdir -p /run/dbus",
            "touch /run/dbus/system_bus_socket",
        ],
        "failing": ["mkdir -p /run/dbus", "touch /run/dbus/system_bus_socket"],  # a socket nobody answers
        "no-dbus": [],
    }[how]
    r = run(
        tmp_path,
        files={"/etc/os-release": RHEL9},
        ovf=ovf(hostname="no-dbus-vm"),
        setup=setup,
        runs=[{}],
        snapshot=SNAP,
    )
    assert r["runs"][0]["rc"] == 0, stderr(r, 0)
    assert text(r, "/etc/hostname") == "no-dbus-vm"
    assert r["hostname"] == "no-dbus-vm"  # the running name: hostname's fallback
    commands = report(r)["commands"]
    assert "hostname no-dbus-vm" in commands
    tried = [c for c in commands if c.startswith("hostnamectl")]
    assert tried == ([] if how == "no-dbus" else ["hostnamectl set-hostname no-dbus-vm --static"])
    if how != "no-dbus":
        assert "hostnamectl failed" in stderr(r, 0)


def test_a_provisioned_vm_is_left_at_once_and_waprov_service_is_told_to_skip(tmp_path: Any) -> None:
    r = run(
        tmp_path,
        ovf=ovf(),
        runs=[{}, dict(LOCAL_RUN, modules=True, snapshot=["/run/waprov"])],
        snapshot=SNAP,
    )
    assert [x["rc"] for x in r["runs"]] == [0, 0], stderr(r, 1)
    assert "Provisioning already completed" in stderr(r, 1)
    assert "/run/waprov/done" in r["runs"][1]["snapshot"]
    imported = set(r["runs"][1]["modules"])
    # the done check imports no step, no parser, nothing of HTTP
    assert not {m for m in imported if m.startswith("waprov.steps.")}, sorted(imported)
    assert not imported & {"waprov.ovf", "waprov.dvd", "waprov.osrelease", "psutil", "defusedxml", "requests"}


def test_a_captured_image_with_another_vm_id_is_left_to_the_network_phase(tmp_path: Any) -> None:
    other = "11111111-2222-3333-4444-555555555555"
    r = run(
        tmp_path,
        ovf=ovf(),
        runs=[{"env": {"WAPROV_VM_ID": other}}, dict(LOCAL_RUN, snapshot=["/run/waprov"]), {}],
        snapshot=SNAP,
    )
    assert [x["rc"] for x in r["runs"]] == [0, 0, 0], stderr(r, 2)
    assert "/run/waprov/done" not in r["runs"][1]["snapshot"]  # waprov.service must run
    assert "the VM unique identifier has changed" in stderr(r, 2)
    assert health_states(r)[-1] == "Ready"
    assert files(r)["/var/lib/waagent/provisioned"]["bytes"].decode() != other


CHECK = f"{ROOT}/init/waprov-boot-check"
DMI = "/sys/class/dmi/id/product_uuid"


def test_the_boot_check_skips_a_provisioned_vm_without_an_interpreter_and_sees_a_new_id(
    tmp_path: Any,
) -> None:
    """waprov-local.service's ExecCondition: exit 1 and /run/waprov/done only when the DMI
    id is the one recorded when this VM was provisioned (a sysfs stand-in in the sandbox)."""
    vm = "544CDFD0-CB4E-4B4A-9954-5BDF3ED5C3B8"  # inside.py's WAPROV_VM_ID: the DMI id as read
    dmi = ["mount -t tmpfs dmi /sys/class", "mkdir -p /sys/class/dmi/id", f"echo {vm} > {DMI}"]
    check = f"{CHECK}; echo rc=$?; ls /run/waprov"
    r = run(
        tmp_path,
        ovf=ovf(),
        setup=dmi,
        runs=[
            {"before": [f"{CHECK} || exit 1"], "after": [check]},  # a first boot: go on; then done
            {
                "before": [f"echo 11111111-2222-3333-4444-555555555555 > {DMI}", "rm -f /run/waprov/done"],
                "args": ["-provision", "-local"],
                "after": ["rm -f /run/waprov/done; " + check],
            },
        ],
        snapshot=SNAP,
    )
    first, second = r["runs"]
    assert first["rc"] == 0, stderr(r, 0)
    assert text(r, "/var/lib/waprov/boot-id") == vm + "\n"
    out = first["after"][0]["stdout"]
    assert "nothing to do" in out and "rc=1" in out and "done" in out.split()
    # another VM's id (an image captured without -deprovision): the check says go on
    assert "rc=0" in second["after"][0]["stdout"] and "done" not in second["after"][0]["stdout"].split()


def test_a_local_phase_that_fails_after_the_host_name_leaves_no_restart_to_the_network_phase(
    tmp_path: Any,
) -> None:
    # a route when the network phase runs the steps again (as at a real boot), none before
    route = "ip route add 10.9.0.0/24 dev lo"
    r = run(tmp_path, ovf=ovf(user="daemon"), runs=[LOCAL_RUN, {"before": [route]}], snapshot=SNAP)
    assert [x["rc"] for x in r["runs"]] == [1, 1], stderr(r, 1)
    assert "Provisioning failed in the local phase" in stderr(r, 0)
    assert health_states(r) == ["NotReady/ProvisioningFailed"]
    assert "hostname:before-network" in journal(r)
    assert "phase:local" not in journal(r)


REGEN = "Provisioning.RegenerateSshHostKeyPair=y\nProvisioning.SshHostKeyPairType={}\n"
PREGEN = "/run/waprov/pregen"
# the boot check (a first boot), then its early RSA key awaited and its public half kept
CHECK_THEN_KEEP = (
    f"{CHECK} && for i in $(seq 600); do [ -e {PREGEN}/rc ] && break; sleep 0.05; done; "
    f"cat {PREGEN}/rc; cp {PREGEN}/ssh_host_rsa_key.pub /tmp/pregen.pub"
)


def blob(pub: str) -> str:
    return pub.split()[1]


@pytest.mark.parametrize("kind", ["rsa", "auto"])
def test_the_rsa_host_key_begun_by_the_boot_check_is_adopted_with_the_new_name(
    tmp_path: Any, kind: str
) -> None:
    r = run(
        tmp_path,
        conf=REGEN.format(kind),
        ovf=ovf(hostname="early-vm"),
        runs=[dict(LOCAL_RUN, before=[CHECK_THEN_KEEP]), {"after": ["cat /tmp/pregen.pub"]}],
        snapshot=SNAP,
    )
    assert [x["rc"] for x in r["runs"]] == [0, 0], stderr(r, 1)
    early = r["runs"][1]["after"][0]["stdout"]
    final = text(r, "/etc/ssh/ssh_host_rsa_key.pub")
    assert blob(final) == blob(early)  # the same key: not made a second time
    assert "The RSA host key begun at boot (waprov-boot-check) was adopted" in stderr(r, 1)
    assert early.split()[2] != "root@early-vm" and final.split()[2] == "root@early-vm"
    made = [c for c in report(r)["commands"] if c.startswith("/bin/sh -c ")]  # the wrapper, once
    assert len(made) == 1 and made[0].endswith(
        "-A" if kind == "auto" else "-t rsa -f /etc/ssh/ssh_host_rsa_key"
    )
    assert files(r)["/etc/ssh/ssh_host_rsa_key"]["mode"] == 0o600
    assert files(r)["/etc/ssh/ssh_host_rsa_key.pub"]["mode"] == 0o644
    if kind == "auto":  # `ssh-keygen -A` made the other types beside it
        assert text(r, "/etc/ssh/ssh_host_ed25519_key.pub").split()[2] == "root@early-vm"
    assert not [p for p in r["snapshot"] if p.startswith(PREGEN)]  # taken and removed
    assert health_states(r) == ["NotReady/Provisioning", "Ready"]


FAILED_EARLY = [f"mkdir -p -m 700 {PREGEN}", f"echo 1 > {PREGEN}/rc", f"echo 1 > {PREGEN}/pid"]


@pytest.mark.parametrize("early", ["in the making", "failed"])
def test_an_early_key_still_being_made_is_awaited_and_one_that_failed_is_made_anew(
    tmp_path: Any, early: str
) -> None:
    # the local phase at once after the check (the key most likely still in the making), or
    # after an early keygen that failed (exit code 1, no key file)
    r = run(
        tmp_path,
        conf=REGEN.format("rsa"),
        ovf=ovf(hostname="early-vm"),
        runs=[
            dict(LOCAL_RUN, before=[CHECK] if early == "in the making" else FAILED_EARLY),
            {"after": ["ssh-keygen -lf /etc/ssh/ssh_host_rsa_key"]},
        ],
        snapshot=SNAP,
    )
    assert [x["rc"] for x in r["runs"]] == [0, 0], stderr(r, 1)
    shown = r["runs"][1]["after"][0]["stdout"].split()
    assert shown[-2:] == ["root@early-vm", "(RSA)"], shown
    assert not [p for p in r["snapshot"] if p.startswith(PREGEN)]
    assert health_states(r) == ["NotReady/Provisioning", "Ready"]


@pytest.mark.parametrize(
    "conf, begun",
    [
        (REGEN.format("rsa"), True),
        (REGEN.format("auto"), True),
        ('  Provisioning.RegenerateSshHostKeyPair = "Y" # yes\nProvisioning.SshHostKeyPairType=rsa\n', True),
        (REGEN.format("ed25519"), False),
        (REGEN.format("ecdsa"), False),
        ("Provisioning.RegenerateSshHostKeyPair=n\nProvisioning.SshHostKeyPairType=rsa\n", False),
        ("#Provisioning.RegenerateSshHostKeyPair=y\n", False),  # WALinuxAgent's default: n
        ("Provisioning.RegenerateSshHostKeyPair=y\nProvisioning.RegenerateSshHostKeyPair=n\n", False),
    ],
)
def test_the_boot_check_begins_an_rsa_key_only_when_the_configuration_seems_to_want_one(
    tmp_path: Any, conf: str, begun: bool
) -> None:
    r = run(
        tmp_path,
        conf=conf,
        ovf=ovf(),
        runs=[{"args": ["-version"], "before": [CHECK], "after": [f"ls {PREGEN} 2>/dev/null || true"]}],
        snapshot=SNAP,
    )
    assert ("pid" in r["runs"][0]["after"][0]["stdout"].split()) == begun


def test_an_early_key_the_configuration_does_not_want_is_removed_unused(tmp_path: Any) -> None:
    # the file said rsa at boot; the configuration the run reads says ed25519
    edit = "sed -i s/=rsa/=ed25519/ /etc/waagent.conf"
    r = run(
        tmp_path,
        conf=REGEN.format("rsa"),
        ovf=ovf(hostname="early-vm"),
        runs=[dict(LOCAL_RUN, before=[CHECK_THEN_KEEP, edit]), {}],
        snapshot=SNAP,
    )
    assert [x["rc"] for x in r["runs"]] == [0, 0], stderr(r, 1)
    assert "/etc/ssh/ssh_host_rsa_key" not in r["snapshot"]
    assert text(r, "/etc/ssh/ssh_host_ed25519_key.pub").split()[2] == "root@early-vm"
    assert not [p for p in r["snapshot"] if p.startswith(PREGEN)]


# an ssh-keygen ahead on PATH: notes its niceness, then fails when told to (FAIL_AT: the
# niceness whose run fails, `any` for both) or hands over to the real one
SPY = (
    "mkdir -p /tmp/spy && cat > /tmp/spy/ssh-keygen <<'EOS' && chmod 755 /tmp/spy/ssh-keygen\n"
    "#!/bin/sh\n"
    'n=$(nice); echo "$n" >> /tmp/niceness\n'
    'case "$FAIL_AT" in "$n" | any) echo spy failed >&2; exit 1 ;; esac\n'
    'exec /usr/bin/ssh-keygen "$@"\n'
    "EOS"
)
AWAIT_PREGEN = f"for i in $(seq 600); do [ -e {PREGEN}/rc ] && break; sleep 0.05; done"


def spied_check(fail_at: str = "") -> str:
    return f"FAIL_AT='{fail_at}' PATH=/tmp/spy:$PATH {CHECK}"


def test_the_boot_check_races_two_keygens_one_raised_one_lowered_and_keeps_one_key(tmp_path: Any) -> None:
    # both searches succeed or the first one's end stops the other: exactly one key, no
    # keygen left running, the losing run's directory holds no second whole key pair
    after = AWAIT_PREGEN + f"; sleep 1; cat {PREGEN}/rc; sort -n /tmp/niceness | tr '\\n' ' '; echo"
    after += f"; ls {PREGEN}; pgrep -x ssh-keygen || echo none-running"
    after += f"; ssh-keygen -lf {PREGEN}/ssh_host_rsa_key.pub | cut -d' ' -f4"
    r = run(
        tmp_path,
        conf=REGEN.format("rsa"),
        ovf=ovf(),
        runs=[{"args": ["-version"], "before": [SPY, spied_check()], "after": [after]}],
        snapshot=SNAP,
    )
    out = r["runs"][0]["after"][0]["stdout"].split("\n")
    assert out[0] == "0" and out[1].split() == ["-10", "10"], out
    assert "won" in out and "ssh_host_rsa_key" in out and "ssh_host_rsa_key.pub" in out, out
    assert "none-running" in out and "(RSA)" in out, out


@pytest.mark.parametrize("fail_at, rc", [("-10", "0"), ("10", "0"), ("any", "1")])
def test_one_failed_early_keygen_leaves_the_other_s_key_and_two_leave_a_failure(
    tmp_path: Any, fail_at: str, rc: str
) -> None:
    after = AWAIT_PREGEN + f"; cat {PREGEN}/rc; ls {PREGEN}"
    r = run(
        tmp_path,
        conf=REGEN.format("rsa"),
        ovf=ovf(hostname="early-vm"),
        runs=[
            {"args": ["-version"], "before": [SPY, spied_check(fail_at)], "after": [after]},
            LOCAL_RUN,
            {"after": ["ssh-keygen -lf /etc/ssh/ssh_host_rsa_key"]},
        ],
        snapshot=SNAP,
    )
    seen = r["runs"][0]["after"][0]["stdout"].split()
    assert seen[0] == rc and ("ssh_host_rsa_key" in seen) == (rc == "0"), seen
    # either way the run ends with one RSA host key named after the new host
    assert [x["rc"] for x in r["runs"]] == [0, 0, 0], stderr(r, 2)
    assert r["runs"][2]["after"][0]["stdout"].split()[-2:] == ["root@early-vm", "(RSA)"]
    adopted = "The RSA host key begun at boot (waprov-boot-check) was adopted" in stderr(r, 2)
    assert adopted == (rc == "0")


# A stand-in for systemd's notification socket: the first datagram is written to
# /tmp/notified with how many requests the fake fabric had had by then.
LISTEN = (
    f"{sys.executable} -c '"
    "import socket, subprocess\n"
    's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind("/run/notify.sock")\n'
    "msg = s.recv(4096).decode()\n"
    'n = subprocess.run("cat /run/fabric/requests.jsonl 2>/dev/null | wc -l", shell=True,'
    " capture_output=True, text=True).stdout.strip()\n"
    'open("/tmp/notified", "w").write(n + " " + msg)\n'
    "' & for i in $(seq 100); do [ -S /run/notify.sock ] && break; sleep 0.05; done"
)
CONTINUE_RUN: Dict[str, Any] = {
    "args": ["-provision", "-local", "-continue"],
    "env": {"NOTIFY_SOCKET": "/run/notify.sock"},
    "before": [LISTEN],
}
WAIT = f"{ROOT}/init/waprov-wait-local"


def test_continue_tells_systemd_after_the_local_phase_and_runs_the_network_phase_in_the_same_process(
    tmp_path: Any,
) -> None:
    r = run(
        tmp_path,
        ovf=ovf(hostname="one-process-vm"),
        # waprov.service's condition after it: the VM is done, the unit is skipped (exit 1)
        runs=[dict(CONTINUE_RUN, after=["cat /tmp/notified", f"{WAIT}; echo rc=$?", "ls /run/waprov"])],
        snapshot=SNAP,
    )
    (one,) = r["runs"]
    assert one["rc"] == 0, stderr(r, 0)
    notified, waited, listed = (a["stdout"] for a in one["after"])
    # READY=1 came once the local phase was done, before anything was sent to the fabric
    assert notified.split("\n")[0].split() == ["0", "READY=1"], notified
    log = stderr(r, 0)
    assert log.index("Local phase done") < log.index("Running waprov provisioning, network phase")
    took, spent = map(float, re.findall(r"Provisioning complete \(([0-9.]+)s, of which ([0-9.]+)s", log)[0])
    assert spent <= took  # the network phase's own commands, not the process's
    assert health_states(r) == ["NotReady/Provisioning", "Ready"]
    assert [(p["name"], p["result"]) for p in report(r)["phases"]] == [(LOCAL, "ok"), (NETWORK, "ok")]
    assert "rc=1" in waited and "provisioned this VM" in waited
    assert "done" in listed.split() and "failed" not in listed.split()


def test_continue_after_a_failed_local_step_reports_it_once_and_waprov_service_fails_without_a_rerun(
    tmp_path: Any,
) -> None:
    r = run(
        tmp_path,
        ovf=ovf(user="daemon"),
        runs=[dict(CONTINUE_RUN, after=["cat /tmp/notified", f"{WAIT}; echo rc=$?", f"{WAIT}; echo rc=$?"])],
        snapshot=SNAP,
    )
    (one,) = r["runs"]
    assert one["rc"] == 1
    assert "Provisioning failed in the local phase" in stderr(r, 0)
    assert one["after"][0]["stdout"].split("\n")[0].split() == ["0", "READY=1"], one["after"][0]
    assert health_states(r) == ["NotReady/ProvisioningFailed"]
    # the unit fails (255: the guest agent's dependency fails), once: a later start runs again
    assert "rc=255" in one["after"][1]["stdout"] and "rc=0" in one["after"][2]["stdout"]
    assert "/run/waprov/done" not in r["snapshot"] and "/run/waprov/failed" not in r["snapshot"]


def test_waprov_service_runs_the_network_phase_when_the_local_unit_did_not(tmp_path: Any) -> None:
    # the local phase alone (an older unit, or killed before its network phase): no flag,
    # the condition lets waprov.service run `waprov -provision`
    r = run(
        tmp_path,
        ovf=ovf(hostname="two-process-vm"),
        runs=[dict(LOCAL_RUN, after=[f"{WAIT}; echo rc=$?"]), {}],
        snapshot=SNAP,
    )
    assert "rc=0" in r["runs"][0]["after"][0]["stdout"]
    assert [x["rc"] for x in r["runs"]] == [0, 0], stderr(r, 1)
    assert health_states(r) == ["NotReady/Provisioning", "Ready"]


def test_waprov_wait_local_waits_for_the_process_that_holds_the_run_lock(tmp_path: Any) -> None:
    hold = "mkdir -p -m 700 /run/waprov && (flock /run/waprov/lock sleep 2 &) && sleep 0.3"
    timed = f"s=$(date +%s%N); {WAIT}; echo rc=$?; e=$(date +%s%N); echo $(((e - s) / 1000000))"
    r = run(
        tmp_path,
        ovf=ovf(),
        runs=[{"args": ["-version"], "before": [hold], "after": [timed]}],
        snapshot=SNAP,
    )
    out = r["runs"][0]["after"][0]["stdout"].split()
    assert out[0] == "rc=0" and int(out[1]) >= 1000, out  # milliseconds waited
