"""Print the e2e timings file (tools/e2e) as a table: `python3 -m tests.e2e.timings FILE`."""

from __future__ import annotations

import json
import os
import sys
from typing import List


def main(argv: List[str]) -> int:
    if len(argv) != 1 or not os.path.exists(argv[0]):
        print("e2e: no timings recorded", file=sys.stderr)
        return 0
    with open(argv[0], encoding="utf-8") as f:
        data = json.load(f)
    print(f"{'scenario':<18} {'agent':<11} {'state':<28} {'qemu→report':>12} {'kernel→report':>14} "
          f"{'qemu→ssh login':>15}")  # fmt: skip

    def sec(value: object) -> str:
        return "" if value is None else f"{value:.1f}s"

    for name, t in sorted(data.items()):
        kernel, login = sec(t.get("kernel_start_to_report_s")), sec(t.get("qemu_start_to_ssh_login_s"))
        print(f"{name:<18} {t['agent']:<11} {t['state']:<28} {sec(t['qemu_start_to_report_s']):>12} "
              f"{kernel:>14} {login:>15}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
