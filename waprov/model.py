"""The provisioning data model: frozen values read from Azure, with secrets hidden.

`Secret` wraps a password so that no repr, str or f-string shows it; only `reveal()`
does. `PublicKey` and `KeyPair` are the SSH entries as the OVF states them (each part
optional, text untrimmed); `valid_thumbprint()` is the rule for their Fingerprint.
`ProvisioningData` is the one set of values provisioning uses, merged from the OVF (DVD)
and IMDS by `sources.merge()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple


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
