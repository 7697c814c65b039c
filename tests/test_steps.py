"""Pure tests of the provisioning steps' rules, with expected values written from the spec."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from typing import Any, Dict, List, Tuple

import pytest

from tests.conftest import on_host, virtual_clock, waits
from tests.fakefabric import IMDS_KEY
from tests.fakerunner import ScriptedRunner, fail, ok
from tests.provisioning import user_key
from waprov.config import Config
from waprov.distro import Distro
from waprov.errors import HostError, ProvisionError
from waprov.health import failure_description
from waprov.log import Redactor
from waprov.model import ProvisioningData, PublicKey
from waprov.network import parse_routes, primary_interface, reannounce
from waprov.provision import ADOPT, CHANGED, DONE, TODO, provisioned_state
from waprov.steps import Ctx
from waprov.steps.hostname import dhclient_edit, valid_hostname
from waprov.steps.keys import deploy_keys, deploy_remaining_keys, public_key_line
from waprov.steps.sshd import edited_config, set_ssh_config
from waprov.steps.sudoers import configure_sudoers, sudoers_line, sudoers_name_problem, with_line
from waprov.steps.user import SALT_ALPHABET, create_user, hash_password, load_crypt
from waprov.system import System

# ---- set_ssh_config (WA §5.6) --------------------------------------------------------------


def test_every_line_starting_with_the_name_is_replaced_prefix_match_included() -> None:
    lines = ["PasswordAuthentication yes", "PasswordAuthenticationX 1", "PasswordAuthentication no", ""]
    assert set_ssh_config(lines, "PasswordAuthentication", "no") == [
        "PasswordAuthentication no",
        "PasswordAuthentication no",
        "PasswordAuthentication no",
        "",
    ]


def test_commented_and_indented_lines_do_not_match_and_the_new_line_goes_before_the_last_element() -> None:
    lines = ["#PasswordAuthentication yes", "  PasswordAuthentication yes", "UsePAM yes"]
    assert set_ssh_config(lines, "PasswordAuthentication", "no") == [
        "#PasswordAuthentication yes",
        "  PasswordAuthentication yes",
        "PasswordAuthentication no",
        "UsePAM yes",
    ]


def test_with_a_trailing_newline_the_insertion_is_at_the_end() -> None:
    assert (
        edited_config("Port 22\n", [("ClientAliveInterval", "180")]) == "Port 22\nClientAliveInterval 180\n"
    )


def test_lines_inside_a_match_block_are_left_and_match_all_closes_the_block() -> None:
    lines = ["Match User x", "PasswordAuthentication yes", "Match all", "PasswordAuthentication yes", "End"]
    assert set_ssh_config(lines, "PasswordAuthentication", "no") == [
        "Match User x",
        "PasswordAuthentication yes",
        "Match all",
        "PasswordAuthentication no",
        "End",
    ]


def test_an_open_match_block_receives_the_new_line_before_its_first_match() -> None:
    lines = ["Port 22", "match group a", "X 1", "Match User b", "Y 2"]
    assert set_ssh_config(lines, "ClientAliveInterval", "180") == [
        "Port 22",
        "ClientAliveInterval 180",
        "match group a",
        "X 1",
        "Match User b",
        "Y 2",
    ]


# ---- hostname ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vm", "my-vm-01", "a.b.c", "A" * 63, "x1"])
def test_valid_hostnames(name: str) -> None:
    assert valid_hostname(name)


@pytest.mark.parametrize("name", ["", "-vm", "vm-", "bad_host", "a..b", "A" * 64, "vm name", "vm\n", "ünï"])
def test_invalid_hostnames(name: str) -> None:
    assert not valid_hostname(name)


def test_dhclient_conf_gets_one_send_host_name_line() -> None:
    text = 'timeout 300;\nsend host-name "old";\nrequest subnet-mask;\n'
    assert dhclient_edit(text, "new-vm") == 'timeout 300;\nrequest subnet-mask;\nsend host-name "new-vm";\n'


def test_dhclient_conf_already_sending_the_name_or_gethostname_is_left_alone() -> None:
    assert dhclient_edit('send host-name "vm1";\n', "vm1") is None
    assert dhclient_edit("send host-name = gethostname();\n", "vm1") is None
    assert (
        dhclient_edit('# send host-name "vm1";\n', "vm1")
        == '# send host-name "vm1";\nsend host-name "vm1";\n'
    )


ROUTE = "Iface\tDestination\tGateway\nlo\t0000007F\t00000000\neth1\t00000000\t0101A8C0\n"


def test_the_primary_interface_is_the_default_routes_else_the_first_non_loopback() -> None:
    addrs = [("lo", True), ("eth0", True), ("eth1", False)]
    assert primary_interface(parse_routes(ROUTE), addrs) == ("eth1", False)
    assert primary_interface(parse_routes("Iface\tDestination\n"), addrs) == ("eth0", True)
    assert primary_interface([], [("lo", True)]) == (None, False)


def ctx_for(tmp_path: Any, runner: ScriptedRunner, distro: Distro | None = None, **data: Any) -> Ctx:
    system = System(root=str(tmp_path), runner=runner)
    distro = distro or Distro()
    pd = ProvisioningData(
        hostname=data.pop("hostname", "vm"), username=data.pop("username", "azureuser"), **data
    )
    return Ctx(system, Config(), distro, pd, virtual_clock(), "ID")


def test_the_wait_for_an_address_is_bounded(tmp_path: Any) -> None:
    runner = ScriptedRunner()
    ctx = ctx_for(tmp_path, runner)
    reannounce(*on_host(ctx), lambda: [("lo", True), ("eth0", False)])
    assert runner.calls == []
    assert sum(waits(ctx.clock)) <= 11


def test_flatcar_reannounces_with_networkctl_reconfigure(tmp_path: Any) -> None:
    runner = ScriptedRunner(networkctl=ok)
    ctx = ctx_for(tmp_path, runner, Distro("flatcar", flatcar=True))
    reannounce(*on_host(ctx), lambda: [("lo", True), ("eth0", True)])
    assert runner.calls == [["networkctl", "reconfigure", "eth0"]]


def test_a_failing_restart_is_tried_three_times_five_seconds_apart(tmp_path: Any) -> None:
    runner = ScriptedRunner(networkctl=fail("no such link"))
    ctx = ctx_for(tmp_path, runner, Distro("flatcar", flatcar=True))
    reannounce(*on_host(ctx), lambda: [("eth0", True)])
    assert len(runner.calls) == 3 and waits(ctx.clock) == [5.0, 5.0]


# ---- sudoers, keys, password -----------------------------------------------------------------


def test_sudoers_lines_follow_the_password() -> None:
    assert sudoers_line("bob", nopasswd=True) == "bob ALL=(ALL) NOPASSWD: ALL"
    assert sudoers_line("bob", nopasswd=False) == "bob ALL=(ALL) ALL"


def test_a_sudoers_line_is_appended_once_and_other_lines_are_kept() -> None:
    first = with_line("alice ALL=(ALL) ALL\n", "bob ALL=(ALL) ALL")
    assert first == "alice ALL=(ALL) ALL\nbob ALL=(ALL) ALL\n"
    assert with_line("bob ALL=(ALL) ALL   \n", "bob ALL=(ALL) ALL") == "bob ALL=(ALL) ALL   \n"


SUDOERS_WORDS = ["ALL", "Defaults", "User_Alias", "Runas_Alias", "Host_Alias", "Cmnd_Alias", "Cmd_Alias"]


@pytest.mark.parametrize("name", [*SUDOERS_WORDS, "ADMIN", "A", "OPS_2", "X9"])
def test_names_sudoers_reads_as_keywords_or_aliases_are_refused_before_useradd(
    tmp_path: Any, name: str
) -> None:
    runner = ScriptedRunner(useradd=ok)
    ctx = ctx_for(tmp_path, runner, username=name)
    with pytest.raises(ProvisionError) as e:
        create_user(ctx)
    assert (e.value.reason, e.value.step) == ("invalid user name", "user")
    assert f"UserName {name!r} cannot be used: " in str(e.value)
    assert runner.calls == []
    with pytest.raises(ProvisionError, match=f"UserName {name!r} gets no sudoers line"):
        configure_sudoers(ctx)  # the sudoers step refuses it too
    assert not os.path.exists(tmp_path / "etc/sudoers.d/waagent") and runner.calls == []


@pytest.mark.parametrize(
    "name", ["Admin", "alL", "_ALL", "all", "azure.User", "a-B", "defaults", "user_alias"]
)
def test_user_names_sudoers_reads_as_users_are_accepted(name: str) -> None:
    assert sudoers_name_problem(name) is None


def passwd_tree(tmp_path: Any, *lines: str, login_defs: str | None = None) -> None:
    os.makedirs(tmp_path / "etc", exist_ok=True)
    (tmp_path / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\n" + "".join(x + "\n" for x in lines)
    )
    if login_defs is not None:
        (tmp_path / "etc/login.defs").write_text(login_defs)


def useradd_into(tmp_path: Any, uid: int) -> Any:
    def run(argv: List[str], data: Any) -> Tuple[int, bytes, bytes]:
        with open(tmp_path / "etc/passwd", "a", encoding="utf-8") as f:
            f.write(f"{argv[-1]}:x:{uid}:{uid}::/home/{argv[-1]}:/bin/sh\n")
        return 0, b"", b""

    return run


NOBODY = "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin"


@pytest.mark.parametrize(
    ("line", "login_defs", "words"),
    [
        (NOBODY, None, "User nobody is not a regular user (uid 65534 > UID_MAX 60000)"),
        ("bob:x:2500:2500::/home/bob:/bin/sh", "UID_MAX 2000\n", "(uid 2500 > UID_MAX 2000)"),
        ("bob:x:150:150::/home/bob:/bin/sh", "UID_MIN 500\n",
         "User bob is a system user (uid 150 < UID_MIN 500)"),
        ("bob:x:999:999::/home/bob:/bin/sh", None, "(uid 999 < UID_MIN 1000)"),  # shadow's default (WA: 100)
    ],
)  # fmt: skip
def test_an_existing_account_outside_uid_min_to_uid_max_is_refused_and_not_recorded(
    tmp_path: Any, line: str, login_defs: str | None, words: str
) -> None:
    passwd_tree(tmp_path, line, login_defs=login_defs)
    ctx = ctx_for(tmp_path, ScriptedRunner(), username=line.split(":")[0])
    with pytest.raises(ProvisionError) as e:
        create_user(ctx)
    assert e.value.reason == "system user refused" and words in str(e.value)
    assert "Provisioning.AllowResetSysUser=y" in str(e.value)
    assert not os.path.exists(tmp_path / "var/lib/waprov/user")


def test_allow_reset_sys_user_accepts_nobody(tmp_path: Any) -> None:
    passwd_tree(tmp_path, NOBODY)
    ctx = ctx_for(tmp_path, ScriptedRunner(), username="nobody")
    ctx.config = Config(allow_reset_sys_user=True)
    create_user(ctx)
    assert (tmp_path / "var/lib/waprov/user").read_text() == "ID nobody 65534 adopted\n"


def test_the_created_account_is_recorded_once_and_a_rerun_keeps_the_record(tmp_path: Any) -> None:
    passwd_tree(tmp_path)
    os.makedirs(tmp_path / "var/lib/waprov")
    (tmp_path / "var/lib/waprov/user").write_text("OTHER-VM alice 1000 created\n")
    runner = ScriptedRunner(useradd=useradd_into(tmp_path, 1001))
    ctx = ctx_for(tmp_path, runner, username="bob")
    create_user(ctx)
    record = tmp_path / "var/lib/waprov/user"
    assert record.read_text() == "ID bob 1001 created\n" and record.stat().st_mode & 0o777 == 0o600
    create_user(ctx)  # a resumed run: the account exists now, and was still created by waprov
    assert record.read_text() == "ID bob 1001 created\n" and runner.names() == ["useradd"]


def test_an_existing_account_is_recorded_as_adopted_and_another_vms_record_goes_on_refusal(
    tmp_path: Any,
) -> None:
    passwd_tree(tmp_path, "bob:x:1001:1001::/home/bob:/bin/sh")
    os.makedirs(tmp_path / "var/lib/waprov")
    record = tmp_path / "var/lib/waprov/user"
    create_user(ctx_for(tmp_path, ScriptedRunner(), username="bob"))
    assert record.read_text() == "ID bob 1001 adopted\n"
    record.write_text("OTHER-VM bob 1001 adopted\n")
    with pytest.raises(ProvisionError):
        create_user(ctx_for(tmp_path, ScriptedRunner(), username="root"))
    assert not record.exists()  # the account of another VM's provisioning is not this VM's


ECDSA = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5"
    "YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg= ecdsa@test"
)


def test_any_openssh_public_key_type_is_accepted_ecdsa_included() -> None:
    assert public_key_line(IMDS_KEY + "\r\n")[0] == IMDS_KEY
    assert public_key_line(ECDSA)[1] == " ".join(ECDSA.split()[:2])


@pytest.mark.parametrize(
    "value",
    [
        "not a key",
        "ssh-rsa",
        "ssh-rsa !!!notbase64",
        "ssh-rsa " + IMDS_KEY.split()[1],  # an ed25519 body under an rsa name
        IMDS_KEY + "\n" + IMDS_KEY,
        'command="x" ' + IMDS_KEY,
    ],
)
def test_bad_public_keys_are_refused_with_the_key_start_in_the_message(value: str) -> None:
    with pytest.raises(ProvisionError) as e:
        public_key_line(value)
    assert "Bad public key" in str(e.value) and e.value.step == "keys"


def test_password_hashes_use_the_crypt_id_and_a_fresh_salt_of_the_configured_length() -> None:
    hashes = [hash_password("pw", "6", 10) for _ in range(20)]
    salts = {h.split("$")[2] for h in hashes}
    assert all(h.startswith("$6$") and len(h.split("$")[3]) == 86 for h in hashes)
    assert len(salts) == 20 and all(len(s) == 10 and set(s) <= set(SALT_ALPHABET) for s in salts)
    assert hash_password("pw", "5", 16).startswith("$5$")


@pytest.mark.parametrize("crypt_id", ["6", "5"])
def test_a_password_hash_is_the_one_openssl_makes_from_its_salt(crypt_id: str) -> None:
    """Checked without crypt: the hash is a valid crypt hash of the password."""
    password = "Pa55-w\u00f6rd with spaces"
    hashed = hash_password(password, crypt_id, 16)
    salt = hashed.split("$")[2]
    argv = ["openssl", "passwd", f"-{crypt_id}", "-salt", salt, "-stdin"]
    r = subprocess.run(argv, input=password, capture_output=True, text=True, check=True)
    assert r.stdout.strip() == hashed
    assert load_crypt()(password, hashed) == hashed  # the rerun's check: the password matches
    assert load_crypt()(password + "x", hashed) != hashed


def test_the_crypt_is_crypt_rs_c_module_from_python_3_13_and_the_standard_librarys_below() -> None:
    # 3.13 has no crypt module: the crypt-r package's (python3-crypt-r on Debian 13)
    assert load_crypt().__module__ == ("_crypt_r" if sys.version_info >= (3, 13) else "_crypt")


def test_an_unsupported_crypt_id_is_a_clear_error() -> None:
    with pytest.raises(ProvisionError) as e:
        hash_password("pw", "zz", 10)
    assert "Provisioning.PasswordCryptId='zz'" in str(e.value)


# ---- markers ---------------------------------------------------------------------------------

SWAPPED = "D0DF4C54-4ECB-4A4B-9954-5BDF3ED5C3B8"
RAW = "544CDFD0-CB4E-4B4A-9954-5BDF3ED5C3B8"


def _state(tmp_path: Any, provisioned: str | None, marker: str | None, attempt: str | None = None) -> str:
    for path, content in (
        ("var/lib/waagent/provisioned", provisioned),
        ("var/lib/waprov/provisioned", marker),
        ("var/lib/waprov/attempt", attempt),
    ):
        if content is not None:
            os.makedirs(os.path.dirname(tmp_path / path), exist_ok=True)
            (tmp_path / path).write_text(content)
    return provisioned_state(System(root=str(tmp_path)), Config(), SWAPPED)[0]


@pytest.mark.parametrize(
    ("provisioned", "marker", "state"),
    [
        (None, None, TODO),
        (SWAPPED, None, ADOPT),  # provisioned before waprov was installed
        (SWAPPED, SWAPPED, DONE),
        (RAW.lower(), SWAPPED, DONE),  # either byte order, any case
        (SWAPPED + "\n", SWAPPED.lower(), DONE),
        ("11111111-2222-3333-4444-555555555555", SWAPPED, CHANGED),
        ("", None, CHANGED),
    ],
)
def test_provisioned_state(tmp_path: Any, provisioned: str | None, marker: str | None, state: str) -> None:
    assert _state(tmp_path, provisioned, marker) == state


def test_a_started_run_resumes_even_when_provisioned_holds_this_vm(tmp_path: Any) -> None:
    assert _state(tmp_path, SWAPPED, None, attempt=SWAPPED.lower()) == TODO
    assert _state(tmp_path, SWAPPED, None, attempt="11111111-2222-3333-4444-555555555555") == ADOPT


# ---- reports and distributions -----------------------------------------------------------------


def test_the_failure_description_is_one_pipe_row_with_quoting_and_no_secret() -> None:
    e = ProvisionError(
        "failed to provision user", "user", "boom s3cret", command="useradd -m a|b", exit_code="9"
    )
    desc = failure_description(e, "VMID", Redactor(["s3cret"]), now=0)
    assert desc == (
        'result=error|reason=failed to provision user|agent=waprov/0.1.0|step=user|"command=useradd -m a|b"|'
        "exit_code=9|error=boom <redacted>|vm_id=VMID|timestamp=1970-01-01T00:00:00Z|"
        "documentation_url=https://aka.ms/linuxprovisioningerror"
    )


DEBIAN_RESTART = ("systemctl", "--job-mode=ignore-dependencies", "try-reload-or-restart", "ssh")
HOSTNAMECTL = ("hostnamectl", "set-hostname", "h", "--static")
RHEL_RESTART = ("systemctl", "condrestart", "sshd")
DISTROS: List[Tuple[Dict[str, str], Tuple[str, ...], Tuple[str, ...], bool]] = [
    ({"ID": "debian"}, ("hostname", "h"), DEBIAN_RESTART, False),
    ({"ID": "ubuntu", "ID_LIKE": "debian"}, ("hostname", "h"), (), False),
    ({"ID": "rhel", "ID_LIKE": "fedora"}, HOSTNAMECTL, RHEL_RESTART, False),
    ({"ID": "almalinux", "ID_LIKE": "rhel centos fedora"}, HOSTNAMECTL, RHEL_RESTART, False),
    ({"ID": "sles"}, ("hostnamectl", "set-hostname", "h"), ("systemctl", "restart", "sshd.service"), False),
    ({"ID": "azurelinux"}, HOSTNAMECTL, ("systemctl", "restart", "sshd"), False),
    ({"ID": "flatcar"}, ("hostname", "h"), (), True),
]


@pytest.mark.parametrize(("release", "hostname", "restart", "flatcar"), DISTROS)
def test_distribution_data(
    release: dict[str, str], hostname: Tuple[str, ...], restart: Tuple[str, ...], flatcar: bool
) -> None:
    d = Distro.detect(release)
    assert (d.hostname_argv("h"), d.sshd_restart, d.flatcar) == (hostname, restart, flatcar)


# ---- keys under a root prefix, SELinux ---------------------------------------------------------


def test_keys_are_labelled_for_selinux_when_getenforce_exists(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "getenforce").write_text("#!/bin/sh\necho Enforcing\n")
    (bindir / "getenforce").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("azureuser:x:4242:4243::/home/azureuser:/bin/sh\n")
    (root / "home/azureuser").mkdir(parents=True)
    os.chown(root / "home/azureuser", 4242, 4243)
    runner = ScriptedRunner(getenforce=ok)
    ctx = ctx_for(
        root, runner, public_keys=(PublicKey(path="$HOME/azureuser/.ssh/authorized_keys", value=ECDSA),)
    )
    deploy_keys(ctx)
    assert runner.calls == []  # labelled on the file's descriptor (no chcon by path)
    label = os.getxattr(root / "home/azureuser/.ssh/authorized_keys", "security.selinux")
    assert label == b"unconfined_u:object_r:ssh_home_t:s0\0"
    st = os.stat(root / "home/azureuser/.ssh/authorized_keys")
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o644, 4242, 4243)
    assert (root / "home/azureuser/.ssh/authorized_keys").read_text() == ECDSA + "\n"
    deploy_keys(ctx)  # again: no second line
    assert (root / "home/azureuser/.ssh/authorized_keys").read_text() == ECDSA + "\n"


# ---- keys: linear and bounded, hard links --------------------------------------------------------


def _home(root: Any) -> None:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/passwd").write_text("azureuser:x:4242:4243::/home/azureuser:/bin/sh\n")
    (root / "home/azureuser").mkdir(parents=True, exist_ok=True)
    os.chown(root / "home/azureuser", 4242, 4243)


def test_many_keys_for_one_file_are_written_once(tmp_path: Any) -> None:
    from tests.test_hostile_sandbox import fake_keys

    _home(tmp_path)
    lines = fake_keys(500)
    keys = tuple(PublicKey(path="$HOME/azureuser/.ssh/authorized_keys", value=k) for k in lines + lines)
    ctx = ctx_for(tmp_path, ScriptedRunner(), public_keys=keys)
    deploy_keys(ctx)
    writes = [a for a in ctx.system.actions if a.kind == "write"]
    assert [a.target for a in writes] == ["/home/azureuser/.ssh/authorized_keys"]  # not one per key
    assert (tmp_path / "home/azureuser/.ssh/authorized_keys").read_text().splitlines() == lines


def test_more_keys_than_the_bound_are_refused_before_anything_is_written(tmp_path: Any) -> None:
    from tests.test_hostile_sandbox import fake_keys

    _home(tmp_path)
    keys = tuple(PublicKey(path="$HOME/azureuser/.ssh/authorized_keys", value=k) for k in fake_keys(1001))
    ctx = ctx_for(tmp_path, ScriptedRunner(), public_keys=keys)
    with pytest.raises(
        ProvisionError, match="1001 SSH keys and key pairs are listed: waprov deploys at most 1000"
    ):
        deploy_keys(ctx)
    assert not (tmp_path / "home/azureuser/.ssh").exists()


def test_an_authorized_keys_with_a_second_hard_link_is_neither_read_nor_rewritten(tmp_path: Any) -> None:
    _home(tmp_path)
    ssh = tmp_path / "home/azureuser/.ssh"
    ssh.mkdir()
    secret = tmp_path / "etc/shadow"
    secret.write_text("root:$6$secret-hash:19000::::::\n")
    secret.chmod(0o600)
    os.link(secret, ssh / "authorized_keys")  # what a user does where hard links are not protected
    key = PublicKey(path="/home/azureuser/.ssh/authorized_keys", value=ECDSA)
    ctx = ctx_for(tmp_path, ScriptedRunner(), public_keys=(key,))
    with pytest.raises(HostError, match="has 2 hard links"):
        deploy_keys(ctx)
    st = os.stat(ssh / "authorized_keys")
    assert (st.st_ino, st.st_nlink, stat.S_IMODE(st.st_mode)) == (os.stat(secret).st_ino, 2, 0o600)
    assert secret.read_text() == "root:$6$secret-hash:19000::::::\n"


@pytest.mark.parametrize("fingerprint", ["/root/secretkey", "../../../srv/x/evil", "ABCDEF", "G" * 40])
def test_a_fingerprint_that_is_not_a_thumbprint_is_refused_before_a_path_is_built(
    tmp_path: Any, fingerprint: str
) -> None:
    _home(tmp_path)
    key = PublicKey(path="$HOME/azureuser/.ssh/authorized_keys", fingerprint=fingerprint)
    runner = ScriptedRunner(openssl=ok)
    ctx = ctx_for(tmp_path, runner, public_keys=(key,))
    deploy_keys(ctx)  # the local phase: keys named by Fingerprint wait for the certificates
    assert runner.calls == [] and ctx.system.actions == []
    with pytest.raises(ProvisionError, match="is not a 40-digit hexadecimal thumbprint"):
        deploy_remaining_keys(ctx)
    assert runner.calls == [] and ctx.system.actions == []


def test_the_network_phase_deploys_keys_only_when_some_are_left(tmp_path: Any) -> None:
    _home(tmp_path)
    _, line = user_key(str(tmp_path))
    value = PublicKey(path="/home/azureuser/.ssh/authorized_keys", value=line)
    ctx = ctx_for(tmp_path, ScriptedRunner(), public_keys=(value,))
    deploy_keys(ctx)
    written = [a for a in ctx.system.actions if a.kind == "write"]
    assert written
    deploy_remaining_keys(ctx)  # nothing beyond what the local phase deployed: no second write
    assert [a for a in ctx.system.actions if a.kind == "write"] == written


def test_a_dry_run_reads_the_key_file_by_descriptor_as_the_real_run_does(tmp_path: Any) -> None:
    _home(tmp_path)
    ssh = tmp_path / "home/azureuser/.ssh"
    ssh.mkdir()
    (tmp_path / "etc/shadow").write_text("root:$6$secret-hash:19000::::::\n")
    os.link(tmp_path / "etc/shadow", ssh / "authorized_keys")
    key = PublicKey(path="/home/azureuser/.ssh/authorized_keys", value=ECDSA)
    ctx = ctx_for(tmp_path, ScriptedRunner(), public_keys=(key,))
    ctx.system.dry_run = True
    with pytest.raises(HostError, match="has 2 hard links"):  # the plan fails where the run would
        deploy_keys(ctx)


def test_an_adopted_account_whose_home_is_slash_is_refused_by_the_user_step_when_keys_come(
    tmp_path: Any,
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("alice:x:1500:1500::/:/bin/sh\n")
    key = PublicKey(path="/root/.ssh/authorized_keys", value=ECDSA)
    ctx = ctx_for(tmp_path, ScriptedRunner(), username="alice", public_keys=(key,))
    with pytest.raises(ProvisionError) as e:
        create_user(ctx)  # before the password and sudoers steps change anything
    assert (e.value.reason, e.value.step) == ("unusable home directory", "user")
    assert "the home directory / of alice is not below OS.HomeDir /home" in str(e.value)
    assert not (tmp_path / "var/lib/waprov/user").exists()
    create_user(ctx_for(tmp_path, ScriptedRunner(), username="alice"))  # no keys: nothing is written there


def test_a_home_under_the_directory_home_dir_resolves_to_is_accepted(tmp_path: Any) -> None:
    """ostree systems: /home -> var/home, and useradd writes /var/home/<user> into passwd."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("azureuser:x:4242:4243::/var/home/azureuser:/bin/sh\n")
    (tmp_path / "var/home/azureuser").mkdir(parents=True)
    os.chown(tmp_path / "var/home/azureuser", 4242, 4243)
    (tmp_path / "home").symlink_to("var/home")
    keys = (  # as passwd names the home, and as Azure writes the path ($HOME is OS.HomeDir)
        PublicKey(path="/var/home/azureuser/.ssh/authorized_keys", value=ECDSA),
        PublicKey(path="$HOME/azureuser/.ssh/authorized_keys", value=IMDS_KEY),
    )
    deploy_keys(ctx_for(tmp_path, ScriptedRunner(), public_keys=keys))
    written = (tmp_path / "var/home/azureuser/.ssh/authorized_keys").read_text()
    assert written == ECDSA + "\n" + IMDS_KEY + "\n"


def test_a_symlinked_ssh_directory_is_reported_as_such_not_as_a_bad_descriptor(tmp_path: Any) -> None:
    _home(tmp_path)
    (tmp_path / "etc/target").mkdir()
    (tmp_path / "home/azureuser/.ssh").symlink_to(tmp_path / "etc/target")
    key = PublicKey(path="/home/azureuser/.ssh/authorized_keys", value=ECDSA)
    with pytest.raises(HostError, match=r"^cannot open /home/azureuser/.ssh: it is a symbolic link$"):
        deploy_keys(ctx_for(tmp_path, ScriptedRunner(), public_keys=(key,)))
    assert os.listdir(tmp_path / "etc/target") == []


def test_an_account_useradd_made_is_recorded_even_when_its_home_is_refused(tmp_path: Any) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("")
    (tmp_path / "srv/users/bob").mkdir(parents=True)

    def useradd(argv: List[str], data: Any) -> Tuple[int, bytes, bytes]:  # HOME=/srv/users in the image
        (tmp_path / "etc/passwd").write_text("bob:x:1500:1500::/srv/users/bob:/bin/sh\n")
        return 0, b"", b""

    key = PublicKey(path="/srv/users/bob/.ssh/authorized_keys", value=ECDSA)
    ctx = ctx_for(tmp_path, ScriptedRunner(useradd=useradd), username="bob", public_keys=(key,))
    with pytest.raises(ProvisionError, match=r"is not below OS\.HomeDir /home"):
        create_user(ctx)
    record = (tmp_path / "var/lib/waprov/user").read_text()
    assert record == "ID bob 1500 created\n"  # -deprovision+user then decides (and keeps it: its home)
