"""Helpers for the sandboxed provisioning tests: an ovf-env.xml builder and `scenario()`.

`scenario(tmp, spec)` runs `tests/inside.py` in a fresh sandbox with a private network
namespace and returns its result (see that module); `files(result)` decodes the snapshot.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple
from xml.sax.saxutils import escape

from tests.sandbox import sandbox_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "Sandbox-Pa55word-7c1e"  # searched for in everything a run leaves behind


def ovf(
    *,
    hostname: str = "waprov-vm",
    user: str = "azureuser",
    password: Optional[str] = None,
    disable_password_auth: Optional[str] = "true",  # noqa: S107 (an OVF switch, not a password)
    keys: Sequence[Tuple[str, Optional[str], Optional[str]]] = (),  # (path, fingerprint, value)
    key_pairs: Sequence[Tuple[str, str]] = (),  # (path, fingerprint)
    custom_data: Optional[str] = None,
    provision_guest_agent: str = "true",
) -> str:
    parts = [f"<HostName>{escape(hostname)}</HostName>", f"<UserName>{escape(user)}</UserName>"]
    if password is not None:
        parts.append(f"<UserPassword>{escape(password)}</UserPassword>")
    if disable_password_auth is not None:
        parts.append(
            f"<DisableSshPasswordAuthentication>{disable_password_auth}</DisableSshPasswordAuthentication>"
        )
    pk = "".join(
        "<PublicKey>"
        + (f"<Fingerprint>{fp}</Fingerprint>" if fp else "")
        + f"<Path>{escape(path)}</Path>"
        + (f"<Value>{escape(value)}</Value>" if value else "")
        + "</PublicKey>"
        for path, fp, value in keys
    )
    kp = "".join(
        f"<KeyPair><Fingerprint>{fp}</Fingerprint><Path>{escape(p)}</Path></KeyPair>" for p, fp in key_pairs
    )
    parts.append(f"<SSH><PublicKeys>{pk}</PublicKeys><KeyPairs>{kp}</KeyPairs></SSH>")
    if custom_data is not None:
        parts.append(f"<CustomData>{custom_data}</CustomData>")
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1" '
        'xmlns:wa="http://schemas.microsoft.com/windowsazure">\n'
        "<wa:ProvisioningSection><wa:Version>1.0</wa:Version>\n"
        '<LinuxProvisioningConfigurationSet xmlns="http://schemas.microsoft.com/windowsazure">\n'
        "<ConfigurationSetType>LinuxProvisioningConfiguration</ConfigurationSetType>\n"
        + "\n".join(parts)
        + "\n</LinuxProvisioningConfigurationSet></wa:ProvisioningSection>\n"
        "<wa:PlatformSettingsSection><wa:Version>1.0</wa:Version><wa:PlatformSettings>"
        f"<wa:ProvisionGuestAgent>{provision_guest_agent}</wa:ProvisionGuestAgent>"
        "</wa:PlatformSettings></wa:PlatformSettingsSection>\n</Environment>\n"
    )


def user_key(tmp: str, name: str = "id_ed25519") -> Tuple[str, str]:
    """A fresh ed25519 key pair in `tmp`: (private key path, public key line)."""
    path = os.path.join(tmp, name)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test@waprov", "-f", path], check=True
    )
    with open(path + ".pub", encoding="ascii") as f:
        return path, f.read().strip()


def scenario(tmp: str, spec: Dict[str, Any], timeout: float = 240) -> Dict[str, Any]:
    out = os.path.join(tmp, "out")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "spec.json"), "w", encoding="utf-8") as f:
        json.dump(spec, f)
    p = sandbox_run(
        [sys.executable, "-m", "tests.inside", "/run/out/spec.json", "/run/out/result.json"],
        f"cd {ROOT}",
        net=True,
        out=out,
        timeout=timeout,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    path = os.path.join(out, "result.json")
    if p.returncode != 0 or not os.path.exists(path):
        raise AssertionError(f"the sandbox failed (exit {p.returncode}):\n{p.stdout}\n{p.stderr}")
    with open(path, encoding="utf-8") as f:
        result: Dict[str, Any] = json.load(f)
    return result


def files(result: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The snapshot with file contents decoded to bytes under "bytes"."""
    out = {}
    for path, entry in result["snapshot"].items():
        entry = dict(entry)
        if "data" in entry:
            entry["bytes"] = base64.b64decode(entry.pop("data"))
        out[path] = entry
    return out


def text(result: Dict[str, Any], path: str) -> str:
    data: bytes = files(result)[path]["bytes"]
    return data.decode("utf-8")


def health_state(body: str) -> str:
    """A health report's body as "State" or "State/SubStatus"."""
    state = re.search(r"<State>(.*?)</State>", body)
    sub = re.search(r"<SubStatus>(.*?)</SubStatus>", body)
    return (state.group(1) if state else "?") + (f"/{sub.group(1)}" if sub else "")


def health_states(result: Dict[str, Any]) -> List[str]:
    """Each health report of a sandbox run, in order (see health_state)."""
    return [health_state(r["body"]) for r in result["requests"] if r["route"] == "health"]
