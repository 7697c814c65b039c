"""Which accounts provisioning accepts, run for real (sandbox, real useradd, visudo, sudo).

A user name that sudoers reads as something else (`ALL`) and an account outside
login.defs' UID_MIN..UID_MAX (`nobody`) are refused before any sudoers line or key is
written; `sudo -l -U` of another account shows what the sudoers files grant it.
"""

from __future__ import annotations

from typing import Any, Dict, List

from tests.provisioning import files, health_states, ovf, scenario, text, user_key
from tests.test_provision_sandbox import SWAPPED_ID, failure_report

SNAP = ["/etc/passwd", "/etc/sudoers.d", "/home", "/var/lib/waprov", "/nonexistent"]
NOT_ALLOWED = "User bob is not allowed to run sudo on"


def users(r: Dict[str, Any]) -> List[str]:
    return [line.split(":")[0] for line in text(r, "/etc/passwd").splitlines()]


def sudo_list(r: Dict[str, Any], i: int) -> str:
    after = r["runs"][0]["after"][i]
    assert after["rc"] == 0, after
    out: str = after["stdout"]
    return out


def test_user_name_all_is_refused_and_gives_no_account_sudo(tmp_path: Any) -> None:
    r = scenario(str(tmp_path), {
        "ovf": ovf(user="ALL"), "imds": None, "setup": ["useradd -m bob"], "snapshot": SNAP,
        "runs": [{"after": ["sudo -l -U bob"]}],
    })  # fmt: skip
    listing = sudo_list(r, 0)
    assert NOT_ALLOWED in listing and "NOPASSWD" not in listing, listing
    assert "/etc/sudoers.d/waagent" not in r["snapshot"]
    assert "ALL" not in users(r) and "/home/ALL" not in r["snapshot"]
    assert r["runs"][0]["rc"] == 1, r["runs"][0]["stderr"]
    assert health_states(r)[-1] == "NotReady/ProvisioningFailed"
    report = failure_report(r)
    assert (report["step"], report["reason"]) == ("user", "invalid user name")
    assert "UserName 'ALL' cannot be used: ALL is the sudoers keyword for every user" in report["error"]
    assert "/var/lib/waprov/user" not in r["snapshot"]


def test_a_provisioned_user_gets_sudo_and_another_account_nothing_and_the_account_is_recorded(
    tmp_path: Any,
) -> None:
    _, pub = user_key(str(tmp_path))
    r = scenario(str(tmp_path), {
        "ovf": ovf(keys=[("/home/azureuser/.ssh/authorized_keys", None, pub)]), "setup": ["useradd -m bob"],
        "snapshot": SNAP, "runs": [{"after": ["sudo -l -U bob", "sudo -l -U azureuser"]}],
    })  # fmt: skip
    assert r["runs"][0]["rc"] == 0, r["runs"][0]["stderr"]
    other, own = sudo_list(r, 0), sudo_list(r, 1)
    assert NOT_ALLOWED in other and "NOPASSWD" not in other
    assert "(ALL) NOPASSWD: ALL" in own  # the same command sees the provisioned user's rule
    uid = next(
        line.split(":")[2] for line in text(r, "/etc/passwd").splitlines() if line.startswith("azureuser:")
    )
    assert text(r, "/var/lib/waprov/user") == f"{SWAPPED_ID} azureuser {uid} created\n"
    assert files(r)["/var/lib/waprov/user"]["mode"] == 0o600


def test_nobody_above_uid_max_is_refused_before_sudoers_and_keys(tmp_path: Any) -> None:
    _, pub = user_key(str(tmp_path))
    r = scenario(str(tmp_path), {
        "ovf": ovf(user="nobody", keys=[("/nonexistent/.ssh/authorized_keys", None, pub)]), "imds": None,
        "snapshot": SNAP, "runs": [{"after": ["sudo -l -U nobody"]}],
    })  # fmt: skip
    assert "NOPASSWD" not in sudo_list(r, 0)
    assert "/etc/sudoers.d/waagent" not in r["snapshot"]
    assert not any(p.startswith("/nonexistent") for p in r["snapshot"])
    assert r["runs"][0]["rc"] == 1, r["runs"][0]["stderr"]
    assert health_states(r)[-1] == "NotReady/ProvisioningFailed"
    report = failure_report(r)
    assert (report["step"], report["reason"]) == ("user", "system user refused")
    assert "User nobody is not a regular user (uid 65534 > UID_MAX 60000)" in report["error"]
    assert "/var/lib/waprov/user" not in r["snapshot"]
