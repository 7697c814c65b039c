"""`waprov -doctor [--image]` against sandboxes set up to pass every check, then to fail
each one (the real command; files, units and processes laid out in the sandbox)."""

from __future__ import annotations

from typing import Dict, Tuple

import pytest

from tests.conftest import waprov_argv
from tests.sandbox import sandbox_run
from waprov.handover import DROPIN, SSH_DROPIN

# A healthy image after `waprov -enable` and `-deprovision+user`: Debian's GA unit with
# waprov's drop-in, Provisioning.Agent=disabled, waprov's units enabled, sshd and sudoers
# as Debian ships them, hv_kvp_daemon running. This kernel has no udf module: a modprobe
# that can load it stands in (the FAIL cases use the real one, or a modprobe.d rule).
HEALTHY = f"""
rm -rf /home/* /var/lib/waagent /var/lib/waprov
printf 'Provisioning.Agent=disabled\\n' > /etc/waagent.conf
mkdir -p /lib/systemd/system/walinuxagent.service.d /etc/systemd/system/multi-user.target.wants /run/sshd
cp tests/data/walinuxagent.service /lib/systemd/system/
cat >/lib/systemd/system/walinuxagent.service.d/50-waprov.conf <<'EOF'
{DROPIN}EOF
for u in waprov-local.service waprov.service waprov-resourcedisk.service; do
    cp init/$u /lib/systemd/system/
    ln -s /lib/systemd/system/$u /etc/systemd/system/multi-user.target.wants/$u
done
printf '#!/bin/sh\\n[ "$*" = "-n udf" ]\\n' > /usr/local/sbin/modprobe; chmod 0755 /usr/local/sbin/modprobe
cp /bin/sleep /run/hv_kvp_daemon; (/run/hv_kvp_daemon 120 &)
"""


# Flatcar's sshd@.service (spec/packaging.md: its sshd.socket starts one per connection)
SSHD_AT = """cat >/lib/systemd/system/sshd@.service <<'EOF'
[Unit]
Description=OpenSSH per-connection server daemon

[Service]
ExecStart=-/usr/sbin/sshd -i
StandardInput=socket
EOF
"""


def doctor(extra: str = "", *args: str) -> Tuple[int, Dict[str, str], str]:
    w = " ".join(waprov_argv("-doctor", *args))
    p = sandbox_run(["bash", "-c", f"{w}; echo rc=$?"], HEALTHY + extra)
    lines = p.stdout.splitlines()
    assert lines and lines[-1].startswith("rc="), p.stdout + p.stderr
    levels = {}
    for line in lines:
        head, _, rest = line.partition(" ")
        if head in ("OK", "WARN", "FAIL"):
            levels[rest.strip().split(":", 1)[0]] = head
    return int(lines[-1][3:]), levels, p.stdout


CHECKS = [
    "udf",
    "guest agent",
    "other provisioning agents",
    "sshd",
    "socket-activated sshd",
    "sudoers",
    "hv_kvp_daemon",
    "waprov units",
]


def test_a_healthy_image_passes_every_check() -> None:
    rc, levels, out = doctor("", "--image")
    assert levels == {**dict.fromkeys(CHECKS, "OK"), "image leftovers": "OK"}, out
    assert rc == 0 and out.splitlines()[-2] == "all checks passed"
    assert (
        "OK    guest agent: Provisioning.Agent=disabled; walinuxagent.service require "
        "waprov-local.service and waprov.service\n"
    ) in out
    assert (
        "OK    waprov units: waprov-local.service, waprov.service and waprov-resourcedisk.service "
        "are enabled\n"
    ) in out


@pytest.mark.parametrize(
    ("name", "setup", "level", "says"),
    [
        ("udf", "mkdir -p /etc/modprobe.d && echo 'install udf /bin/true' > /etc/modprobe.d/cis.conf", "FAIL",
         "udf is disabled (/etc/modprobe.d/cis.conf: install udf /bin/true)"),
        ("udf", "rm /usr/local/sbin/modprobe", "FAIL", "udf is neither built in nor loadable"),
        ("guest agent", "printf 'Provisioning.Agent=auto\\n' > /etc/waagent.conf", "FAIL",
         "Provisioning.Agent=auto in /etc/waagent.conf: the guest agent provisions"),
        ("guest agent", "rm /lib/systemd/system/walinuxagent.service.d/50-waprov.conf", "FAIL",
         "no waprov drop-in for walinuxagent.service"),
        # an older waprov's drop-in, in /etc (it overrides the package's)
        ("guest agent", "mkdir -p /etc/systemd/system/walinuxagent.service.d && printf "
         "'[Unit]\\nRequires=waprov.service\\nAfter=waprov.service\\n' "
         ">/etc/systemd/system/walinuxagent.service.d/50-waprov.conf", "FAIL",
         "/etc/systemd/system/walinuxagent.service.d/50-waprov.conf: not Requires= and After= "
         "waprov-local.service and waprov.service"),
        ("guest agent", "sed -i 's/^After=.*/After=waprov.service/' "
         "/lib/systemd/system/walinuxagent.service.d/50-waprov.conf", "FAIL",
         "/lib/systemd/system/walinuxagent.service.d/50-waprov.conf: not Requires= and After="),
        ("other provisioning agents", "mkdir -p /etc/systemd/system/cloud-init.target.wants && "
         "ln -s /lib/systemd/system/cloud-init.service /etc/systemd/system/cloud-init.target.wants/", "FAIL",
         "cloud-init (cloud-init.service enabled) would provision this VM too"),
        ("other provisioning agents", "ln -s /lib/systemd/system/azure-init.service "
         "/etc/systemd/system/multi-user.target.wants/", "FAIL", "azure-init (azure-init.service enabled)"),
        ("sshd", "echo 'PasswordAuthentication no' > /etc/ssh/sshd_config.d/50-x.conf && "
         "sed -i '/^Include/d' /etc/ssh/sshd_config", "FAIL",
         "has settings, but /etc/ssh/sshd_config does not Include it"),
        ("sshd", "echo 'Bogus yes' >> /etc/ssh/sshd_config", "FAIL", "sshd -t fails"),
        # Flatcar's per-connection sshd (its sshd.socket has Accept=yes), without waprov's drop-in
        ("socket-activated sshd", SSHD_AT, "FAIL",
         "sshd@.service not After= waprov-local.service and waprov.service: a connection to the socket "
         "starts sshd before provisioning ends"),
        # a drop-in that follows only one of the two units
        ("socket-activated sshd", SSHD_AT + "mkdir -p /etc/systemd/system/sshd@.service.d && "
         "printf '[Unit]\\nAfter=waprov.service\\n' "
         ">/etc/systemd/system/sshd@.service.d/50-waprov.conf", "FAIL", "sshd@.service not After="),
        ("sudoers", "sed -i '/includedir/d' /etc/sudoers", "FAIL",
         "/etc/sudoers does not read /etc/sudoers.d"),
        ("hv_kvp_daemon", "pkill -f /run/hv_kvp_daemon", "WARN", "not running"),
        ("waprov units", "rm /etc/systemd/system/multi-user.target.wants/waprov.service", "FAIL",
         "waprov.service not enabled"),
        ("waprov units", "rm /etc/systemd/system/multi-user.target.wants/waprov-local.service", "FAIL",
         "waprov-local.service not enabled"),
        ("waprov units", "mkdir -p /etc/waprov && touch /etc/waprov/disabled", "FAIL",
         "/etc/waprov/disabled exists"),
    ],
)  # fmt: skip
def test_each_check_fails_on_its_fault(name: str, setup: str, level: str, says: str) -> None:
    rc, levels, out = doctor(setup)
    assert levels[name] == level, out
    assert says in out
    assert [n for n, lv in levels.items() if lv != "OK"] == [name]  # only that check
    assert rc == (1 if level == "FAIL" else 0)
    assert f"{level:<5} {name}: " in out and "      fix: " in out


NO_KEYS = "rm -f /etc/ssh/ssh_host_*"  # a deprovisioned image


def test_an_image_without_host_keys_passes_when_they_are_made_at_first_boot() -> None:
    regen = "printf 'Provisioning.RegenerateSshHostKeyPair=y\\n' >> /etc/waagent.conf"
    rc, levels, out = doctor(f"{NO_KEYS}; {regen}", "--image")
    assert levels == {**dict.fromkeys(CHECKS, "OK"), "image leftovers": "OK"}, out
    assert "sshd -t passes (with a throwaway host key: this image has none" in out and rc == 0
    # a broken configuration is still found without host keys
    rc, levels, out = doctor(f"{NO_KEYS}; {regen}; echo 'Bogus yes' >> /etc/ssh/sshd_config", "--image")
    assert levels["sshd"] == "FAIL" and "Bogus" in out and rc == 1, out


def test_an_image_without_host_keys_that_are_not_made_again_fails() -> None:
    rc, levels, out = doctor(NO_KEYS)
    assert levels["sshd"] == "FAIL" and rc == 1, out
    assert "there are no SSH host keys and Provisioning.RegenerateSshHostKeyPair is n" in out


def test_a_per_connection_sshd_with_the_swap_in_drop_in_passes() -> None:
    setup = (
        SSHD_AT + "mkdir -p /etc/systemd/system/sshd@.service.d && "
        f"cat >/etc/systemd/system/sshd@.service.d/50-waprov.conf <<'EOF'\n{SSH_DROPIN}EOF\n"
    )
    rc, levels, out = doctor(setup)
    assert levels == dict.fromkeys(CHECKS, "OK") and rc == 0, out
    assert (
        "OK    socket-activated sshd: sshd@.service start only after "
        "waprov-local.service and waprov.service\n"
    ) in out
    _, _, out = doctor()  # none installed (the machine's openssh has no ssh@.service)
    assert "OK    socket-activated sshd: no per-connection sshd unit" in out


def test_cloud_init_disabled_by_its_flag_is_fine() -> None:
    _, levels, _ = doctor(
        "mkdir -p /etc/systemd/system/cloud-init.target.wants /etc/cloud"
        " && touch /etc/cloud/cloud-init.disabled"
        " && ln -s /lib/systemd/system/cloud-init.service /etc/systemd/system/cloud-init.target.wants/"
    )
    assert levels["other provisioning agents"] == "OK"


@pytest.mark.parametrize(
    ("setup", "left"),
    [
        ("mkdir -p /var/lib/waagent && touch /var/lib/waagent/ovf-env.xml", "/var/lib/waagent/ovf-env.xml"),
        ("mkdir -p /var/lib/waprov && touch /var/lib/waprov/provisioned", "/var/lib/waprov/provisioned"),
        ("mkdir -p /home/azureuser/.ssh && touch /home/azureuser/.ssh/authorized_keys",
         "/home/azureuser/.ssh/authorized_keys"),
        ("printf 'Provisioning.Agent=disabled\\nProvisioning.RegenerateSshHostKeyPair=y\\n'"
         " > /etc/waagent.conf"
         " && touch /etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ed25519_key"),
    ],
)  # fmt: skip
def test_image_leftovers_fail_only_with_image(setup: str, left: str) -> None:
    rc, levels, out = doctor(setup, "--image")
    assert levels["image leftovers"] == "FAIL" and left in out and rc == 1
    rc, levels, _ = doctor(setup)
    assert "image leftovers" not in levels and rc == 0
