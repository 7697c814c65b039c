"""Tenant certificates from the wireserver (WA §6.5), fetched only when a key needs one.

A transport certificate is made with openssl; the Certificates URL is fetched with it
(cipher AES128_CBC, then DES_EDE3_CBC), the PKCS#7 blob is wrapped as Certificates.p7m
and decrypted with `openssl cms -decrypt`, the PFX converted to PEM in memory (never a
file: it holds private keys) and split into `<Lib.Dir>/<THUMBPRINT>.crt` and `.prv`
(0600), keys paired with certificates by their public key. A key without a certificate
keeps a numbered name, as in WALinuxAgent.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from waprov.config import Config
from waprov.errors import HostError, ProtocolError
from waprov.system import HostPath, System
from waprov.wireserver import WIRE_POLICY, GoalState, WireServer, find_text, parse_xml

log = logging.getLogger("waprov")
CIPHERS = ("AES128_CBC", "DES_EDE3_CBC")
PFX_FORMAT = "Pkcs7BlobWithPfxContents"
_END = re.compile(r"-+END.*(KEY|CERTIFICATE)-+")


class CertificateError(ProtocolError):
    """The certificates could not be fetched or decrypted."""


@dataclass(frozen=True)
class CertFiles:
    thumbprint: str
    crt: str
    prv: Optional[str] = None


def transport_paths(config: Config) -> Tuple[str, str]:
    return (
        os.path.join(config.lib_dir, "TransportCert.pem"),
        os.path.join(config.lib_dir, "TransportPrivate.pem"),
    )


def make_transport_cert(system: System, config: Config) -> None:
    cert, key = transport_paths(config)
    argv = [config.openssl_path, "req", "-x509", "-nodes", "-subj", "/CN=LinuxTransport", "-days", "730"]
    argv += ["-newkey", "rsa:2048", "-keyout", HostPath(key), "-out", HostPath(cert)]
    system.run(argv, timeout=120)


def cert_header(pem: str) -> str:
    """The transport certificate as the header wants it: no armour lines, no newlines."""
    return "".join(line for line in pem.splitlines() if "----" not in line)


def p7m_document(path: str, data: str) -> str:
    """The MIME wrapper openssl reads; the base64 is re-wrapped at 64 columns, since
    openssl cannot read one long line (Azure sends it wrapped already)."""
    flat = "".join(data.split())
    data = "".join(flat[i : i + 64] + "\n" for i in range(0, len(flat), 64))
    return (
        "MIME-Version:1.0\n"
        f'Content-Disposition: attachment; filename="{path}"\n'
        f'Content-Type: application/x-pkcs7-mime; name="{path}"\n'
        "Content-Transfer-Encoding: base64\n"
        "\n"
        f"{data}"
    )


def split_pem(pem: str) -> List[Tuple[str, str]]:
    """[(kind "KEY"|"CERTIFICATE", block text)] in order; text outside blocks is dropped."""
    blocks: List[Tuple[str, str]] = []
    cur: List[str] = []
    inside = False
    for line in pem.splitlines():
        if line.startswith("-----BEGIN"):
            inside, cur = True, []
        if inside:
            cur.append(line)
        m = _END.search(line)
        if inside and m:
            blocks.append((m.group(1), "\n".join(cur) + "\n"))
            inside = False
    return blocks


def thumbprint(cert_pem: str) -> str:
    """SHA-1 of the DER certificate, upper-case hex (what `openssl x509 -fingerprint` shows)."""
    body = "".join(line for line in cert_pem.splitlines() if not line.startswith("-----"))
    return hashlib.sha1(base64.b64decode(body), usedforsecurity=False).hexdigest().upper()


def _pfx_to_pem(system: System, openssl: str, pfx: bytes) -> str:
    """PFX on stdin, PEM on stdout: the private keys stay in memory."""
    last = ""
    for extra in (["-nomacver"], [], ["-legacy"]):
        argv = [openssl, "pkcs12", "-nodes", "-password", "pass:", *extra]
        res = system.query(argv, input=pfx, secret_output=True)
        if res.rc == 0:
            return res.stdout
        lines = res.stderr.strip().splitlines()
        last = lines[-1] if lines else f"exit code {res.rc}"
    raise CertificateError(f"openssl pkcs12 could not read the decrypted certificates: {last}")


def _public_key(system: System, openssl: str, kind: str, block: str) -> str:
    """The PEM public key of a certificate or private key block ("" if openssl fails)."""
    if kind == "CERTIFICATE":
        argv = [openssl, "x509", "-pubkey", "-noout"]
    else:
        argv = [openssl, "pkey", "-pubout"]
    res = system.query(argv, input=block)
    return res.stdout if res.rc == 0 else ""


def fetch_certificates(system: System, config: Config, ws: WireServer, gs: GoalState) -> Dict[str, CertFiles]:
    """Thumbprint -> files. CertificateError when neither cipher gives usable certificates."""
    if not gs.certificates_url:
        return {}
    lib = config.lib_dir
    make_transport_cert(system, config)
    cert_path, key_path = transport_paths(config)
    try:
        cert = system.read(cert_path, limit=1 << 20)
        if cert is None:
            raise HostError("no such file")
        header = cert_header(cert.decode("ascii"))
    except (HostError, UnicodeDecodeError) as e:
        raise CertificateError(f"cannot read the transport certificate {cert_path}: {e}") from None
    errors = []
    for cipher in CIPHERS:
        headers = {**ws.headers, "x-ms-cipher-name": cipher, "x-ms-guest-agent-public-x509-cert": header}
        try:
            body = ws.client.request("GET", gs.certificates_url, WIRE_POLICY, headers=headers).body
            root = parse_xml(body, "certificates document")
            system.write(os.path.join(lib, "Certificates.xml"), body, 0o600)
            data = find_text(root, "Data")
            fmt = find_text(root, "Format")
            if data is None:
                return {}
            if fmt and fmt != PFX_FORMAT:
                log.warning("Skipping certificates in format %s", fmt)
                return {}
            p7m = os.path.join(lib, "Certificates.p7m")
            system.write(p7m, p7m_document(p7m, data), 0o600)
            argv = [config.openssl_path, "cms", "-decrypt", "-in", HostPath(p7m)]
            argv += ["-inkey", HostPath(key_path), "-recip", HostPath(cert_path)]
            res = system.query(argv, secret_output=True)
            if res.rc != 0 or not res.raw:
                err = res.stderr.strip().splitlines()
                raise CertificateError(f"openssl cms -decrypt failed: {err[-1] if err else res.rc}")
            pem = _pfx_to_pem(system, config.openssl_path, res.raw)
            return _save(system, config, pem)
        except (ProtocolError, HostError) as e:
            log.warning("Certificates with cipher %s: %s", cipher, e)
            errors.append(f"{cipher}: {e}")
    raise CertificateError("could not get the tenant certificates (" + "; ".join(errors) + ")")


def _save(system: System, config: Config, pem: str) -> Dict[str, CertFiles]:
    found: Dict[str, CertFiles] = {}  # thumbprint -> files
    by_public_key: Dict[str, str] = {}  # public key -> thumbprint
    keys: List[Tuple[str, str]] = []  # (public key, block)
    for kind, block in split_pem(pem):
        pub = _public_key(system, config.openssl_path, kind, block)
        if kind == "CERTIFICATE":
            tp = thumbprint(block)
            path = os.path.join(config.lib_dir, f"{tp}.crt")
            system.write(path, block, 0o600)
            found[tp] = CertFiles(tp, path)
            if pub:
                by_public_key[pub] = tp
        else:
            keys.append((pub, block))
    for n, (pub, block) in enumerate(keys):
        owner = by_public_key.get(pub) if pub else None
        if owner is not None:
            path = os.path.join(config.lib_dir, f"{owner}.prv")
            found[owner] = CertFiles(owner, found[owner].crt, path)
        else:
            path = os.path.join(config.lib_dir, f"{n}.prv")
            log.warning("A private key from the wireserver matches no certificate: saved as %s", path)
        system.write(path, block, 0o600)
    log.info("Saved %d certificate(s) and %d key(s) from the wireserver", len(found), len(keys))
    return found
