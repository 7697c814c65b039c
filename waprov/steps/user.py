"""The user account (WA §5.2): create it, set or lock its password, lock root.

`useradd -m <user>` unless the account exists (then it is left as it is). A name that is
not a valid user name, or an account below UID_MIN (unless
`Provisioning.AllowResetSysUser=y`; `core` on Flatcar is exempt), is refused. The password
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
from typing import Callable, Optional

from waprov.errors import HostError, ProvisionError
from waprov.steps import Account, Ctx
from waprov.system import System

log = logging.getLogger("waprov")
_USERNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
SALT_ALPHABET = string.ascii_letters + string.digits
SHADOW = "/etc/shadow"
ROOT_LOCK = "root:*LOCK*:14600::::::"


def _fail(message: str, reason: str = "failed to provision user", step: str = "user") -> ProvisionError:
    return ProvisionError(reason, step, message)


def create_user(ctx: Ctx) -> None:
    name = ctx.data.username
    if not _USERNAME.fullmatch(name):
        raise _fail(
            f"UserName {name[:40]!r} is not a valid user name "
            "(a letter or '_', then up to 31 letters, digits, '_', '.', '-')",
            reason="invalid user name",
        )
    acct = ctx.account(name)
    if acct is None:
        ctx.system.run(["useradd", "-m", name], timeout=60)
        acct = ctx.account(name)
        if acct is None and not ctx.system.dry_run:
            raise _fail(f"useradd -m {name} succeeded but {name} is not in /etc/passwd")
    else:
        log.info("User %s already exists, skip useradd", name)
    if acct is not None:
        refuse_system_user(ctx, acct)


def refuse_system_user(ctx: Ctx, acct: Account) -> None:
    if ctx.config.allow_reset_sys_user or (ctx.distro.flatcar and acct.name == "core"):
        return
    uid_min = ctx.uid_min()
    if acct.uid < uid_min:
        raise _fail(
            f"User {acct.name} is a system user (uid {acct.uid} < UID_MIN {uid_min}), will not provision it; "
            "set Provisioning.AllowResetSysUser=y to allow it",
            reason="system user refused",
        )


def load_crypt() -> Callable[[str, str], Optional[str]]:
    """crypt.crypt (Python < 3.13) or crypt_r.crypt (the crypt-r package)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            if sys.version_info >= (3, 13):
                import crypt_r as module  # type: ignore[import-not-found, unused-ignore]
            else:
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
    import secrets  # here: it loads OpenSSL's hashlib, tenths of a second at a busy boot

    crypt = load_crypt()
    salt = "".join(secrets.choice(SALT_ALPHABET) for _ in range(max(salt_len, 1)))
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
