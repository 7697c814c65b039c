"""Print the e2e timings file (tools/e2e) as tables: `python3 -m tests.e2e.timings FILE`.

The first table: per scenario, the final report and the first login from qemu's start.
The second: per scenario, the provisioning units and sshd in the guest's own clock
(seconds since its kernel started: when systemd began starting each, and when it was
active or skipped by its ExecCondition) and when the last host key was written; with the
second boot's cost (the local unit's start → sshd's).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Optional


def sec(value: object) -> str:
    return "" if value is None else f"{value:.1f}s"


def unit_span(times: Optional[Dict[str, Any]]) -> str:
    if not times or times.get("start") is None:
        return "not run"
    end = times.get("end")
    return f"{times['start']:.1f}→{end:.1f}s" if end is not None else f"{times['start']:.1f}→?"


def main(argv: List[str]) -> int:
    if len(argv) != 1 or not os.path.exists(argv[0]):
        print("e2e: no timings recorded", file=sys.stderr)
        return 0
    with open(argv[0], encoding="utf-8") as f:
        data = json.load(f)
    print(f"{'scenario':<18} {'agent':<11} {'state':<28} {'qemu→report':>12} {'kernel→report':>14} "
          f"{'qemu→ssh login':>15}")  # fmt: skip
    for name, t in sorted(data.items()):
        kernel, login = sec(t.get("kernel_start_to_report_s")), sec(t.get("qemu_start_to_ssh_login_s"))
        print(f"{name:<18} {t.get('agent', ''):<11} {t.get('state', ''):<28} "
              f"{sec(t.get('qemu_start_to_report_s')):>12} {kernel:>14} {login:>15}")  # fmt: skip
    timelines = {name: t for name, t in sorted(data.items()) if t.get("guest_units_s")}
    if timelines:
        print("\nin the guest (seconds since its kernel started; unit: start→active, or →skipped):")
        for name, t in timelines.items():
            units = sorted(t["guest_units_s"].items(), key=lambda u: u[1].get("start") or float("inf"))
            spans = "  ".join(f"{unit.removesuffix('.service')} {unit_span(times)}" for unit, times in units)
            keys = t.get("guest_host_keys_written_s")
            extra = f"  host keys written {keys:.1f}s" if keys is not None else ""
            if "local_start_to_ssh_start_s" in t:
                extra += (f"\n  {'':<18} the local unit took {t['local_unit_s']:.2f}s; "
                          f"its start→ssh's start {t['local_start_to_ssh_start_s']:.2f}s")  # fmt: skip
            print(f"  {name:<18} {spans}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
