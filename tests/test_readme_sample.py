"""`-show-configuration` on the sample configuration printed in WALinuxAgent's README.

The expected listing is written out by hand: the sample's values, and for every other key
WALinuxAgent's default (WA §1.3 and WALinuxAgent's option tables), in sorted order.
"""

from __future__ import annotations

import os

from tests.conftest import DATA, run_waprov
from waprov.config import KNOWN_KEYS

EXPECTED = """\
AutoUpdate.Enabled = True
AutoUpdate.GAFamily = Prod
AutoUpdate.UpdateToLatestVersion = True
Autoupdate.Frequency = 3600
DVD.MountPoint = /mnt/cdrom/secure
DetectScvmmEnv = False
EnableOverProvisioning = True
Extension.LogDir = /var/log/azure
Extensions.Enabled = True
Extensions.GoalStatePeriod = 6
Extensions.InitialGoalStatePeriod = 6
Extensions.WaitForCloudInit = False
Extensions.WaitForCloudInitTimeout = 3600
HttpProxy.Host = None
HttpProxy.Port = None
Lib.Dir = /var/lib/waagent
Logs.Collect = True
Logs.CollectPeriod = 3600
Logs.Console = True
Logs.Verbose = False
OS.AllowHTTP = False
OS.CheckRdmaDriver = False
OS.EnableFIPS = False
OS.EnableFirewall = False
OS.EnableFirewallPeriod = 300
OS.EnableRDMA = False
OS.HomeDir = /home
OS.MonitorDhcpClientRestartPeriod = 30
OS.OpensslPath = /usr/bin/openssl
OS.PasswordPath = /etc/shadow
OS.RemovePersistentNetRulesPeriod = 30
OS.RootDeviceScsiTimeout = 300
OS.RootDeviceScsiTimeoutPeriod = 30
OS.SshClientAliveInterval = 180
OS.SshDir = /etc/ssh
OS.SudoersDir = /etc/sudoers.d
OS.UpdateRdmaDriver = False
Pid.File = /var/run/waagent.pid
Protocol.EndpointDiscovery = dhcp
Provisioning.Agent = auto
Provisioning.AllowResetSysUser = False
Provisioning.DecodeCustomData = False
Provisioning.DeleteRootPassword = False
Provisioning.ExecuteCustomData = False
Provisioning.MonitorHostName = True
Provisioning.MonitorHostNamePeriod = 30
Provisioning.PasswordCryptId = 6
Provisioning.PasswordCryptSaltLength = 10
Provisioning.RegenerateSshHostKeyPair = True
Provisioning.SshHostKeyPairType = rsa
ResourceDisk.EnableSwap = False
ResourceDisk.EnableSwapEncryption = False
ResourceDisk.Filesystem = ext4
ResourceDisk.Format = True
ResourceDisk.MountOptions = None
ResourceDisk.MountPoint = /mnt/resource
ResourceDisk.SwapSizeMB = 0
"""

# Keys of the sample whose value differs from the built-in default: if the file were not
# read, these lines would be wrong.
READ_FROM_FILE = [
    "Provisioning.RegenerateSshHostKeyPair = True",
    "Provisioning.MonitorHostName = True",
    "ResourceDisk.Format = True",
    "ResourceDisk.Filesystem = ext4",
    "OS.RootDeviceScsiTimeout = 300",
]


def test_show_configuration_of_the_readme_sample_prints_every_key_with_its_value() -> None:
    p = run_waprov(["-show-configuration", "-configuration-path:" + os.path.join(DATA, "readme-sample.conf")])
    assert p.returncode == 0, p.stderr
    assert p.stdout == EXPECTED
    for line in READ_FROM_FILE:
        assert line in p.stdout.splitlines()


def test_every_key_of_the_readme_sample_is_in_the_table() -> None:
    with open(os.path.join(DATA, "readme-sample.conf"), encoding="utf-8") as f:
        sample_keys = {line.split("=", 1)[0] for line in f if "=" in line}
    assert sample_keys <= KNOWN_KEYS
