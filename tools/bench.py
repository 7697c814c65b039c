"""`make bench`: wall time and peak memory of waprov commands on the boot path.

Runs each command N times as the production launcher would be run (/usr/bin/python3,
no virtualenv) and reports the median and worst wall time and the peak RSS against the
goals. Later issues add their commands (a provisioning run against the fake fabric).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from typing import List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
RUNS = 30

# (name, argv, goal wall ms, goal peak MiB)
CASES: List[Tuple[str, List[str], float, float]] = [
    ("waprov -version", [PYTHON, os.path.join(ROOT, "bin", "waprov"), "-version"], 80.0, 25.0),
    (
        "waprov -show-configuration",
        [
            PYTHON,
            os.path.join(ROOT, "bin", "waprov"),
            "-show-configuration",
            "-configuration-path:" + os.path.join(ROOT, "waagent.conf"),
        ],
        150.0,
        30.0,
    ),
]


def measure(argv: List[str]) -> Tuple[List[float], float]:
    """Wall times in ms of RUNS runs, and the peak RSS in MiB of the largest run."""
    times = []
    peak_kib = 0
    for _ in range(RUNS):
        # each measurement in a fresh child, so RUSAGE_CHILDREN's max is this command's
        code = (
            "import resource,subprocess,sys,time;t=time.perf_counter();"
            "subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,check=True);"
            "print(time.perf_counter()-t,resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True
        ).stdout.split()
        times.append(float(out[0]) * 1000)
        peak_kib = max(peak_kib, int(out[1]))
    return times, peak_kib / 1024


def main() -> int:
    print(f"interpreter: {PYTHON}; {RUNS} runs per command")
    print(f"{'command':<28} {'median ms':>10} {'worst ms':>9} {'peak MiB':>9}   goal")
    for name, argv, goal_ms, goal_mib in CASES:
        times, peak = measure(argv)
        med = statistics.median(times)
        verdict = "ok" if med <= goal_ms and peak <= goal_mib else "OVER GOAL"
        print(
            f"{name:<28} {med:10.1f} {max(times):9.1f} {peak:9.1f}   "
            f"<= {goal_ms:g} ms, <= {goal_mib:g} MiB: {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
