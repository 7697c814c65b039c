"""`make e2e-race`: waprov against cloud-init over several boots each: when the agent's
first unit started, when the host keys were written, Ready, and the first ssh login
with the provisioned key.

One boot is one sample and boots under TCG vary by several seconds, so this boots the
key-only VM of scenario (a) with waprov and the same VM with cloud-init (scenario (h)),
ROUNDS times each, alternating which goes first, and prints every round and the
median/min/max per agent and measure: `python3 -m tests.e2e.race ROUNDS` (tools/e2e
--race runs it in the private network namespace). Each boot is killed once its login
worked and its times were read; samples go to `$WAPROV_E2E_LOGS/race.json`.

Every time is in seconds after qemu started. The Ready POST and the login are host times
(the login polled every second); the local unit's start (waprov-local.service,
cloud-init-local.service: systemd's InactiveExitTimestampMonotonic) and the host keys'
last write (the newest /etc/ssh/ssh_host_*_key.pub) are guest times, mapped to the host's
clock through the guest's /proc/uptime read over ssh (Scenario.kernel_start).

Exit 1 when a boot did not end in Ready or its login never worked, and when waprov's
first login was not at most LOGIN_RATIO times cloud-init's in every round.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Dict, List, Optional

from tests.e2e.checks import UNITS, boot, imds, key_at
from tests.e2e.scenario import Scenario, logs_root, state_of
from tests.e2e.vm import GuestError
from tests.provisioning import ovf

AGENTS = {"waprov": ("waprov",), "cloudinit": ("cloud-init", "ga")}
# what is timed from qemu's start, in the order of a boot
MEASURES = {"local": "local unit", "keys": "host keys", "ready": "Ready", "login": "ssh login"}
LOGIN_RATIO = 0.7  # waprov's first login must come by this share of cloud-init's, every round


def one_boot(variant: str, n: int) -> Dict[str, Optional[float]]:
    """The MEASURES of one boot of `variant` (seconds after qemu started)."""
    host = f"race-{variant}"
    s = Scenario(
        f"race-{n}-{variant}",
        user="alice",
        ovf=lambda pub: ovf(hostname=host, user="alice", keys=key_at("alice", pub)),
        imds=lambda pub: imds("alice", host, pub),
        variant=variant,
        azure_asset_tag=variant == "cloudinit",
    )
    s.guest.capture = ()  # no capture: the race only times
    try:
        final = boot(s, AGENTS[variant], ssh=False)
        if state_of(final) != "Ready":
            raise GuestError(f"the final report was {state_of(final)}")
        s.guest.wait_ssh(s.user, s.key)
        login = time.monotonic() - s.guest.started
        kernel = s.kernel_start() - s.guest.started  # the guest's clock, from qemu's start
        local_unit = UNITS[variant][0]
        local = s.unit_times(local_unit)[local_unit]["start"]
        keys = s.host_keys_written()
        return {
            "local": None if local is None else round(kernel + local, 2),
            "keys": None if keys is None else round(kernel + keys, 2),
            "ready": round(final.time - s.guest.started, 2),
            "login": round(login, 2),
        }
    except GuestError as e:  # a timeout, qemu gone, not Ready: where its logs are
        raise GuestError(f"{s.where()}: {e}") from None
    finally:  # no clean power-off: the overlay goes
        s.guest.kill()
        s.fabric.stop()


def sec(value: Optional[float]) -> str:
    return "     -" if value is None else f"{value:5.1f}s"


def login_check(rounds: List[Dict[str, Dict[str, Optional[float]]]]) -> List[str]:
    """The rounds in which waprov's first login came later than LOGIN_RATIO times cloud-init's."""
    failed = []
    for n, took in enumerate(rounds, 1):
        waprov, cloudinit = took["waprov"]["login"], took["cloudinit"]["login"]
        if waprov is None or cloudinit is None or waprov > LOGIN_RATIO * cloudinit:
            failed.append(
                f"round {n}: waprov's login {sec(waprov).strip()} > {LOGIN_RATIO} × cloud-init's "
                f"{sec(cloudinit).strip()}" + (f" = {LOGIN_RATIO * cloudinit:.1f}s" if cloudinit else "")
            )
    return failed


def summarise(rounds: List[Dict[str, Dict[str, Optional[float]]]]) -> Dict[str, Dict[str, Dict[str, object]]]:
    summary: Dict[str, Dict[str, Dict[str, object]]] = {}
    for variant in AGENTS:
        summary[variant] = {}
        for m in MEASURES:
            samples = [r[variant][m] for r in rounds]
            known = [t for t in samples if t is not None]
            summary[variant][m] = {
                "median_s": statistics.median(known) if known else None,
                "min_s": min(known) if known else None,
                "max_s": max(known) if known else None,
                "samples_s": samples,
            }
    return summary


def main(argv: List[str]) -> int:
    rounds_wanted = int(argv[0]) if argv else 5
    rounds: List[Dict[str, Dict[str, Optional[float]]]] = []
    header = "  ".join(f"{label:>10}" for label in MEASURES.values())
    print(f"seconds after qemu started\nround  {'agent':<10} {header}  login ratio", flush=True)
    for n in range(1, rounds_wanted + 1):
        order = ("waprov", "cloudinit") if n % 2 else ("cloudinit", "waprov")
        took: Dict[str, Dict[str, Optional[float]]] = {}
        for variant in order:
            try:
                took[variant] = one_boot(variant, n)
            except Exception as e:  # a failed boot is reported, not timed
                print(f"race: round {n}, {variant}: {e}", file=sys.stderr)
                return 1
        rounds.append(took)
        for variant in AGENTS:
            times = "  ".join(f"{sec(took[variant][m]):>10}" for m in MEASURES)
            w, c = took["waprov"]["login"], took["cloudinit"]["login"]
            ratio = f"{w / c:.2f}" if variant == "waprov" and w and c else ""
            print(f"{n:>5}  {variant:<10} {times}  {ratio}", flush=True)
    summary = summarise(rounds)
    failed = login_check(rounds)
    with open(os.path.join(logs_root(), "race.json"), "w", encoding="utf-8") as f:
        json.dump({"agents": summary, "login_ratio_max": LOGIN_RATIO, "login_failures": failed}, f, indent=2)
    print("\nmedian (min–max) over the rounds, seconds after qemu started:")
    for variant, by in summary.items():
        cells = []
        for m, label in MEASURES.items():
            st = by[m]
            if st["median_s"] is None:
                cells.append(f"{label} -")
            else:
                cells.append(f"{label} {st['median_s']:.1f}s ({st['min_s']:.1f}–{st['max_s']:.1f})")
        print(f"  {variant:<10} " + "  ".join(cells))
    if failed:
        print(f"race FAILED: waprov's first login must come by {LOGIN_RATIO} × cloud-init's in every round:")
        for line in failed:
            print("  " + line)
        return 1
    print(f"race: waprov's first login came by {LOGIN_RATIO} × cloud-init's in every round")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
