"""`make demo`, swap-in part: `waprov -enable` then `-disable` on an image, in a sandbox.

The sandbox gets WALinuxAgent's README sample as /etc/waagent.conf and waprov's units in
/lib/systemd/system (as the package installs them); the demo shows what -enable changes,
the one line of the file that differs, a second -enable that changes nothing, and
-disable bringing the file back byte for byte. This host is not changed.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.sandbox import sandbox_run  # noqa: E402

# the checkout's launcher with this interpreter (as tests/conftest.py's waprov_argv; not
# imported from there: the demo's venv has no pytest)
WAPROV = [sys.executable, os.path.join(ROOT, "bin", "waprov")]

SETUP = """
cp tests/data/readme-sample.conf /etc/waagent.conf
mkdir -p /lib/systemd/system
cp init/waprov-local.service init/waprov.service init/waprov-resourcedisk.service /lib/systemd/system/
"""


def main() -> int:
    print("\n== waprov -enable / -disable on an image (WALinuxAgent's README sample conf), in a sandbox ==")
    w = " ".join(WAPROV)
    script = f"""
    cp /etc/waagent.conf /run/before.conf
    echo '$ waprov -enable'; {w} -enable
    echo '$ diff /etc/waagent.conf.before /etc/waagent.conf'; diff /run/before.conf /etc/waagent.conf
    echo '$ systemctl is-enabled waprov-local.service waprov.service waprov-resourcedisk.service'
    systemctl --root=/ is-enabled waprov-local.service waprov.service waprov-resourcedisk.service
    echo '$ waprov -enable   # again'; {w} -enable
    echo '$ waprov -disable'; {w} -disable
    echo '$ cmp /etc/waagent.conf.before /etc/waagent.conf'
    cmp /run/before.conf /etc/waagent.conf && echo 'identical: every byte is back'
    """
    p = sandbox_run(["bash", "-c", script], SETUP)
    for line in p.stdout.splitlines():
        print("  " + line)
    if p.returncode != 0:
        print(p.stderr, file=sys.stderr)
    return p.returncode


if __name__ == "__main__":
    sys.exit(main())
