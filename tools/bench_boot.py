"""`make bench`, part 5: the boot path in two phases, and WALinuxAgent beside waprov.

Medians over RUNS fresh sandboxes (tests/inside.py, the fake fabric; the OVF of
bench_provision.py: a password user with an SSH key, no certificates, WALinuxAgent's
defaults):
a. the done check of every later boot on a provisioned VM: the whole process
   `waprov -provision -local` (interpreter start included), and the shell gate before it,
   init/waprov-boot-check (waprov-local.service's ExecCondition; a tmpfs over /sys/class
   holds the DMI id the container lacks);
b. a full one-process `waprov -provision`: the process's wall time, the run's own time and
   the commands' floor (its log line "Provisioning complete (Xs, of which Ys in commands)");
c. the network side's import: in a fresh interpreter that has imported everything the local
   phase imports (its sys.modules at exit, recorded in a sandbox), the time to import what
   the network phase adds to it (requests, waprov.http, .report, .wireserver, .imds, .certs,
   .network, ...), with an `-X importtime` breakdown; and the modules of the local phase
   (a first boot's, and the done check's) searched for any of the network side;
d. WALinuxAgent 2.7.3's own provisioning (tests/inside_wa.py: its `provision` command, the
   same OVF and fabric; what stands in for Azure is listed there and printed below).
Both agents' code is byte-compiled first, as their packages leave it on a VM (the sandbox's
read-only file system cannot store bytecode: without it every run compiles from source).
`python3 tools/bench_boot.py [RUNS]`; run with the project's venv interpreter.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.inside import VM_ID  # noqa: E402
from tests.inside_wa import WA_DIR  # noqa: E402
from tests.provisioning import PASSWORD, health_states, ovf, scenario, user_key  # noqa: E402
from tests.sandbox import sandbox_run  # noqa: E402

RUNS = 7
CHECKS = 5  # done checks per sandbox
GATE_RUNS = 20  # boot-check runs per sandbox
IMPORT_RUNS = 15
DONE = re.compile(r"Provisioning complete \(([0-9.]+)s, of which ([0-9.]+)s in commands\)")
CHECK = os.path.join(ROOT, "init", "waprov-boot-check")
DMI = "/sys/class/dmi/id/product_uuid"
LOCAL_RUN: Dict[str, Any] = {"args": ["-provision", "-local"]}
# the network side: what the local phase must not import (and the roots of what c. times)
NETWORK_SIDE = ("waprov.http", "waprov.health", "waprov.wireserver", "waprov.imds", "waprov.certs",
                "http.client", "ssl")  # fmt: skip
NETWORK_PACKAGES = ("requests", "urllib3", "charset_normalizer", "idna", "certifi")
GOAL_WALL, GOAL_IMPORT = 0.300, 0.150
MARK = "----bench-boot-mark----"
IMPORT_CODE = """
import sys, time
sys.path.insert(0, sys.argv[1])
local, network = sys.argv[2].split(","), sys.argv[3].split(",")
for name in local:
    try:
        __import__(name)
    except Exception:
        pass
sys.stderr.write("{mark}\\n")
started = time.perf_counter()
missing = []
for name in network:
    try:
        __import__(name)
    except Exception:
        missing.append(name)
print(time.perf_counter() - started, ",".join(missing))
""".replace("{mark}", MARK)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:6.0f} ms"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def byte_compile() -> None:
    """waprov/ and WALinuxAgent's code as their packages leave them: compiled."""
    for python, tree in ((sys.executable, os.path.join(ROOT, "waprov")), ("/usr/bin/python3", WA_DIR)):
        if os.path.isdir(tree):
            subprocess.run([python, "-m", "compileall", "-q", tree], check=True, stdout=subprocess.DEVNULL)


def time_gate(check: str, runs: int) -> int:
    """Inside a sandbox (a run's `after`): the boot check's wall times, and /bin/true's."""
    gate, true = [], []
    rcs, out = set(), ""
    for _ in range(runs):
        t = time.perf_counter()
        p = subprocess.run([check], capture_output=True, text=True, check=False)
        gate.append(time.perf_counter() - t)
        rcs.add(p.returncode)
        out = p.stdout
        t = time.perf_counter()
        subprocess.run(["/bin/true"], check=True)
        true.append(time.perf_counter() - t)
    print(json.dumps({"gate": gate, "true": true, "rcs": sorted(rcs), "stdout": out}))
    return 0


def network_side(modules: Sequence[str]) -> List[str]:
    return sorted(m for m in modules if m in NETWORK_SIDE or m.split(".")[0] in NETWORK_PACKAGES)


def provisioned_runs(tmp: str, document: str, runs: int) -> Dict[str, Any]:
    """a. and b.: per sandbox a full run, CHECKS done checks, one more with its modules
    recorded, then the boot check timed."""
    gate = (
        f"mount -t tmpfs dmi /sys/class && mkdir -p {os.path.dirname(DMI)} && echo {VM_ID} > {DMI} && "
        f"{sys.executable} {os.path.abspath(__file__)} --time-gate {CHECK} {GATE_RUNS}"
    )
    spec = {
        "ovf": document,
        "snapshot": [],
        "runs": [{}, *([LOCAL_RUN] * CHECKS), dict(LOCAL_RUN, modules=True, after=[gate])],
    }
    out: Dict[str, Any] = {"wall": [], "run": [], "floor": [], "check": [], "gate": [], "true": [],
                           "check_modules": set()}  # fmt: skip
    for i in range(runs):
        r = scenario(os.path.join(tmp, f"done{i}"), spec)
        full, *checks = r["runs"]
        m = DONE.search(full["stderr"])
        if full["rc"] != 0 or not m or health_states(r) != ["NotReady/Provisioning", "Ready"]:
            raise RuntimeError(f"the provisioning run failed:\n{full['stderr']}")
        out["wall"].append(full["seconds"])
        out["run"].append(float(m.group(1)))
        out["floor"].append(float(m.group(2)))
        for c in checks:
            if c["rc"] != 0 or "Provisioning already completed" not in c["stderr"]:
                raise RuntimeError(f"a done check failed:\n{c['stderr']}")
        out["check"] += [c["seconds"] for c in checks[:-1]]  # the last one ran under runpy
        out["check_modules"] |= set(checks[-1]["modules"])
        after = checks[-1]["after"][0]
        if after["rc"] != 0:
            raise RuntimeError(f"timing the boot check failed:\n{after['stderr']}")
        timed = json.loads(after["stdout"])
        if timed["rcs"] != [1] or "nothing to do" not in timed["stdout"]:
            raise RuntimeError(f"the boot check did not skip the provisioned VM: {timed}")
        out["gate"] += timed["gate"]
        out["true"] += timed["true"]
    return out


def phase_modules(tmp: str, document: str) -> Tuple[List[str], List[str]]:
    """The modules of a first boot's local phase and of the network phase after it."""
    runs = [dict(LOCAL_RUN, modules=True), {"modules": True}]
    r = scenario(os.path.join(tmp, "phases"), {"ovf": document, "snapshot": [], "runs": runs})
    local, network = r["runs"]
    if local["rc"] != 0 or network["rc"] != 0 or not DONE.search(network["stderr"]):
        raise RuntimeError(f"the two phases failed:\n{local['stderr']}\n{network['stderr']}")
    return local["modules"], network["modules"]


def _category(name: str) -> str:
    top = name.split(".")[0]
    if top == "waprov":
        return "waprov"
    return "requests & co" if top in NETWORK_PACKAGES else "stdlib"


def import_times(
    local: Sequence[str], added: Sequence[str], runs: int
) -> Tuple[List[float], Dict[str, float], str]:
    """c.: fresh interpreters; the added modules' import time after the local ones, and
    the median `-X importtime` self time of the added modules by kind."""
    names = [m for m in local if m not in ("__main__", "sitecustomize")]
    argv = ["-W", "ignore", "-c", IMPORT_CODE, ROOT, ",".join(names), ",".join(added)]
    times, missing = [], ""
    kinds: Dict[str, List[float]] = {}
    for _ in range(runs):
        p = subprocess.run([sys.executable, *argv], capture_output=True, text=True, check=True, cwd=ROOT)
        fields = [*p.stdout.split(), ""]
        times.append(float(fields[0]))
        missing = fields[1]
    for _ in range(runs):
        p = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True,
                           check=True, cwd=ROOT)  # fmt: skip
        sums: Dict[str, float] = {}
        for line in p.stderr.split(MARK, 1)[1].splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[0].startswith("import time:"):
                kind = _category(parts[2].strip())
                sums[kind] = sums.get(kind, 0.0) + int(parts[0].split(":")[1]) / 1e6
        for kind, value in sums.items():
            kinds.setdefault(kind, []).append(value)
    return times, {k: statistics.median(v) for k, v in kinds.items()}, missing


def wa_runs(tmp: str, document: str, runs: int) -> Tuple[List[Tuple[float, float, float]], str]:
    """d.: WALinuxAgent's provisioning, one fresh sandbox each: (wall, its run, its start)."""
    if not os.path.isdir(WA_DIR):
        return [], f"{WA_DIR} is missing (`make deps` unpacks Debian's waagent package there)"
    out: List[Tuple[float, float, float]] = []
    for i in range(runs):
        d = os.path.join(tmp, f"wa{i}")
        os.makedirs(d)
        with open(os.path.join(d, "spec.json"), "w", encoding="utf-8") as f:
            json.dump({"ovf": document, "vm_id": VM_ID}, f)
        p = sandbox_run(
            [sys.executable, "-m", "tests.inside_wa", "/run/out/spec.json", "/run/out/result.json"],
            f"cd {ROOT}", net=True, out=d, timeout=600, env=dict(os.environ, PYTHONPATH=ROOT),
        )  # fmt: skip
        path = os.path.join(d, "result.json")
        if p.returncode != 0 or not os.path.exists(path):
            return out, f"the sandbox failed (exit {p.returncode}): {p.stderr[-1500:]}"
        with open(path, encoding="utf-8") as f:
            r = json.load(f)
        run = r["run"]
        states = health_states(r)
        if run["rc"] != 0 or not r["provisioned"] or states != ["NotReady/Provisioning", "Ready"]:
            output = run["stdout"][-3000:] + run["stderr"][-1500:]
            return out, f"WALinuxAgent did not provision (health reports {states}):\n{output}"
        out.append((run["seconds"], run["run"], run["start"]))
    return out, ""


def show(label: str, seconds: float, note: str = "") -> None:
    print(f"  {label:<40} {seconds * 1000:6.0f} ms" + (f"   {note}" if note else ""))


def main(argv: List[str]) -> int:
    if argv[:1] == ["--time-gate"]:
        return time_gate(argv[1], int(argv[2]))
    runs = int(argv[0]) if argv else RUNS
    byte_compile()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="waprov-bench-") as tmp:
        _, pub = user_key(tmp)
        document = ovf(password=PASSWORD, keys=[("/home/azureuser/.ssh/authorized_keys", None, pub)])
        done = provisioned_runs(tmp, document, runs)
        local, network = phase_modules(tmp, document)
        added_set = set(network) - set(local)
        added = sorted(m for m in added_set if m.startswith("waprov.")) + sorted(
            m for m in added_set if not m.startswith("waprov.")
        )
        imports, kinds, missing = import_times(local, added, IMPORT_RUNS)
        wa, wa_error = wa_runs(tmp, document, runs)
    print(f"boot path ({sys.executable}; {runs} fresh sandboxes; medians; {os.cpu_count()} CPUs, load "
          f"average {load[0]:.1f} at the start: other jobs ran beside, the numbers are noisy)")  # fmt: skip
    print("  (waprov/ and WALinuxAgent's code byte-compiled first, as their installed packages are)")
    print(f"a. the done check on a provisioned VM (median of {len(done['check'])}, of {len(done['gate'])}):")
    show("waprov -provision -local, whole process", statistics.median(done["check"]))
    gate, true = statistics.median(done["gate"]), statistics.median(done["true"])
    print(f"  {'init/waprov-boot-check, the shell gate':<40} {gate * 1000:6.1f} ms   "
          f"(spawning /bin/true: {true * 1000:.1f} ms)")  # fmt: skip
    wall, run, floor = (statistics.median(done[k]) for k in ("wall", "run", "floor"))
    print(f"b. waprov -provision, one process, a first boot (median of {runs}):")
    show("process wall time", wall, "(interpreter start and imports included)")
    show("provisioning run", run)
    show("commands' floor", floor, "(time spent waiting for commands)")
    imp = statistics.median(imports)
    print(
        f"c. the network side's import over the local phase's (fresh interpreters, median of {len(imports)}):"
    )
    show(
        f"the {len(added)} modules the network phase adds",
        imp,
        f"(not importable alone: {missing})" * bool(missing),
    )
    print(
        "  -X importtime self times: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in sorted(kinds.items()))
    )
    leaks = {"first boot": network_side(local), "done check": network_side(sorted(done["check_modules"]))}
    for what, names in leaks.items():
        print(f"  the local phase's imports ({what}) of the network side: {', '.join(names) or 'none'}")
    if wa:
        wa_wall, wa_run, wa_start = (statistics.median(x[i] for x in wa) for i in range(3))
        print(f"d. WALinuxAgent 2.7.3's provisioning, the same OVF and fake fabric (median of {len(wa)}):")
        show("process wall time", wa_wall, f"(waprov's: {wall / wa_wall:.0%} of it)")
        show("its provisioning command", wa_run, f"(after {wa_start * 1000:.0f} ms of imports)")
        print("  stand-ins (tests/inside_wa.py): the DVD is a read-only bind mount of the OVF's directory")
        print("  (WALinuxAgent's mount_dvd replaced by that mount, eject_dvd by nothing: the only code")
        print("  changed); 168.63.129.16 routed and relayed to the fake fabric; ifdown/ifup only set the")
        print("  link down and up (no DHCP renewal: a lower bound for WALinuxAgent)")
    else:
        print("d. WALinuxAgent 2.7.3: not measured")
        print("  " + wa_error.replace("\n", "\n  "))
    print("goals:")
    for goal, ok, value in (
        (f"whole sandbox process <= {GOAL_WALL * 1000:.0f} ms", wall <= GOAL_WALL, f"{wall * 1000:.0f} ms"),
        (f"network-side import <= {GOAL_IMPORT * 1000:.0f} ms", imp <= GOAL_IMPORT, f"{imp * 1000:.0f} ms"),
        ("the local phase imports none of the network side", not any(leaks.values()), ""),
    ):
        print(f"  {goal}: {verdict(ok)}" + (f" ({value})" if value else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
