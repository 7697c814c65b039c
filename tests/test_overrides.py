"""WAPROV_* overrides: accepted forms and clear errors naming the variable."""

from __future__ import annotations

import pytest

from waprov.errors import UsageError
from waprov.overrides import Overrides, overrides_from_env


def test_unset_and_empty_mean_not_overridden() -> None:
    assert overrides_from_env({}) == Overrides()
    assert overrides_from_env({"WAPROV_WIRESERVER": "", "WAPROV_RETRY_SCALE": ""}) == Overrides()


def test_accepted_values() -> None:
    env = {
        "WAPROV_WIRESERVER": "127.0.0.1:8080",
        "WAPROV_IMDS": "http://127.0.0.1:9090/",
        "WAPROV_OVF_DIR": "/run/ovf",
        "WAPROV_VM_ID": "5C08B38E-4D57-4C23-AC45-ACA61037F084",
        "WAPROV_RETRY_SCALE": "0.01",
    }
    assert overrides_from_env(env) == Overrides(
        "127.0.0.1:8080", "http://127.0.0.1:9090", "/run/ovf", "5C08B38E-4D57-4C23-AC45-ACA61037F084", 0.01
    )
    assert overrides_from_env({"WAPROV_WIRESERVER": "[::1]:80"}).wireserver == "[::1]:80"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WAPROV_WIRESERVER", "http://127.0.0.1"),
        ("WAPROV_WIRESERVER", "127.0.0.1:0"),
        ("WAPROV_WIRESERVER", "127.0.0.1:99999"),
        ("WAPROV_IMDS", "127.0.0.1:80"),
        ("WAPROV_OVF_DIR", "relative/dir"),
        ("WAPROV_VM_ID", "not-a-uuid"),
        ("WAPROV_RETRY_SCALE", "0"),
        ("WAPROV_RETRY_SCALE", "-1"),
        ("WAPROV_RETRY_SCALE", "nan"),
        ("WAPROV_RETRY_SCALE", "fast"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(UsageError, match=f"^environment variable {name}="):
        overrides_from_env({name: value})
