"""The waagent.conf reader: WALinuxAgent's line rules (WA §1.2) and one key table.

`parse_values(text)` yields the raw key/value mapping exactly as WALinuxAgent's
ConfigurationProvider does; `Config` is the frozen, typed view over it (every field is a
row of the table: key, type, default, help); `load_config()` chooses and reads the file.
Errors are `ConfigError`s that name the file and the reason (exit code 2).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

from waprov.errors import ConfigError
from waprov.textdata import MIB, decode_text

_T = TypeVar("_T")

ETC_CONF = "/etc/waagent.conf"
SHIPPED_CONF = "/usr/share/waprov/waagent.conf"
MAX_CONF_BYTES = MIB

Value = Union[bool, int, str, None]
log = logging.getLogger("waprov")


def _key(name: str, default: _T, doc: str, *, default_from: str = "") -> _T:
    """One row of the key table, stored in the dataclass field's metadata."""
    meta = {"key": name, "help": doc, "default_from": default_from}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Config:
    """Every waagent.conf key waprov knows. Fields marked (GA) are read and kept, unused."""

    # --- Provisioning ---------------------------------------------------------------------
    provisioning_agent: str = _key(
        "Provisioning.Agent",
        "auto",
        "auto|waagent|cloud-init|disabled: which agent provisions; waprov provisions only when it is "
        "disabled (or no configuration file exists)",
    )
    allow_reset_sys_user: bool = _key(
        "Provisioning.AllowResetSysUser", False, "allow setting a password on a UID below UID_MIN"
    )
    regenerate_ssh_host_key_pair: bool = _key(
        "Provisioning.RegenerateSshHostKeyPair", False, "delete and regenerate the SSH host keys"
    )
    ssh_host_key_pair_type: str = _key(
        "Provisioning.SshHostKeyPairType", "rsa", "rsa|dsa|ecdsa|ed25519|auto: host key type"
    )
    delete_root_password: bool = _key(
        "Provisioning.DeleteRootPassword", False, "lock root in /etc/shadow (root:*LOCK*:...)"
    )
    decode_custom_data: bool = _key(
        "Provisioning.DecodeCustomData", False, "base64-decode CustomData before saving it"
    )
    execute_custom_data: bool = _key(
        "Provisioning.ExecuteCustomData", False, "run CustomData as a script (implies decode)"
    )
    password_crypt_id: str = _key(
        "Provisioning.PasswordCryptId", "6", "crypt method id: 1 MD5, 2a Blowfish, 5 SHA-256, 6 SHA-512"
    )
    password_crypt_salt_length: int = _key(
        "Provisioning.PasswordCryptSaltLength", 10, "length of the random salt of the hash"
    )
    monitor_host_name: bool = _key(
        "Provisioning.MonitorHostName", False, "(GA) re-publish the hostname when it changes"
    )
    monitor_host_name_period: int = _key(
        "Provisioning.MonitorHostNamePeriod", 30, "(GA) seconds between hostname checks"
    )

    # --- Resource disk ----------------------------------------------------------------------
    resource_disk_format: bool = _key("ResourceDisk.Format", False, "format and mount the resource disk")
    resource_disk_filesystem: str = _key(
        "ResourceDisk.Filesystem", "ext3", "filesystem made with mkfs.<value>"
    )
    resource_disk_mount_point: str = _key(
        "ResourceDisk.MountPoint", "/mnt/resource", "where the resource disk is mounted"
    )
    resource_disk_mount_options: Optional[str] = _key(
        "ResourceDisk.MountOptions", None, "options for mount -o (None: none)"
    )
    resource_disk_enable_swap: bool = _key(
        "ResourceDisk.EnableSwap", False, "create and enable <mount point>/swapfile"
    )
    resource_disk_swap_size_mb: int = _key("ResourceDisk.SwapSizeMB", 0, "swapfile size in MiB")
    resource_disk_enable_swap_encryption: bool = _key(
        "ResourceDisk.EnableSwapEncryption", False, "(GA) encrypted swap, FreeBSD only"
    )

    # --- OS and paths -----------------------------------------------------------------------
    lib_dir: str = _key("Lib.Dir", "/var/lib/waagent", "state shared with the GA")
    dvd_mount_point: str = _key("DVD.MountPoint", "/mnt/cdrom/secure", "mount point of the provisioning DVD")
    pid_file: str = _key("Pid.File", "/var/run/waagent.pid", "(GA) daemon pid file")
    extension_log_dir: str = _key("Extension.LogDir", "/var/log/azure", "(GA) extension logs")
    ssh_dir: str = _key("OS.SshDir", "/etc/ssh", "sshd_config and host keys")
    ssh_client_alive_interval: str = _key(
        "OS.SshClientAliveInterval",
        "180",
        "sshd ClientAliveInterval, written verbatim (WALinuxAgent reads it as a string)",
    )
    home_dir: str = _key("OS.HomeDir", "/home", "replaces $HOME in SSH key paths")
    password_path: str = _key("OS.PasswordPath", "/etc/shadow", "shadow file for DeleteRootPassword")
    sudoers_dir: str = _key("OS.SudoersDir", "/etc/sudoers.d", "directory of the sudoers drop-in")
    openssl_path: str = _key("OS.OpensslPath", "/usr/bin/openssl", "openssl binary")
    enable_fips: bool = _key("OS.EnableFIPS", False, "set OPENSSL_FIPS=1 for openssl")
    allow_http: bool = _key("OS.AllowHTTP", False, "(GA) HTTP fallback when Python lacks SSL")
    root_device_scsi_timeout: Optional[str] = _key(
        "OS.RootDeviceScsiTimeout", None, "(GA) SCSI timeout of the root device"
    )
    root_device_scsi_timeout_period: int = _key(
        "OS.RootDeviceScsiTimeoutPeriod", 30, "(GA) seconds between SCSI timeout checks"
    )
    enable_firewall: bool = _key("OS.EnableFirewall", False, "(GA) wireserver firewall rules")
    enable_firewall_period: int = _key("OS.EnableFirewallPeriod", 300, "(GA) seconds between firewall checks")
    enable_rdma: bool = _key("OS.EnableRDMA", False, "(GA) RDMA driver setup")
    update_rdma_driver: bool = _key("OS.UpdateRdmaDriver", False, "(GA) RDMA driver update")
    check_rdma_driver: bool = _key("OS.CheckRdmaDriver", False, "(GA) RDMA driver check")
    remove_persistent_net_rules_period: int = _key(
        "OS.RemovePersistentNetRulesPeriod", 30, "(GA) seconds between udev rule cleanups"
    )
    monitor_dhcp_client_restart_period: int = _key(
        "OS.MonitorDhcpClientRestartPeriod", 30, "(GA) seconds between DHCP client checks"
    )
    endpoint_discovery: str = _key(
        "Protocol.EndpointDiscovery", "dhcp", "dhcp, or anything else for 168.63.129.16 directly"
    )

    # --- HTTP proxy (never used for the wireserver or IMDS) ---------------------------------
    http_proxy_host: Optional[str] = _key("HttpProxy.Host", None, "proxy host for outside URLs")
    http_proxy_port: Optional[int] = _key("HttpProxy.Port", None, "proxy port")

    # --- Logs -------------------------------------------------------------------------------
    logs_verbose: bool = _key("Logs.Verbose", False, "debug-level logging")
    logs_console: bool = _key("Logs.Console", True, "echo the log to the console while unprovisioned")
    logs_collect: bool = _key("Logs.Collect", True, "(GA) periodic log collection")
    logs_collect_period: int = _key("Logs.CollectPeriod", 3600, "(GA) seconds between collections")

    # --- Guest agent only -------------------------------------------------------------------
    extensions_enabled: bool = _key("Extensions.Enabled", True, "(GA) extension handling")
    extensions_goal_state_period: int = _key(
        "Extensions.GoalStatePeriod", 6, "(GA) seconds between goal state polls"
    )
    extensions_initial_goal_state_period: int = _key(
        "Extensions.InitialGoalStatePeriod",
        6,
        "(GA) first poll period; default GoalStatePeriod",
        default_from="Extensions.GoalStatePeriod",
    )
    extensions_wait_for_cloud_init: bool = _key(
        "Extensions.WaitForCloudInit", False, "(GA) wait for cloud-init before extensions"
    )
    extensions_wait_for_cloud_init_timeout: int = _key(
        "Extensions.WaitForCloudInitTimeout",
        3600,
        "(GA) seconds to wait for cloud-init (the GA reads it as a switch: always 3600)",
    )
    autoupdate_enabled: bool = _key("AutoUpdate.Enabled", True, "(GA) run updated GA versions")
    autoupdate_update_to_latest_version: bool = _key(
        "AutoUpdate.UpdateToLatestVersion",
        True,
        "(GA) download GA updates; default AutoUpdate.Enabled",
        default_from="AutoUpdate.Enabled",
    )
    autoupdate_ga_family: str = _key("AutoUpdate.GAFamily", "Prod", "(GA) update channel")
    autoupdate_frequency: int = _key("Autoupdate.Frequency", 3600, "(GA) seconds between update checks")
    detect_scvmm_env: bool = _key("DetectScvmmEnv", False, "(GA) SCVMM detection")
    enable_over_provisioning: bool = _key("EnableOverProvisioning", True, "(GA) over-provisioning")

    # Where the values came from: a path, or "" for the built-in defaults.
    source: str = field(default="", compare=False)


@dataclass(frozen=True)
class KeySpec:
    """A row of the key table, derived from a Config field."""

    key: str
    attr: str
    kind: str  # "switch", "int" or "str", from the field's annotation
    default: Value
    help: str
    default_from: str


def _kind_of(f: dataclasses.Field[Any]) -> str:
    ann = str(f.type)
    if ann == "bool":
        return "switch"
    if "int" in ann:
        return "int"
    return "str"


def _key_table() -> Tuple[KeySpec, ...]:
    rows = []
    for f in dataclasses.fields(Config):
        if "key" not in f.metadata:
            continue
        rows.append(
            KeySpec(
                f.metadata["key"],
                f.name,
                _kind_of(f),
                f.default,  # type: ignore[arg-type]
                f.metadata["help"],
                f.metadata["default_from"],
            )
        )
    return tuple(rows)


KEY_TABLE = _key_table()  # in declaration order; a default_from key follows its source
KNOWN_KEYS = frozenset(s.key for s in KEY_TABLE)


# --------------------------------------------------------------------------------------------
# The line rules (WA §1.2). Plain code rather than configobj: configobj turns commas into
# lists, keeps `#` inside quotes, strips single quotes, reads `[x]` as sections, refuses
# duplicate keys and lines without `=`; none of that is what WALinuxAgent (and so the GA
# reading the same file) does. `waprov -enable`'s one-line edit (agentconf.py) uses these
# rules too; configobj's writer would reformat every line.
# --------------------------------------------------------------------------------------------


def line_key(line: str) -> Optional[str]:
    """The key a line sets (text before the first `=`, stripped), None for a comment
    (`#` in column 0) or a line without `=`. Lines are split on `\n` only."""
    if line.startswith("#") or "=" not in line:
        return None
    return line.partition("=")[0].strip()


def iter_entries(text: str) -> Iterator[Tuple[str, Optional[str]]]:
    """Yield (key, value) per used line, in file order; `None` means "use the default"."""
    for line in text.split("\n"):
        key = line_key(line)
        if key is None:
            continue
        value = line.partition("=")[2].split("#", 1)[0].strip('" ').strip()
        yield key, (None if value == "None" else value)


def parse_values(text: str) -> Dict[str, Optional[str]]:
    """The raw mapping; the last duplicate wins, unknown keys are kept."""
    return dict(iter_entries(text))


def _typed(spec: KeySpec, raw: Optional[str], default: Value) -> Value:
    if spec.kind == "switch":
        if raw is not None and raw.lower() == "y":
            return True
        if raw is not None and raw.lower() == "n":
            return False
        return default
    if spec.kind == "int":
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            return default
    return default if raw is None else raw


def config_from_values(values: Mapping[str, Optional[str]], source: str = "") -> Config:
    """Build the typed Config from a raw mapping (see `parse_values`)."""
    typed: Dict[str, Value] = {}
    by_key: Dict[str, Value] = {}
    for spec in KEY_TABLE:
        default = by_key[spec.default_from] if spec.default_from else spec.default
        by_key[spec.key] = typed[spec.attr] = _typed(spec, values.get(spec.key), default)
    return Config(source=source, **typed)  # type: ignore[arg-type]


def show_lines(cfg: Config) -> List[str]:
    """`<key> = <value>` for every key, sorted, printed the way WALinuxAgent prints them."""
    rows = [(s.key, getattr(cfg, s.attr)) for s in KEY_TABLE]
    return [f"{k} = {v}" for k, v in sorted(rows)]


# --------------------------------------------------------------------------------------------
# Choosing and reading the file
# --------------------------------------------------------------------------------------------


def read_conf_text(path: str) -> str:
    """Read a conf file, turning every way it can be unusable into one clear ConfigError.
    Directly, not through System: the configuration is read before System exists (its
    Logs.Verbose sets up the logging whose redactor System takes)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(path, "no such file") from None
    except OSError as e:
        raise ConfigError(path, f"cannot be read: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(path, "is a directory, not a configuration file")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(path, "is not a regular file")
    try:
        with open(path, "rb") as f:
            text = decode_text(f.read(MAX_CONF_BYTES + 1), MAX_CONF_BYTES)
    except OSError as e:
        raise ConfigError(path, f"cannot be read: {e.strerror}") from None
    except ValueError as e:
        raise ConfigError(path, str(e)) from None
    if not text:
        raise ConfigError(path, "is empty (WALinuxAgent refuses an empty configuration too)")
    if text.startswith("\ufeff"):
        log.warning(
            "%s starts with a byte order mark: WALinuxAgent reads its first key as an "
            "unknown key, and so does waprov",
            path,
        )
    return text


def _from_file(path: str) -> Config:
    values = parse_values(read_conf_text(path))
    for key in values:
        if key not in KNOWN_KEYS:  # kept and ignored, as WALinuxAgent does; a hint for typos
            log.debug("%s: key %r is not one waprov knows; ignored", path, key)
    return config_from_values(values, source=path)


def load_config(path: Optional[str] = None, candidates: Sequence[str] = (ETC_CONF, SHIPPED_CONF)) -> Config:
    """The named file (must exist), else the first existing candidate, else the defaults."""
    if path is not None:
        return _from_file(path)
    for cand in candidates:
        if os.path.exists(cand):
            return _from_file(cand)
        if os.path.islink(cand):
            log.warning("%s is a broken symbolic link; ignoring it", cand)
    log.warning("no configuration file found (looked for %s); using built-in defaults", ", ".join(candidates))
    return Config()
