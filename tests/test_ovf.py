"""ovf-env.xml parsing and validation (WA §4.1, §4.3) on fixture files and variants."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import DATA
from waprov.errors import ProtocolError
from waprov.model import KeyPair, PublicKey, Secret
from waprov.ovf import OvfEnv, parse_ovf, strip_password
from waprov.sources import merge

with open(os.path.join(DATA, "ovf", "full.xml"), "rb") as _f:
    FULL = _f.read()
FULL_TEXT = FULL.decode()
PASSWORD = "P@ssw0rd-in-ovf"


def variant(old: str, new: str) -> bytes:
    assert old in FULL_TEXT, old
    return FULL_TEXT.replace(old, new, 1).encode()


def test_the_full_azure_layout() -> None:
    env = parse_ovf(FULL)
    assert (env.version, env.hostname, env.username) == ("1.0", "test-vm-01", "azureuser")
    assert env.password == Secret(PASSWORD)
    assert env.custom_data == "Q3VzdG9tRGF0YQ=="
    assert env.disable_ssh_password_auth is False
    assert env.public_keys == (
        PublicKey(
            "$HOME/azureuser/.ssh/authorized_keys",
            "8979F1AC8C4215827BF3B5A403E6137B504D02A4",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly test@example",
        ),
        PublicKey(
            "/home/azureuser/.ssh/authorized_keys",
            None,
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQFakeSecond second@example",
        ),
    )
    assert env.key_pairs == (
        KeyPair("$HOME/azureuser/.ssh/id_rsa", "F6ABAA61098A301EBB8A571C3C7CF77F355F7FA9"),
    )
    assert env.provision_guest_agent == "false"
    assert merge(env, None).guest_agent_disabled is True
    assert env.provision_guest_proxy_agent == "true"
    assert env.preprovisioned_vm == "false"
    assert env.preprovisioned_vm_type is None  # i:nil element: no text


def rename(name: str, new: str) -> bytes:
    """Rename an element (opening and closing tag, whatever its prefix)."""
    text = re.sub(
        r"<(/?)((?:\w+:)?)" + name + r"\b", lambda m: "<" + m.group(1) + m.group(2) + new, FULL_TEXT
    )
    assert text != FULL_TEXT
    return text.encode()


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (rename("Environment", "Environmentx"), "Environment"),
        (rename("ProvisioningSection", "Other"), "ProvisioningSection"),
        (rename("Version", "Versionx"), "Version"),
        (
            rename("LinuxProvisioningConfigurationSet", "WindowsProvisioningConfigurationSet"),
            "LinuxProvisioningConfigurationSet",
        ),
        (variant("<HostName>test-vm-01</HostName>", ""), "HostName"),
        (variant("<HostName>test-vm-01</HostName>", "<HostName></HostName>"), "HostName"),
        (variant("<UserName>azureuser</UserName>", "<UserName/>"), "UserName"),
        (rename("PlatformSettingsSection", "Other"), "PlatformSettingsSection"),
        (rename("PlatformSettings", "Settings"), "PlatformSettings"),
        (variant("<wa:ProvisionGuestAgent>false</wa:ProvisionGuestAgent>", ""), "ProvisionGuestAgent"),
        (
            variant(
                "<wa:ProvisionGuestAgent>false</wa:ProvisionGuestAgent>",
                "<wa:ProvisionGuestAgent></wa:ProvisionGuestAgent>",
            ),
            "ProvisionGuestAgent",
        ),
    ],
)
def test_a_missing_required_element_fails_with_waagents_message(data: bytes, what: str) -> None:
    with pytest.raises(ProtocolError) as e:
        parse_ovf(data)
    assert str(e.value) == f"Failed to validate OVF: {what} not found"


def test_the_version_is_the_first_anywhere_under_environment() -> None:
    text = FULL_TEXT.replace("<wa:Version>1.0</wa:Version>", "", 1)
    text = text.replace("<wa:Version>1.0</wa:Version>", "<wa:Version>2.0</wa:Version>")
    assert parse_ovf(text.encode()).version == "2.0"  # the PlatformSettingsSection's one


def test_disable_ssh_password_authentication_true_only_for_the_text_true() -> None:
    tag = "<DisableSshPasswordAuthentication>false</DisableSshPasswordAuthentication>"
    assert parse_ovf(variant(tag, "")).disable_ssh_password_auth is False
    assert parse_ovf(variant(tag, tag.replace("false", "TRUE"))).disable_ssh_password_auth is True
    assert parse_ovf(variant(tag, tag.replace("false", " true"))).disable_ssh_password_auth is False
    assert parse_ovf(variant(tag, tag.replace("false", "yes"))).disable_ssh_password_auth is False


def test_text_is_untrimmed_and_cdata_only_is_absent() -> None:
    env = parse_ovf(variant("<HostName>test-vm-01</HostName>", "<HostName> spaced\n</HostName>"))
    assert env.hostname == " spaced\n"
    env = parse_ovf(
        variant("<CustomData>Q3VzdG9tRGF0YQ==</CustomData>", "<CustomData><![CDATA[abc]]></CustomData>")
    )
    assert env.custom_data is None


def test_prefixes_do_not_matter_only_namespace_uris() -> None:
    text = re.sub(r"\bwa:", "azns:", FULL_TEXT).replace("xmlns:wa=", "xmlns:azns=")
    assert parse_ovf(text.encode()) == parse_ovf(FULL)
    wrong = FULL_TEXT.replace(
        'xmlns:wa="http://schemas.microsoft.com/windowsazure"', 'xmlns:wa="http://example.com/other"'
    )
    with pytest.raises(ProtocolError, match="ProvisioningSection not found"):
        parse_ovf(wrong.encode())


@pytest.mark.parametrize("value", ["FALSE", "False", "true", "", " ", "bad data"])
def test_guest_agent_is_disabled_only_by_false_in_any_case(value: str) -> None:
    tag = "<wa:ProvisionGuestAgent>false</wa:ProvisionGuestAgent>"
    new = tag.replace(">false<", ">" + value + "<")
    if value == "":
        with pytest.raises(ProtocolError):
            parse_ovf(variant(tag, new))
        return
    env = parse_ovf(variant(tag, new))
    assert env.provision_guest_agent == value
    assert merge(env, None).guest_agent_disabled is (value.lower() == "false")


def test_both_spellings_of_preprovisioned_vm_type() -> None:
    nil = '<wa:PreprovisionedVMType i:nil="true" />'
    assert (
        parse_ovf(
            variant(nil, "<wa:PreprovisionedVMType>Savable</wa:PreprovisionedVMType>")
        ).preprovisioned_vm_type
        == "Savable"
    )
    assert (
        parse_ovf(
            variant(nil, "<wa:PreprovisionedVmType>Running</wa:PreprovisionedVmType>")
        ).preprovisioned_vm_type
        == "Running"
    )


def test_bom_and_encoding_rules() -> None:
    assert parse_ovf(b"\xef\xbb\xbf" + FULL) == parse_ovf(FULL)
    with pytest.raises(ProtocolError, match=r"not UTF-8 text \(invalid byte 0xe9 on line 7\)"):
        parse_ovf(variant("test-vm-01", "t\u00e9st").decode().encode("latin-1"))
    with pytest.raises(ProtocolError, match="too large"):
        parse_ovf(FULL + b" " * (1024 * 1024))


@pytest.mark.parametrize(
    "doc",
    [
        b"<Environment",
        b"not xml at all",
        b"",
        b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]><x>&b;</x>',
        b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/shadow">]><x>&e;</x>',
    ],
)
def test_malformed_and_hostile_xml_are_typed_errors(doc: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_ovf(doc)


def test_the_password_never_shows_in_repr_str_or_format() -> None:
    env = parse_ovf(FULL)
    assert env.password is not None
    for shown in (repr(env), str(env), f"{env.password}", str(env.password), repr(env.password)):
        assert PASSWORD not in shown
    assert env.password.reveal() == PASSWORD


# ---- the saved copy --------------------------------------------------------------------------


def test_the_saved_copy_differs_only_in_the_password() -> None:
    out = strip_password(FULL_TEXT)
    assert out == FULL_TEXT.replace(PASSWORD, "*")


@pytest.mark.parametrize(
    "element",
    [
        "<UserPassword>secret-1</UserPassword>",
        "<wa:UserPassword>secret-1</wa:UserPassword>",
        "<UserPassword>secret-1\nsecond line</UserPassword>",
        '<UserPassword xml:space="preserve">secret-1</UserPassword >',
        "<UserPassword><![CDATA[secret-1</UserPassword>]]></UserPassword>",
        "<UserPassword>secret-1<!-- c --></UserPassword>",
    ],
)
def test_every_password_form_is_replaced_by_a_star(element: str) -> None:
    text = FULL_TEXT.replace(f"<UserPassword>{PASSWORD}</UserPassword>", element)
    out = strip_password(text)
    assert "secret-1" not in out
    assert "second line" not in out
    env = parse_ovf(out.encode())
    assert env.password == Secret("*")
    assert env.hostname == "test-vm-01"


# ---- property: any document gives a model or a typed error -----------------------------------

_pieces = st.sampled_from(
    [
        "<Environment xmlns='http://schemas.dmtf.org/ovf/environment/1'>",
        "</Environment>",
        "<wa:ProvisioningSection xmlns:wa='http://schemas.microsoft.com/windowsazure'>",
        "</wa:ProvisioningSection>",
        "<Version xmlns='http://schemas.microsoft.com/windowsazure'>1.0</Version>",
        "<LinuxProvisioningConfigurationSet xmlns='http://schemas.microsoft.com/windowsazure'>",
        "</LinuxProvisioningConfigurationSet>",
        "<HostName>h</HostName>",
        "<UserName>u</UserName>",
        "<UserPassword>p</UserPassword>",
        "<PublicKey><Value>ssh-rsa x</Value></PublicKey>",
        "<PlatformSettingsSection xmlns='http://schemas.microsoft.com/windowsazure'>",
        "</PlatformSettingsSection>",
        "<PlatformSettings>",
        "</PlatformSettings>",
        "<ProvisionGuestAgent>true</ProvisionGuestAgent>",
        "<![CDATA[x]]>",
        "&amp;",
        "&bogus;",
        "<",
        ">",
        "text",
        "\ufeff",
        "<?xml version='1.0'?>",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_pieces, max_size=20).map("".join), st.binary(max_size=8))
def test_any_document_gives_a_model_or_a_typed_error(text: str, noise: bytes) -> None:
    for data in (text.encode(), noise + text.encode()):
        try:
            env = parse_ovf(data)
        except ProtocolError as e:
            assert str(e)
            continue
        assert isinstance(env, OvfEnv)
        assert isinstance(env.hostname, str) and isinstance(env.username, str)


@pytest.mark.parametrize(
    "bad", ["/root/secretkey", "../../../srv/x/evil", "F6ABAA61098A301EBB8A571C3C7CF77F355F7FA", " " * 40]
)
def test_a_key_pair_fingerprint_that_is_not_a_thumbprint_is_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(ProtocolError, match=r"the Fingerprint of SSH KeyPair 1 \(.*\) is not a certificate"):
        parse_ovf(variant("F6ABAA61098A301EBB8A571C3C7CF77F355F7FA9", bad))


def test_a_public_key_fingerprint_is_checked_only_when_the_key_has_no_value() -> None:
    with_value = variant("8979F1AC8C4215827BF3B5A403E6137B504D02A4", "not-a-thumbprint")
    assert parse_ovf(with_value).public_keys[0].fingerprint == "not-a-thumbprint"  # unused, as in WA
    without = with_value.decode().replace(
        "<Value>ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly test@example</Value>", ""
    )
    assert "<Value>ssh-ed25519" not in without
    with pytest.raises(ProtocolError, match=r"the Fingerprint of SSH PublicKey 1 \('not-a-thumbprint'\)"):
        parse_ovf(without.encode())
