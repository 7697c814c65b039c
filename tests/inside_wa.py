"""Runs inside a level-2 sandbox: WALinuxAgent's own provisioning against the fake fabric.

`python3 -m tests.inside_wa SPEC.json RESULT.json`, for `make bench` (tools/bench_boot.py):
WALinuxAgent 2.7.3 (Debian's package, unpacked by `make deps` into .cache/waagent) runs its own
`provision` command, Agent.provision() (its logging and events set up as for every command,
then the provisioning handler its daemon runs at a first boot, ProvisionHandler; 2.7.3's
argument parser no longer maps `-provision` to it, so the script calls it), with
/usr/bin/python3 in one process; /var/lib/waagent is made first, as its daemon does. The spec holds the `ovf`
(ovf-env.xml) and the `vm_id`; its configuration is WALinuxAgent's defaults (Logs.Console=n:
nothing written to the host's console).

What stands in for Azure, and why (nothing of WALinuxAgent's code is changed but the DVD):
- the wireserver: WALinuxAgent finds it at 168.63.129.16 when the routing table has a route
  to it (as in every virtual network), so the sandbox has one (a veth pair, eth0 10.0.0.4/24,
  a default route and that one), 168.63.129.16 is a local address, and a relay here forwards its ports 80 and
  32526 (the HostGAPlugin's: the fake fabric answers 404 there, as an older host does) to
  the fake fabric on 127.0.0.1;
- the DVD: the sandbox has no /dev/sr0, so WALinuxAgent's `mount_dvd` is replaced by a
  read-only bind mount of the directory holding ovf-env.xml at its DVD mount point (one
  `mount`, as the real one is), and `eject_dvd` by nothing; its `umount_dvd` runs as it is;
- the DMI id: a tmpfs over /sys/class holds dmi/id/product_uuid (the container has none);
- `ifdown`/`ifup` (WALinuxAgent's publish_hostname restarts the interface; the host has no
  ifupdown): /usr/local/sbin stand-ins that set the link down and up. On Azure that restart
  also renews the DHCP lease, which takes longer: the sandbox's number is a lower bound.
The result holds the run's exit code, output and durations (whole process; the handler's
own run, imports excluded) and the fabric's requests. Nothing here decides pass or fail.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Tuple

from tests.fakefabric import FakeFabric

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WA_DIR = os.path.join(ROOT, ".cache", "waagent", "usr", "lib", "python3", "dist-packages")
WIRESERVER_IP = "168.63.129.16"
CONF = "/run/waagent-bench.conf"
OVF_DIR = "/run/ovf"
NETWORK = [
    "ip link add eth0 type veth peer name eth1",
    "ip addr add 10.0.0.4/24 dev eth0",
    "ip link set eth0 up",
    "ip link set eth1 up",
    f"ip addr add {WIRESERVER_IP}/32 dev lo",
    f"ip route add {WIRESERVER_IP}/32 dev eth0",
    "ip route add default via 10.0.0.1 dev eth0",
]
STAND_INS = {
    "/usr/local/sbin/ifdown": '#!/bin/sh\nexec ip link set dev "$1" down\n',
    "/usr/local/sbin/ifup": '#!/bin/sh\nexec ip link set dev "$1" up\n',
}
SCRIPT = """
import json, os, sys, time
started = time.monotonic()
from azurelinuxagent.common import conf
from azurelinuxagent.common.osutil.default import DefaultOSUtil
from azurelinuxagent.common.utils import shellutil
OVF_DIR = sys.argv[2]

def mount_dvd(self, *args, **kwargs):  # the bench's DVD: the OVF directory, bind-mounted read-only
    mount_point = conf.get_dvd_mount_point()
    if not os.path.isdir(mount_point):
        os.makedirs(mount_point)
    shellutil.run_command(["mount", "--bind", "-o", "ro", OVF_DIR, mount_point])

def eject_dvd(self, *args, **kwargs):  # nothing to eject
    pass

DefaultOSUtil.mount_dvd = mount_dvd
DefaultOSUtil.eject_dvd = eject_dvd
from azurelinuxagent.agent import Agent
ready = time.monotonic()
Agent(False, conf_file_path=sys.argv[1]).provision()
done = time.monotonic()
sys.stderr.write("WA-BENCH " + json.dumps({"start": ready - started, "run": done - ready}) + "\\n")
"""


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def relay(listen: Tuple[str, int], target: Tuple[str, int]) -> socket.socket:
    """Forward every connection to `listen` to `target` (threads; the sandbox's lifetime)."""
    server = socket.create_server(listen)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(target)
            except OSError:
                conn.close()
                continue
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return server


def sh(lines: List[str]) -> None:
    for line in lines:
        subprocess.run(["bash", "-euo", "pipefail", "-c", line], check=True)


def main(spec_path: str, result_path: str) -> int:
    with open(spec_path, encoding="utf-8") as f:
        spec: Dict[str, Any] = json.load(f)
    sh(NETWORK)
    os.makedirs("/var/lib/waagent", mode=0o700, exist_ok=True)  # what its daemon does before it provisions
    sh(["mount -t tmpfs dmi /sys/class", "mkdir -p /sys/class/dmi/id",
        f"echo {spec['vm_id']} > /sys/class/dmi/id/product_uuid"])  # fmt: skip
    for path, text in STAND_INS.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(path, 0o755)  # noqa: S103 (commands: everyone may run them)
    os.makedirs(OVF_DIR, exist_ok=True)
    with open(os.path.join(OVF_DIR, "ovf-env.xml"), "w", encoding="utf-8") as fh:
        fh.write(spec["ovf"])
    with open(CONF, "w", encoding="utf-8") as fh:
        fh.write("# WALinuxAgent's defaults; its log not copied to the host's console\nLogs.Console=n\n")
    result: Dict[str, Any] = {}
    with FakeFabric("/run/fabric") as fabric:
        host, port = fabric.wireserver.rsplit(":", 1)
        relays = [relay((WIRESERVER_IP, p), (host, int(port))) for p in (80, 32526)]
        env = dict(os.environ, PYTHONPATH=WA_DIR)
        argv = ["/usr/bin/python3", "-c", SCRIPT, CONF, OVF_DIR]
        started = time.monotonic()
        p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
        seconds = time.monotonic() - started
        for server in relays:
            server.close()
        timings: Dict[str, float] = {}
        for line in p.stderr.splitlines():
            if line.startswith("WA-BENCH "):
                timings = json.loads(line.split(" ", 1)[1])
        result["run"] = {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr, "seconds": seconds,
                         **timings}  # fmt: skip
        result["requests"] = [
            {"route": r.route, "path": r.path, "body": r.body.decode("utf-8", "replace")}
            for r in fabric.all_requests()
        ]
    result["provisioned"] = os.path.exists("/var/lib/waagent/provisioned")
    with open("/etc/passwd", encoding="utf-8") as fh:
        result["passwd"] = fh.read()
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
