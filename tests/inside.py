"""Runs inside a level-2 sandbox: the fake fabric, the real `waprov -provision`, a snapshot.

`python3 -m tests.inside SPEC.json RESULT.json`. The spec says what to put on the host
first (`files`, `setup` shell lines, `conf`), what the fabric serves (`ovf` with
`{THUMBPRINT}` filled in, `imds`, `faults`, `goal_state` ids), and the runs (`args`, `env`, `crash_after`,
`before`, `stdin`, `sigint_after`, `snapshot`, `modules`: the names in the run's
`sys.modules` as it exits, under the run's `modules`; `after`: shell lines run when the run has
ended, whose output is kept under the run's `after`; `parallel_with_next`: the next run
starts without waiting for this one, both then run at once). The result holds each run's
exit code and output (in the order of the runs), the requests the fabric received, a
snapshot of the files under `snapshot` roots (type, mode, owner, bytes) and, with
`"sshd": true`, what a real sshd on 127.0.0.1 did with the provisioned key and with a
password attempt. Tests assert on the result; nothing here decides pass or fail.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Tuple

from tests.fakefabric import DEFAULT_IMDS, FakeFabric, Fault, delay, status

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(ROOT, "bin", "waprov")
MAX_SNAPSHOT_FILE = 1 << 20
VM_ID = "544CDFD0-CB4E-4B4A-9954-5BDF3ED5C3B8"
SNAPSHOT = ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/hostname", "/etc/sudoers", "/etc/sudoers.d",
            "/etc/ssh", "/home", "/var/lib/waagent", "/var/lib/waprov", "/etc/dhcp")  # fmt: skip


def _fault(spec: List[Any]) -> Fault:
    kind = spec[0]
    if kind == "status":
        return status(int(spec[1]))
    if kind == "delay":
        return delay(float(spec[1]))
    return Fault(kind)


def snapshot(roots: List[str]) -> Dict[str, Dict[str, Any]]:
    out: Dict[str, Dict[str, Any]] = {}

    def one(path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        entry: Dict[str, Any] = {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
        if stat.S_ISLNK(st.st_mode):
            entry["type"] = "link"
            entry["target"] = os.readlink(path)
        elif stat.S_ISDIR(st.st_mode):
            entry["type"] = "dir"
            for name in sorted(os.listdir(path)):
                one(os.path.join(path, name))
        else:
            entry["type"] = "file"
            entry["size"] = st.st_size
            if st.st_size <= MAX_SNAPSHOT_FILE:  # a snapshot root must not drag in a whole cache
                with open(path, "rb") as f:
                    entry["data"] = base64.b64encode(f.read()).decode("ascii")
        out[path] = entry

    for root in roots:
        one(root)
    return out


def search(needle: bytes) -> List[str]:
    """Every file the sandbox wrote that holds `needle`: the upper layers of the overlays
    (/run/sandbox) and the rest of /run, except the fabric's and the test's own files."""
    hits = []
    for top in ("/run",):
        for dirpath, _, names in os.walk(top):
            if dirpath.startswith(("/run/fabric", "/run/ovf", "/run/out")):
                continue
            for name in names:
                path = os.path.join(dirpath, name)
                try:
                    with open(path, "rb") as f:
                        if needle in f.read():
                            hits.append(path)
                except OSError:
                    pass
    return sorted(set(hits))


def sshd_checks(user: str, key_file: str) -> Dict[str, Any]:
    """A real sshd on 127.0.0.1:2200: key login as `user`, and the methods it offers."""
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    sshd = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-p", "2200", "-o", "ListenAddress=127.0.0.1", "-o", "UseDNS=no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    common = ["-p", "2200", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    common += ["-o", "ConnectTimeout=10"]
    try:
        for _ in range(100):
            if (
                subprocess.run(["ssh-keyscan", "-p", "2200", "127.0.0.1"], capture_output=True).returncode
                == 0
            ):
                break
            time.sleep(0.05)
        key = subprocess.run(
            ["ssh", *common, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", key_file,
             f"{user}@127.0.0.1", "id -un"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        probe = subprocess.run(
            ["ssh", "-v", *common, "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no",
             "-o", "PreferredAuthentications=password,keyboard-interactive", f"{user}@127.0.0.1", "true"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        sshd.terminate()
        _, err = sshd.communicate(timeout=10)
    methods = [
        line.split("continue:", 1)[1].strip() for line in probe.stderr.splitlines() if "continue:" in line
    ]
    return {
        "key_rc": key.returncode,
        "key_stdout": key.stdout.strip(),
        "key_stderr": key.stderr[-2000:],
        "methods": methods[0] if methods else "",
        "sshd_stderr": err.decode("utf-8", "replace")[-2000:],
    }


def execute(run: Dict[str, Any], env: Dict[str, str], entry: Dict[str, Any]) -> None:
    """One run of the launcher; its exit code, output and duration into `entry`."""
    started = time.monotonic()
    argv = [sys.executable, LAUNCHER, *run.get("args", ["-provision"])]
    modules_file = f"/run/modules-{id(entry)}.json"
    if run.get("modules"):  # the launcher run as __main__, sys.modules written as it exits
        code = (
            "import atexit, json, runpy, sys; out = sys.argv.pop(1); "
            "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted(sys.modules)))); "
            "sys.argv.pop(0); runpy.run_path(sys.argv[0], run_name='__main__')"
        )
        argv = [sys.executable, "-c", code, modules_file, LAUNCHER, *argv[2:]]
    try:
        if run.get("sigint_after") is not None:  # SIGINT while it waits at a prompt
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
            time.sleep(run["sigint_after"])
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
            p = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        else:
            stdin = run.get("stdin")  # None: stdin is /dev/null (closed for a prompt)
            p = subprocess.run(
                argv, input=stdin if stdin is not None else None,
                stdin=subprocess.DEVNULL if stdin is None else None,
                capture_output=True, text=True, env=env, timeout=300,
            )  # fmt: skip
    except Exception as e:  # reported in the entry: the thread has no caller
        entry["error"] = f"{type(e).__name__}: {e}"
        return
    entry.update(rc=p.returncode, stdout=p.stdout, stderr=p.stderr, seconds=time.monotonic() - started)
    if run.get("modules"):
        with open(modules_file, encoding="utf-8") as f:
            entry["modules"] = json.load(f)


def main(spec_path: str, result_path: str) -> int:
    with open(spec_path, encoding="utf-8") as f:
        spec: Dict[str, Any] = json.load(f)
    for path, content in spec.get("files", {}).items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(content)
    if spec.get("conf") is not None:  # as on an image after `waprov -enable` (a test may override it)
        with open("/etc/waagent.conf", "w", encoding="utf-8") as fh:
            fh.write("Provisioning.Agent=disabled\n" + spec["conf"])
    for line in spec.get("setup", []):
        subprocess.run(["bash", "-euo", "pipefail", "-c", line], check=True)
    imds = spec.get("imds", DEFAULT_IMDS)
    result: Dict[str, Any] = {"runs": []}
    ids = spec.get("goal_state", {})  # incarnation, container_id, instance_id: as the XML holds them
    with FakeFabric("/run/fabric", imds=imds, log_file="/run/fabric/requests.jsonl", **ids) as fabric:
        for route, faults in spec.get("faults", {}).items():
            fabric.script(route, *(_fault(x) for x in faults))
        env = dict(os.environ)
        env.update(
            WAPROV_WIRESERVER=fabric.wireserver,
            WAPROV_IMDS=fabric.imds_url
            if spec.get("imds", DEFAULT_IMDS) is not None
            else "http://127.0.0.1:9",
            WAPROV_VM_ID=spec.get("vm_id", VM_ID),
            WAPROV_RETRY_SCALE=str(spec.get("scale", 0.001)),
        )
        if spec.get("ovf") is not None:
            os.makedirs("/run/ovf", exist_ok=True)
            with open("/run/ovf/ovf-env.xml", "w", encoding="utf-8") as fh:
                fh.write(spec["ovf"].replace("{THUMBPRINT}", fabric.tenant_thumbprint))
            env["WAPROV_OVF_DIR"] = "/run/ovf"
        result["thumbprint"] = fabric.tenant_thumbprint
        derived = subprocess.run(
            ["ssh-keygen", "-y", "-f", fabric.tenant_key], capture_output=True, text=True
        )
        result["tenant_ssh_key"] = derived.stdout.strip()  # derived from the private key, not the certificate
        with open(fabric.tenant_key, "rb") as fk:
            result["tenant_key"] = base64.b64encode(fk.read()).decode("ascii")
        runs = spec.get("runs", [{}])
        group: List[Tuple[int, threading.Thread]] = []  # runs under way together
        for i, run in enumerate(runs):
            run_env = dict(env, **run.get("env", {}))
            if run.get("crash_after"):
                run_env["WAPROV_CRASH_AFTER"] = run["crash_after"]
            for line in run.get("before", []):
                subprocess.run(["bash", "-euo", "pipefail", "-c", line], check=True)
            entry: Dict[str, Any] = {}
            result["runs"].append(entry)
            thread = threading.Thread(target=execute, args=(run, run_env, entry))
            thread.start()
            group.append((i, thread))
            if run.get("parallel_with_next") and i + 1 < len(runs):
                continue
            for j, t in group:  # the group is over when all its runs are
                t.join()
                if "rc" not in result["runs"][j]:
                    raise RuntimeError(f"run {j} did not finish: {result['runs'][j]}")
                if runs[j].get("snapshot"):
                    result["runs"][j]["snapshot"] = snapshot(runs[j]["snapshot"])
                after = [subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=60)
                         for line in runs[j].get("after", [])]  # fmt: skip
                result["runs"][j]["after"] = [
                    {"rc": a.returncode, "stdout": a.stdout, "stderr": a.stderr} for a in after
                ]
            group = []
        result["requests"] = [
            {"route": r.route, "path": r.path, "body": r.body.decode("utf-8", "replace")}
            for r in fabric.requests
        ]
        result["hostname"] = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
        if spec.get("sshd"):
            result["sshd"] = sshd_checks(spec["sshd"]["user"], spec["sshd"]["key"])
        result["snapshot"] = snapshot(spec.get("snapshot", list(SNAPSHOT)))
        if spec.get("search"):
            result["found_in"] = search(spec["search"].encode("utf-8"))
        for extra in spec.get("logs", ["/var/log/waprov.log"]):
            try:
                with open(extra, encoding="utf-8", errors="replace") as fh:
                    result.setdefault("logs", {})[extra] = fh.read()
            except OSError:
                pass
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
