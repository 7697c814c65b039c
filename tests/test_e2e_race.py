"""`make e2e-race`'s verdict and summary (tests/e2e/race.py), on made-up rounds."""

from __future__ import annotations

from typing import Dict, Optional

from tests.e2e.race import login_check, summarise


def round_of(
    waprov_login: Optional[float], cloudinit_login: Optional[float]
) -> Dict[str, Dict[str, Optional[float]]]:
    return {
        "waprov": {"local": 20.0, "keys": 40.0, "ready": 41.0, "login": waprov_login},
        "cloudinit": {"local": 15.0, "keys": 60.0, "ready": 34.0, "login": cloudinit_login},
    }


def test_waprovs_login_by_0_7_of_cloud_inits_in_every_round_passes() -> None:
    assert login_check([round_of(42.0, 69.4), round_of(48.5, 70.0)]) == []  # 0.61, 0.69 (48.5 < 49.0)


def test_one_round_over_0_7_fails_naming_it_with_the_numbers() -> None:
    failed = login_check([round_of(42.0, 69.4), round_of(47.9, 66.0), round_of(None, 60.0)])
    assert failed == [
        "round 2: waprov's login 47.9s > 0.7 × cloud-init's 66.0s = 46.2s",
        "round 3: waprov's login - > 0.7 × cloud-init's 60.0s = 42.0s",
    ]


def test_summary_medians_and_ranges() -> None:
    summary = summarise([round_of(42.0, 69.4), round_of(48.5, 70.0), round_of(40.0, 80.0)])
    assert summary["waprov"]["login"] == {"median_s": 42.0, "min_s": 40.0, "max_s": 48.5,
                                          "samples_s": [42.0, 48.5, 40.0]}  # fmt: skip
    assert summary["cloudinit"]["keys"]["median_s"] == 60.0
