"""ProvisioningData: one precedence (the OVF wins where it states a value, IMDS fills and adds)."""

from __future__ import annotations

import dataclasses
import os
import pickle

import pytest

from tests.conftest import DATA
from waprov.errors import ProtocolError
from waprov.imds import ImdsData
from waprov.model import KeyPair, ProvisioningData, PublicKey, Secret
from waprov.ovf import parse_ovf
from waprov.sources import merge

with open(os.path.join(DATA, "ovf", "full.xml"), "rb") as _f:
    OVF = parse_ovf(_f.read())
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGcQZxJ52KBCCrbKNTGnXoO5c0MmCaCcI869YxPrOxw+"
IMDS = ImdsData(
    vm_id="5c08b38e-4d57-4c23-ac45-aca61037f084",
    admin_username="imdsadmin",
    computer_name="imds-computer",
    disable_password_authentication=True,
    public_keys=(PublicKey("/home/azureuser/.ssh/authorized_keys", None, KEY_A + " from-imds"),),
)


def test_the_ovf_wins_where_it_has_a_value() -> None:
    data = merge(OVF, IMDS)
    assert (data.hostname, data.username) == (OVF.hostname, OVF.username)
    assert data.password == OVF.password and data.custom_data == OVF.custom_data
    assert data.disable_ssh_password_auth is OVF.disable_ssh_password_auth  # stated false in the fixture
    assert data.key_pairs == OVF.key_pairs
    assert data.vm_id == IMDS.vm_id and data.sources == ("dvd", "imds")


def test_imds_adds_keys_the_ovf_lacks_and_skips_duplicates() -> None:
    data = merge(OVF, IMDS)
    assert data.public_keys == OVF.public_keys + IMDS.public_keys
    same = PublicKey(IMDS.public_keys[0].path, None, KEY_A + " other-comment")
    ovf = dataclasses.replace(OVF, public_keys=(*OVF.public_keys, same))
    assert merge(ovf, IMDS).public_keys == ovf.public_keys  # the same key for the same path
    elsewhere = dataclasses.replace(IMDS, public_keys=(PublicKey("/root/.ssh/authorized_keys", None, KEY_A),))
    assert merge(ovf, elsewhere).public_keys == (*ovf.public_keys, *elsewhere.public_keys)


def test_imds_fills_the_password_flag_only_when_the_ovf_does_not_state_it() -> None:
    unstated = dataclasses.replace(OVF, disable_ssh_password_auth=False, ssh_password_auth_stated=False)
    assert merge(unstated, IMDS).disable_ssh_password_auth is True
    assert merge(unstated, None).disable_ssh_password_auth is False  # WALinuxAgent: absent = enabled
    stated = dataclasses.replace(OVF, disable_ssh_password_auth=False, ssh_password_auth_stated=True)
    assert merge(stated, IMDS).disable_ssh_password_auth is False


def test_imds_alone_provisions() -> None:
    data = merge(None, IMDS)
    assert data == ProvisioningData(
        hostname="imds-computer",
        username="imdsadmin",
        disable_ssh_password_auth=True,
        public_keys=IMDS.public_keys,
        vm_id=IMDS.vm_id,
        sources=("imds",),
    )
    assert data.password is None and not data.guest_agent_disabled


def test_the_ovf_alone_provisions() -> None:
    data = merge(OVF, None)
    assert data.sources == ("dvd",) and data.vm_id is None and data.public_keys == OVF.public_keys


@pytest.mark.parametrize(
    ("imds", "message"),
    [
        (None, "no provisioning data"),
        (ImdsData(admin_username="u"), "no host name: neither ovf-env.xml HostName nor IMDS"),
        (ImdsData(computer_name="h"), "no user name: neither ovf-env.xml UserName nor IMDS"),
    ],
)
def test_missing_essentials_are_typed_errors(imds: ImdsData, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        merge(None, imds)


def test_fingerprints_needing_certificates() -> None:
    data = ProvisioningData(
        hostname="h",
        username="u",
        public_keys=(
            PublicKey("/p", "AA", None),
            PublicKey("/q", "BB", "ssh-rsa x"),
            PublicKey("/r", "AA", None),
        ),
        key_pairs=(KeyPair("/k", "CC"),),
    )
    assert data.fingerprints == ("AA", "CC")


def test_secrets_do_not_show() -> None:
    data = merge(OVF, IMDS)
    assert OVF.password is not None
    secret = OVF.password.reveal()
    for text in (repr(data), str(data), f"{data}", f"{data.password}", repr(data.password)):
        assert secret not in text
    assert OVF.custom_data is not None and OVF.custom_data not in repr(data)
    with pytest.raises(TypeError):
        pickle.dumps(data)
    assert Secret("x") != "x"
