"""The provisioning data model: frozen values read from Azure, with secrets hidden.

`Secret` wraps a password so that no repr, str or f-string shows it; only `reveal()`
does. `PublicKey` and `KeyPair` are the SSH entries as the OVF states them (each part
optional, text untrimmed); `valid_thumbprint()` is the rule for their Fingerprint.
`merge()` builds the one `ProvisioningData` that provisioning uses from the OVF (DVD) and
IMDS: the OVF wins wherever it states a value, IMDS fills what it lacks, and IMDS public
keys are added unless the same key for the same path is already there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

from waprov.errors import ProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from waprov.imds import ImdsData
    from waprov.ovf import OvfEnv


class Secret:
    """A secret string: shown as `<secret>` everywhere except `reveal()`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "<secret>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> tuple[object, ...]:  # never pickled into a file by accident
        raise TypeError("a Secret cannot be pickled")


_HEX = frozenset("0123456789abcdefABCDEF")


def valid_thumbprint(value: str) -> bool:
    """A certificate thumbprint as Azure names it: 40 hexadecimal digits (SHA-1). Only
    such a value may become part of a file name (`<Lib.Dir>/<thumbprint>.crt`)."""
    return len(value) == 40 and _HEX.issuperset(value)


@dataclass(frozen=True)
class PublicKey:
    """An SSH public key entry: Path, Fingerprint (of a wireserver certificate), Value."""

    path: Optional[str] = None
    fingerprint: Optional[str] = None
    value: Optional[str] = None


@dataclass(frozen=True)
class KeyPair:
    """An SSH key pair entry: Path and the Fingerprint of the certificate holding it."""

    path: Optional[str] = None
    fingerprint: Optional[str] = None


@dataclass(frozen=True)
class ProvisioningData:
    """What to provision, merged from the sources named in `sources` ("dvd", "imds")."""

    hostname: str
    username: str
    password: Optional[Secret] = field(default=None, repr=False)
    custom_data: Optional[str] = field(default=None, repr=False)
    disable_ssh_password_auth: bool = False
    public_keys: Tuple[PublicKey, ...] = ()
    key_pairs: Tuple[KeyPair, ...] = ()
    provision_guest_agent: Optional[str] = None
    provision_guest_proxy_agent: Optional[str] = None
    preprovisioned_vm: Optional[str] = None
    preprovisioned_vm_type: Optional[str] = None
    vm_id: Optional[str] = None  # IMDS compute.vmId, for reports only
    sources: Tuple[str, ...] = ()

    @property
    def guest_agent_disabled(self) -> bool:
        """ProvisionGuestAgent is `false` in any case (WA §2.3 step 11)."""
        return (self.provision_guest_agent or "").lower() == "false"

    @property
    def fingerprints(self) -> Tuple[str, ...]:
        """Certificate thumbprints named by keys: only these need the wireserver's certificates."""
        out = [k.fingerprint for k in self.public_keys if k.fingerprint and not k.value]
        out += [k.fingerprint for k in self.key_pairs if k.fingerprint]
        return tuple(dict.fromkeys(out))


def _key_material(value: Optional[str]) -> Optional[Tuple[str, ...]]:
    """The key type and base64 body: comments and whitespace do not make a key different."""
    if not value:
        return None
    return tuple(value.split()[:2])


def merge(ovf: Optional[OvfEnv], imds: Optional[ImdsData]) -> ProvisioningData:
    """One ProvisioningData; ProtocolError when neither source names a host or a user."""
    sources = tuple(name for name, src in (("dvd", ovf), ("imds", imds)) if src is not None)
    hostname = (ovf.hostname if ovf else None) or (imds.computer_name if imds else None)
    username = (ovf.username if ovf else None) or (imds.admin_username if imds else None)
    if not sources:
        raise ProtocolError("no provisioning data: no ovf-env.xml and no IMDS document")
    if not hostname:
        raise ProtocolError(
            "no host name: neither ovf-env.xml HostName nor IMDS compute.osProfile.computerName"
        )
    if not username:
        raise ProtocolError(
            "no user name: neither ovf-env.xml UserName nor IMDS compute.osProfile.adminUsername"
        )
    if ovf is not None and ovf.ssh_password_auth_stated:
        disable_password = ovf.disable_ssh_password_auth
    elif imds is not None and imds.disable_password_authentication is not None:
        disable_password = imds.disable_password_authentication
    else:
        disable_password = ovf.disable_ssh_password_auth if ovf else False
    keys = list(ovf.public_keys) if ovf else []
    seen = {(k.path, _key_material(k.value)) for k in keys if k.value}
    for k in imds.public_keys if imds else ():
        ident = (k.path, _key_material(k.value))
        if ident not in seen:
            seen.add(ident)
            keys.append(k)
    return ProvisioningData(
        hostname=hostname,
        username=username,
        password=ovf.password if ovf else None,
        custom_data=ovf.custom_data if ovf else None,
        disable_ssh_password_auth=disable_password,
        public_keys=tuple(keys),
        key_pairs=ovf.key_pairs if ovf else (),
        provision_guest_agent=ovf.provision_guest_agent if ovf else None,
        provision_guest_proxy_agent=ovf.provision_guest_proxy_agent if ovf else None,
        preprovisioned_vm=ovf.preprovisioned_vm if ovf else None,
        preprovisioned_vm_type=ovf.preprovisioned_vm_type if ovf else None,
        vm_id=imds.vm_id if imds else None,
        sources=sources,
    )
