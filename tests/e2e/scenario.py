"""An e2e scenario: one VM (tests/e2e/vm.py), its fake fabric, its DVD, its logs, and the
questions the tests ask about them.

Everything a scenario leaves is kept in `$WAPROV_E2E_LOGS/<name>/` (tools/e2e sets it
to .cache/e2e/logs): console-bootN.log, fabric.jsonl (every request the fake
wireserver and IMDS received, in order of arrival), qemu's own output, and what the
tests copied out of the guest. The directory is emptied when the scenario starts again.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from contextlib import contextmanager
from fnmatch import fnmatch
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from tests.e2e.vm import WIRESERVER, Guest, GuestError, make_dvd, wait_for
from tests.fakefabric import FakeFabric, Fault, Request
from tests.provisioning import health_state, user_key

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
BOOT_TIMEOUT = 300.0  # qemu start to the first answer of the agent under test (TCG)
_CREATED: List[Scenario] = []


def created() -> List[Scenario]:
    return _CREATED


def images() -> str:
    path = os.environ.get("WAPROV_E2E_IMAGES", "")
    if not path or not os.path.exists(os.path.join(path, "waprov.img")):
        raise GuestError("WAPROV_E2E_IMAGES names no built e2e image: run the e2e tests with `make e2e`")
    return path


def logs_root() -> str:
    return os.environ.get("WAPROV_E2E_LOGS") or os.path.join(images(), "..", "logs")


def agent_of(req: Request) -> str:
    """Who sent a request: waprov, the guest agent ("ga") or cloud-init."""
    headers = {k.lower(): v for k, v in req.headers.items()}
    ua = headers.get("user-agent", "")
    if ua.startswith("waprov/"):
        return "waprov"
    if ua.lower().startswith("cloud-init"):
        return "cloud-init"
    if ua.startswith("WALinuxAgent") or headers.get("x-ms-agent-name") == "WALinuxAgent":
        return "ga"
    return "other:" + ua


def state_of(req: Request) -> str:
    """A health report as "State" or "State/SubStatus"."""
    return health_state(req.body.decode("utf-8", "replace"))


def contains_bytes(path: str, needle: bytes) -> bool:
    """Does the file hold `needle` anywhere? Reads only its data extents (sparse images)."""
    chunk = 8 << 20
    with open(path, "rb") as f:
        fd = f.fileno()
        end = os.fstat(fd).st_size
        pos = 0
        while pos < end:
            try:
                pos = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                return False
            hole = os.lseek(fd, pos, os.SEEK_HOLE)
            f.seek(pos)
            while pos < hole:
                # overlap the chunks so a needle across a boundary is seen
                data = f.read(min(chunk, hole - pos) + len(needle))
                if needle in data:
                    return True
                pos += min(chunk, hole - pos)
                f.seek(pos)
    return False


class Scenario:
    def __init__(
        self,
        name: str,
        *,
        user: str,
        ovf: Optional[Callable[[str], str]],
        imds: Callable[[str], Dict[str, Any]],
        variant: str = "waprov",
        faults: Iterable[Tuple[str, Fault]] = (),
        azure_asset_tag: bool = False,
    ) -> None:
        self.name, self.user = name, user
        _CREATED.append(self)
        self.dir = os.path.join(logs_root(), name)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        # the user's fresh key pair: `ovf` and `imds` make the documents from its public line
        self.key, self.pub = user_key(self.dir)
        self.vm_uuid = str(uuid.uuid4())
        doc = imds(self.pub)
        doc["compute"]["vmId"] = self.vm_uuid
        self.fabric = FakeFabric(
            os.path.join(self.dir, "fabric-state"),
            imds=doc,
            log_file=os.path.join(self.dir, "fabric.jsonl"),
            advertise=WIRESERVER,
        ).start()
        for route, fault in faults:
            self.fabric.script(route, fault)
        dvd = None
        if ovf is not None:
            dvd = os.path.join(self.dir, "ovf.iso")
            make_dvd(dvd, ovf(self.pub))
        self.guest = Guest(
            os.path.join(self.dir, "vm"), images(), variant, self.vm_uuid, self.fabric, dvd, azure_asset_tag
        )

    # ---- the fabric's view -------------------------------------------------------------------

    def requests(self) -> List[Request]:
        return self.fabric.all_requests()

    def health(self, agent: str) -> List[str]:
        return [state_of(r) for r in self.requests() if r.route == "health" and agent_of(r) == agent]

    def _first(self, what: str, match: Callable[[Request], bool], timeout: float) -> Request:
        """The first request `match` accepts, waiting for it while qemu runs."""

        def probe() -> Optional[Request]:
            found = next((r for r in self.requests() if match(r)), None)
            if found is None and not self.guest.running():
                raise GuestError(f"qemu exited while waiting for {what}")
            return found

        return wait_for(what, probe, timeout)

    def wait_health(
        self, agents: Tuple[str, ...], final: Tuple[str, ...], timeout: float = BOOT_TIMEOUT
    ) -> Request:
        """The first health report of one of `agents` whose state ("State" or
        "State/SubStatus") is one of `final`."""
        return self._first(
            f"a health report {final} from {agents}",
            lambda r: r.route == "health" and agent_of(r) in agents and state_of(r) in final,
            timeout,
        )

    def wait_request(self, agent: str, after: float, timeout: float) -> Request:
        return self._first(
            f"a request from {agent}", lambda r: agent_of(r) == agent and r.time >= after, timeout
        )

    # ---- the guest -----------------------------------------------------------------------------

    def root_cmd(self, command: str, password: Optional[str] = None) -> str:
        """Run `command` as root in the guest (ssh as the user with the key, then sudo,
        with `password` when the sudoers rule asks for it); its stdout."""
        user = self.user
        if password is None:
            p = self.guest.ssh(user, f"sudo -n sh -c {shlex.quote(command)}", key=self.key)
        else:
            p = self.guest.ssh(
                user, f"sudo -S -p '' sh -c {shlex.quote(command)}", key=self.key, stdin=password + "\n"
            )
        if p.returncode != 0:
            raise GuestError(f"in the guest, `{command}` failed ({p.returncode}): {p.stderr.strip()}")
        return p.stdout

    def kernel_start(self) -> float:
        """The host's monotonic time at which the guest kernel started, from the guest's
        /proc/uptime (its CLOCK_MONOTONIC, the base of systemd's timestamps) read over ssh.
        The file is read at the end of the ssh session (after the connection set-up,
        which takes seconds under TCG), so the session's end is the closer host time;
        the estimate is late by the session's tear-down (tenths of a second)."""
        p = self.guest.ssh(self.user, "cat /proc/uptime", key=self.key)
        after = time.monotonic()
        if p.returncode != 0:
            raise GuestError(f"cat /proc/uptime failed: {p.stderr.strip()}")
        return after - float(p.stdout.split()[0])

    def _read(self, command: str) -> subprocess.CompletedProcess[str]:
        """A read-only command over ssh, tried again after a dropped connection (ssh's exit
        code 255: cloud-init restarts sshd after its late host keys, while it is read)."""
        for _ in range(3):
            p = self.guest.ssh(self.user, command, key=self.key)
            if p.returncode != 255:
                break
            time.sleep(2)
        return p

    def unit_times(self, *units: str) -> Dict[str, Dict[str, Any]]:
        """systemd's view of `units` in the running guest (ssh as the user with the key):
        per unit, "start" (left inactive: its start job began), "active" (became active)
        and "end" (became active, or inactive again after its start: a unit skipped by
        its ExecCondition) in seconds of the guest's CLOCK_MONOTONIC (since its kernel
        started; None when it never did), "condition" (False: skipped by a Condition)
        and "state" (ActiveState/Result)."""
        props = ["Id", "InactiveExitTimestampMonotonic", "ActiveEnterTimestampMonotonic",
                 "InactiveEnterTimestampMonotonic", "ConditionResult", "ActiveState", "Result"]  # fmt: skip
        command = " ".join(["systemctl show", *(f"-p {p}" for p in props), *map(shlex.quote, units)])
        p = self._read(command)
        if p.returncode != 0:
            raise GuestError(f"systemctl show failed ({p.returncode}): {p.stderr.strip()}")
        found: Dict[str, Dict[str, Any]] = {}
        for block in p.stdout.strip().split("\n\n"):
            shown = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            usec = {k: int(shown.get(k) or 0) for k in props[1:4]}
            start, active = usec["InactiveExitTimestampMonotonic"], usec["ActiveEnterTimestampMonotonic"]
            inactive = usec["InactiveEnterTimestampMonotonic"]
            end = active or (inactive if start and inactive >= start else 0)
            found[shown["Id"]] = {
                "start": start / 1e6 or None,
                "active": active / 1e6 or None,
                "end": end / 1e6 or None,
                "condition": shown.get("ConditionResult") == "yes",
                "state": f"{shown.get('ActiveState')}/{shown.get('Result')}",
            }
        missing = [u for u in units if u not in found]
        if missing:
            raise GuestError(f"systemctl show said nothing of {missing}: {p.stdout!r}")
        return found

    def host_keys_written(self) -> Optional[float]:
        """When the last of /etc/ssh/ssh_host_*_key.pub was written, in seconds of the
        guest's CLOCK_MONOTONIC (from its modification time and the guest's wall clock
        read together with its uptime); None when there is none."""
        command = (
            "cat /proc/uptime; date +%s.%N; "
            "find /etc/ssh -maxdepth 1 -name 'ssh_host_*_key.pub' -printf '%T@\\n' | sort -n | tail -n 1"
        )
        p = self._read(command)
        lines = p.stdout.split("\n")
        if p.returncode != 0 or len(lines) < 3:
            raise GuestError(f"reading the host keys' times failed ({p.returncode}): {p.stderr.strip()}")
        uptime, wall, written = float(lines[0].split()[0]), float(lines[1]), lines[2].strip()
        return float(written) - (wall - uptime) if written else None

    def journal(self, *args: str, password: Optional[str] = None) -> str:
        """This boot's journal (`journalctl -b -o short-monotonic` with `args`), as root."""
        return self.root_cmd(
            "journalctl -b --no-pager -o short-monotonic " + " ".join(map(shlex.quote, args)), password
        )

    def save(self, name: str, text: str) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def os_disk_file(self, path: str) -> Optional[str]:
        """A file of the powered-off guest's OS disk (debugfs on a raw copy), or None when
        the file system has no such file; any other debugfs failure is an error."""
        with self._raw_os_disk() as raw:
            return _debugfs_cat(raw, path)

    def os_disk_files(self, directory: str, pattern: str) -> Dict[str, str]:
        """The regular files of `directory` on the powered-off guest's OS disk whose names
        match `pattern` (fnmatch): name → text. One raw copy for all of them."""
        with self._raw_os_disk() as raw:
            p = subprocess.run(["debugfs", "-R", f"ls -p {directory}", raw], capture_output=True, text=True)
            # one line per entry: /inode/mode/uid/gid/name/size/
            entries = [line.split("/") for line in p.stdout.splitlines() if line.startswith("/")]
            files = [e[5] for e in entries if len(e) == 8 and e[2].startswith("10")]  # mode 10xxxx: regular
            names = [name for name in files if fnmatch(name, pattern)]
            if p.returncode != 0 or not entries:
                raise GuestError(f"debugfs could not list {directory} in {raw}: {p.stderr.strip()}")
            found = {}
            for name in sorted(names):
                text = _debugfs_cat(raw, f"{directory.rstrip('/')}/{name}")
                if text is not None:
                    found[name] = text
            return found

    @contextmanager
    def _raw_os_disk(self) -> Iterator[str]:
        raw = os.path.join(self.dir, "os.raw")
        subprocess.run(["qemu-img", "convert", "-O", "raw", self.guest.os_disk, raw], check=True)
        try:
            yield raw
        finally:
            os.unlink(raw)

    def stop(self) -> None:
        try:
            if self.guest.running():
                self.guest.poweroff()
        finally:
            self.guest.kill()
            self.fabric.stop()

    def where(self, tail: int = 0) -> str:
        """Where the scenario's logs are; with `tail`, also the fabric's requests and the
        console's last lines (what CI shows of a failure, as its log files stay behind)."""
        text = (
            f"scenario {self.name}: console log {self.guest.console or '(not started)'}, "
            f"fabric log {os.path.join(self.dir, 'fabric.jsonl')}"
        )
        if not tail:
            return text
        t0 = self.guest.started
        seen = [
            f"  {r.time - t0:7.1f}s {agent_of(r)} {r.method} {r.path}"
            + (f" {state_of(r)}" if r.route == "health" else "")
            for r in self.requests()
        ]
        lines = [ANSI.sub("", line) for line in self.guest.console_text().splitlines()[-tail:]]
        head = [text, "requests the fabric received (seconds after qemu started):"]
        tail_head = f"last {len(lines)} lines of the console:"
        return "\n".join([*head, *seen, tail_head, *("  " + x for x in lines)])


def _debugfs_cat(raw: str, path: str) -> Optional[str]:
    """A file of the ext4 image `raw`, or None when it has none at `path`."""
    p = subprocess.run(["debugfs", "-R", f"cat {path}", raw], capture_output=True, text=True)
    # debugfs exits 0 either way; its stderr says what happened (after its banner)
    said = [line.strip() for line in p.stderr.splitlines() if line.strip()]
    said = [line for line in said if not line.startswith("debugfs 1.")]
    if said == [f"{path}: File not found by ext2_lookup"]:
        return None
    if p.returncode != 0 or said:
        raise GuestError(f"debugfs could not read {path} from {raw}: {p.stderr.strip()}")
    return p.stdout


def record_timing(name: str, values: Dict[str, Any], merge: bool = False) -> None:
    """Write `name`'s timings (`merge`: add `values` to those recorded already). Under a
    lock: scenarios of two pytest-xdist workers may record at the same time."""
    path = os.path.join(logs_root(), "timings.json")
    with open(path + ".lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data: Dict[str, Any] = {}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        data[name] = {**data.get(name, {}), **values} if merge else values
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
        os.replace(path + ".tmp", path)
