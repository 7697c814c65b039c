"""The fake fabric as a command: prints its addresses, serves, logs requests to a file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import requests

from tests.conftest import ROOT
from tests.fakefabric import tenant_material


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


def test_every_process_of_the_session_uses_the_sessions_tenant() -> None:
    """tests/conftest.py makes the tenant once per session: a fake fabric in another
    process (a sandbox's) reads the same certificate and key instead of making new ones."""
    here = tenant_material()
    assert os.path.dirname(here[0]) == os.environ["FAKEFABRIC_TENANT_DIR"]
    before = [read_bytes(path) for path in here]
    code = "import tests.fakefabric as f; print('\\n'.join(f.tenant_material()))"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert p.stdout.split() == list(here)
    assert [read_bytes(path) for path in here] == before  # not made again
    assert b"BEGIN CERTIFICATE" in before[0]


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
