"""SSH host keys (WA §2.7).

With `Provisioning.RegenerateSshHostKeyPair=y` every `<OS.SshDir>/ssh_host_*key*` file is
deleted and keys are made again (`ssh-keygen -A` for `auto`, else one key of
`SshHostKeyPairType`), once per VM (the journal records it). Then the public key of the
configured type must exist (`auto` means rsa): when it is missing it is generated (from
the private key when that exists) instead of failing; its fingerprint is logged.
"""

from __future__ import annotations

import logging
import os

from waprov.errors import HostError, ProvisionError
from waprov.steps import Ctx

log = logging.getLogger("waprov")
TYPES = ("rsa", "dsa", "ecdsa", "ed25519", "auto")


def _fail(message: str) -> ProvisionError:
    return ProvisionError("failed to generate ssh host keys", "hostkeys", message)


def key_type(ctx: Ctx) -> str:
    kind = ctx.config.ssh_host_key_pair_type
    if kind not in TYPES:
        raise _fail(f"Provisioning.SshHostKeyPairType={kind!r} is not one of {', '.join(TYPES)}")
    return kind


def _generate(ctx: Ctx, kind: str, private: str) -> None:
    if kind == "auto":
        argv = ["ssh-keygen", "-A"]
    else:
        argv = ["ssh-keygen", "-q", "-N", "", "-t", kind, "-f", ctx.system.path(private)]
    try:
        ctx.system.run(argv, timeout=120)
    except HostError as e:
        raise _fail(f"Failed to generate ssh host key: {e}") from None


def regenerate(ctx: Ctx) -> None:
    kind = key_type(ctx)
    ssh_dir = ctx.config.ssh_dir
    private = os.path.join(ssh_dir, f"ssh_host_{'rsa' if kind == 'auto' else kind}_key")
    if ctx.config.regenerate_ssh_host_key_pair and not ctx.done("hostkeys"):
        for path in ctx.system.glob(os.path.join(ssh_dir, "ssh_host_*key*")):
            if ctx.system.kind(path) == "file":
                ctx.system.remove(path)
        _generate(ctx, kind, private)
        ctx.mark("hostkeys")
    public = private + ".pub"
    if ctx.system.kind(public) != "file":
        if ctx.system.kind(private) == "file":
            res = ctx.system.run(["ssh-keygen", "-y", "-f", ctx.system.path(private)], timeout=30)
            ctx.system.write(public, res.stdout, 0o644)
        else:
            log.info("%s is missing: generating it", public)
            _generate(ctx, "rsa" if kind == "auto" else kind, private)
    if ctx.system.dry_run:
        return
    res = ctx.system.query(["ssh-keygen", "-lf", ctx.system.path(public)], timeout=30)
    fields = res.stdout.split()
    if res.rc != 0 or len(fields) < 2:
        raise _fail(
            f"Failed to generate ssh host key: ret={res.rc}, out= {res.stdout.strip()} {res.stderr.strip()}"
        )
    log.info("SSH host key %s: %s", public, fields[1].replace(":", ""))
