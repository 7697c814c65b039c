"""Custom data (WA §2.6): `<Lib.Dir>/CustomData`, optionally decoded and executed.

Skipped when there is none. With `Provisioning.DecodeCustomData` or `ExecuteCustomData`
the base64 is decoded (non-strict, as Python's b64decode); data that is not UTF-8 is
written as bytes instead of failing (improvement). The file is 0600 (0700 to execute).
With `ExecuteCustomData` it runs through /bin/sh at most once per VM: the journal records
it before it starts, so a script that reboots the VM does not run again at every boot. It
runs detached from waprov's pipes (stdin /dev/null, output appended to waprov's log
file), so what it leaves running in the background does not hold provisioning; its exit
code is logged and ignored, as in WALinuxAgent.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time

from waprov.errors import ProvisionError
from waprov.log import LOG_FILE
from waprov.steps import Ctx

log = logging.getLogger("waprov")
EXECUTE_TIMEOUT = 3600.0
OUTPUT = LOG_FILE  # the script's stdout and stderr are appended to waprov's log file
# The script runs with its stdin on /dev/null and its output appended to OUTPUT, never on
# waprov's pipes: waprov waits for the script to end, not for what it left running
# (`nohup daemon &`). "$0" is the script, "$1" the log file.
DETACHED = 'exec "$0" </dev/null >>"$1" 2>&1'


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
    path = ctx.lib("CustomData")
    ctx.system.write(path, raw, 0o700 if execute else 0o600)
    if not execute or ctx.done("customdata"):
        return
    ctx.mark("customdata")  # before it starts: a script that reboots the VM runs once
    started = time.monotonic()
    argv = ["/bin/sh", "-c", DETACHED, ctx.system.path(path), ctx.system.path(OUTPUT)]
    res = ctx.system.run(argv, check=False, timeout=EXECUTE_TIMEOUT)
    log.info(
        "CustomData ran for %.1fs, exit code %d (its output: %s)", time.monotonic() - started, res.rc, OUTPUT
    )
