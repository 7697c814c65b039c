"""ovf-env.xml: decode, parse and validate exactly as WALinuxAgent (WA §4.1, §4.3), and
make the password-free copy that is saved to `<Lib.Dir>/ovf-env.xml`.

`parse_ovf(data)` takes the file's bytes and returns a frozen `OvfEnv` or raises
`ProtocolError` with WALinuxAgent's message (`Failed to validate OVF: <what> not found`)
or a clear one for bytes that are not a usable document. Lookups are by namespace URI and
recursive (first match in document order); text is the first text child, untrimmed. A
Fingerprint that is not a certificate thumbprint is refused (improvement).
Finding, mounting and ejecting the DVD are not here yet (issue 3).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Optional, Tuple, TypeVar
from xml.dom.minidom import Document, Element, Node
from xml.parsers.expat import ExpatError

from defusedxml import DefusedXmlException

# expatbuilder, not minidom: defusedxml.minidom also loads its pulldom, whose SAX reader imports
# urllib.request, http.client and ssl (the local phase imports nothing of HTTP); the same parse
from defusedxml.expatbuilder import parseString

from waprov.errors import ProtocolError
from waprov.model import KeyPair, PublicKey, Secret, valid_thumbprint
from waprov.textdata import MIB, decode_text

OVF_NS = "http://schemas.dmtf.org/ovf/environment/1"
WA_NS = "http://schemas.microsoft.com/windowsazure"
OVF_VERSION = "1.0"
MAX_OVF_BYTES = MIB
log = logging.getLogger("waprov")
_V = TypeVar("_V")


@dataclass(frozen=True)
class OvfEnv:
    """What ovf-env.xml says. Text values are untrimmed, as WALinuxAgent reads them."""

    version: str
    hostname: str
    username: str
    password: Optional[Secret] = field(default=None, repr=False)
    custom_data: Optional[str] = field(default=None, repr=False)
    disable_ssh_password_auth: bool = False
    ssh_password_auth_stated: bool = False  # the element has text (else IMDS may say)
    public_keys: Tuple[PublicKey, ...] = ()
    key_pairs: Tuple[KeyPair, ...] = ()
    provision_guest_agent: str = ""
    provision_guest_proxy_agent: Optional[str] = None
    preprovisioned_vm: Optional[str] = None
    preprovisioned_vm_type: Optional[str] = None


def decode_ovf(data: bytes) -> str:
    """Bytes to text: WALinuxAgent's BOM rule (three leading bytes each > 128 are
    dropped), then UTF-8; more than 1 MiB or invalid UTF-8 is a ProtocolError."""
    if len(data) >= 3 and all(b > 128 for b in data[:3]):
        data = data[3:]
    try:
        return decode_text(data, MAX_OVF_BYTES)
    except ValueError as e:
        raise ProtocolError(f"ovf-env.xml {e}") from None


def _find(node: Node, tag: str, ns: str) -> Optional[Element]:
    found = node.getElementsByTagNameNS(ns, tag)  # type: ignore[attr-defined]
    return found[0] if found else None


def _text(node: Optional[Node]) -> Optional[str]:
    if node is None:
        return None
    for child in node.childNodes:
        if child.nodeType == Node.TEXT_NODE:
            return str(child.data)
    return None


def _findtext(node: Node, tag: str, ns: str = WA_NS) -> Optional[str]:
    return _text(_find(node, tag, ns))


def _required(value: Optional[_V], what: str) -> _V:
    if value is None:
        raise ProtocolError(f"Failed to validate OVF: {what} not found")
    return value


def _parse_xml(text: str) -> Document:
    try:
        return parseString(text, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except ExpatError as e:
        raise ProtocolError(f"ovf-env.xml is not well-formed XML: {e}") from None
    except DefusedXmlException as e:
        raise ProtocolError(f"ovf-env.xml uses a forbidden XML construct: {type(e).__name__}") from None


def _check_fingerprints(pubkeys: Tuple[PublicKey, ...], keypairs: Tuple[KeyPair, ...]) -> None:
    """A Fingerprint that will be used names files in Lib.Dir: anything but a thumbprint is
    refused here, before any path is built from it (improvement; WALinuxAgent uses the text
    as is). A public key's Fingerprint is unused, as in WALinuxAgent, when it has a Value."""
    entries = [("PublicKey", n, k.fingerprint) for n, k in enumerate(pubkeys, 1) if not k.value]
    entries += [("KeyPair", n, k.fingerprint) for n, k in enumerate(keypairs, 1)]
    for what, n, fp in entries:
        if fp is not None and not valid_thumbprint(fp):
            raise ProtocolError(
                f"ovf-env.xml: the Fingerprint of SSH {what} {n} ({fp[:60]!r}) is not a certificate "
                "thumbprint (40 hexadecimal digits)"
            )


def parse_ovf(data: bytes) -> OvfEnv:
    """Parse and validate ovf-env.xml, in WALinuxAgent's order of checks."""
    doc = _parse_xml(decode_ovf(data))
    env = _required(_find(doc, "Environment", OVF_NS), "Environment")
    section = _required(_find(env, "ProvisioningSection", WA_NS), "ProvisioningSection")
    version = _required(_findtext(env, "Version"), "Version")
    if version > OVF_VERSION:
        log.warning("Newer provisioning configuration detected (version %s)", version)
    conf = _required(
        _find(section, "LinuxProvisioningConfigurationSet", WA_NS), "LinuxProvisioningConfigurationSet"
    )
    hostname = _required(_findtext(conf, "HostName"), "HostName")
    username = _required(_findtext(conf, "UserName"), "UserName")
    password = _findtext(conf, "UserPassword")
    auth = _findtext(conf, "DisableSshPasswordAuthentication")
    pubkeys = tuple(
        PublicKey(_findtext(k, "Path"), _findtext(k, "Fingerprint"), _findtext(k, "Value"))
        for k in conf.getElementsByTagNameNS(WA_NS, "PublicKey")
    )
    keypairs = tuple(
        KeyPair(_findtext(k, "Path"), _findtext(k, "Fingerprint"))
        for k in conf.getElementsByTagNameNS(WA_NS, "KeyPair")
    )
    _check_fingerprints(pubkeys, keypairs)
    psection = _required(_find(env, "PlatformSettingsSection", WA_NS), "PlatformSettingsSection")
    settings = _required(_find(psection, "PlatformSettings", WA_NS), "PlatformSettings")
    guest_agent = _required(_findtext(settings, "ProvisionGuestAgent"), "ProvisionGuestAgent")
    vm_type = _findtext(settings, "PreprovisionedVMType")
    if vm_type is None:
        vm_type = _findtext(settings, "PreprovisionedVmType")
    return OvfEnv(
        version=version,
        hostname=hostname,
        username=username,
        password=None if password is None else Secret(password),
        custom_data=_findtext(conf, "CustomData"),
        disable_ssh_password_auth=auth is not None and auth.lower() == "true",
        ssh_password_auth_stated=auth is not None,
        public_keys=pubkeys,
        key_pairs=keypairs,
        provision_guest_agent=guest_agent,
        provision_guest_proxy_agent=_findtext(settings, "ProvisionGuestProxyAgent"),
        preprovisioned_vm=_findtext(settings, "PreprovisionedVm"),
        preprovisioned_vm_type=vm_type,
    )


# Any prefix, attributes allowed, content across lines; the closing tag must match.
_PASSWORD = re.compile(
    r"(<(?P<tag>(?:[A-Za-z_][\w.-]*:)?UserPassword)(?:\s[^>]*)?>)(?P<body>.*?)(</(?P=tag)\s*>)", re.DOTALL
)


def strip_password(text: str) -> str:
    """The copy saved to disk: every UserPassword element's content replaced by `*`.

    The edit is textual, so the rest of the file keeps its bytes (as WALinuxAgent's
    copy does); the result is then checked by parsing it, and if any UserPassword
    element still holds something else (CDATA tricks, odd nesting), the document is
    re-serialised from the DOM with every such element set to `*` instead.
    """
    stripped = _PASSWORD.sub(lambda m: m.group(1) + "*" + m.group(4), text)
    if _passwords_hidden(stripped):
        return stripped
    doc = _parse_xml(text)
    for el in doc.getElementsByTagNameNS("*", "UserPassword"):
        for child in list(el.childNodes):
            el.removeChild(child)
        el.appendChild(doc.createTextNode("*"))
    return str(doc.toxml())


def _passwords_hidden(text: str) -> bool:
    try:
        doc = _parse_xml(text)
    except ProtocolError:
        return False
    for el in doc.getElementsByTagNameNS("*", "UserPassword"):
        content = "".join(c.toxml() for c in el.childNodes)
        if content not in ("", "*"):
            return False
    return True
