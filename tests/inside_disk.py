"""Runs inside a level-2 sandbox: the real `waprov -resourcedisk` on a loop device.

`python3 -m tests.inside_disk SPEC.json RESULT.json`. The spec names the `device`, shell
`setup` lines (pre-format, pre-mount …), an optional fake `vmbus` tree ("gen1"/"gen2",
so discovery finds the loop device the way it finds an Azure resource disk), the runs
(`before` lines, `conf` keys, `env`, `args`, `override`: pass WAPROV_RESOURCE_DISK) and `ga`: then
WALinuxAgent's own resource-disk handler (Debian's waagent package, unpacked) runs last.
After every run the result records the disk's state: mounts, swaps, partition table,
filesystem, files on it. Swap enabled here is host-wide: it is always turned off before
the sandbox exits, and the disk unmounted. Nothing here decides pass or fail.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(ROOT, "bin", "waprov")
WA_DIR = os.path.join(ROOT, ".cache", "waagent", "usr", "lib", "python3", "dist-packages")
CONF = "/run/waagent-test.conf"
GEN1_ID = "{00000000-0001-8899-0000-000000000000}"
GEN2_ID = "{f8b3781a-1e82-4818-a1c3-63d806ec15bb}"
GA_SCRIPT = """
import sys
from azurelinuxagent.common import conf, logger
conf.load_conf_from_file(sys.argv[1])
logger.add_logger_appender(logger.AppenderType.STDOUT, logger.LogLevel.INFO)
from azurelinuxagent.daemon.resourcedisk.default import ResourceDiskHandler
ResourceDiskHandler().run()
"""


def sh(argv: List[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def mounts(device: str) -> List[List[str]]:
    with open("/proc/self/mounts") as f:
        rows = [line.split()[:4] for line in f]
    return [r for r in rows if r[0] == device or r[0].startswith(device + "p")]


def swaps() -> List[List[str]]:
    with open("/proc/swaps") as f:
        return [line.split()[:3] for line in f.readlines()[1:]]


def state(device: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {"mounts": mounts(device), "swaps": swaps()}
    out["table"] = sh(["parted", "-s", "-m", device, "unit", "B", "print"])
    out["ptype"] = sh(["sfdisk", "--part-type", device, "1"]).strip()
    part = device + "p1"
    out["fstype"] = (
        sh(["blkid", "-p", "-o", "value", "-s", "TYPE", part]).strip() if os.path.exists(part) else ""
    )
    files: Dict[str, Dict[str, Any]] = {}
    for _, mp, _, _ in out["mounts"]:
        for name in sorted(os.listdir(mp)):
            st = os.lstat(os.path.join(mp, name))
            entry: Dict[str, Any] = {"mode": stat.S_IMODE(st.st_mode), "size": st.st_size, "ino": st.st_ino}
            if name.endswith(".txt"):
                with open(os.path.join(mp, name), "rb") as f:
                    entry["text"] = f.read().decode("utf-8", "replace")
            files[os.path.join(mp, name)] = entry
    out["files"] = files
    mp_conf = "/mnt/resource"
    out["mount_point_mode"] = stat.S_IMODE(os.lstat(mp_conf).st_mode) if os.path.isdir(mp_conf) else None
    return out


def fake_vmbus(device: str, gen: str) -> None:
    """A /sys/bus/vmbus/devices tree naming `device` as the resource disk."""
    subprocess.run(["mount", "-t", "tmpfs", "fake-sysbus", "/sys/bus"], check=True)
    name = os.path.basename(device)
    dev_dir = "/sys/bus/vmbus/devices/" + (
        "00000000-0001-8899-0000-000000000000" if gen == "gen1" else "f8b3781a"
    )
    os.makedirs(dev_dir)
    with open(dev_dir + "/device_id", "w") as f:
        f.write((GEN1_ID if gen == "gen1" else GEN2_ID) + "\n")
    if gen == "gen1":
        os.makedirs(f"{dev_dir}/host3/target3:0:1/3:0:1:0/block/{name}")
    else:  # the OS disk at LUN 0 comes first and must be skipped
        os.makedirs(f"{dev_dir}/host0/target0:0:0/0:0:0:0/block/sda")
        os.makedirs(f"{dev_dir}/host0/target0:0:0/0:0:0:1/block/{name}")


def shell(lines: List[str], device: str) -> None:
    """Set-up lines, with $DISK the device and $PART its first partition."""
    env = {**os.environ, "DISK": device, "PART": device + "p1"}
    for line in lines:
        subprocess.run(["bash", "-euo", "pipefail", "-c", line], check=True, env=env)


def write_conf(keys: Dict[str, str]) -> None:
    with open(CONF, "w") as f:
        f.write("".join(f"{k}={v}\n" for k, v in keys.items()))


def cleanup(device: str, before: List[List[str]]) -> List[str]:
    """Swap off what the runs enabled, unmount the disk; what was done, for the result."""
    done = []
    for path, *_ in swaps():
        if [path] not in [[b[0]] for b in before]:
            subprocess.run(["swapoff", path], check=False)
            done.append("swapoff " + path)
    for _, mp, _, _ in reversed(mounts(device)):
        subprocess.run(["umount", mp], check=False)
        done.append("umount " + mp)
    return done


def main(spec_path: str, result_path: str) -> int:
    with open(spec_path) as f:
        spec = json.load(f)
    device = spec["device"]
    before = swaps()
    result: Dict[str, Any] = {"runs": []}
    try:
        shell(spec.get("setup", []), device)
        if spec.get("vmbus"):
            fake_vmbus(device, spec["vmbus"])
        result["initial"] = state(device)
        for run in spec["runs"]:
            shell(run.get("before", []), device)
            write_conf(run.get("conf", {}))
            env = {**os.environ, **run.get("env", {})}
            if run.get("override", True):
                env["WAPROV_RESOURCE_DISK"] = device
            argv = [
                sys.executable,
                LAUNCHER,
                f"-configuration-path:{CONF}",
                *run.get("args", ["-resourcedisk"]),
            ]
            started = time.monotonic()
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
            seconds = time.monotonic() - started
            result["runs"].append(
                {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr, "state": state(device),
                 "seconds": seconds}
            )  # fmt: skip
        if spec.get("ga"):
            env = {**os.environ, "PYTHONPATH": WA_DIR}
            argv = ["/usr/bin/python3", "-c", GA_SCRIPT, CONF]
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
            result["ga"] = {
                "rc": proc.returncode,
                "output": proc.stdout + proc.stderr,
                "state": state(device),
            }
    finally:
        result["cleanup"] = cleanup(device, before)
        with open(result_path, "w") as f:
            json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
