"""SSH host keys (WA §2.7).

With `Provisioning.RegenerateSshHostKeyPair=y` every `<OS.SshDir>/ssh_host_*key*` file is
deleted and keys are made again (`ssh-keygen -A` for `auto`, else one key of
`SshHostKeyPairType`), once per VM (the journal records it). Then the public key of the
configured type must exist (`auto` means rsa): when it is missing it is generated (from
the private key when that exists) instead of failing; its fingerprint is logged. The
regeneration is begun by the local phase, right after the host name is set (so the keys'
comments name the new host), and waited for by the network phase (`regenerate`), so
Ready still comes after the keys exist.

The keygen runs under a small shell wrapper that outlives the local phase's process:
it writes its pid, the command's output and then its exit code to /run/waprov
(`hostkeys.pid`, `hostkeys.log`, `hostkeys.rc`; root's, 0700). The network phase, in
another process, waits for the exit code; a keygen that died without one (the local
phase was killed) is begun again.

The RSA key may have been begun earlier still: waprov-local.service's boot check starts
`ssh-keygen -t rsa` into /run/waprov/pregen when /etc/waagent.conf seems to ask for it,
while the interpreter is still starting. When the configuration (read here, the rules
that count) wants an RSA key (`rsa`, or `auto`), the wrapper waits for that key, gives it
the comment ssh-keygen would have given it now (`root@<host name>`: the new name) and
copies it into OS.SshDir; `auto` then runs `ssh-keygen -A` for the other types. When it
cannot be adopted (it failed, it is missing), the wrapper makes the key itself. A key
made early that the configuration does not want is removed unused.
"""

from __future__ import annotations

import logging
import os
import time
from typing import List, Optional

from waprov.config import Config
from waprov.errors import HostError, ProvisionError
from waprov.lock import LOCK_DIR
from waprov.procfs import process
from waprov.steps import Ctx
from waprov.system import Background, HostPath, System

log = logging.getLogger("waprov")
TYPES = ("rsa", "dsa", "ecdsa", "ed25519", "auto")
KEYGEN_TIMEOUT = 120.0
RUN_DIR = LOCK_DIR  # root's, 0700, made anew at every boot
WRAPPER_NAME = "waprov-hostkeys"  # the wrapper's $0: how a live keygen is recognised in /proc
PREGEN_DIR = os.path.join(RUN_DIR, "pregen")  # waprov-boot-check's early RSA key
PREGEN_WAIT_TICKS = int(KEYGEN_TIMEOUT * 10)  # of 0.1 s
ADOPTED = "adopted the RSA host key begun at boot"  # the wrapper's line in hostkeys.log
# $1: RUN_DIR; $2: where the RSA private key goes when the early one is to be adopted ("":
# none); $3: `always` or `unless-adopted`: whether the command still runs after an
# adoption; the rest: the ssh-keygen command. Output goes to a file, never to a pipe of the
# process that began it (which may have exited).
WRAPPER = (
    'dir=$1 rsa=$2 then=$3; shift 3; echo $$ >"$dir/hostkeys.pid"; rc=0; '
    "{ adopted=n; p=$dir/pregen; n=0; "
    'if [ -n "$rsa" ] && [ -d "$p" ]; then '
    f'while [ ! -e "$p/rc" ] && [ $n -lt {PREGEN_WAIT_TICKS} ] && read -r pid <"$p/pid" && kill -0 "$pid"; '
    "do sleep 0.1; n=$((n+1)); done; "
    'if read -r prc <"$p/rc" && [ "$prc" = 0 ] '
    '&& ssh-keygen -q -c -P "" -C "root@$(uname -n)" -f "$p/ssh_host_rsa_key" '
    '&& cp -- "$p/ssh_host_rsa_key" "$rsa" && cp -- "$p/ssh_host_rsa_key.pub" "$rsa.pub"; '
    f'then adopted=y; echo "{ADOPTED}"; else rm -f -- "$rsa" "$rsa.pub"; fi; fi; '
    'if [ $adopted = n ] || [ "$then" = always ]; then "$@"; fi; '
    '} >"$dir/hostkeys.log" 2>&1 || rc=$?; '
    'echo "$rc" >"$dir/hostkeys.rc.new" && mv -f "$dir/hostkeys.rc.new" "$dir/hostkeys.rc"; exit "$rc"'
)
PID_WAIT, POLL = 2.0, 0.05


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
    return ["ssh-keygen", "-q", "-N", "", "-t", kind, "-f", HostPath(private)]


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
    adopt = kind in ("rsa", "auto") and system.kind(PREGEN_DIR) == "dir"
    if not config.regenerate_ssh_host_key_pair or done or not adopt:
        discard_pregen(system)
    if not config.regenerate_ssh_host_key_pair or done:
        return None
    for path in system.glob(os.path.join(config.ssh_dir, "ssh_host_*key*")):
        if system.kind(path) == "file":
            system.remove(path)
    if system.kind(RUN_DIR) == "absent":
        system.makedirs(RUN_DIR, 0o700)
    clear_run_files(system)
    keygen = _argv(system, kind, _private(config, kind))
    rsa = HostPath(_private(config, "rsa")) if adopt else ""
    then = "always" if kind == "auto" else "unless-adopted"
    return system.start(
        ["/bin/sh", "-c", WRAPPER, WRAPPER_NAME, HostPath(RUN_DIR), rsa, then, *keygen],
        timeout=KEYGEN_TIMEOUT,
    )


def discard_pregen(system: System) -> None:
    """The RSA key the boot check began, once adopted or not wanted (a key still being
    made fails to write its files and ends)."""
    if system.kind(PREGEN_DIR) != "absent":
        system.remove(PREGEN_DIR, recursive=True)


def _run_file(system: System, name: str) -> Optional[str]:
    try:
        raw = system.read(os.path.join(RUN_DIR, name), limit=65536)
    except HostError:
        return None
    return None if raw is None else raw.decode("utf-8", "replace")


def _alive(system: System, pid_text: Optional[str]) -> bool:
    """Whether the wrapper whose pid `pid_text` holds still runs (not a zombie, not a
    process that took its pid since)."""
    try:
        pid = int((pid_text or "").strip())
    except ValueError:
        return False
    found = process(system, pid)
    return found is not None and WRAPPER_NAME in found.argv and found.state != "Z"


def clear_run_files(system: System) -> None:
    """The wrapper's files, once its outcome is taken (the next run begins afresh)."""
    for name in ("hostkeys.rc", "hostkeys.pid", "hostkeys.log"):
        if system.kind(os.path.join(RUN_DIR, name)) != "absent":
            system.remove(os.path.join(RUN_DIR, name))


def hand_over(ctx: Ctx) -> None:
    """The local phase's end: the keygen it began must have written its pid before the
    process that began it exits (the network phase looks for it)."""
    if ctx.keygen is None or ctx.system.dry_run:
        return
    deadline = time.monotonic() + PID_WAIT
    while _run_file(ctx.system, "hostkeys.pid") is None and _run_file(ctx.system, "hostkeys.rc") is None:
        if time.monotonic() > deadline:
            log.warning("The host key generation has not started after %gs", PID_WAIT)
            return
        time.sleep(POLL / 5)


def earlier_running(ctx: Ctx) -> bool:
    """Whether a keygen begun earlier at this boot still runs or has ended well: it is
    not begun again (that would delete the keys it is writing)."""
    rc = _run_file(ctx.system, "hostkeys.rc")
    if rc is not None:
        return rc.strip() == "0"
    return _alive(ctx.system, _run_file(ctx.system, "hostkeys.pid"))


def _await_earlier(ctx: Ctx) -> bool:
    """Wait for a keygen an earlier process of this boot began (the local phase): True
    when it ended and wrote its exit code, False when there is none (or it died)."""
    deadline = time.monotonic() + KEYGEN_TIMEOUT
    said = False
    while _run_file(ctx.system, "hostkeys.rc") is None:
        if not _alive(ctx.system, _run_file(ctx.system, "hostkeys.pid")):
            if _run_file(ctx.system, "hostkeys.rc") is not None:
                break
            return False
        if time.monotonic() > deadline:
            raise _fail(f"ssh-keygen, begun by the local phase, still runs after {KEYGEN_TIMEOUT:g}s")
        if not said:
            log.info("Waiting for the SSH host keys the local phase began")
            said = True
        time.sleep(POLL)
    return True


def _outcome(ctx: Ctx) -> None:
    """The wrapper's exit code: 0, or the failure with the command's last output line."""
    rc = (_run_file(ctx.system, "hostkeys.rc") or "").strip()
    lines = (_run_file(ctx.system, "hostkeys.log") or "").strip().splitlines()
    if ADOPTED in lines:
        log.info("The RSA host key begun at boot (waprov-boot-check) was adopted")
    if rc == "0":
        return
    said = f": {lines[-1]}" if lines else ""
    raise _fail(f"Failed to generate ssh host key: ssh-keygen exit code {rc or 'unknown'}{said}")


def finish(ctx: Ctx) -> None:
    """Wait for the keygen the run began (or begin it now) and record it in the journal."""
    keygen, ctx.keygen = ctx.keygen, None
    if ctx.done("hostkeys"):
        return
    if keygen is None and _await_earlier(ctx):  # read-only: a dry run looks too
        _outcome(ctx)
        ctx.mark("hostkeys")
        clear_run_files(ctx.system)
        return
    if keygen is None:
        keygen = begin(ctx.system, ctx.config, False)
    if keygen is None:
        return
    try:
        keygen.wait(check=False)
    except HostError as e:
        raise _keygen_failed(e) from None
    if not ctx.system.dry_run:
        _outcome(ctx)
    ctx.mark("hostkeys")
    clear_run_files(ctx.system)


def regenerate(ctx: Ctx) -> None:
    kind = key_type(ctx.config.ssh_host_key_pair_type)
    private = _private(ctx.config, kind)
    finish(ctx)
    discard_pregen(ctx.system)
    public = private + ".pub"
    if ctx.system.kind(public) != "file":
        if ctx.system.kind(private) == "file":
            res = ctx.system.run(["ssh-keygen", "-y", "-f", HostPath(private)], timeout=30)
            ctx.system.write(public, res.stdout, 0o644)
        else:
            log.info("%s is missing: generating it", public)
            _generate(ctx, "rsa" if kind == "auto" else kind, private)
    if ctx.system.dry_run:
        return
    res = ctx.system.query(["ssh-keygen", "-lf", HostPath(public)], timeout=30)
    fields = res.stdout.split()
    if res.rc != 0 or len(fields) < 2:
        raise _fail(
            f"Failed to generate ssh host key: ret={res.rc}, out= {res.stdout.strip()} {res.stderr.strip()}"
        )
    log.info("SSH host key %s: %s", public, fields[1].replace(":", ""))
