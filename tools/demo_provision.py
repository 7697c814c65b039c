"""`make demo`, the main part: a full `waprov -provision` in a sandbox against the fake fabric.

A private mount/UTS/PID/network namespace with overlays over /etc, /home, /var, ... (the
level-2 sandbox of tests/sandbox.sh): real useradd, usermod, visudo, ssh-keygen, openssl
and sshd run there, and nothing on this host changes. Shows the dry-run plan, the run's
log, a summary, a second boot (nothing to do) and a real ssh login with the new key.
"""

from __future__ import annotations

import base64
import os
import re
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.provisioning import PASSWORD, files, health_states, ovf, scenario, text, user_key  # noqa: E402

KEYS = "/home/azureuser/.ssh/authorized_keys"
CUSTOM = "#!/bin/sh\necho hello from custom data > /var/lib/waagent/custom-data-ran\n"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="waprov-demo-") as tmp:
        priv, pub = user_key(tmp)
        document = ovf(
            hostname="demo-vm",
            password=PASSWORD,
            disable_password_auth="true",  # noqa: S106 (an OVF switch, not a password)
            keys=[(KEYS, None, pub), (KEYS, "{THUMBPRINT}", None)],
            key_pairs=[("$HOME/azureuser/.ssh/id_rsa", "{THUMBPRINT}")],
            custom_data=base64.b64encode(CUSTOM.encode()).decode(),
        )
        spec = {
            "ovf": document,
            "conf": "Provisioning.ExecuteCustomData=y\n",
            "runs": [{"args": ["-provision", "--dry-run"]}, {}, {}],
            "sshd": {"user": "azureuser", "key": priv},
            "search": PASSWORD,
            "faults": {"goalstate": [["status", 503]]},
        }
        print("\n== waprov -provision in a sandbox (namespaces + overlays; this host is not changed) ==")
        r = scenario(tmp, spec)
    dry, real, again = r["runs"]
    print("\n$ waprov -provision --dry-run      # the plan: nothing changed, nothing sent")
    for line in dry["stdout"].splitlines():
        print("  " + line)
    print(f"\n$ waprov -provision                # exit code {real['rc']}")
    for line in real["stderr"].splitlines():
        print("  " + re.sub(r"^\S+ ", "", line))
    snap = files(r)
    print("\nSummary")
    print(f"  hostname        {r['hostname']} (/etc/hostname: {text(r, '/etc/hostname')!r})")
    user = next(x for x in text(r, "/etc/passwd").splitlines() if x.startswith("azureuser:"))
    print(f"  user            {user}")
    shadow = next(x for x in text(r, "/etc/shadow").splitlines() if x.startswith("azureuser:"))
    print(f"  password hash   {shadow.split(':')[1][:20]}... (usermod -p)")
    print(f"  sudoers         {text(r, '/etc/sudoers.d/waagent').strip()}")
    for line in text(r, KEYS).splitlines():
        print(f"  authorized key  {line[:60]}...")
    key = snap["/home/azureuser/.ssh/id_rsa"]
    print(f"  key pair        ~/.ssh/id_rsa mode {key['mode']:04o}, uid {key['uid']}")
    print(f"  custom data     ran: {text(r, '/var/lib/waagent/custom-data-ran').strip()!r}")
    print(f"  reports         {' -> '.join(health_states(r))}")
    print(f"  time            {real['seconds']:.2f}s for the run (one goal-state 503 retried)")
    said = again["stderr"].splitlines()[-1][28:]
    print(f"  second boot     exit {again['rc']} in {again['seconds']:.2f}s: {said}")
    ssh = r["sshd"]
    print(
        f"  ssh login       key: {'accepted' if ssh['key_rc'] == 0 else 'REFUSED'} as {ssh['key_stdout']!r};"
    )
    print(f"                  {ssh['methods'] or '?'} offered (password authentication disabled)")
    print(f"  admin password  found in {len(r['found_in'])} files written by the run")
    return 0 if real["rc"] == 0 and again["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
