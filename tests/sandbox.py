"""The level-2 sandbox: run a real command in private mount/UTS/IPC/PID namespaces.

`/etc /home /root /var /usr /mnt /srv /opt /tmp` are overlays whose upper layers live on a
private tmpfs, so the command (and the `setup` shell code run before it) may change them
freely: the host never sees it, and everything is gone when the command exits. The rest
of `/` is read-only inside (a write that misses the overlays fails, never lands on the host).
"""

from __future__ import annotations

import os
import subprocess
from typing import Mapping, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "sandbox.sh")
UNSHARE = [
    "unshare",
    "--mount",
    "--uts",
    "--ipc",
    "--pid",
    "--fork",
    "--propagation",
    "private",
    "--mount-proc",
]


def sandbox_run(
    argv: Sequence[str],
    setup: str = "",
    *,
    timeout: float = 120,
    env: Optional[Mapping[str, str]] = None,
    net: bool = False,
    out: Optional[str] = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` in a fresh sandbox after the shell code `setup`; output is captured.
    `net`: a private network namespace with only loopback (anything that restarts an
    interface stays inside); `out`: a host directory the sandbox sees as /run/out."""
    full_env = dict(os.environ if env is None else env)
    if net:
        full_env["SANDBOX_NET"] = "1"
    if out:
        full_env["SANDBOX_OUT"] = out
    return subprocess.run(
        [*UNSHARE, *(["--net"] if net else []), "bash", SCRIPT, setup or ":", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=full_env,
    )
