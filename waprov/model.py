"""The provisioning data model: frozen values read from Azure, with secrets hidden.

`Secret` wraps a password so that no repr, str or f-string shows it; only `reveal()`
does. `PublicKey` and `KeyPair` are the SSH entries as the OVF states them (each part
optional, text untrimmed). The merged OVF + IMDS `ProvisioningData` comes with the IMDS
client (issue 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


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
