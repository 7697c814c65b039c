"""One e2e guest under qemu (TCG): its disks, its DVD, its wiring to the fake fabric, ssh.

The guest looks like an Azure Gen1 VM as far as qemu can make it: the OS disk (LUN 0)
and a resource disk (LUN 1, SCSI serial "resource-disk") on virtio-scsi, the
provisioning DVD on IDE (/dev/sr0), the VM id in SMBIOS, one NIC on qemu's user network
with `restrict=on` whose virtual network is 168.0.0.0/7, so that guestfwd can serve
168.63.129.16:80 (wireserver) and 169.254.169.254:80 (IMDS) there from the fake fabric
on the host's loopback. The guest runs with waprov's production endpoints. The test
process runs in a private network namespace (tools/e2e), so nothing leaves it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from typing import Callable, List, Optional, Tuple, TypeVar

from tests.fakefabric import FakeFabric

WIRESERVER = "168.63.129.16"
IMDS = "169.254.169.254"
AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"  # how cloud-init recognises Azure
# What the kernel prints when it runs the initramfs' init (or /sbin/init without one).
KERNEL_HANDOVER = re.compile(r"Run /\S+ as init process")
KERNEL_STALL_S = 60.0
# qemu's forwarded ssh port: below the kernel's ephemeral range (32768-60999), which
# bind(0) never hands out, so no fake fabric of another scenario running beside this one
# (pytest-xdist's workers share the network namespace) can take it between the check here
# and qemu's own bind; each worker has a range of its own (PYTEST_XDIST_WORKER gwN).
SSH_PORTS = 20000
SSH_PORTS_PER_WORKER = 500
_next_port = [0]
T = TypeVar("T")


class GuestError(AssertionError):
    pass


def wait_for(what: str, probe: Callable[[], Optional[T]], timeout: float, every: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise GuestError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def make_dvd(path: str, ovf_xml: str) -> None:
    """A UDF/ISO9660 bridge image holding ovf-env.xml, as Azure's provisioning DVD."""
    src = path + ".d"
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "ovf-env.xml"), "w", encoding="utf-8") as f:
        f.write(ovf_xml)
    subprocess.run(
        ["genisoimage", "-quiet", "-udf", "-J", "-R", "-V", "rd_rdfe_stable", "-o", path, src], check=True
    )
    shutil.rmtree(src)


def ssh_port() -> int:
    """A free port for the next guest's ssh forward in the test's network namespace, from
    this worker's range (SSH_PORTS), not the one a guest used just before."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    first = SSH_PORTS + SSH_PORTS_PER_WORKER * (int(worker[2:]) if worker[2:].isdigit() else 0)
    for _ in range(SSH_PORTS_PER_WORKER):
        port = first + _next_port[0] % SSH_PORTS_PER_WORKER
        _next_port[0] += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise GuestError(f"no free port in {first}-{first + SSH_PORTS_PER_WORKER - 1}")


class Guest:
    """A VM: `workdir` keeps its OS disk overlay, resource disk and logs across boots."""

    def __init__(
        self,
        workdir: str,
        image_dir: str,
        variant: str,
        vm_uuid: str,
        fabric: FakeFabric,
        dvd: Optional[str],
        azure_asset_tag: bool = False,
    ) -> None:
        self.workdir, self.image_dir, self.variant = workdir, image_dir, variant
        self.vm_uuid, self.fabric, self.dvd = vm_uuid, fabric, dvd
        self.asset_tag = azure_asset_tag
        self.os_disk = os.path.join(workdir, "os.qcow2")
        self.resource_disk = os.path.join(workdir, "resource.img")
        self.boots = 0
        self.ssh_port = 0
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.started = 0.0
        self.console = self.qemu_log = ""
        # the boots whose network traffic qemu writes to net-bootN.pcap (filter-dump):
        # the first boot's DHCP requests show which host name the guest sent
        self.capture: Tuple[int, ...] = (1,)
        self.pcap = ""  # this boot's capture file, "" when not captured
        self.stalls = 0  # boots started again because the kernel stalled before init
        self.kernel_stall_s = KERNEL_STALL_S
        self.kernel_args = ""  # appended to the kernel command line (the image's own switches)
        os.makedirs(workdir, exist_ok=True)
        # ssh's password helper: prints the password it is given in its environment
        self.askpass = os.path.join(workdir, "askpass.sh")
        with open(self.askpass, "w", encoding="ascii") as f:
            f.write('#!/bin/sh\nprintf "%s\\n" "$E2E_PASSWORD"\n')
        os.chmod(self.askpass, 0o700)

    # ---- lifecycle ---------------------------------------------------------------------------

    def argv(self) -> List[str]:
        ws = self.fabric.wireserver.rsplit(":", 1)[1]
        imds = self.fabric.imds_url.rsplit(":", 1)[1]
        net = ",".join(
            [
                "user,id=n0,net=168.0.0.0/7,host=168.0.0.2,restrict=on",
                f"hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22",
                f"guestfwd=tcp:{WIRESERVER}:80-cmd:socat - TCP:127.0.0.1:{ws}",
                f"guestfwd=tcp:{IMDS}:80-cmd:socat - TCP:127.0.0.1:{imds}",
            ]
        )
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-smp", "2", "-m", "1024",
            "-display", "none", "-no-reboot", "-no-user-config", "-nodefaults",
            "-kernel", self._boot_file("vmlinuz"),
            "-initrd", self._boot_file("initrd.img"),
            "-append", f"root=LABEL=root ro console=ttyS0 rootwait {self.kernel_args}".strip(),
            "-serial", f"file:{self.console}",
            "-monitor", f"unix:{self.monitor},server=on,wait=off",
            "-uuid", self.vm_uuid,
            "-device", "virtio-scsi-pci,id=scsi0",
            "-drive", f"file={self.os_disk},format=qcow2,if=none,id=osdisk,cache=unsafe",
            "-device", "scsi-hd,drive=osdisk,bus=scsi0.0,scsi-id=0,lun=0,serial=os-disk",
            "-drive", f"file={self.resource_disk},format=raw,if=none,id=rdisk,cache=unsafe",
            "-device", "scsi-hd,drive=rdisk,bus=scsi0.0,scsi-id=0,lun=1,serial=resource-disk",
            "-netdev", net, "-device", "virtio-net-pci,netdev=n0",
        ]  # fmt: skip
        if self.pcap:
            argv += ["-object", f"filter-dump,id=dump0,netdev=n0,file={self.pcap}"]
        if self.dvd:
            argv += ["-drive", f"file={self.dvd},if=ide,index=2,media=cdrom,readonly=on"]
        if self.asset_tag:
            argv += ["-smbios", f"type=3,asset={AZURE_ASSET_TAG}"]
        return argv

    def _boot_file(self, name: str) -> str:
        """The variant's own kernel or initramfs (another suite's) if it has one."""
        own = os.path.join(self.image_dir, f"{name}-{self.variant}")
        return own if os.path.exists(own) else os.path.join(self.image_dir, name)

    def start(self) -> None:
        if self.proc is not None:
            raise GuestError("the guest is already running")
        if not os.path.exists(self.os_disk):
            base = os.path.join(self.image_dir, f"{self.variant}.img")
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, self.os_disk], check=True
            )
        if not os.path.exists(self.resource_disk):
            with open(self.resource_disk, "wb") as f:
                f.truncate(2 << 30)  # a blank 2 GiB disk, as Azure's before the first boot
        self.boots += 1
        # Under TCG the guest kernel hangs before init in about one boot in 250, right
        # after "Switched to clocksource hpet" (README, "A kernel that stalls"). Nothing
        # of the guest's userspace has run by then (no disk mounted, no request sent),
        # so the same boot is started once more, said loudly here and by tools/e2e,
        # which lists the stalled consoles. A second stall fails.
        stalled: List[str] = []
        while True:
            self._launch()
            if self._kernel_hands_over():
                return
            stalled.append(self._set_aside_stall())
            if len(stalled) == 2:
                raise GuestError("the guest kernel stalled before init twice in a row: " + ", ".join(stalled))
            warning = f"the guest kernel stalled before init ({stalled[0]}); starting the boot again"
            print("e2e: WARNING: " + warning, file=sys.stderr, flush=True)

    def _launch(self) -> None:
        self.ssh_port = ssh_port()
        self.console = os.path.join(self.workdir, f"console-boot{self.boots}.log")
        self.monitor = os.path.join(self.workdir, "monitor.sock")
        self.qemu_log = os.path.join(self.workdir, f"qemu-boot{self.boots}.log")
        captured = self.boots in self.capture
        self.pcap = os.path.join(self.workdir, f"net-boot{self.boots}.pcap") if captured else ""
        with open(self.qemu_log, "wb") as log:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT)

    def _kernel_hands_over(self) -> bool:
        """Whether the kernel ran init within `kernel_stall_s` (normally 4-9 s here). A
        qemu that exits counts as handed over: the waits after this one report it."""
        deadline = time.monotonic() + self.kernel_stall_s
        while time.monotonic() < deadline:
            if not self.running() or KERNEL_HANDOVER.search(self.console_text()):
                return True
            time.sleep(0.2)
        return False

    def _set_aside_stall(self) -> str:
        """Kill the stalled qemu and keep its console and qemu log under "-stalled" names,
        the log with where the vCPUs were (the monitor's `info cpus`, `info registers -a`)."""
        try:
            where = self._monitor("info status", "info cpus", "info registers -a")
        except OSError as e:
            where = f"[the monitor did not answer: {e}]\n"
        with open(self.qemu_log, "a", encoding="utf-8") as log:
            log.write("\n--- the monitor, when the kernel was found stalled ---\n" + where)
        self.kill()
        self.stalls += 1
        suffix = f"-stalled{self.stalls}.log"
        aside = {path: path[: -len(".log")] + suffix for path in (self.qemu_log, self.console)}
        for path, renamed in aside.items():
            if os.path.exists(path):
                os.replace(path, renamed)
        return aside[self.console]

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _monitor(self, *commands: str) -> str:
        """What qemu's monitor answers to `commands`, each answer after its command. Raises
        OSError when it cannot be reached or does not answer within 5 s."""
        out = b""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.monitor)
            s.sendall("".join(c + "\n" for c in commands).encode())
            while out.count(b"(qemu) ") <= len(commands):  # the greeting and each answer end with one
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        # The monitor echoes each command as its line editor redraws it (escape codes):
        # each part after a prompt is that echo, a newline and the answer. Keep the answers.
        parts = out.decode("utf-8", "replace").replace("\r", "").split("(qemu) ")
        answers = [f"(qemu) {c}\n{p.partition(chr(10))[2]}" for c, p in zip(commands, parts[1:])]
        return "".join(parts[:1] + answers + parts[len(commands) + 1 :])

    def poweroff(self, timeout: float = 90) -> None:
        """ACPI power button (systemd shuts down cleanly); killed after `timeout`."""
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                self._monitor("system_powerdown")
            self.proc.wait(timeout)
            self.proc = None
            return
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()
        # Raised outside the handler, so that a test failure already on its way (this runs
        # in the tests' `finally`) is shown as this error's context instead of being hidden.
        raise GuestError(f"the guest did not power off within {timeout:.0f} s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def console_text(self) -> str:
        try:
            with open(self.console, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # ---- ssh ---------------------------------------------------------------------------------

    def ssh(
        self,
        user: str,
        command: str,
        key: Optional[str] = None,
        password: Optional[str] = None,
        timeout: float = 60,
        stdin: Optional[str] = None,
    ) -> subprocess.CompletedProcess[str]:
        """ssh to the guest as `user`: with `key` only, or with `password` only (given to
        ssh by an askpass helper through the environment, never in argv)."""
        argv = [
            "ssh", "-p", str(self.ssh_port), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
            "-o", "IdentitiesOnly=yes", "-o", "NumberOfPasswordPrompts=1", "-F", "/dev/null",
        ]  # fmt: skip
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.workdir}
        if key:
            argv += ["-i", key, "-o", "BatchMode=yes", "-o", "PreferredAuthentications=publickey"]
        else:
            argv += ["-o", "PubkeyAuthentication=no",
                     "-o", "PreferredAuthentications=password,keyboard-interactive"]  # fmt: skip
            env.update(SSH_ASKPASS=self.askpass, SSH_ASKPASS_REQUIRE="force", DISPLAY=":0",
                       E2E_PASSWORD=password or "")  # fmt: skip
        argv += [f"{user}@127.0.0.1", command]
        if stdin is not None:
            return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, env=env)
        return subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, env=env
        )

    def wait_ssh(self, user: str, key: str, timeout: float = 120) -> None:
        def probe() -> Optional[bool]:
            if not self.running():
                raise GuestError("qemu exited while waiting for ssh")
            try:
                return True if self.ssh(user, "true", key=key, timeout=20).returncode == 0 else None
            except subprocess.TimeoutExpired:
                return None

        wait_for(f"ssh as {user}", probe, timeout, every=1)
