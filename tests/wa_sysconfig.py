"""WALinuxAgent's own sysconfig edits, for the tests that compare waprov's bytes with them.

Run with /usr/bin/python3 and WALinuxAgent 2.7.3 (Debian's package, unpacked by `make deps`
into .cache/waagent) on PYTHONPATH; nothing of its code is changed:
- `conf CASES OUT`: `fileutil.update_conf_file(path, prefix, line)` on each case's text
  (a temporary file): its rule for RHEL's ifcfg `DHCP_HOSTNAME` and /etc/sysconfig/network;
- `suse CASES OUT` (inside a sandbox: it writes /etc/sysconfig/network/dhcp):
  `SUSEOSUtil().set_dhcp_hostname(name)` on each case's text;
- `dhcp FAMILY NAME` (inside a sandbox): the osutil's `set_dhcp_hostname(name)` (FAMILY
  rhel or suse) on the files as they are, and for rhel6 also its `set_hostname(name)`.
CASES is a JSON list of {"text", "prefix", "line"} or {"text", "name"}; OUT gets, per
case, the bytes as text, or {"error": "..."} when WALinuxAgent raised.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any, Dict, List

SUSE_DHCP = "/etc/sysconfig/network/dhcp"


def _read(path: str) -> str:
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def conf(cases: List[Dict[str, str]]) -> List[Any]:
    from azurelinuxagent.common.utils import fileutil  # type: ignore[import-not-found]

    out: List[Any] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ifcfg-eth0")
        for case in cases:
            _write(path, case["text"])
            fileutil.update_conf_file(path, case["prefix"], case["line"])
            out.append(_read(path))
    return out


def suse(cases: List[Dict[str, str]]) -> List[Any]:
    from azurelinuxagent.common.osutil.suse import SUSEOSUtil  # type: ignore[import-not-found]

    osutil = SUSEOSUtil()
    out: List[Any] = []
    os.makedirs(os.path.dirname(SUSE_DHCP), exist_ok=True)
    for case in cases:
        _write(SUSE_DHCP, case["text"])
        osutil.set_dhcp_hostname(case["name"])
        out.append(_read(SUSE_DHCP))
    return out


def dhcp(family: str, name: str) -> None:
    from azurelinuxagent.common.osutil import redhat, suse  # type: ignore[import-not-found]

    osutil = {"rhel": redhat.RedhatOSUtil, "rhel6": redhat.Redhat6xOSUtil, "suse": suse.SUSEOSUtil}[family]()
    if family == "rhel6":
        osutil.set_hostname(name)
    osutil.set_dhcp_hostname(name)


def main(argv: List[str]) -> int:
    if argv[0] == "dhcp":
        dhcp(argv[1], argv[2])
        return 0
    with open(argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    result = conf(cases) if argv[0] == "conf" else suse(cases)
    with open(argv[2], "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
