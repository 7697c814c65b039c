"""`make demo`, part 2: the fabric exchange against the project's fake wireserver and IMDS.

Everything happens in a temporary directory (the DVD is a directory with ovf-env.xml,
Lib.Dir is a temp dir) and on 127.0.0.1; the fake is scripted to fail a little so the
retries show. Nothing on the host is changed.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.fakefabric import NO_ROLE_INSTANCE, FakeFabric, status  # noqa: E402
from waprov.certs import fetch_certificates  # noqa: E402
from waprov.config import Config  # noqa: E402
from waprov.http import HttpClient  # noqa: E402
from waprov.log import setup_logging  # noqa: E402
from waprov.overrides import overrides_from_env  # noqa: E402
from waprov.sources import Fabric, gather  # noqa: E402
from waprov.system import System  # noqa: E402
from waprov.timing import Clock  # noqa: E402
from waprov.wireserver import connect, discover_endpoint  # noqa: E402

OVF = """<?xml version="1.0" encoding="utf-8"?>
<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1" xmlns:wa="http://schemas.microsoft.com/windowsazure">
  <wa:ProvisioningSection><wa:Version>1.0</wa:Version>
    <LinuxProvisioningConfigurationSet xmlns="http://schemas.microsoft.com/windowsazure">
      <ConfigurationSetType>LinuxProvisioningConfiguration</ConfigurationSetType>
      <HostName>demo-vm</HostName><UserName>azureuser</UserName>
      <UserPassword>Demo-Passw0rd!</UserPassword>
      <DisableSshPasswordAuthentication>false</DisableSshPasswordAuthentication>
      <SSH><KeyPairs><KeyPair><Fingerprint>{thumbprint}</Fingerprint>
        <Path>/home/azureuser/.ssh/id_rsa</Path></KeyPair></KeyPairs></SSH>
    </LinuxProvisioningConfigurationSet>
  </wa:ProvisioningSection>
  <wa:PlatformSettingsSection><wa:Version>1.0</wa:Version>
    <wa:PlatformSettings><wa:ProvisionGuestAgent>true</wa:ProvisionGuestAgent></wa:PlatformSettings>
  </wa:PlatformSettingsSection>
</Environment>
"""


def main() -> None:
    print("\n== The fabric: ovf-env.xml + IMDS + wireserver, against the fake fabric on 127.0.0.1 ==")
    setup_logging(verbose=False)
    with tempfile.TemporaryDirectory(prefix="waprov-demo-") as tmp, FakeFabric(f"{tmp}/fabric") as fake:
        os.makedirs(f"{tmp}/dvd")
        with open(f"{tmp}/dvd/ovf-env.xml", "w", encoding="utf-8") as f:
            f.write(OVF.format(thumbprint=fake.tenant_thumbprint))
        env = {"WAPROV_OVF_DIR": f"{tmp}/dvd", "WAPROV_IMDS": fake.imds_url}
        env |= {"WAPROV_WIRESERVER": fake.wireserver, "WAPROV_RETRY_SCALE": "0.01"}
        print("overrides: " + " ".join(f"{k}={v}" for k, v in env.items()))
        overrides = overrides_from_env(env)
        config = dataclasses.replace(Config(), lib_dir=f"{tmp}/lib")
        clock = Clock(overrides.retry_scale)
        client = HttpClient(clock)
        fabric = Fabric(System(), config, overrides, clock, client)
        fake.script("goalstate", NO_ROLE_INSTANCE)
        fake.script("health", status(503))

        data = gather(fabric)
        print(f"\nprovisioning data (sources {', '.join(data.sources)}):")
        for name in (
            "hostname",
            "username",
            "password",
            "disable_ssh_password_auth",
            "public_keys",
            "key_pairs",
        ):
            print(f"  {name} = {getattr(data, name)!r}")
        endpoint, how = discover_endpoint(fabric.system, config, overrides)
        print(f"\nwireserver {endpoint} (from {how})")
        ws, gs = connect(client, endpoint, clock)
        ws.report(gs, "NotReady", "Provisioning", "Starting")
        certs = fetch_certificates(fabric.system, config, ws, gs) if data.fingerprints else {}
        print(f"certificates for {', '.join(data.fingerprints)}: {sorted(certs)}")
        ws.report(gs, "Ready")

        print(f"\n{config.lib_dir}:")
        for name in sorted(os.listdir(config.lib_dir)):
            st = os.stat(os.path.join(config.lib_dir, name))
            print(f"  {stat.filemode(st.st_mode)} {st.st_size:6d} {name}")
        with open(os.path.join(config.lib_dir, "ovf-env.xml"), encoding="utf-8") as f:
            print("  ovf-env.xml password line: " + next(ln.strip() for ln in f if "UserPassword" in ln))
        print("\nrequests the fake fabric received (scripted: one goal state without RoleInstance, one 503):")
        for r in fake.requests:
            shown = {
                k: v
                for k, v in r.headers.items()
                if k.lower().startswith(("x-ms-agent", "x-ms-cipher", "metadata"))
            }
            print(f"  {r.server:<10} {r.method:<4} {r.path[:70]:<70} {shown}")
        print(
            "\nretry pauses (policy seconds, run at x0.01): "
            + ", ".join(f"{w} {s:g}s" for w, s in clock.slept)
        )
        print("\nlast health report sent:\n  " + fake.health_bodies()[-1])


if __name__ == "__main__":
    main()
