"""Custom data (WA §2.6): `<Lib.Dir>/CustomData`, optionally decoded and executed.

Skipped when there is none. With `Provisioning.DecodeCustomData` or `ExecuteCustomData`
the base64 is decoded (non-strict, as Python's b64decode); data that is not UTF-8 is
written as bytes instead of failing (improvement). The file is 0600 (0700 to execute).
The local phase saves the file (`save_custom_data`); with `ExecuteCustomData` the network
phase runs it (`run_custom_data`: a script expects the network, as under WALinuxAgent),
through /bin/sh, at most once per VM: the journal records
it before it starts, so a script that reboots the VM does not run again at every boot. It
runs detached from waprov's pipes (stdin /dev/null, stdout and stderr appended to
OUTPUT, a file of its own), so what it leaves running in the background does not hold
provisioning; its exit code is logged and ignored, as in WALinuxAgent.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time

from waprov.errors import ProvisionError
from waprov.steps import Ctx
from waprov.system import HostPath

log = logging.getLogger("waprov")
EXECUTE_TIMEOUT = 3600.0
# The script's stdout and stderr: a file of its own (not waprov's log, whose lines a
# process the script leaves running could otherwise forge), opened by waprov (O_NOFOLLOW)
OUTPUT = "/var/log/waprov-customdata.log"


def decode(data: str) -> bytes:
    try:
        return base64.b64decode(data)
    except (binascii.Error, ValueError) as e:
        raise ProvisionError(
            "failed to decode custom data",
            "customdata",
            f"CustomData is not base64 ({e}); DecodeCustomData is on",
        ) from None


def save_custom_data(ctx: Ctx) -> None:
    data = ctx.data.custom_data
    if not data:
        return
    execute = ctx.config.execute_custom_data
    raw = decode(data) if (ctx.config.decode_custom_data or execute) else data.encode("utf-8")
    ctx.system.write(ctx.lib("CustomData"), raw, 0o700 if execute else 0o600)


def run_custom_data(ctx: Ctx) -> None:
    if not ctx.data.custom_data or not ctx.config.execute_custom_data or ctx.done("customdata"):
        return
    path = ctx.lib("CustomData")
    ctx.mark("customdata")  # before it starts: a script that reboots the VM runs once
    started = time.monotonic()
    argv = ["/bin/sh", "-c", 'exec "$0"', HostPath(path)]  # the path as one word, not shell text
    res = ctx.system.run(argv, check=False, timeout=EXECUTE_TIMEOUT, output=OUTPUT)
    log.info(
        "CustomData ran for %.1fs, exit code %d (its output: %s)", time.monotonic() - started, res.rc, OUTPUT
    )
