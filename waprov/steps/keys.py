"""SSH public keys and key pairs (WA §5.4, §5.5), from the OVF and IMDS.

`$HOME` in a path becomes `OS.HomeDir`; the result must lie inside the user's home, and
the home pass steps.home_problem: below OS.HomeDir, owned by the user (improvement).
Every key is checked before anything is written: a `Value` (any OpenSSH public key type,
checked by decoding it) or the key of the certificate named by `Fingerprint` (40 hex
digits; `openssl x509 -pubkey`, `ssh-keygen -i -m PKCS8`). Each file is then walked to,
read and written once, by descriptors from the home down (helddir.py: a symbolic link on
the way, or a key file with more than one link, is refused): its directory forced to 0700
and owned by the user, the keys not there yet appended, the file 0644 and owned by the
user. A key pair copies `<Lib.Dir>/<fp>.prv` (0600, owned by the user: improvement) and
writes the PEM public key beside it (0644). At most MAX_KEYS entries per VM.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

from waprov.errors import ProvisionError
from waprov.model import KeyPair, PublicKey, valid_thumbprint
from waprov.steps import Account, Ctx, home_problem
from waprov.system import HostPath

if TYPE_CHECKING:
    from waprov.helddir import HeldDir

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
MAX_KEYS = 1000  # public keys and key pairs of one VM: a bound on the step's work


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


def _fingerprint(value: str, what: str) -> str:
    """A certificate thumbprint: 40 hexadecimal digits, case kept (WA matches it with
    case); anything else is refused before a path is built from it."""
    if not valid_thumbprint(value):
        raise _fail(f"{what} Fingerprint {value[:60]!r} is not a 40-digit hexadecimal thumbprint")
    return value


class _Home(NamedTuple):
    path: str  # as passwd names it
    alias: str  # the same below OS.HomeDir as Azure names it (differs when OS.HomeDir is a link)
    acct: Optional[Account]  # None only in a dry run, before the useradd it skipped

    @property
    def owner(self) -> Optional[Tuple[int, int]]:
        return (self.acct.uid, self.acct.gid) if self.acct else None


def user_home(ctx: Ctx) -> _Home:
    """The user's home, which must pass steps.home_problem (improvement: a home of `/`,
    /root or /usr/sbin, or one the user does not own, is never written into)."""
    acct = ctx.account(ctx.data.username)
    base = os.path.normpath(ctx.config.home_dir)
    if acct is None and not ctx.system.dry_run:
        raise _fail(f"the account {ctx.data.username} does not exist")
    if acct is None:
        home = os.path.join(base, ctx.data.username)
    else:
        problem = home_problem(ctx.system, ctx.config.home_dir, acct)
        if problem is not None:
            raise _fail(f"{problem}: no keys are written there")
        home = os.path.normpath(acct.home)
    rel = os.path.relpath(ctx.system.realpath(home), ctx.system.realpath(base))
    alias = home if rel == ".." or rel.startswith("../") else os.path.normpath(os.path.join(base, rel))
    return _Home(home, alias, acct)


def key_path(ctx: Ctx, raw: Optional[str], what: str, home: _Home) -> str:
    """The normalised path, checked to lie below the user's home (the symbolic links on
    the way are refused when the path is walked: helddir.py). A path below the home as
    OS.HomeDir names it (/home/<user> where passwd says /var/home/<user> and /home ->
    /var/home, as Azure writes it on ostree systems) is taken to the home passwd names."""
    if raw is None:
        raise _fail(f"{what} path is None")
    path = os.path.normpath(raw.replace("$HOME", ctx.config.home_dir))
    if home.alias != home.path and path.startswith(home.alias + "/"):
        path = home.path + path[len(home.alias) :]
    if not path.startswith(home.path.rstrip("/") + "/"):
        raise _fail(f"{what} path {path} is outside the home directory {home.path} of {ctx.data.username}")
    return path


def _selinux(ctx: Ctx) -> Optional[str]:
    return SELINUX_LABEL if ctx.system.has_command("getenforce") else None


def _need(ctx: Ctx, path: str) -> None:
    if not ctx.system.dry_run and ctx.system.kind(path) != "file":
        raise _fail(f"Can't find {path}")


def _from_certificate(ctx: Ctx, fingerprint: str) -> Tuple[str, str]:
    crt = ctx.lib(f"{fingerprint}.crt")
    _need(ctx, crt)
    pub = ctx.lib(f"{fingerprint}.pub")
    res = ctx.system.run(
        [ctx.config.openssl_path, "x509", "-in", HostPath(crt), "-pubkey", "-noout"], timeout=30
    )
    ctx.system.write(pub, res.stdout, 0o600)
    res = ctx.system.run(["ssh-keygen", "-i", "-m", "PKCS8", "-f", HostPath(pub)], timeout=30)
    if ctx.system.dry_run:
        return "", ""
    return public_key_line(res.stdout)


Lines = Dict[str, List[Tuple[str, str]]]  # authorized_keys path -> [(line, key material)]
Pairs = Dict[str, str]  # private key path -> fingerprint (the last one wins, as in WA)


def _gather(
    ctx: Ctx, home: _Home, keys: Sequence[PublicKey], key_pairs: Sequence[KeyPair]
) -> Tuple[Lines, Pairs]:
    """Every key checked and grouped by the file it goes to, before anything is written, so
    that each file is walked to, read and written once whatever the number of keys."""
    lines: Lines = {}
    pairs: Pairs = {}
    certified: Dict[str, Tuple[str, str]] = {}
    for n, key in enumerate(keys, 1):
        path = key_path(ctx, key.path, "Public key", home)
        if key.value:
            line = public_key_line(key.value)
        elif key.fingerprint:
            fp = _fingerprint(key.fingerprint, f"PublicKey {n}")
            if fp not in certified:
                certified[fp] = _from_certificate(ctx, fp)
            line = certified[fp]
        else:
            raise _fail("SSH public key Fingerprint and Value are None")
        lines.setdefault(path, []).append(line)
    for n, pair in enumerate(key_pairs, 1):
        path = key_path(ctx, pair.path, "Key pair", home)
        if not pair.fingerprint:
            raise _fail(f"Key pair {path} has no Fingerprint")
        pairs[path] = _fingerprint(pair.fingerprint, f"KeyPair {n}")
    return lines, pairs


def _held(ctx: Ctx, home: _Home, path: str) -> Tuple[HeldDir, str]:
    """The directory of `path`, walked to from the home and held (0700, the user's), and
    the file's name in it."""
    *dirs, name = os.path.relpath(path, home.path).split("/")
    uid = home.acct.uid if home.acct else None
    return ctx.system.open_dir(home.path, dirs, mode=0o700, owner=home.owner, top_uid=uid), name


def _authorized_keys(ctx: Ctx, home: _Home, path: str, lines: List[Tuple[str, str]]) -> None:
    held, name = _held(ctx, home, path)
    with held:
        text = (held.read(name) or b"").decode("utf-8", "surrogateescape")
        present = _material(text)
        for line, material in lines:
            if line and material not in present:
                text += ("\n" if text and not text.endswith("\n") else "") + line + "\n"
                present.add(material)
        held.write(name, text.encode("utf-8", "surrogateescape"), 0o644, home.owner, label=_selinux(ctx))


def _key_pair(ctx: Ctx, home: _Home, path: str, fingerprint: str) -> None:
    prv = ctx.lib(f"{fingerprint}.prv")
    _need(ctx, prv)
    openssl = ctx.config.openssl_path
    res = ctx.system.run([openssl, "rsa", "-in", HostPath(prv), "-pubout"], check=False, timeout=30)
    if res.rc != 0:
        res = ctx.system.run([openssl, "pkey", "-in", HostPath(prv), "-pubout"], timeout=30)
    held, name = _held(ctx, home, path)
    with held:
        label = _selinux(ctx)
        held.write(name, ctx.system.read(prv) or b"", 0o600, home.owner, label=label)
        held.write(name + ".pub", res.stdout.encode("utf-8"), 0o644, home.owner, label=label)


def deploy_keys(ctx: Ctx) -> None:
    """The local phase: the keys given by Value (no certificate needed)."""
    _deploy(ctx, [k for k in ctx.data.public_keys if k.value], [])


def deploy_remaining_keys(ctx: Ctx) -> None:
    """The network phase: with the certificates fetched and IMDS merged in, every key and
    key pair (each file read and written once), when any is left that `deploy_keys` did
    not deploy: one named by Fingerprint only, a key pair, or a key IMDS added."""
    given = {k for k in (ctx.ovf.public_keys if ctx.ovf else ctx.data.public_keys) if k.value}
    if ctx.data.key_pairs or any(k not in given for k in ctx.data.public_keys):
        _deploy(ctx, ctx.data.public_keys, ctx.data.key_pairs)


def _deploy(ctx: Ctx, keys: Sequence[PublicKey], key_pairs: Sequence[KeyPair]) -> None:
    count = len(keys) + len(key_pairs)
    if not count:
        return
    if count > MAX_KEYS:
        raise _fail(f"{count} SSH keys and key pairs are listed: waprov deploys at most {MAX_KEYS}")
    home = user_home(ctx)
    lines, pairs = _gather(ctx, home, keys, key_pairs)
    for path, found in lines.items():
        _authorized_keys(ctx, home, path, found)
    for path, fingerprint in pairs.items():
        _key_pair(ctx, home, path, fingerprint)
