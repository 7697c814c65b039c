"""`make e2e-race`: waprov against cloud-init over several boots each: time to Ready and
time to the first ssh login with the provisioned key.

One boot is one sample and boots under TCG vary by several seconds, so this boots the
key-only VM of scenario (a) with waprov and the same VM with cloud-init (scenario (h)),
ROUNDS times each, alternating which goes first, and prints every sample and the
median/min/max per agent and measure: `python3 -m tests.e2e.race ROUNDS` (tools/e2e
--race runs it in the private network namespace). Each boot is killed once its login
worked; samples go to `$WAPROV_E2E_LOGS/race.json`. Exit 1 when a boot did not end in
Ready or its login never worked.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Dict, List

from tests.e2e.checks import boot, imds, key_at
from tests.e2e.scenario import Scenario, logs_root, state_of
from tests.e2e.vm import GuestError
from tests.provisioning import ovf

AGENTS = {"waprov": ("waprov",), "cloudinit": ("cloud-init", "ga")}


# what is timed from qemu's start: the Ready POST, the first ssh login that worked
MEASURES = {"ready": "qemu→Ready", "login": "qemu→ssh login"}


def one_boot(variant: str, n: int) -> Dict[str, float]:
    """qemu start → the final health report of the agent under test, and → the first ssh
    login as the provisioned user with the provisioned key (seconds; polled every second)."""
    host = f"race-{variant}"
    s = Scenario(
        f"race-{n}-{variant}",
        user="alice",
        ovf=lambda pub: ovf(hostname=host, user="alice", keys=key_at("alice", pub)),
        imds=lambda pub: imds("alice", host, pub),
        variant=variant,
        azure_asset_tag=variant == "cloudinit",
    )
    try:
        final = boot(s, AGENTS[variant], ssh=False)
        if state_of(final) != "Ready":
            raise GuestError(f"the final report was {state_of(final)}")
        s.guest.wait_ssh(s.user, s.key)
        login = time.monotonic() - s.guest.started
        return {"ready": round(final.time - s.guest.started, 2), "login": round(login, 2)}
    except GuestError as e:  # a timeout, qemu gone, not Ready: where its logs are
        raise GuestError(f"{s.where()}: {e}") from None
    finally:  # no clean power-off: the overlay goes
        s.guest.kill()
        s.fabric.stop()


def main(argv: List[str]) -> int:
    rounds = int(argv[0]) if argv else 5
    samples: Dict[str, Dict[str, List[float]]] = {v: {m: [] for m in MEASURES} for v in AGENTS}
    for n in range(1, rounds + 1):
        order = ("waprov", "cloudinit") if n % 2 else ("cloudinit", "waprov")
        for variant in order:
            try:
                took = one_boot(variant, n)
            except Exception as e:  # a failed boot is reported, not timed
                print(f"race: round {n}, {variant}: {e}", file=sys.stderr)
                return 1
            for m in MEASURES:
                samples[variant][m].append(took[m])
            times = "  ".join(f"{label} {took[m]:6.1f}s" for m, label in MEASURES.items())
            print(f"round {n}  {variant:<10} {times}", flush=True)
    summary = {
        v: {
            m: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "samples_s": t}
            for m, t in by.items()
        }
        for v, by in samples.items()
    }
    with open(os.path.join(logs_root(), "race.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    for v, by in summary.items():
        for m, label in MEASURES.items():
            st = by[m]
            low, high = st["min_s"], st["max_s"]
            print(f"{v:<10} {label:<14} median {st['median_s']:.1f}s  min {low:.1f}s  max {high:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
