"""The user account (WA §5.2): create it, set or lock its password, lock root.

`useradd -m <user>` unless the account exists (then it is left as it is). Refused: a name
that is not a valid user name or that sudoers reads as a keyword or alias (`ALL`), and an
account outside login.defs' UID_MIN..UID_MAX (unless `Provisioning.AllowResetSysUser=y`;
`core` on Flatcar is exempt), and, when SSH keys are to be written, an account whose
home fails steps.home_problem (checked here, before the password and sudoers). The
account that passed is recorded in `<state dir>/user`
("<vm id> <name> <uid> created|adopted", 0600): -deprovision+user deletes that one. The password
is hashed with crypt, `$<PasswordCryptId>$` and a CSPRNG salt of `PasswordCryptSaltLength`
characters, and set with `usermod -p`; an account whose hash already matches the password
is not touched (a rerun leaves the same bytes). Without a password: `passwd -l`.
"""

from __future__ import annotations

import logging
import re
import string
import sys
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

from waprov.errors import HostError, ProvisionError
from waprov.state import USER_RECORD, state_path
from waprov.steps import Account, Ctx, home_problem
from waprov.steps.sudoers import sudoers_name_problem
from waprov.system import System

log = logging.getLogger("waprov")
_USERNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
SALT_ALPHABET = string.ascii_letters + string.digits
SHADOW = "/etc/shadow"
ROOT_LOCK = "root:*LOCK*:14600::::::"


@dataclass(frozen=True)
class UserRecord:
    """The account provisioning created or adopted (accepted as it was) on a VM."""

    vm_id: str
    name: str
    uid: int
    how: str  # "created" | "adopted"

    def line(self) -> str:
        return f"{self.vm_id or '-'} {self.name} {self.uid} {self.how}\n"


def read_record(system: System, state_dir: str) -> Optional[UserRecord]:
    """The recorded account, None when there is no record; HostError when it is unreadable."""
    path = state_path(USER_RECORD, state_dir)
    raw = system.read(path)
    if raw is None:
        return None
    parts = raw.decode("utf-8", "replace").split()
    if len(parts) != 4 or not parts[2].isdigit() or parts[3] not in ("created", "adopted"):
        raise HostError(f"{path} is not a '<vm id> <name> <uid> created|adopted' line")
    return UserRecord("" if parts[0] == "-" else parts[0], parts[1], int(parts[2]), parts[3])


def _fail(message: str, reason: str = "failed to provision user", step: str = "user") -> ProvisionError:
    return ProvisionError(reason, step, message)


def create_user(ctx: Ctx) -> None:
    name = ctx.data.username
    _forget_other_vm(ctx)
    if not _USERNAME.fullmatch(name):
        raise _fail(
            f"UserName {name[:40]!r} is not a valid user name "
            "(a letter or '_', then up to 31 letters, digits, '_', '.', '-')",
            reason="invalid user name",
        )
    problem = sudoers_name_problem(name)
    if problem is not None:
        raise _fail(f"UserName {name!r} cannot be used: {problem}", reason="invalid user name")
    acct = ctx.account(name)
    how = "adopted"
    if acct is None:
        ctx.system.run(["useradd", "-m", name], timeout=60)
        how = "created"
        acct = ctx.account(name)
        if acct is None and not ctx.system.dry_run:
            raise _fail(f"useradd -m {name} succeeded but {name} is not in /etc/passwd")
    else:
        log.info("User %s already exists, skip useradd", name)
    if acct is not None:
        refuse_system_user(ctx, acct)
        if how == "created":  # ours whatever follows: -deprovision+user may consider it
            _remember(ctx, acct, how)
        if ctx.data.public_keys or ctx.data.key_pairs:  # checked before any change to the account
            problem = home_problem(ctx.system, ctx.config.home_dir, acct)
            if problem is not None:
                raise _fail(
                    f"{problem}: its SSH keys cannot be written there", reason="unusable home directory"
                )
        if how == "adopted":  # only an existing account that passed every check
            _remember(ctx, acct, how)


def _forget_other_vm(ctx: Ctx) -> None:
    """A record left by another VM's provisioning (or unreadable) is dropped first."""
    try:
        record = read_record(ctx.system, ctx.state_dir)
        if record is None or record.vm_id == ctx.vm_id:
            return
    except HostError:
        pass  # unreadable: dropped too
    ctx.system.remove(state_path(USER_RECORD, ctx.state_dir))


def _remember(ctx: Ctx, acct: Account, how: str) -> None:
    """Record the account that passed every check; a rerun keeps the first run's record."""
    record = read_record(ctx.system, ctx.state_dir)
    if record is not None and (record.vm_id, record.name, record.uid) == (ctx.vm_id, acct.name, acct.uid):
        return
    ctx.system.makedirs(ctx.state_dir, 0o700)
    line = UserRecord(ctx.vm_id, acct.name, acct.uid, how).line()
    ctx.system.write(state_path(USER_RECORD, ctx.state_dir), line, 0o600)


def refuse_system_user(ctx: Ctx, acct: Account) -> None:
    """An account outside UID_MIN..UID_MAX is not a regular user: no sudo, keys, password."""
    if ctx.config.allow_reset_sys_user or (ctx.distro.flatcar and acct.name == "core"):
        return
    uid_min, uid_max = ctx.uid_range()
    if acct.uid < uid_min:
        why = f"is a system user (uid {acct.uid} < UID_MIN {uid_min})"
    elif acct.uid > uid_max:
        why = f"is not a regular user (uid {acct.uid} > UID_MAX {uid_max})"
    else:
        return
    raise _fail(
        f"User {acct.name} {why}, will not provision it; set Provisioning.AllowResetSysUser=y to allow it",
        reason="system user refused",
    )


def load_crypt() -> Callable[[str, str], Optional[str]]:
    """crypt.crypt (Python < 3.13) or crypt_r.crypt (the crypt-r package, 3.13 has no
    `crypt`), each taken from the C module it wraps (with a salt string, crypt.crypt is
    _crypt.crypt and crypt_r.crypt is _crypt_r.crypt): importing `crypt` or `crypt_r` hashes
    test passwords to list its methods (crypt_r: 18 ms, _crypt_r: 0.4 ms on Debian 13)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            if sys.version_info >= (3, 13):
                try:
                    import _crypt_r as module  # type: ignore[import-not-found, unused-ignore]
                except ImportError:
                    import crypt_r as module  # type: ignore[import-not-found, unused-ignore, no-redef]
            else:
                try:
                    import _crypt as module  # type: ignore[import-not-found, unused-ignore]
                except ImportError:
                    import crypt as module
        except ImportError:
            raise _fail(
                "This feature requires one of the 'crypt', 'legacycrypt' or 'crypt-r' Python packages "
                "to be installed.",
                step="password",
                reason="failed to provision password",
            ) from None
    fn: Callable[[str, str], Optional[str]] = module.crypt
    return fn


def hash_password(password: str, crypt_id: str, salt_len: int) -> str:
    # secrets.choice is SystemRandom().choice; `secrets` would load OpenSSL's hashlib too,
    # tenths of a second at a busy boot
    from random import SystemRandom

    crypt, choice = load_crypt(), SystemRandom().choice
    salt = "".join(choice(SALT_ALPHABET) for _ in range(max(salt_len, 1)))
    result = crypt(password, f"${crypt_id}${salt}")
    if not result or not result.startswith(f"${crypt_id}$"):
        raise _fail(
            f"Provisioning.PasswordCryptId={crypt_id!r} is not a hash method this system's crypt supports",
            step="password",
            reason="failed to provision password",
        )
    return result


def set_password(ctx: Ctx) -> None:
    name = ctx.data.username
    password = ctx.data.password
    fields = ctx.entry(SHADOW, name)
    current = fields[1] if fields else None
    if password is None:
        if current is not None and current.startswith("!"):
            log.info("The password of %s is locked already", name)
            return
        ctx.system.run(["passwd", "-l", name], timeout=60)
        return
    secret = password.reveal()
    ctx.system.redactor.add(secret)
    if current and current.startswith("$") and load_crypt()(secret, current) == current:
        log.info("The password of %s is set already", name)
        return
    hashed = hash_password(secret, ctx.config.password_crypt_id, ctx.config.password_crypt_salt_length)
    ctx.system.run(["usermod", "-p", hashed, name], secret=[hashed], timeout=60)


def delete_root_password(ctx: Ctx) -> None:
    """`root:*LOCK*:14600::::::` as the first line of OS.PasswordPath, every other root
    line dropped; written atomically with the file's mode and owner."""
    if not ctx.config.delete_root_password:
        return
    try:
        lock_root_password(ctx.system, ctx.config.password_path)
    except HostError as e:
        raise ProvisionError("failed to delete root password", "rootpw", str(e)) from None


def lock_root_password(system: System, path: str) -> None:
    """WA's `del_root_password` (also used by -deprovision); HostError when `path` is missing."""
    raw, kept = system.read(path), system.mode_owner(path)
    if raw is None or kept is None:
        raise HostError(f"Failed to delete root password: {path} does not exist")
    lines = [
        line for line in raw.decode("utf-8", "surrogateescape").split("\n") if not line.startswith("root:")
    ]
    system.write(path, "\n".join([ROOT_LOCK, *lines]).encode("utf-8", "surrogateescape"), *kept)
