"""(i) socket-activated sshd and (ii) NetworkManager, on the waprov-nm image (its NIC is
NetworkManager's, sshd is Debian 12's ssh.socket instead of ssh.service; see
tests/e2e/guest-setup.sh and tests/e2e/checks.py).

(i) With an OVF (the host name set before NetworkManager starts): while waprov
provisions, a connection to sshd's port gets no banner; the first banner comes after
waprov's Ready. The socket starts ssh.service (Accept=no), which waprov.service precedes.
(ii) IMDS only (no DVD: the host name comes with the network up), with the socket
starting one sshd per connection (Accept=yes, ssh@.service, as Flatcar's and Fedora's
sshd.socket do; the image's generator adds it for the boot whose kernel command line has
e2e.sshd=per-connection): waprov re-announces the host name through NetworkManager and
its next DHCP request carries the new name; again no banner before Ready, and the
per-connection sshd starts only after waprov.service (waprov -enable's drop-in).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from typing import List, Optional, Tuple

from tests.e2e.checks import (
    boot,
    dhcp_of,
    first_dhcp_request_names_the_host,
    imds,
    key_at,
    no_network_restart,
    waprov_journal,
)
from tests.e2e.pcap import client_requests
from tests.e2e.scenario import Scenario, agent_of, record_timing, state_of
from tests.e2e.vm import Guest
from tests.fakefabric import Request
from tests.provisioning import ovf

# a line of `journalctl -o short-monotonic`: "[   12.345678] host unit[pid]: message"
MONOTONIC = re.compile(r"^\[\s*(\d+\.\d+)\]")


class BannerProbe:
    """From the host, during the boot, over and over: a TCP connection to the guest's
    forwarded ssh port and a wait for the first line it sends (sshd's banner), until one
    comes. qemu's user network accepts on the host side at once and closes the
    connection when the guest refuses it, so a connection alone proves nothing: the
    banner is what an sshd sends. Host monotonic times."""

    def __init__(self, guest: Guest) -> None:
        self.port = guest.ssh_port
        self.closed = 0  # connections that ended without a banner
        self.banner: Optional[Tuple[float, float, str]] = None  # (connected, received, line)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="banner-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as c:
                    connected = time.monotonic()
                    c.settimeout(0.5)
                    data = b""
                    while not self._stop.is_set():
                        try:
                            chunk = c.recv(256)
                        except socket.timeout:
                            continue
                        if not chunk:
                            break
                        data += chunk
                        if b"\n" in data:
                            line = data.split(b"\n", 1)[0].decode("ascii", "replace").strip()
                            self.banner = (connected, time.monotonic(), line)
                            return
                    self.closed += 1
            except OSError:
                self.closed += 1
            self._stop.wait(0.5)

    def wait(self, timeout: float) -> Tuple[float, float, str]:
        self._thread.join(timeout)
        self.stop()
        assert self.banner is not None, (
            f"no ssh banner within {timeout:.0f} s ({self.closed} connections closed)"
        )
        return self.banner

    def stop(self) -> None:
        self._stop.set()


def nm_scenario(name: str, user: str, hostname: str, with_dvd: bool) -> Scenario:
    return Scenario(
        name,
        user=user,
        ovf=(lambda pub: ovf(hostname=hostname, user=user, keys=key_at(user, pub))) if with_dvd else None,
        imds=lambda pub: imds(user, hostname, pub),
        variant="waprov-nm",
    )


def waprov_ready_once(s: Scenario) -> Request:
    """waprov reported NotReady/Provisioning then exactly one Ready (this image has no
    guest agent: Debian's waagent conflicts with network-manager). Keeps report.json."""
    s.save("report.json", s.root_cmd("cat /var/lib/waprov/report.json"))
    assert s.health("waprov") == ["NotReady/Provisioning", "Ready"]
    others = [(agent_of(r), r.path) for r in s.requests() if agent_of(r) != "waprov"]
    assert others == [], f"someone else talked to the fabric: {others}"
    return next(r for r in s.requests() if agent_of(r) == "waprov" and state_of(r) == "Ready")


def boot_probing_ssh(s: Scenario) -> Tuple[Request, Tuple[float, float, str]]:
    """Boot with a banner probe running from the kernel's hand-over on; waprov's Ready
    and the first banner (checked to come after that Ready, and recorded)."""
    probes: List[BannerProbe] = []
    try:
        boot(s, started=lambda: probes.append(BannerProbe(s.guest)))
        ready = waprov_ready_once(s)
        connected, received, line = probes[0].wait(60)
    finally:
        for probe in probes:
            probe.stop()
    t0 = s.guest.started
    shown = {
        "ssh_probe_connections_closed": probes[0].closed,
        "ssh_probe_connected_s": round(connected - t0, 2),
        "ssh_probe_banner_s": round(received - t0, 2),
        "ready_s": round(ready.time - t0, 2),
    }
    record_timing(s.name, shown, merge=True)
    s.save("ssh-probe.txt", f"{shown}\nbanner: {line}\n")
    assert line.startswith("SSH-2.0-"), line
    assert received > ready.time, f"an ssh banner before waprov's Ready: {shown}"
    return ready, (connected, received, line)


def journal_lines(s: Scenario, *args: str) -> List[Tuple[float, str]]:
    return [
        (float(m.group(1)), line)
        for line in s.journal(*args).splitlines()
        if (m := MONOTONIC.match(line)) is not None
    ]


def no_ordering_cycle(s: Scenario) -> None:
    """systemd found no ordering cycle in this boot (it would break one by dropping a job)."""
    cycles = [line for _, line in journal_lines(s) if "ordering cycle" in line or "to break ordering" in line]
    assert not cycles, f"systemd found an ordering cycle at boot: {cycles}"


# ---- (i) ssh.socket (Accept=no) with an OVF ------------------------------------------------------


def test_i_ssh_socket_accepts_no_session_before_ready() -> None:
    s = nm_scenario("i-ssh-socket", "ivy", "e2e-ssh-socket", with_dvd=True)
    try:
        boot_probing_ssh(s)
        assert s.guest.ssh("ivy", "hostname", key=s.key).stdout.strip() == "e2e-ssh-socket"
        units = s.unit_times("ssh.socket", "ssh.service", "waprov.service", "NetworkManager.service")
        s.save("units.txt", f"{units}\n")
        # the socket listened during provisioning; the sshd it starts came after it
        assert units["ssh.socket"]["active"] < units["waprov.service"]["end"], units
        assert units["ssh.service"]["start"] >= units["waprov.service"]["end"], units
        assert units["NetworkManager.service"]["state"] == "active/success", units
        no_ordering_cycle(s)
        # NetworkManager's first DHCP request already carries the OVF's name: no re-announce
        first_dhcp_request_names_the_host(s, "e2e-ssh-socket")
        no_network_restart(waprov_journal(s), dhcp_of(s, 1))
    finally:
        s.stop()


# ---- (ii) NetworkManager re-announce (IMDS only), per-connection sshd (Accept=yes) -----------------


def test_ii_networkmanager_reannounces_and_per_connection_sshd_waits() -> None:
    s = nm_scenario("ii-nm-imds", "nina", "e2e-nm-imds", with_dvd=False)
    s.guest.kernel_args = "e2e.sshd=per-connection"
    try:
        boot_probing_ssh(s)
        p = s.guest.ssh("nina", "hostname; sudo -n true && echo sudo-ok", key=s.key)
        assert p.stdout.split() == ["e2e-nm-imds", "sudo-ok"], p
        journal = waprov_journal(s)
        assert "No provisioning DVD yet" in journal, journal
        assert "Re-announced the host name on " in journal and "(networkmanager)" in journal, journal
        # the DHCP exchange after the re-announce carries the new name
        requests = client_requests(dhcp_of(s, 1))
        assert requests[0].hostname != "e2e-nm-imds", requests[0]
        assert any(r.hostname == "e2e-nm-imds" and r.xid != requests[0].xid for r in requests), requests
        # the per-connection sshd (ssh@…service) ran, each one only after waprov.service
        units = s.unit_times("ssh.socket", "ssh.service", "waprov.service")
        s.save("units.txt", f"{units}\n")
        assert units["ssh.socket"]["active"] < units["waprov.service"]["end"], units
        assert units["ssh.service"]["start"] is None, units  # the socket starts ssh@ instead
        started = [(t, line) for t, line in journal_lines(s, "-u", "ssh@*.service") if " Started " in line]
        s.save("journal-ssh-instances.txt", "".join(line + "\n" for _, line in started))
        assert started, "no per-connection sshd (ssh@.service) started"
        assert min(t for t, _ in started) >= units["waprov.service"]["end"], (started[0], units)
        no_ordering_cycle(s)
    finally:
        s.stop()


def test_probe_sees_a_banner_when_sshd_listens() -> None:
    """The probe itself: a local server that sends a banner after a delay is seen, with
    the delay; one that closes at once is counted as closed (no network: loopback)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        port = server.getsockname()[1]

        def serve() -> None:
            c, _ = server.accept()
            c.close()  # the first connection: closed without a word
            c, _ = server.accept()
            time.sleep(1.0)
            c.sendall(b"SSH-2.0-OpenSSH_test\r\n")
            c.close()

        threading.Thread(target=serve, daemon=True).start()

        class FakeGuest:
            ssh_port = port

        probe = BannerProbe(FakeGuest())  # type: ignore[arg-type]
        connected, received, line = probe.wait(10)
        assert line == "SSH-2.0-OpenSSH_test" and received - connected >= 0.9 and probe.closed == 1
