"""SSH public keys and key pairs (WA §5.4, §5.5), from the OVF and IMDS.

`$HOME` in a path becomes `OS.HomeDir`; the result must lie inside the user's home and
no part of it below the home may be a symbolic link (improvement: refused otherwise).
The key's directory is forced to 0700 and owned by the user. A `Value` (any OpenSSH
public key type, checked by decoding it) or the key of the certificate named by
`Fingerprint` (`openssl x509 -pubkey`, `ssh-keygen -i -m PKCS8`) is added to the file
unless the same key is there already; the file is 0644 and owned by the user. A key pair
copies `<Lib.Dir>/<fp>.prv` (0600, owned by the user: improvement) and writes the PEM
public key beside it (0644).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import struct
from typing import Optional, Set, Tuple

from waprov.errors import HostError, ProvisionError
from waprov.model import KeyPair, PublicKey
from waprov.steps import Account, Ctx

log = logging.getLogger("waprov")
BASE_TYPES = (
    "ssh-rsa",
    "ssh-dss",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "sk-ssh-ed25519@openssh.com",
)
KEY_TYPES = frozenset(BASE_TYPES) | {t.split("@")[0] + "-cert-v01@openssh.com" for t in BASE_TYPES}
SELINUX_LABEL = "unconfined_u:object_r:ssh_home_t:s0"


def _fail(message: str) -> ProvisionError:
    return ProvisionError("failed to deploy ssh keys", "keys", message)


def public_key_line(value: str) -> Tuple[str, str]:
    """(the line to write, the key material "type base64"); ProvisionError when it is not
    one OpenSSH public key whose blob names its own type."""
    line = value.strip()
    parts = line.split()
    short = line[:60] + ("..." if len(line) > 60 else "")
    if "\n" in line or "\r" in line or len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise _fail(f"Bad public key: {short}")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (n,) = struct.unpack(">I", blob[:4])
        named = blob[4 : 4 + n].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        raise _fail(f"Bad public key (the base64 body does not decode): {short}") from None
    if named != parts[0] or len(blob) <= 4 + n:
        raise _fail(f"Bad public key (the body is a {named[:40]!r} key, not {parts[0]}): {short}")
    return line, f"{parts[0]} {parts[1]}"


def _material(text: str) -> Set[str]:
    out = set()
    for line in text.splitlines():
        parts = line.split()
        for i, part in enumerate(parts[:-1]):  # options may come first
            if part in KEY_TYPES:
                out.add(f"{part} {parts[i + 1]}")
                break
    return out


def key_path(ctx: Ctx, raw: Optional[str], what: str) -> Tuple[str, Optional[Account]]:
    """The normalised path, checked to lie in the user's home with no symlink below it."""
    if raw is None:
        raise _fail(f"{what} path is None")
    path = os.path.normpath(raw.replace("$HOME", ctx.config.home_dir))
    acct = ctx.account(ctx.data.username)
    home = os.path.normpath(acct.home if acct else os.path.join(ctx.config.home_dir, ctx.data.username))
    if not path.startswith(home.rstrip("/") + "/"):
        raise _fail(f"{what} path {path} is outside the home directory {home} of {ctx.data.username}")
    cur = home
    for part in ["", *os.path.relpath(path, home).split("/")]:
        cur = os.path.join(cur, part) if part else cur
        if ctx.system.kind(cur) == "link":
            raise _fail(f"{what} path {path} goes through the symbolic link {cur}")
    return path, acct


def _owner(acct: Optional[Account]) -> Optional[Tuple[int, int]]:
    return (acct.uid, acct.gid) if acct else None


def _label(ctx: Ctx, *paths: str) -> None:
    if not ctx.system.has_command("getenforce"):
        return
    for p in paths:
        try:
            ctx.system.run(["chcon", SELINUX_LABEL, p], timeout=30)
        except HostError as e:
            log.warning("Labelling %s for SELinux failed: %s", p, e)


def _need(ctx: Ctx, path: str) -> None:
    if not ctx.system.dry_run and ctx.system.kind(path) != "file":
        raise _fail(f"Can't find {path}")


def _from_certificate(ctx: Ctx, fingerprint: str) -> Tuple[str, str]:
    crt = ctx.lib(f"{fingerprint}.crt")
    _need(ctx, crt)
    pub = ctx.lib(f"{fingerprint}.pub")
    res = ctx.system.run(
        [ctx.config.openssl_path, "x509", "-in", ctx.system.path(crt), "-pubkey", "-noout"], timeout=30
    )
    ctx.system.write(pub, res.stdout, 0o600)
    res = ctx.system.run(["ssh-keygen", "-i", "-m", "PKCS8", "-f", ctx.system.path(pub)], timeout=30)
    if ctx.system.dry_run:
        return "", ""
    return public_key_line(res.stdout)


def deploy_public_key(ctx: Ctx, key: PublicKey) -> None:
    path, acct = key_path(ctx, key.path, "Public key")
    if key.value:
        line, material = public_key_line(key.value)
    elif key.fingerprint:
        line, material = _from_certificate(ctx, key.fingerprint)
    else:
        raise _fail("SSH public key Fingerprint and Value are None")
    ctx.system.makedirs(os.path.dirname(path), 0o700, _owner(acct))
    text = (ctx.system.read(path) or b"").decode("utf-8", "surrogateescape")
    if line and material not in _material(text):
        text += ("\n" if text and not text.endswith("\n") else "") + line + "\n"
    ctx.system.write(path, text.encode("utf-8", "surrogateescape"), 0o644, _owner(acct))
    _label(ctx, path)


def deploy_key_pair(ctx: Ctx, pair: KeyPair) -> None:
    path, acct = key_path(ctx, pair.path, "Key pair")
    if not pair.fingerprint:
        raise _fail(f"Key pair {path} has no Fingerprint")
    prv = ctx.lib(f"{pair.fingerprint}.prv")
    _need(ctx, prv)
    ctx.system.makedirs(os.path.dirname(path), 0o700, _owner(acct))
    ctx.system.write(path, ctx.system.read(prv) or b"", 0o600, _owner(acct))
    openssl = ctx.config.openssl_path
    res = ctx.system.run([openssl, "rsa", "-in", ctx.system.path(prv), "-pubout"], check=False, timeout=30)
    if res.rc != 0:
        res = ctx.system.run([openssl, "pkey", "-in", ctx.system.path(prv), "-pubout"], timeout=30)
    ctx.system.write(path + ".pub", res.stdout, 0o644, _owner(acct))
    _label(ctx, path, path + ".pub")


def deploy_keys(ctx: Ctx) -> None:
    for key in ctx.data.public_keys:
        deploy_public_key(ctx, key)
    for pair in ctx.data.key_pairs:
        deploy_key_pair(ctx, pair)
