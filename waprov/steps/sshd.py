"""sshd settings (WA §5.6) and the sshd restart (WA §2.3 step 8).

Generic distributions: `<OS.SshDir>/sshd_config` edited with WALinuxAgent's
`set_ssh_config` rules for PasswordAuthentication, ChallengeResponseAuthentication and
ClientAliveInterval. Flatcar: `<OS.SshDir>/sshd_config.d/80-flatcar-walinuxagent.conf`,
three lines and no trailing newline. When sshd is installed, `sshd -t` must pass after the
change if it passed before; otherwise the old bytes are put back and the step fails.
"""

from __future__ import annotations

import logging
import os
import re
from typing import List, Optional, Tuple

from waprov.errors import HostError, ProvisionError
from waprov.steps import Ctx
from waprov.system import HostPath

log = logging.getLogger("waprov")
FLATCAR_DROPIN = "80-flatcar-walinuxagent.conf"
DROPIN_MARK = "sshd-dropin"  # the journal entry saying waprov wrote FLATCAR_DROPIN
CHECK_DIR = "/run/waprov/sshd-check"  # the throwaway host key of `sshd -t` (removed after it)


def set_ssh_config(lines: List[str], name: str, value: str) -> List[str]:
    """WALinuxAgent's textutil.set_ssh_config, rule for rule (WA §5.6)."""
    out = list(lines)
    new = f"{name} {value}"
    in_match = False
    match_index: Optional[int] = None
    replaced = False
    for i, line in enumerate(out):
        lower = line.lower()
        if lower.startswith("match"):
            if lower.startswith("match all"):
                in_match, match_index = False, None
            else:
                if not in_match:
                    match_index = i
                in_match = True
            continue
        if not in_match and line.startswith(name):
            out[i] = new
            replaced = True
    if not replaced:
        out.insert(match_index if in_match and match_index is not None else len(out) - 1, new)
    return out


def settings(ctx: Ctx) -> List[Tuple[str, str]]:
    value = "no" if ctx.data.disable_ssh_password_auth else "yes"
    return [
        ("PasswordAuthentication", value),
        ("ChallengeResponseAuthentication", value),
        ("ClientAliveInterval", ctx.config.ssh_client_alive_interval),
    ]


def edited_config(text: str, pairs: List[Tuple[str, str]]) -> str:
    lines = text.split("\n")
    for name, value in pairs:
        lines = set_ssh_config(lines, name, value)
    return "\n".join(lines)


def _sshd(ctx: Ctx) -> Optional[str]:
    """sshd on PATH, else in /usr/sbin or /sbin (which a user's PATH may lack)."""
    return next(filter(None, map(ctx.system.which, ("sshd", "/usr/sbin/sshd", "/sbin/sshd"))), None)


def _sshd_ok(ctx: Ctx, argv: List[str]) -> Tuple[bool, str]:
    res = ctx.system.query(argv, timeout=30)
    m = re.search(r"Missing privilege separation directory: (/\S+)", res.stderr)
    if res.rc != 0 and m:  # before sshd.service ran (waprov runs first): make its runtime dir
        ctx.system.makedirs(m.group(1), 0o755)
        res = ctx.system.query(argv, timeout=30)
    return res.rc == 0, (res.stderr.strip().splitlines() or [""])[-1]


def _check_argv(ctx: Ctx, sshd: str, throwaway: bool) -> List[str]:
    """`sshd -t`. sshd checks nothing without a host key, and while this run remakes the
    host keys (hostkeys.begin deleted the old ones; ssh-keygen may still be writing) there
    is none to rely on: with `throwaway`, an ed25519 key made in CHECK_DIR stands in (`-h`;
    key files the configuration names but sshd cannot load are then only reported)."""
    if not throwaway:
        return [sshd, "-t"]
    key = os.path.join(CHECK_DIR, "ssh_host_ed25519_key")
    ctx.system.remove(CHECK_DIR, recursive=True)
    ctx.system.makedirs(CHECK_DIR, 0o700)
    try:
        ctx.system.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", HostPath(key)], timeout=30)
    except HostError as e:
        log.debug("no throwaway host key for sshd -t: %s", e)
        return [sshd, "-t"]
    return [sshd, "-t", "-h", HostPath(key)]


def _fail(message: str) -> ProvisionError:
    return ProvisionError("failed to update sshd config", "sshd", message)


def configure_sshd(ctx: Ctx) -> None:
    sshd = None if ctx.system.dry_run else _sshd(ctx)
    # the host keys may be being made anew (by this process or by the local phase's): check
    # with throwaway ones
    regenerating = ctx.keygen is not None or (
        ctx.config.regenerate_ssh_host_key_pair and not ctx.done("hostkeys")
    )
    throwaway = sshd is not None and regenerating
    try:
        _configure(ctx, _check_argv(ctx, sshd, throwaway) if sshd else [])
    finally:
        if throwaway:
            ctx.system.remove(CHECK_DIR, recursive=True)
    word = "Disabled" if ctx.data.disable_ssh_password_auth else "Enabled"
    log.info("%s SSH password-based authentication methods.", word)
    log.info("Configured SSH client probing to keep connections alive.")


def _configure(ctx: Ctx, check: List[str]) -> None:
    """The edit (or the Flatcar drop-in), checked by `check` (sshd -t …) when not empty."""
    ssh_dir = ctx.config.ssh_dir
    main = os.path.join(ssh_dir, "sshd_config")
    dropin_dir = os.path.join(ssh_dir, "sshd_config.d")
    pairs = settings(ctx)
    valid_before = _sshd_ok(ctx, check)[0] if check else False
    if ctx.distro.flatcar and ctx.system.kind(dropin_dir) != "link":
        if ctx.system.kind(dropin_dir) != "dir":
            raise _fail(f"{dropin_dir} is missing: Flatcar's sshd reads its settings from there")
        path = os.path.join(dropin_dir, FLATCAR_DROPIN)
        new = "\n".join(f"{n} {v}" for n, v in pairs).encode("utf-8")
        mode = 0o644
    else:
        path = main
        if ctx.distro.flatcar and ctx.system.kind(main) == "link":  # WA: the link becomes a copy
            try:
                content = ctx.system.read(main, follow=True)
            except HostError as e:
                raise _fail(str(e)) from None
            if content is None:
                raise _fail(f"cannot read {main}: it leads to no file")
            ctx.system.remove(main)
            ctx.system.write(main, content, 0o644)
        raw = ctx.system.read(main)
        if raw is None:
            raise _fail(f"{main} does not exist")
        new = edited_config(raw.decode("utf-8", "surrogateescape"), pairs).encode("utf-8", "surrogateescape")
        mode = (ctx.system.mode_owner(main) or (0o644, None))[0]
    old = ctx.system.read(path)
    ctx.system.write(path, new, mode)
    if check and valid_before:
        ok, why = _sshd_ok(ctx, check)
        if not ok:
            if old is None:
                ctx.system.remove(path)
            else:
                ctx.system.write(path, old, mode)
            raise _fail(f"sshd -t rejects the edited {path} ({why}); the previous file is restored")
    elif check:
        log.warning("sshd -t already failed before the edit; %s written without a check", path)
    if path != main:  # -deprovision removes the Flatcar drop-in only when waprov wrote it
        ctx.mark(DROPIN_MARK)


def configure_sshd_final(ctx: Ctx) -> None:
    """The network phase: again, only when IMDS decided DisableSshPasswordAuthentication
    (the OVF has no such element) differently from the local phase's default."""
    if ctx.ovf is None:
        return  # the local phase's steps ran with IMDS merged in already
    if ctx.ovf.disable_ssh_password_auth != ctx.data.disable_ssh_password_auth:
        configure_sshd(ctx)


def restart_sshd(ctx: Ctx) -> None:
    argv = ctx.distro.sshd_restart
    if not argv:
        return
    try:
        ctx.system.run(argv, timeout=90)
    except HostError as e:
        log.warning("Restarting sshd failed (ignored): %s", e)
