"""`make bench`, part 2: what the fabric costs on the boot path, against the fake fabric.

Measures (median of N) the cold import of the fabric modules in a fresh interpreter, and
one in-process exchange: OVF from a directory + IMDS + versions + goal state + two health
reports, on 127.0.0.1. Runs with the project's venv interpreter (the runtime dependencies
are not installed system-wide on the development machine).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.fakefabric import FakeFabric  # noqa: E402
from waprov.config import Config  # noqa: E402
from waprov.http import HttpClient  # noqa: E402
from waprov.overrides import Overrides  # noqa: E402
from waprov.sources import Fabric, gather  # noqa: E402
from waprov.system import System  # noqa: E402
from waprov.timing import Clock  # noqa: E402
from waprov.wireserver import connect  # noqa: E402

RUNS = 20
IMPORT = "import waprov.sources, waprov.wireserver, waprov.certs"


def cold_import_ms() -> float:
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", IMPORT], check=True, cwd=ROOT)
        times.append((time.perf_counter() - t) * 1000)
    base = []
    for _ in range(RUNS):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        base.append((time.perf_counter() - t) * 1000)
    return statistics.median(times) - statistics.median(base)


def exchange_ms() -> float:
    times = []
    with tempfile.TemporaryDirectory() as tmp, FakeFabric(f"{tmp}/fabric", with_certificates=False) as fake:
        os.makedirs(f"{tmp}/dvd")
        shutil.copy(os.path.join(ROOT, "tests", "data", "ovf", "full.xml"), f"{tmp}/dvd/ovf-env.xml")
        for i in range(RUNS):
            config = dataclasses.replace(Config(), lib_dir=f"{tmp}/lib{i}")
            t = time.perf_counter()
            clock = Clock()
            client = HttpClient(clock)
            overrides = Overrides(imds=fake.imds_url, ovf_dir=f"{tmp}/dvd")
            fabric = Fabric(System(), config, overrides, clock, client)
            gather(fabric)
            ws, gs = connect(client, fake.wireserver, clock)
            ws.report(gs, "NotReady", "Provisioning", "Starting")
            ws.report(gs, "Ready")
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> int:
    print(f"fabric ({sys.executable}, median of {RUNS}):")
    print(f"  cold import of sources/wireserver/certs (over bare start-up): {cold_import_ms():6.1f} ms")
    print(f"  OVF + IMDS + versions + goal state + 2 health reports:       {exchange_ms():6.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
