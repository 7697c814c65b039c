"""`make demo`: show what waprov does today, changing nothing on the host.

Runs the real launcher on the shipped waagent.conf and on a deliberately tricky one, and
shows the one-line error for a bad file; then `demo_fabric.py` shows the fabric exchange
(OVF, IMDS, wireserver, certificates, health reports) against the fake fabric, and
`demo_provision.py` runs a full `waprov -provision` in a sandbox, and
`demo_resourcedisk.py` runs `waprov -resourcedisk` on a loop device in a sandbox, and
`demo_swapin.py` runs `waprov -enable` and `-disable` on an image in a sandbox.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAPROV = [sys.executable, os.path.join(ROOT, "bin", "waprov")]

TRICKY = (
    "# tricky lines, read exactly as WALinuxAgent reads them\n"
    'OS.SshDir="/etc/ssh # not a path"\n'
    "Provisioning.SshHostKeyPairType='ed25519'\n"
    "ResourceDisk.Format=yes\n"
    "ResourceDisk.SwapSizeMB=2048\r\n"
    "Lib.Dir=\n"
    "Logs.Verbose=Y\n"
    "Logs.Verbose=n\n"
)


def show(title: str, args: list[str], keys: tuple[str, ...] = ()) -> None:
    print("\n$ waprov " + " ".join(args) + ("   # " + title if title else ""))
    p = subprocess.run(WAPROV + args, capture_output=True, text=True, check=False)
    lines = p.stdout.splitlines()
    if keys:
        lines = [line for line in lines if line.split(" = ")[0] in keys]
    for line in lines + p.stderr.splitlines():
        print("  " + line)
    print(f"  (exit code {p.returncode})")


def main() -> None:
    print("waprov demo: nothing on this host is changed (temp dirs and 127.0.0.1 only).")
    show("", ["-version"])
    show(
        "the shipped default configuration",
        ["-show-configuration", "-configuration-path:" + os.path.join(ROOT, "waagent.conf")],
    )
    with tempfile.TemporaryDirectory() as tmp:
        tricky = os.path.join(tmp, "tricky.conf")
        with open(tricky, "w", encoding="utf-8") as f:
            f.write(TRICKY)
        print("\n" + tricky + ":\n  " + TRICKY.replace("\n", "\n  ").replace("\r", "\\r"))
        show(
            "selected keys",
            ["-show-configuration", "-configuration-path:" + tricky],
            (
                "OS.SshDir",
                "Provisioning.SshHostKeyPairType",
                "ResourceDisk.Format",
                "ResourceDisk.SwapSizeMB",
                "Lib.Dir",
                "Logs.Verbose",
            ),
        )
        show("a bad file: one line, exit 2", ["-show-configuration", "-configuration-path:" + tmp])
    show("an unknown argument", ["-frobnicate"])
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "demo_fabric.py")], check=True)
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "demo_provision.py")], check=True)
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "demo_resourcedisk.py")], check=True)
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "demo_swapin.py")], check=True)


if __name__ == "__main__":
    main()
