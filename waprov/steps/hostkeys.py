"""SSH host keys (WA §2.7).

With `Provisioning.RegenerateSshHostKeyPair=y` every `<OS.SshDir>/ssh_host_*key*` file is
deleted and keys are made again (`ssh-keygen -A` for `auto`, else one key of
`SshHostKeyPairType`), once per VM (the journal records it). Then the public key of the
configured type must exist (`auto` means rsa): when it is missing it is generated (from
the private key when that exists) instead of failing; its fingerprint is logged. The
regeneration is begun at the start of the run (`begin`) and waited for in its place in
WA's order (`regenerate`), so Ready still comes after the keys exist.
"""

from __future__ import annotations

import logging
import os
from typing import List, Optional

from waprov.config import Config
from waprov.errors import HostError, ProvisionError
from waprov.steps import Ctx
from waprov.system import Background, System

log = logging.getLogger("waprov")
TYPES = ("rsa", "dsa", "ecdsa", "ed25519", "auto")
KEYGEN_TIMEOUT = 120.0


def _fail(message: str) -> ProvisionError:
    return ProvisionError("failed to generate ssh host keys", "hostkeys", message)


def key_type(kind: str) -> str:
    if kind not in TYPES:
        raise _fail(f"Provisioning.SshHostKeyPairType={kind!r} is not one of {', '.join(TYPES)}")
    return kind


def _private(config: Config, kind: str) -> str:
    return os.path.join(config.ssh_dir, f"ssh_host_{'rsa' if kind == 'auto' else kind}_key")


def _argv(system: System, kind: str, private: str) -> List[str]:
    if kind == "auto":
        return ["ssh-keygen", "-A"]
    return ["ssh-keygen", "-q", "-N", "", "-t", kind, "-f", system.path(private)]


def _keygen_failed(e: HostError) -> ProvisionError:
    return _fail(f"Failed to generate ssh host key: {e}")


def _generate(ctx: Ctx, kind: str, private: str) -> None:
    try:
        ctx.system.run(_argv(ctx.system, kind, private), timeout=KEYGEN_TIMEOUT)
    except HostError as e:
        raise _keygen_failed(e) from None


def begin(system: System, config: Config, done: bool) -> Optional[Background]:
    """Delete the old keys and start ssh-keygen without waiting for it (None when the
    configuration or the journal (`done`) says there is nothing to regenerate). The run
    calls this first, so that the RSA key (seconds of prime search, ten and more under
    emulation) is made while the rest of the run goes on; `regenerate()` waits for it."""
    kind = key_type(config.ssh_host_key_pair_type)
    if not config.regenerate_ssh_host_key_pair or done:
        return None
    for path in system.glob(os.path.join(config.ssh_dir, "ssh_host_*key*")):
        if system.kind(path) == "file":
            system.remove(path)
    return system.start(_argv(system, kind, _private(config, kind)), timeout=KEYGEN_TIMEOUT)


def finish(ctx: Ctx) -> None:
    """Wait for the keygen the run began (or begin it now) and record it in the journal."""
    keygen, ctx.keygen = ctx.keygen, None
    if keygen is None:
        keygen = begin(ctx.system, ctx.config, ctx.done("hostkeys"))
    if keygen is None:
        return
    try:
        keygen.wait()
    except HostError as e:
        raise _keygen_failed(e) from None
    ctx.mark("hostkeys")


def regenerate(ctx: Ctx) -> None:
    kind = key_type(ctx.config.ssh_host_key_pair_type)
    private = _private(ctx.config, kind)
    finish(ctx)
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
