"""The fake fabric: a wireserver and an IMDS as real HTTP servers on 127.0.0.1.

Part of the project, not of the installed packages. Tests use it in-process
(`with FakeFabric(tmpdir) as fabric:`); `python3 -m tests.fakefabric DIR` serves until
killed, prints its addresses as one JSON line and appends every request to
DIR/requests.jsonl. Each route ("versions", "goalstate", "certificates", "health",
"imds") can be scripted with a sequence of faults that are used up one per request
before normal service resumes; every request is recorded (method, path, headers, body).
Certificates are real: a PKCS#7 envelope, encrypted to the transport certificate the
agent sends, holding a PFX with a test certificate and key made at start.
"""

from __future__ import annotations

import atexit
import base64
import fcntl
import functools
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple

IMDS_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGcQZxJ52KBCCrbKNTGnXoO5c0MmCaCcI869YxPrOxw+ imds-test-key"
ROUTES = ("versions", "goalstate", "hostingenv", "sharedconfig", "certificates", "health", "imds")
DEFAULT_IMDS: Dict[str, Any] = {
    "compute": {
        "vmId": "2f7bd0b4-5b3d-4c2a-9a52-3f1e7f2c1d10",
        "osProfile": {
            "adminUsername": "azureuser",
            "computerName": "imds-host",
            "disablePasswordAuthentication": "true",
        },
        "publicKeys": [
            {
                "keyData": IMDS_KEY + "\r\n",
                "path": "/home/azureuser/.ssh/authorized_keys",
            }
        ],
        "customData": "",
    }
}
CIPHER_OPTION = {"AES128_CBC": "-aes128", "DES_EDE3_CBC": "-des3"}


@dataclass(frozen=True)
class Fault:
    """kind: status (code, body), delay (seconds, then normal), reset, close (the
    connection closed without any response and without a reset), garbage,
    no_role_instance, undecryptable."""

    kind: str
    code: int = 200
    body: bytes = b""
    seconds: float = 0.0


def status(code: int, body: bytes = b"") -> Fault:
    return Fault("status", code=code, body=body)


def delay(seconds: float) -> Fault:
    return Fault("delay", seconds=seconds)


RESET = Fault("reset")
CLOSE = Fault("close")
GARBAGE = Fault("garbage")
NO_ROLE_INSTANCE = Fault("no_role_instance")
UNDECRYPTABLE = Fault("undecryptable")


@dataclass(frozen=True)
class Request:
    server: str
    route: str
    method: str
    path: str
    headers: Dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    time: float = 0.0


def _openssl(*args: str, input: Optional[bytes] = None) -> bytes:
    p = subprocess.run(["openssl", *args], input=input, capture_output=True, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {p.stderr.decode(errors='replace').strip()}")
    return p.stdout


def make_cert(directory: str, name: str, cn: str) -> Tuple[str, str]:
    cert, key = os.path.join(directory, f"{name}.crt"), os.path.join(directory, f"{name}.key")
    _openssl("req", "-x509", "-nodes", "-subj", f"/CN={cn}", "-days", "30", "-newkey", "rsa:2048",
             "-keyout", key, "-out", cert)  # fmt: skip
    return cert, key


@functools.cache
def tenant_material() -> Tuple[str, str, str, str]:
    """The tenant certificate, its key, their PFX, and a certificate of someone else:
    made once per process (RSA key generation is the slow part of starting), or taken
    from $FAKEFABRIC_TENANT_DIR when it holds them (the same tenant across processes:
    the tests make one set per session, tests/conftest.py); made there under a lock when
    it does not hold them yet."""
    shared = os.environ.get("FAKEFABRIC_TENANT_DIR")
    if not shared:
        directory = tempfile.mkdtemp(prefix="waprov-fabric-")
        atexit.register(shutil.rmtree, directory, True)
        return _make_tenant(directory)
    names = [os.path.join(shared, n) for n in ("tenant.crt", "tenant.key", "tenant.pfx", "other.crt")]
    with open(os.path.join(shared, ".lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all(os.path.exists(n) for n in names):
            _make_tenant(shared)
    return names[0], names[1], names[2], names[3]


def _make_tenant(directory: str) -> Tuple[str, str, str, str]:
    cert, key = make_cert(directory, "tenant", "waprov-test-tenant")
    pfx = os.path.join(directory, "tenant.pfx")
    _openssl("pkcs12", "-export", "-passout", "pass:", "-in", cert, "-inkey", key, "-out", pfx)
    other, _ = make_cert(directory, "other", "not-the-agent")
    return cert, key, pfx, other


class FakeFabric:
    def __init__(
        self,
        workdir: str,
        *,
        imds: Optional[Dict[str, Any]] = None,
        incarnation: str = "1",
        container_id: str = "c6d5526c-5ac2-4200-b6e2-56f2b70c5ab2",
        instance_id: str = "b61f93d0-e1ed-40b2-b067-22c243233448.waprov-vm",
        versions: Tuple[str, ...] = ("2015-04-05", "2012-11-30"),
        with_certificates: bool = True,
        log_file: Optional[str] = None,
        advertise: Optional[str] = None,
    ) -> None:
        self.workdir = workdir
        self.imds_doc = DEFAULT_IMDS if imds is None else imds
        self.incarnation, self.container_id, self.instance_id = incarnation, container_id, instance_id
        self.versions = versions
        self.with_certificates = with_certificates
        self.log_file = log_file
        # The wireserver address the goal state's URLs name: by default where it listens;
        # a guest behind qemu's guestfwd is given its production address instead.
        self.advertise = advertise
        self.requests: List[Request] = []
        self._script: Dict[str, List[Fault]] = {r: [] for r in ROUTES}
        self._lock = threading.Lock()
        self._servers: List[ThreadingHTTPServer] = []
        self.tenant_cert = self.tenant_key = self.pfx = ""
        self.wireserver = ""
        self.imds_url = ""

    # ---- set-up ---------------------------------------------------------------------------

    def script(self, route: str, *faults: Fault) -> None:
        """Queue faults for the next requests on `route`, one each, then normal service."""
        if route not in ROUTES:
            raise ValueError(f"unknown route {route}")
        with self._lock:
            self._script[route].extend(faults)

    def start(self) -> FakeFabric:
        os.makedirs(self.workdir, exist_ok=True)
        if self.with_certificates:
            self.tenant_cert, self.tenant_key, self.pfx, self.other_cert = tenant_material()
        ws = self._serve("wireserver")
        imds = self._serve("imds")
        self.wireserver = f"127.0.0.1:{ws.server_address[1]}"
        self.imds_url = f"http://127.0.0.1:{imds.server_address[1]}"
        return self

    def stop(self) -> None:
        for s in self._servers:
            s.shutdown()
            s.server_close()
        self._servers = []

    def __enter__(self) -> FakeFabric:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, name: str) -> ThreadingHTTPServer:
        fabric = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "FakeFabric/1.0"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fabric._handle(name, self)

            do_POST = do_GET

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self._servers.append(server)
        return server

    # ---- what was asked --------------------------------------------------------------------

    def all_requests(self) -> List[Request]:
        """Every request so far, in order of arrival (a copy, taken under the lock)."""
        with self._lock:
            return list(self.requests)

    def requests_for(self, route: str) -> List[Request]:
        return [r for r in self.all_requests() if r.route == route]

    def health_bodies(self) -> List[str]:
        return [r.body.decode("utf-8") for r in self.requests_for("health")]

    @property
    def tenant_thumbprint(self) -> str:
        out = _openssl("x509", "-in", self.tenant_cert, "-fingerprint", "-sha1", "-noout").decode()
        return out.strip().split("=", 1)[1].replace(":", "").upper()

    # ---- serving ----------------------------------------------------------------------------

    def _route(self, server: str, method: str, path: str) -> str:
        if server == "imds":
            return "imds" if method == "GET" and path.startswith("/metadata/instance?") else ""
        if method == "GET" and path == "/?comp=versions":
            return "versions"
        if method == "GET" and path == "/machine/?comp=goalstate":
            return "goalstate"
        if method == "GET" and path.startswith("/machine/certificates?"):
            return "certificates"
        if method == "GET" and path == "/machine/hec":
            return "hostingenv"
        if method == "GET" and path == "/machine/shared":
            return "sharedconfig"
        if method == "POST" and path == "/machine?comp=health":
            return "health"
        return ""

    def _handle(self, server: str, h: BaseHTTPRequestHandler) -> None:
        try:
            self._answer(server, h)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            h.close_connection = True

    def _answer(self, server: str, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        route = self._route(server, h.command, h.path)
        req = Request(server, route, h.command, h.path, dict(h.headers.items()), body, time.monotonic())
        with self._lock:  # the log's order is the order of arrival
            self.requests.append(req)
            fault = self._script[route].pop(0) if route and self._script[route] else None
            if self.log_file:
                with open(self.log_file, "a", encoding="utf-8") as f:
                    entry = {"time": req.time, "server": server, "route": route, "method": h.command,
                             "path": h.path, "headers": req.headers, "body": body.decode("utf-8", "replace"),
                             "fault": fault.kind if fault else None}  # fmt: skip
                    f.write(json.dumps(entry) + "\n")
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
            fault = None
        if fault is not None and fault.kind == "reset":
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close_connection = True
            return
        if fault is not None and fault.kind == "close":  # the request read, no answer, a plain FIN
            h.close_connection = True
            return
        if fault is not None and fault.kind == "status":
            return self._reply(h, fault.code, fault.body)
        if fault is not None and fault.kind == "garbage":
            return self._reply(h, 200, b"\x00\xff<Garbage><<<{not json")
        if not route:
            return self._reply(h, 404, b"not found")
        code, data = self._normal(route, h, fault)
        self._reply(h, code, data)

    def _reply(self, h: BaseHTTPRequestHandler, code: int, body: bytes) -> None:
        h.send_response(code)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _normal(self, route: str, h: BaseHTTPRequestHandler, fault: Optional[Fault]) -> Tuple[int, bytes]:
        if route == "imds":
            if h.headers.get("Metadata") != "true" or "X-Forwarded-For" in h.headers:
                return 400, b'{"error": "Bad request. Required metadata header not specified"}'
            return 200, json.dumps(self.imds_doc).encode()
        if route == "versions":
            versions = "".join(f"<Version>{v}</Version>" for v in self.versions)
            return 200, (
                '<?xml version="1.0" encoding="utf-8"?><Versions><Preferred><Version>'
                f"{self.versions[0]}</Version></Preferred><Supported>{versions}</Supported></Versions>"
            ).encode()
        if route == "goalstate":
            return 200, self._goal_state(with_role=fault is None or fault.kind != "no_role_instance").encode()
        if route == "certificates":
            return self._certificates(h, undecryptable=fault is not None and fault.kind == "undecryptable")
        if route in ("hostingenv", "sharedconfig"):  # read by the guest agent, not by waprov
            return 200, self._role_config(route).encode()
        return 200, b""  # health

    def _goal_state(self, with_role: bool) -> str:
        where = self.advertise or self.wireserver
        certs = (
            f"<Certificates>http://{where}/machine/certificates?comp=certificates&amp;"
            f"incarnation={self.incarnation}</Certificates>"
            if self.with_certificates
            else ""
        )
        role = (
            f"<RoleInstanceList><RoleInstance><InstanceId>{self.instance_id}</InstanceId><State>Started</State>"
            "<Configuration><HostingEnvironmentConfig>http://"
            f"{where}/machine/hec</HostingEnvironmentConfig>"
            f"<SharedConfig>http://{where}/machine/shared</SharedConfig>{certs}"
            f"<ConfigName>{self.instance_id}.1.xml</ConfigName></Configuration></RoleInstance></RoleInstanceList>"
            if with_role
            else "<RoleInstanceList />"
        )
        return (
            '<?xml version="1.0" encoding="utf-8"?>\n'
            '<GoalState xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xsi:noNamespaceSchemaLocation="goalstate10.xsd">\n'
            f"  <Version>2012-11-30</Version>\n  <Incarnation>{self.incarnation}</Incarnation>\n"
            "  <Machine><ExpectedState>Started</ExpectedState>"
            "<StopRolesDeadlineHint>300000</StopRolesDeadlineHint><ExpectHealthReport>FALSE</ExpectHealthReport></Machine>\n"
            f"  <Container>\n    <ContainerId>{self.container_id}</ContainerId>\n    {role}\n  </Container>\n"
            "</GoalState>\n"
        )

    def _role_config(self, route: str) -> str:
        """The HostingEnvironmentConfig or SharedConfig the goal state names: the
        deployment, incarnation and role elements WALinuxAgent's goal state reads."""
        role = self.instance_id.rsplit(".", 1)[-1]
        common = (
            f'<Deployment name="{self.container_id}" guid="{{{self.container_id}}}" incarnation="0">'
            f'<Service name="{role}" guid="{{00000000-0000-0000-0000-000000000000}}" />'
            f'<ServiceInstance name="{self.container_id}.0" guid="{{{self.container_id}}}" /></Deployment>'
            f'<Incarnation number="{self.incarnation}" instance="{self.instance_id}" '
            'guid="{00000000-0000-0000-0000-000000000000}" />'
        )
        if route == "hostingenv":
            return (
                '<?xml version="1.0" encoding="utf-8"?><HostingEnvironmentConfig version="1.0.0.0" '
                f'goalStateIncarnation="{self.incarnation}"><StoredCertificates />{common}'
                f'<Role guid="{{00000000-0000-0000-0000-000000000000}}" name="{role}" '
                'hostingEnvironmentVersion="1" software="" softwareType="ApplicationPackage" entryPoint="" '
                'parameters="" settleTimeSeconds="10" /><ResourceReferences /></HostingEnvironmentConfig>'
            )
        return (
            '<?xml version="1.0" encoding="utf-8"?><SharedConfig version="1.0.0.0" '
            f'goalStateIncarnation="{self.incarnation}">{common}'
            f'<Role guid="{{00000000-0000-0000-0000-000000000000}}" name="{role}" settleTimeSeconds="10" />'
            f'<Instances><Instance id="{self.instance_id}" address="0.0.0.0"><InputEndpoints /></Instance>'
            "</Instances></SharedConfig>"
        )

    def _certificates(self, h: BaseHTTPRequestHandler, undecryptable: bool) -> Tuple[int, bytes]:
        header = h.headers.get("x-ms-guest-agent-public-x509-cert", "")
        cipher = CIPHER_OPTION.get(h.headers.get("x-ms-cipher-name", ""))
        if not header or cipher is None:
            return 400, b"missing transport certificate or cipher"
        lines = [header[i : i + 64] for i in range(0, len(header), 64)]
        transport = os.path.join(self.workdir, f"transport-{threading.get_ident()}.pem")
        with open(transport, "w", encoding="ascii") as f:
            f.write("-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n")
        recipient = self.other_cert if undecryptable else transport
        with open(self.pfx, "rb") as f:
            der = _openssl("cms", "-encrypt", "-binary", "-outform", "DER", cipher, recipient, input=f.read())
        flat = base64.b64encode(der).decode()
        data = "\n".join(flat[i : i + 64] for i in range(0, len(flat), 64)) + "\n"  # as Azure sends it
        return 200, (
            '<?xml version="1.0" encoding="utf-8"?><CertificateFile><Version>2012-11-30</Version>'
            f"<Incarnation>{self.incarnation}</Incarnation><Format>Pkcs7BlobWithPfxContents</Format>"
            f"<Data>{data}</Data></CertificateFile>"
        ).encode()


def main(argv: List[str]) -> int:
    if len(argv) != 1:
        print("usage: python3 -m tests.fakefabric <state dir>", file=sys.stderr)
        return 2
    fabric = FakeFabric(argv[0], log_file=os.path.join(argv[0], "requests.jsonl")).start()
    print(json.dumps({"wireserver": fabric.wireserver, "imds": fabric.imds_url}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    fabric.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
