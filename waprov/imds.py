"""IMDS: the instance metadata document and the fields provisioning uses (peers §3.2).

`fetch_imds(client, base)` GETs `<base>/metadata/instance?api-version=2021-08-01&extended=true`
with `Metadata: true`, never through a proxy, retrying transport errors and 404, 410,
429, 500-504 at a fixed interval until the policy's deadline (an unparsable 200 is
retried too); a 400 falls back once to api-version 2019-06-01, as cloud-init does.
`parse_imds(bytes)` returns a frozen `ImdsData` or a ProtocolError naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from waprov.errors import ProtocolError
from waprov.http import HttpClient, HttpStatusError, Response, RetryPolicy
from waprov.model import PublicKey

IMDS_BASE = "http://169.254.169.254"
API_VERSION = "2021-08-01"
FALLBACK_API_VERSION = "2019-06-01"
RETRY = frozenset({404, 410, 429, 500, 502, 503, 504})


def imds_policy(deadline: float) -> RetryPolicy:
    """A fixed 1 s interval until `deadline`: 300 s when IMDS is the only source, a few
    seconds when the DVD already gave the data (IMDS then only adds to it)."""
    return RetryPolicy(
        "imds",
        attempts=1_000_000,
        delay=1.0,
        backoff="fixed",
        retry_statuses=RETRY,
        throttle_statuses=frozenset(),
        deadline=deadline,
        timeout=min(30.0, deadline),
    )


@dataclass(frozen=True)
class ImdsData:
    vm_id: Optional[str] = None
    admin_username: Optional[str] = None
    computer_name: Optional[str] = None
    disable_password_authentication: Optional[bool] = None
    public_keys: Tuple[PublicKey, ...] = ()


def _obj(doc: Dict[str, Any], key: str, where: str) -> Dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ProtocolError(f"IMDS {where}{key}: expected an object, got {type(value).__name__}")
    return value


def _str(doc: Dict[str, Any], key: str, where: str) -> Optional[str]:
    value = doc.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"IMDS {where}{key}: expected a string, got {type(value).__name__}")
    return value


def _flag(value: object) -> Optional[bool]:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ProtocolError(
        "IMDS compute.osProfile.disablePasswordAuthentication: expected true or false, got "
        + repr(value)[:40]
    )


def _load(data: bytes) -> Dict[str, Any]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"IMDS returned a document that is not JSON: {str(e)[:100]}") from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"IMDS returned a JSON {type(doc).__name__}, expected an object")
    return doc


def parse_imds(data: bytes) -> ImdsData:
    doc = _load(data)
    compute = _obj(doc, "compute", "")
    profile = _obj(compute, "osProfile", "compute.")
    raw_keys = compute.get("publicKeys") or []
    if not isinstance(raw_keys, list):
        raise ProtocolError(f"IMDS compute.publicKeys: expected a list, got {type(raw_keys).__name__}")
    keys = []
    for i, entry in enumerate(raw_keys):
        if not isinstance(entry, dict):
            raise ProtocolError(f"IMDS compute.publicKeys[{i}]: expected an object")
        value = _str(entry, "keyData", f"compute.publicKeys[{i}].")
        if value is None:
            continue
        value = value.replace("\r", "").replace("\n", "")
        keys.append(PublicKey(path=_str(entry, "path", f"compute.publicKeys[{i}]."), value=value))
    return ImdsData(
        vm_id=_str(compute, "vmId", "compute."),
        admin_username=_str(profile, "adminUsername", "compute.osProfile."),
        computer_name=_str(profile, "computerName", "compute.osProfile."),
        disable_password_authentication=_flag(profile.get("disablePasswordAuthentication")),
        public_keys=tuple(keys),
    )


def _accept(resp: Response) -> Optional[str]:
    """A 200 that is not a JSON object is retried (IMDS restarting); a JSON object with
    a bad field is not: it will not get better."""
    try:
        _load(resp.body)
    except ProtocolError as e:
        return str(e)
    return None


def fetch_imds(client: HttpClient, base: str, deadline: float) -> ImdsData:
    """The parsed instance document; ProtocolError when IMDS cannot give one in time."""
    policy = imds_policy(deadline)
    for version in (API_VERSION, FALLBACK_API_VERSION):
        url = f"{base}/metadata/instance?api-version={version}&extended=true"
        try:
            resp = client.request(
                "GET", url, policy, headers={"Metadata": "true"}, internal=True, accept=_accept
            )
        except HttpStatusError as e:
            if e.status == 400 and version == API_VERSION:
                continue
            raise ProtocolError(f"IMDS: {e}") from None
        except ProtocolError as e:
            raise ProtocolError(f"IMDS: {e}") from None
        return parse_imds(resp.body)
    raise AssertionError("unreachable")
