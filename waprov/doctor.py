"""`waprov -doctor [--image]`: check an image before capture, or a VM after a failure.

Each check prints one line `OK|WARN|FAIL  <name>: <finding>` and, unless OK, the fix on
the next line. Read-only (probes through System.query). Exit 1 if any check FAILs.
Checks: udf can be mounted (WALinuxAgent #2144), the guest agent is swapped out
(`Provisioning.Agent=disabled`, its drop-ins), a per-connection sshd that a socket
starts waits for provisioning (the ssh@/sshd@.service drop-ins), no second provisioning agent (cloud-init,
azure-init), sshd reads its drop-in directory and `sshd -t` passes, /etc/sudoers reads
sudoers.d, hv_kvp_daemon runs, waprov's units are enabled; with `--image`, nothing that
`-deprovision` should have removed is left (ovf-env.xml, provisioned markers, users'
authorized_keys, SSH host keys).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Set, TextIO

from waprov.config import Config
from waprov.handover import (
    DISABLED_FLAG,
    DROPIN_NAME,
    ETC_UNITS,
    GA_UNITS,
    PROVISIONING_UNITS,
    SSH_UNITS,
    UNITS,
    unit_file,
)
from waprov.procfs import process_names
from waprov.state import MARKER, state_path
from waprov.system import HostPath, Result, System

NO_HOST_KEYS = "no hostkeys available"  # sshd's words when it finds no host key

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass(frozen=True)
class Finding:
    level: str
    name: str
    text: str
    fix: str = ""

    def lines(self) -> List[str]:
        out = [f"{self.level:<5} {self.name}: {self.text}"]
        if self.fix and self.level != OK:
            out.append(f"      fix: {self.fix}")
        return out


def _text(system: System, path: str) -> Optional[str]:
    raw = system.read(path) if system.kind(path) == "file" else None
    return None if raw is None else raw.decode("utf-8", "replace")


def _enabled(system: System, unit: str) -> bool:
    return bool(system.glob(f"{ETC_UNITS}/*.wants/{unit}"))


def check_udf(system: System, config: Config) -> Finding:
    name = "udf"
    blocked = []
    for path in system.glob("/etc/modprobe.d/*.conf") + system.glob("/usr/lib/modprobe.d/*.conf"):
        for line in (_text(system, path) or "").splitlines():
            if re.match(r"\s*(install\s+udf\s+/(usr/)?bin/(true|false)|blacklist\s+udf)\b", line):
                blocked.append(f"{path}: {line.strip()}")
    fix = "remove the line that disables udf: Azure's provisioning DVD is UDF (WALinuxAgent #2144)"
    if blocked:
        return Finding(FAIL, name, "udf is disabled (" + "; ".join(blocked) + ")", fix)
    if "udf" in (_text(system, "/proc/filesystems") or ""):
        return Finding(OK, name, "udf is in /proc/filesystems")
    if system.has_command("modprobe") and system.query(["modprobe", "-n", "udf"]).rc == 0:
        return Finding(OK, name, "the udf module can be loaded")
    return Finding(FAIL, name, "udf is neither built in nor loadable: the provisioning DVD cannot be read",
                   "install the kernel's udf module (linux-modules-extra or the like)")  # fmt: skip


def check_guest_agent(system: System, config: Config) -> Finding:
    name = "guest agent"
    installed = [u for u in GA_UNITS if unit_file(system, u) is not None]
    if not installed:
        return Finding(OK, name, "WALinuxAgent is not installed: nothing to swap out")
    if config.provisioning_agent != "disabled":
        return Finding(FAIL, name, f"Provisioning.Agent={config.provisioning_agent} in "
                       f"{config.source or 'the built-in defaults'}: the guest agent provisions, not waprov",
                       "run `waprov -enable`")  # fmt: skip
    missing = [u for u in installed if unit_file(system, f"{u}.d/{DROPIN_NAME}") is None]
    if missing:
        return Finding(FAIL, name, f"no waprov drop-in for {', '.join(missing)}: it may report Ready "
                       "over a failed provisioning", "run `waprov -enable`")  # fmt: skip
    required = " and ".join(PROVISIONING_UNITS)
    stale = [path for path in (unit_file(system, f"{u}.d/{DROPIN_NAME}") for u in installed)
             if path is not None and not _requires_and_follows(_text(system, path) or "")]  # fmt: skip
    if stale:
        return Finding(FAIL, name, f"{', '.join(stale)}: not Requires= and After= {required} "
                       "(from an older waprov?)", "run `waprov -enable` for drop-ins in /etc/systemd/system, "
                       "reinstall waprov's package for its own")  # fmt: skip
    return Finding(OK, name, f"Provisioning.Agent=disabled; {', '.join(installed)} require {required}")


def _names_both(dropin: str, *keys: str) -> bool:
    """Each of the drop-in's `keys` (Requires, After) names both provisioning units."""
    words: Dict[str, Set[str]] = {key: set() for key in keys}
    for line in dropin.splitlines():
        m = re.match(r"\s*(\w+)\s*=(.*)", line)
        if m and m.group(1) in words:
            words[m.group(1)] |= set(m.group(2).split())
    return all(set(PROVISIONING_UNITS) <= found for found in words.values())


def _requires_and_follows(dropin: str) -> bool:
    return _names_both(dropin, "Requires", "After")


def check_ssh_socket(system: System, config: Config) -> Finding:
    name = "socket-activated sshd"
    templates = [u for u in SSH_UNITS if unit_file(system, u) is not None]
    if not templates:
        return Finding(OK, name, "no per-connection sshd unit (ssh@.service, sshd@.service); a socket "
                       "that starts ssh.service or sshd.service waits for waprov.service")  # fmt: skip
    follows = " and ".join(PROVISIONING_UNITS)
    unordered = []
    for unit in templates:
        dropin = unit_file(system, f"{unit}.d/{DROPIN_NAME}")
        if dropin is None or not _names_both(_text(system, dropin) or "", "After"):
            unordered.append(unit)
    if unordered:
        return Finding(FAIL, name, f"{', '.join(unordered)} not After= {follows}: a connection to the "
                       "socket starts sshd before provisioning ends (old host keys and settings)",
                       "run `waprov -enable`")  # fmt: skip
    return Finding(OK, name, f"{', '.join(templates)} start only after {follows}")


def check_other_agents(system: System, config: Config) -> Finding:
    name = "other provisioning agents"
    found = []
    cloud_init = [u for u in ("cloud-init-local.service", "cloud-init.service", "cloud-init-main.service")
                  if _enabled(system, u)]  # fmt: skip
    if cloud_init and system.kind("/etc/cloud/cloud-init.disabled") == "absent":
        found.append(f"cloud-init ({', '.join(cloud_init)} enabled)")
    if _enabled(system, "azure-init.service"):
        found.append("azure-init (azure-init.service enabled)")
    if found:
        fix = "touch /etc/cloud/cloud-init.disabled, or systemctl disable azure-init.service"
        return Finding(FAIL, name, "; ".join(found) + " would provision this VM too", fix)
    return Finding(OK, name, "neither cloud-init nor azure-init is enabled")


def check_sshd(system: System, config: Config) -> Finding:
    name = "sshd"
    conf = os.path.join(config.ssh_dir, "sshd_config")
    text = _text(system, conf)
    if text is None:
        return Finding(WARN, name, f"{conf} does not exist", "install openssh-server")
    dropin_dir = os.path.join(config.ssh_dir, "sshd_config.d")
    uses_dropins = bool(system.glob(dropin_dir + "/*.conf"))
    includes = re.search(r"^\s*Include\s+\S*sshd_config\.d", text, re.M | re.I)
    if uses_dropins and not includes:
        return Finding(FAIL, name, f"{dropin_dir} has settings, but {conf} does not Include it",
                       f"add `Include {dropin_dir}/*.conf` at the top of {conf}")  # fmt: skip
    sshd = next((p for p in ("/usr/sbin/sshd", "/usr/bin/sshd") if system.kind(p) == "file"), None)
    if sshd is None:
        return Finding(WARN, name, "sshd is not installed", "install openssh-server")
    result = system.query([sshd, "-t", "-f", HostPath(conf)])
    stand_in = ""
    if NO_HOST_KEYS in result.stderr:  # a deprovisioned image: the keys come at first boot
        if not config.regenerate_ssh_host_key_pair:
            return Finding(FAIL, name, "there are no SSH host keys and Provisioning.RegenerateSshHostKeyPair "
                           "is n: sshd cannot start on a VM made from this image",
                           "set Provisioning.RegenerateSshHostKeyPair=y, or keep the host keys")  # fmt: skip
        result = _sshd_check_with_stand_in_key(system, sshd, conf)
        stand_in = " (with a throwaway host key: this image has none, they are made at first boot)"
    if "privilege separation directory" in result.stderr:  # sshd has not run on this boot
        return Finding(WARN, name, "sshd -t cannot check: " + result.stderr.strip()[:200], "start sshd once")
    if result.rc != 0:
        return Finding(FAIL, name, f"sshd -t fails: {result.stderr.strip()[:300]}", f"fix {conf}")
    passes = "sshd -t passes" + stand_in
    return Finding(OK, name, passes + (f"; {conf} includes its drop-ins" if uses_dropins else ""))


def _sshd_check_with_stand_in_key(system: System, sshd: str, conf: str) -> Result:
    """`sshd -t` with an ed25519 key made for it in a private temporary directory (sshd
    checks nothing without a host key), which is removed afterwards."""
    work = tempfile.mkdtemp(prefix="waprov-doctor-")
    try:
        key = os.path.join(work, "ssh_host_ed25519_key")
        made = system.query(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", key], timeout=30)
        if made.rc != 0:
            return made
        return system.query([sshd, "-t", "-f", HostPath(conf), "-h", key])  # the key is this machine's
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check_sudoers(system: System, config: Config) -> Finding:
    name = "sudoers"
    text = _text(system, "/etc/sudoers")
    if text is None:
        return Finding(WARN, name, "/etc/sudoers does not exist", "install sudo")
    if re.search(r"^\s*[#@]includedir\s+/etc/sudoers\.d\s*$", text, re.M):
        return Finding(OK, name, "/etc/sudoers reads /etc/sudoers.d")
    return Finding(FAIL, name, "/etc/sudoers does not read /etc/sudoers.d: the admin user gets no sudo",
                   "add `@includedir /etc/sudoers.d` to /etc/sudoers (with visudo)")  # fmt: skip


def check_kvp_daemon(system: System, config: Config) -> Finding:
    name = "hv_kvp_daemon"
    if any(p in ("hv_kvp_daemon", "hypervkvpd") for p in process_names(system)):
        return Finding(OK, name, "running: the host can read waprov's KVP report")
    return Finding(WARN, name, "not running: the host cannot read waprov's PROVISIONING_REPORT",
                   "install and enable hyperv-daemons (hv-kvp-daemon.service)")  # fmt: skip


def check_units(system: System, config: Config) -> Finding:
    name = "waprov units"
    off = [u for u in UNITS if not _enabled(system, u)]
    if system.kind(DISABLED_FLAG) != "absent":
        return Finding(FAIL, name, f"{DISABLED_FLAG} exists (waprov -disable)", "run `waprov -enable`")
    if off:
        return Finding(FAIL, name, f"{', '.join(off)} not enabled", "run `waprov -enable`")
    return Finding(OK, name, f"{', '.join(UNITS[:-1])} and {UNITS[-1]} are enabled")


def check_leftovers(system: System, config: Config) -> Finding:
    name = "image leftovers"
    markers = (
        f"{config.lib_dir}/ovf-env.xml",
        f"{config.lib_dir}/provisioned",
        state_path(MARKER),
    )
    left = [p for p in markers if system.kind(p) != "absent"]
    left += system.glob("/home/*/.ssh/authorized_keys")
    if config.regenerate_ssh_host_key_pair:  # -deprovision removes them only then (WA §7.2)
        left += system.glob(os.path.join(config.ssh_dir, "ssh_host_*key"))
    if left:
        return Finding(FAIL, name, "left from the VM this image was made on: " + ", ".join(left),
                       "run `waprov -deprovision+user` before capturing the image")  # fmt: skip
    return Finding(OK, name, "no ovf-env.xml, provisioned markers, authorized_keys or host keys")


def run(system: System, config: Config, image: bool) -> List[Finding]:
    checks = (check_udf, check_guest_agent, check_other_agents, check_sshd, check_ssh_socket, check_sudoers,
              check_kvp_daemon, check_units)  # fmt: skip
    findings = [check(system, config) for check in checks]
    if image:
        findings.append(check_leftovers(system, config))
    return findings


def main(conf_path: Optional[str], image: bool, out: TextIO = sys.stdout) -> int:
    from waprov.config import load_config

    findings = run(System(dry_run=True), load_config(conf_path), image)
    for f in findings:
        print("\n".join(f.lines()), file=out)
    failed = sum(f.level == FAIL for f in findings)
    print(f"{failed} check(s) failed" if failed else "all checks passed", file=out)
    return 1 if failed else 0
