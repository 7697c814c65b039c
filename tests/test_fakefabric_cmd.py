"""The fake fabric as a command: prints its addresses, serves, logs requests to a file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import requests

from tests.conftest import ROOT


def test_the_command_serves_and_logs(tmp_path: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakefabric", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        where = json.loads(proc.stdout.readline())
        session = requests.Session()
        session.trust_env = False  # never a proxy from the environment for loopback
        versions = session.get(f"http://{where['wireserver']}/?comp=versions", timeout=5)
        assert versions.status_code == 200 and b"2012-11-30" in versions.content
        imds = session.get(f"{where['imds']}/metadata/instance?api-version=2021-08-01", timeout=5)
        assert imds.status_code == 400  # no Metadata header, as the real IMDS
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    with open(os.path.join(str(tmp_path), "requests.jsonl"), encoding="utf-8") as f:
        log = [json.loads(line) for line in f]
    assert [(e["server"], e["route"]) for e in log] == [("wireserver", "versions"), ("imds", "imds")]
