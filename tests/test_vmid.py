"""VM instance id: SMBIOS UUID byte order, sources in order, comparison rules (WA §2.4)."""

from __future__ import annotations

import os

import pytest

from tests.fakerunner import ScriptedRunner, fail
from waprov.overrides import Overrides
from waprov.system import System
from waprov.vmid import instance_id, same_vm, swap_uuid


def test_the_first_three_groups_are_byte_swapped_case_kept() -> None:
    assert swap_uuid("544CDFD0-CB4E-4B4A-9954-5BDF3ED5C3B8") == "D0DF4C54-4ECB-4A4B-9954-5BDF3ED5C3B8"
    assert swap_uuid("544cdfd0-cb4e-4b4a-9954-5bdf3ed5c3b8") == "d0df4c54-4ecb-4a4b-9954-5bdf3ed5c3b8"


def test_product_uuid_then_dmidecode_then_nothing(tmp_path: str) -> None:
    root = str(tmp_path)
    runner = ScriptedRunner(dmidecode=lambda argv, data: (0, b"544CDFD0-CB4E-4B4A-9954-5BDF3ED5C3B8\n", b""))
    system = System(root=root, runner=runner)
    assert instance_id(system, Overrides()) == "D0DF4C54-4ECB-4A4B-9954-5BDF3ED5C3B8"
    assert runner.calls == [["dmidecode", "--string", "system-uuid"]]
    os.makedirs(f"{root}/sys/class/dmi/id")
    with open(f"{root}/sys/class/dmi/id/product_uuid", "w") as f:
        f.write("11223344-5566-7788-9900-aabbccddeeff\n")
    assert instance_id(system, Overrides()) == "44332211-6655-8877-9900-aabbccddeeff"
    assert instance_id(system, Overrides(vm_id="00000001-0002-0003-0004-000000000005")) == (
        "01000000-0200-0300-0004-000000000005"
    )


@pytest.mark.parametrize("runner", [ScriptedRunner(), ScriptedRunner(dmidecode=fail("no SMBIOS"))])
def test_no_source_gives_an_empty_id(tmp_path: str, runner: ScriptedRunner) -> None:
    assert instance_id(System(root=str(tmp_path), runner=runner), Overrides()) == ""


def test_a_value_that_is_not_a_uuid_gives_an_empty_id(tmp_path: str) -> None:
    runner = ScriptedRunner(dmidecode=lambda argv, data: (0, b"Not Settable\n", b""))
    assert instance_id(System(root=str(tmp_path), runner=runner), Overrides()) == ""


def test_a_stored_id_matches_in_either_order_and_case() -> None:
    current = "D0DF4C54-4ECB-4A4B-9954-5BDF3ED5C3B8"
    assert same_vm("d0df4c54-4ecb-4a4b-9954-5bdf3ed5c3b8", current)
    assert same_vm("544CDFD0-CB4E-4B4A-9954-5BDF3ED5C3B8\n", current)
    assert not same_vm("11111111-4ECB-4A4B-9954-5BDF3ED5C3B8", current)
    assert not same_vm("", current) and not same_vm(current, "")
