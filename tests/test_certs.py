"""Tenant certificates: a real PKCS#7 round trip with the fake fabric, both ciphers."""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import subprocess

import pytest

from tests.fakefabric import UNDECRYPTABLE, FakeFabric, status
from waprov.certs import (
    CertificateError,
    cert_header,
    fetch_certificates,
    p7m_document,
    split_pem,
    thumbprint,
)
from waprov.config import Config
from waprov.http import HttpClient
from waprov.system import System
from waprov.timing import Clock
from waprov.wireserver import GoalState, WireServer, connect


def setup(
    fabric: FakeFabric, client: HttpClient, clock: Clock, tmp: str
) -> tuple[Config, WireServer, GoalState]:
    lib = os.path.join(tmp, "lib")
    os.makedirs(lib, mode=0o700)
    ws, gs = connect(client, fabric.wireserver, clock)
    return dataclasses.replace(Config(), lib_dir=lib), ws, gs


def pubkey(*argv: str) -> bytes:
    return subprocess.run(["openssl", *argv], capture_output=True, check=True).stdout


def test_certificates_are_decrypted_split_and_paired(
    fabric: FakeFabric, client: HttpClient, clock: Clock, tmp_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    conf, ws, gs = setup(fabric, client, clock, str(tmp_path))
    with caplog.at_level(logging.DEBUG, logger="waprov"):
        found = fetch_certificates(System(), conf, ws, gs)
    tp = fabric.tenant_thumbprint
    assert list(found) == [tp]
    crt, prv = found[tp].crt, found[tp].prv
    assert prv is not None
    assert (crt, prv) == (f"{conf.lib_dir}/{tp}.crt", f"{conf.lib_dir}/{tp}.prv")
    for path in (crt, prv, f"{conf.lib_dir}/TransportPrivate.pem", f"{conf.lib_dir}/Certificates.p7m"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert pubkey("x509", "-in", crt, "-pubkey", "-noout") == pubkey("pkey", "-in", prv, "-pubout")
    assert pubkey("x509", "-in", crt, "-pubkey", "-noout") == pubkey(
        "x509", "-in", fabric.tenant_cert, "-pubkey", "-noout"
    )
    # no file holds the PFX or the whole PEM, and no log line holds key material
    assert sorted(os.listdir(conf.lib_dir)) == sorted(
        [
            f"{tp}.crt",
            f"{tp}.prv",
            "Certificates.p7m",
            "Certificates.xml",
            "TransportCert.pem",
            "TransportPrivate.pem",
        ]
    )
    with open(prv, encoding="ascii") as f:
        key_lines = [line for line in f.read().splitlines() if not line.startswith("-----")]
    assert not any(line in caplog.text for line in key_lines)
    (req,) = fabric.requests_for("certificates")
    assert req.headers["x-ms-cipher-name"] == "AES128_CBC"
    with open(f"{conf.lib_dir}/TransportCert.pem", encoding="ascii") as f:
        assert req.headers["x-ms-guest-agent-public-x509-cert"] == cert_header(f.read())
    assert req.headers["x-ms-agent-name"] == "waprov" and req.headers["x-ms-version"] == "2012-11-30"


def test_the_second_cipher_is_tried_when_the_first_fails(
    fabric: FakeFabric, client: HttpClient, clock: Clock, tmp_path: str
) -> None:
    conf, ws, gs = setup(fabric, client, clock, str(tmp_path))
    fabric.script("certificates", UNDECRYPTABLE)
    found = fetch_certificates(System(), conf, ws, gs)
    assert list(found) == [fabric.tenant_thumbprint]
    assert [r.headers["x-ms-cipher-name"] for r in fabric.requests_for("certificates")] == [
        "AES128_CBC",
        "DES_EDE3_CBC",
    ]


def test_certificates_that_cannot_be_decrypted_are_a_clear_error(
    fabric: FakeFabric, client: HttpClient, clock: Clock, tmp_path: str
) -> None:
    conf, ws, gs = setup(fabric, client, clock, str(tmp_path))
    fabric.script("certificates", UNDECRYPTABLE, status(404))
    with pytest.raises(CertificateError) as e:
        fetch_certificates(System(), conf, ws, gs)
    text = str(e.value)
    assert "AES128_CBC: openssl cms -decrypt failed" in text and "DES_EDE3_CBC: GET" in text and "404" in text
    assert not [n for n in os.listdir(conf.lib_dir) if n.endswith((".crt", ".prv"))]


def test_no_certificates_url_means_nothing_to_fetch(tmp_path: str) -> None:
    conf = dataclasses.replace(Config(), lib_dir=str(tmp_path))
    assert (
        fetch_certificates(
            System(), conf, WireServer(HttpClient(Clock()), "127.0.0.1:9"), GoalState("1", "c", "r")
        )
        == {}
    )
    assert os.listdir(str(tmp_path)) == []


def test_p7m_wrapper_and_header_text() -> None:
    assert p7m_document("/var/lib/waagent/Certificates.p7m", "QUJD\nREVG\n") == (
        "MIME-Version:1.0\n"
        'Content-Disposition: attachment; filename="/var/lib/waagent/Certificates.p7m"\n'
        'Content-Type: application/x-pkcs7-mime; name="/var/lib/waagent/Certificates.p7m"\n'
        "Content-Transfer-Encoding: base64\n\nQUJDREVG\n"
    )
    assert cert_header("-----BEGIN CERTIFICATE-----\nAAA\nBBB\n-----END CERTIFICATE-----\n") == "AAABBB"


def test_split_pem_keeps_blocks_in_order_and_drops_bag_attributes() -> None:
    pem = (
        "Bag Attributes\n    localKeyID: 01\nsubject=/CN=x\n"
        "-----BEGIN CERTIFICATE-----\nQUFB\n-----END CERTIFICATE-----\n"
        "Bag Attributes\n-----BEGIN PRIVATE KEY-----\nQkJC\n-----END PRIVATE KEY-----\n"
        "-----BEGIN RSA PRIVATE KEY-----\nQ0ND\n-----END RSA PRIVATE KEY-----\n"
    )
    assert split_pem(pem) == [
        ("CERTIFICATE", "-----BEGIN CERTIFICATE-----\nQUFB\n-----END CERTIFICATE-----\n"),
        ("KEY", "-----BEGIN PRIVATE KEY-----\nQkJC\n-----END PRIVATE KEY-----\n"),
        ("KEY", "-----BEGIN RSA PRIVATE KEY-----\nQ0ND\n-----END RSA PRIVATE KEY-----\n"),
    ]


def test_thumbprint_is_openssls_sha1_fingerprint(fabric: FakeFabric) -> None:
    with open(fabric.tenant_cert, encoding="ascii") as f:
        assert thumbprint(f.read()) == fabric.tenant_thumbprint


@pytest.mark.parametrize(
    "doc",
    [
        b"<CertificateFile><Version>2012-11-30</Version><Incarnation>1</Incarnation></CertificateFile>",
        b"<CertificateFile><Format>Pkcs12</Format><Data>QUJD</Data></CertificateFile>",
    ],
)
def test_no_data_or_another_format_means_no_certificates(
    fabric: FakeFabric, client: HttpClient, clock: Clock, tmp_path: str, doc: bytes
) -> None:
    conf, ws, gs = setup(fabric, client, clock, str(tmp_path))
    fabric.script("certificates", status(200, doc))
    assert fetch_certificates(System(), conf, ws, gs) == {}
    assert len(fabric.requests_for("certificates")) == 1
