"""IMDS: parsing on fixtures and generated documents, fetching with faults (scaled delays)."""

from __future__ import annotations

import json
import os
from typing import Any, Dict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import DATA, virtual_clock, waits
from tests.fakefabric import GARBAGE, RESET, FakeFabric, delay, status
from waprov.errors import ProtocolError
from waprov.http import HttpClient
from waprov.imds import ImdsData, fetch_imds, parse_imds
from waprov.model import PublicKey
from waprov.timing import Clock

with open(os.path.join(DATA, "imds", "instance.json"), "rb") as _f:
    INSTANCE = _f.read()


def doc(**profile: Any) -> bytes:
    return json.dumps({"compute": {"osProfile": profile}}).encode()


def test_the_fixture_document() -> None:
    assert parse_imds(INSTANCE) == ImdsData(
        vm_id="5c08b38e-4d57-4c23-ac45-aca61037f084",
        admin_username="imdsadmin",
        computer_name="imds-computer",
        disable_password_authentication=True,
        public_keys=(
            PublicKey(
                "/home/imdsadmin/.ssh/authorized_keys",
                None,
                "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDfakekeytail generated-by-azure",
            ),
            PublicKey(
                "/home/imdsadmin/.ssh/authorized_keys",
                None,
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGcQZxJ52KBCCrbKNTGnXoO5c0MmCaCcI869YxPrOxw+ second",
            ),
        ),
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("false", False),
        ("True", True),
        (True, True),
        (False, False),
        ("", None),
        (None, None),
    ],
)
def test_disable_password_authentication_as_string_or_bool(value: object, expected: object) -> None:
    assert parse_imds(doc(disablePasswordAuthentication=value)).disable_password_authentication is expected


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (doc(disablePasswordAuthentication="yes"), "disablePasswordAuthentication: expected true or false"),
        (doc(disablePasswordAuthentication=1), "disablePasswordAuthentication: expected true or false"),
        (doc(adminUsername=["root"]), "compute.osProfile.adminUsername: expected a string"),
        (b'{"compute": []}', "IMDS compute: expected an object"),
        (b'{"compute": {"publicKeys": {"a": 1}}}', "compute.publicKeys: expected a list"),
        (b'{"compute": {"publicKeys": ["ssh-rsa x"]}}', "compute.publicKeys[0]: expected an object"),
        (
            b'{"compute": {"publicKeys": [{"keyData": 5}]}}',
            "compute.publicKeys[0].keyData: expected a string",
        ),
        (b"[1, 2]", "IMDS returned a JSON list, expected an object"),
        (b"\xff\xfe", "not JSON"),
        (b"{", "not JSON"),
    ],
)
def test_bad_documents_name_the_field(data: bytes, field: str) -> None:
    with pytest.raises(ProtocolError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_imds(data)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_any_json_gives_data_or_a_typed_error(value: object) -> None:
    for wrapped in (value, {"compute": value}, {"compute": {"osProfile": value, "publicKeys": value}}):
        try:
            parse_imds(json.dumps(wrapped).encode())
        except ProtocolError:
            pass


def test_fetch_sends_metadata_header_and_extended_query(fabric: FakeFabric, client: HttpClient) -> None:
    data = fetch_imds(client, fabric.imds_url, 300)
    assert data.admin_username == "azureuser"
    (req,) = fabric.requests_for("imds")
    assert req.path == "/metadata/instance?api-version=2021-08-01&extended=true"
    assert req.headers["Metadata"] == "true"


@pytest.mark.parametrize("code", [404, 410, 429, 500, 503])
def test_retryable_statuses_wait_one_second(
    fabric: FakeFabric, client: HttpClient, clock: Clock, code: int
) -> None:
    fabric.script("imds", status(code), status(code))
    assert fetch_imds(client, fabric.imds_url, 300).vm_id is not None
    assert waits(clock) == [1.0, 1.0]


def test_garbage_and_resets_are_retried(fabric: FakeFabric, client: HttpClient, clock: Clock) -> None:
    fabric.script("imds", GARBAGE, RESET, GARBAGE)
    assert fetch_imds(client, fabric.imds_url, 300).computer_name == "imds-host"
    assert waits(clock) == [1.0, 0.1, 1.0]  # a dropped connection is retried at once (http.py)


def test_garbage_until_the_deadline_is_an_error(fabric: FakeFabric) -> None:
    clock = virtual_clock()
    fabric.script("imds", *[GARBAGE] * 10)
    with pytest.raises(ProtocolError, match=r"^IMDS: GET .* gave up at its 3s deadline.*not JSON"):
        fetch_imds(HttpClient(clock), fabric.imds_url, 3)
    assert waits(clock) == [1.0, 1.0, 1.0]


def test_forbidden_is_not_retried(fabric: FakeFabric, client: HttpClient, clock: Clock) -> None:
    fabric.script("imds", status(403, b"forbidden"))
    with pytest.raises(ProtocolError, match="HTTP 403: forbidden"):
        fetch_imds(client, fabric.imds_url, 300)
    assert clock.slept == []


def test_bad_request_falls_back_to_the_older_api_version(fabric: FakeFabric, client: HttpClient) -> None:
    fabric.script("imds", status(400, b'{"error": "Invalid api-version"}'))
    assert fetch_imds(client, fabric.imds_url, 300).vm_id is not None
    assert [r.path for r in fabric.requests_for("imds")] == [
        "/metadata/instance?api-version=2021-08-01&extended=true",
        "/metadata/instance?api-version=2019-06-01&extended=true",
    ]


def test_a_hanging_imds_is_given_up_at_the_deadline(fabric: FakeFabric) -> None:
    fabric.script("imds", delay(2.0), delay(2.0))
    clock = Clock(0.1)  # deadline 3 s -> 0.3 s; each request times out at the remaining time
    with pytest.raises(ProtocolError, match=r"IMDS: GET .* gave up"):
        fetch_imds(HttpClient(clock), fabric.imds_url, 3)


def test_a_field_error_in_a_200_is_not_retried(tmp_path: str) -> None:
    bad: Dict[str, Any] = {"compute": {"osProfile": {"disablePasswordAuthentication": "maybe"}}}
    with FakeFabric(str(tmp_path), imds=bad, with_certificates=False) as fabric:
        clock = Clock(0.001)
        with pytest.raises(ProtocolError, match="expected true or false"):
            fetch_imds(HttpClient(clock), fabric.imds_url, 300)
        assert clock.slept == [] and len(fabric.requests_for("imds")) == 1
