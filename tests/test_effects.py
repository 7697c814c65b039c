"""One effects contract: reads go through System (root prefix, dry run), `root` means the
same for files and command arguments (HostPath), and the kernel's tables have one reader
each (procfs.py)."""

from __future__ import annotations

import ast
import os
import stat
import textwrap
from pathlib import Path
from typing import Dict, Set, Tuple

import psutil
import pytest

from tests.fakerunner import ScriptedRunner, ok
from waprov import procfs
from waprov.errors import HostError
from waprov.procfs import Mount
from waprov.system import HostPath, System


def put(root: Path, path: str, data: bytes | str = b"") -> None:
    full = root / path.lstrip("/")
    full.parent.mkdir(parents=True, exist_ok=True)
    full.write_bytes(data.encode() if isinstance(data, str) else data)


# ---- root: one meaning for files and command arguments --------------------------------------


def test_a_host_path_argument_gets_the_root_prefix_and_the_plan_shows_the_host_path(tmp_path: Path) -> None:
    runner = ScriptedRunner(dd=ok, mkswap=ok)
    system = System(root=str(tmp_path), runner=runner)
    system.run(["dd", "if=/dev/zero", HostPath("/mnt/swapfile", "of="), "bs=1M"])
    system.run(["mkswap", HostPath("/mnt/swapfile"), "/not/a/host/path"])
    assert runner.calls == [
        ["dd", "if=/dev/zero", f"of={tmp_path}/mnt/swapfile", "bs=1M"],
        ["mkswap", f"{tmp_path}/mnt/swapfile", "/not/a/host/path"],  # plain text stays as it is
    ]
    assert system.plan().splitlines() == [
        "run    dd if=/dev/zero of=/mnt/swapfile bs=1M",
        "run    mkswap /mnt/swapfile /not/a/host/path",
    ]


def test_a_host_path_argument_is_prefixed_for_queries_and_started_commands(tmp_path: Path) -> None:
    put(tmp_path, "/etc/motd", "hello\n")
    system = System(root=str(tmp_path))
    assert system.query(["cat", HostPath("/etc/motd")], check=True).stdout == "hello\n"
    assert system.start(["cat", HostPath("/etc/motd")]).wait().stdout == "hello\n"
    assert System().query(["cat", HostPath(str(tmp_path / "etc/motd"))]).stdout == "hello\n"  # root "/"


def test_a_host_path_must_be_absolute(tmp_path: Path) -> None:
    with pytest.raises(HostError, match="not an absolute path: etc/motd"):
        System(root=str(tmp_path), runner=ScriptedRunner(cat=ok)).run(["cat", HostPath("etc/motd")])


# ---- reads -------------------------------------------------------------------------------------


def test_listdir_stat_walk_and_realpath_read_under_the_root(tmp_path: Path) -> None:
    put(tmp_path, "/dev/sr0")
    put(tmp_path, "/sys/bus/x/block/sdb/size", "8\n")
    (tmp_path / "var/home").mkdir(parents=True)
    (tmp_path / "home").symlink_to("var/home")
    system = System(root=str(tmp_path))
    assert system.listdir("/dev") == ["sr0"]
    with pytest.raises(HostError, match="cannot list /nowhere: No such file or directory"):
        system.listdir("/nowhere")
    st = system.stat("/home")  # followed through the link
    assert st is not None and stat.S_ISDIR(st.st_mode)
    assert system.stat("/dev/nothing") is None and system.stat("/dev/sr0/below") is None
    assert system.realpath("/home/u") == "/var/home/u" and system.realpath("/") == "/"
    walked = [(d, sorted(dirs), files) for d, dirs, files in system.walk("/sys/bus")]
    assert walked == [("/sys/bus", ["x"], []), ("/sys/bus/x", ["block"], []),
                      ("/sys/bus/x/block", ["sdb"], []), ("/sys/bus/x/block/sdb", [], ["size"])]  # fmt: skip
    assert System().realpath(str(tmp_path / "home")) == str(tmp_path / "var/home")


def test_has_command_asks_the_runner() -> None:
    runner = ScriptedRunner(mdadm=ok)
    system = System(runner=runner)
    assert system.has_command("mdadm") and not system.has_command("visudo")
    assert System().has_command("sh") and not System().has_command("no-such-command-waprov")


# ---- procfs: the mount table and the processes -----------------------------------------------


def test_the_mount_table_is_read_under_the_root_with_the_kernels_escapes(tmp_path: Path) -> None:
    put(
        tmp_path, procfs.MOUNTS, "proc /proc proc rw 0 0\n/dev/sr0 /media/my\\040dvd udf ro 0 0\nshort line\n"
    )
    assert procfs.mounts(System(root=str(tmp_path))) == [
        Mount("proc", "/proc", "proc", "rw"),
        Mount("/dev/sr0", "/media/my dvd", "udf", "ro"),
    ]
    assert procfs.mounts(System(root=str(tmp_path / "none"))) == []


def test_the_mount_table_of_this_host_is_psutils() -> None:
    ours = {(m.mountpoint, m.fstype) for m in procfs.mounts(System())}
    theirs = {(p.mountpoint, p.fstype) for p in psutil.disk_partitions(all=True)}
    assert ours == theirs and any(m == "/" for m, _ in ours)


def test_processes_are_read_under_the_root(tmp_path: Path) -> None:
    put(tmp_path, "/proc/7/stat", "7 (systemd-network) S 1 7 7 0 -1")  # the kernel cuts names to 15
    put(tmp_path, "/proc/7/cmdline", b"/lib/systemd/systemd-networkd\0")
    put(tmp_path, "/proc/12/stat", "12 (a) b) Z 1")  # a name with a parenthesis; a zombie
    put(tmp_path, "/proc/30/stat", "30 (kthreadd) S 0")  # no argv
    put(tmp_path, "/proc/30/cmdline", b"")
    put(tmp_path, "/proc/self/stat", "7 (x) S")  # not a pid
    put(tmp_path, "/proc/44/stat", "garbage")
    system = System(root=str(tmp_path))
    assert procfs.processes(system) == [
        procfs.Process(7, "systemd-networkd", ("/lib/systemd/systemd-networkd",), "S"),
        procfs.Process(12, "a) b", (), "Z"),
        procfs.Process(30, "kthreadd", (), "S"),
    ]
    assert procfs.process(system, 99) is None
    assert procfs.process_names(system) == ["systemd-networkd", "a) b", "kthreadd"]


def test_this_process_is_found_as_psutil_names_it() -> None:
    me = procfs.process(System(), os.getpid())
    assert me is not None and me.state in ("R", "S")
    assert me.name == psutil.Process().name() and list(me.argv) == psutil.Process().cmdline()
    assert me.name in procfs.process_names(System())


# ---- no direct read of the host outside System ------------------------------------------------

PACKAGE = Path(__file__).resolve().parent.parent / "waprov"
# calls that read (or open) the host's files, processes or mounts without System
DIRECT = {
    "open", "io.open", "os.open", "os.fdopen", "os.listdir", "os.scandir", "os.walk", "os.stat",
    "os.lstat", "os.readlink", "os.access", "os.path.exists", "os.path.lexists", "os.path.isdir",
    "os.path.isfile", "os.path.islink", "os.path.ismount", "os.path.realpath", "os.path.getsize",
    "os.path.getmtime", "os.path.samefile", "glob.glob", "glob.iglob", "shutil.which", "read_regular",
}  # fmt: skip
PATH_METHODS = {"read_text", "read_bytes", "iterdir"}  # pathlib's, on any object
MODULES = {"psutil", "glob", "pathlib"}
CONF = "read before System exists: its Logs.Verbose sets up the logging whose redactor System takes"
HELD = "System's own code for a user's home, by descriptors (System.open_dir; security.md)"
LOCK = "the run lock: the running machine's, taken before System exists"
LOG = "the log file: the running machine's, opened before System exists"
KVP = "hv_kvp_daemon's pool, appended in place under its lock (System replaces files)"
# (file, function, what) -> why it does not go through System (docs/architecture.md lists these too)
ALLOWED: Dict[Tuple[str, str, str], str] = {
    ("waprov/cli.py", "main", "os.open"): "/dev/null for a closed stdout: no host file",
    ("waprov/config.py", "load_config", "os.path.exists"): CONF,
    ("waprov/config.py", "load_config", "os.path.islink"): CONF,
    ("waprov/config.py", "read_conf_text", "open"): CONF,
    ("waprov/config.py", "read_conf_text", "os.stat"): CONF,
    ("waprov/helddir.py", "<module>", "from waprov.hostfile import read_regular"): HELD,
    ("waprov/helddir.py", "HeldDir.read", "read_regular"): HELD,
    ("waprov/helddir.py", "HeldDir.write", "os.stat"): HELD,
    ("waprov/helddir.py", "_read_only_walk", "os.open"): HELD,
    ("waprov/helddir.py", "_step_down", "os.open"): HELD,
    ("waprov/helddir.py", "_why", "os.stat"): HELD,
    ("waprov/helddir.py", "open_dir", "os.open"): HELD,
    ("waprov/helddir.py", "open_dir", "os.path.islink"): HELD,
    ("waprov/helddir.py", "replace_at", "os.open"): HELD,
    ("waprov/kvp.py", "Kvp.__init__", "os.path.isdir"): KVP,
    ("waprov/kvp.py", "Kvp._append", "os.open"): KVP,
    ("waprov/lock.py", "_open_dir", "os.open"): LOCK,
    ("waprov/lock.py", "_open_dir", "os.path.islink"): LOCK,
    ("waprov/lock.py", "_open_lock", "os.open"): LOCK,
    ("waprov/log.py", "setup_logging", "os.fdopen"): LOG,
    ("waprov/log.py", "setup_logging", "os.open"): LOG,
    ("waprov/osrelease.py", "read_os_release", "open"): "-version has no System and must stay quick",
    ("waprov/network.py", "local_interfaces", "import psutil"): "no file holds the interfaces' addresses",
}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


class _Scan(ast.NodeVisitor):
    def __init__(self, name: str) -> None:
        self.name, self.scope = name, ["<module>"]
        self.found: Set[Tuple[str, str, str]] = set()

    def _add(self, what: str) -> None:
        self.found.add((self.name, ".".join(self.scope[1:]) or "<module>", what))

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] in MODULES:
                self._add("import " + alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        for alias in node.names:
            if (
                module.split(".")[0] in MODULES
                or f"{module}.{alias.name}" in DIRECT
                or alias.name == "read_regular"
            ):
                self._add(f"from {module} import {alias.name}")

    def visit_Call(self, node: ast.Call) -> None:
        name = _dotted(node.func)
        if name in DIRECT:
            self._add(name)
        elif isinstance(node.func, ast.Attribute) and node.func.attr in PATH_METHODS:
            self._add("." + node.func.attr)
        self.generic_visit(node)


def direct_reads() -> Set[Tuple[str, str, str]]:
    found: Set[Tuple[str, str, str]] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE.parent).as_posix()
        if name in ("waprov/system.py", "waprov/hostfile.py"):  # the contract itself
            continue
        scan = _Scan(name)
        scan.visit(ast.parse(path.read_text(encoding="utf-8"), name))
        found |= scan.found
    return found


def test_no_module_reads_the_host_but_through_system_or_as_listed() -> None:
    found = direct_reads()
    new = sorted(found - ALLOWED.keys())
    assert not new, "a direct host read outside System (route it through System, or list it here and in "
    "docs/architecture.md with the reason): " + ", ".join(":".join(n) for n in new)
    stale = sorted(ALLOWED.keys() - found)
    assert not stale, "listed but gone (remove from ALLOWED and the docs): " + ", ".join(
        ":".join(s) for s in stale
    )


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    source = textwrap.dedent("""
        import psutil, os
        from glob import glob
        def f():
            open("/etc/x").read()
            os.path.exists("/x")
        class C:
            def g(self):
                return os.listdir("/dev"), Path("/x").read_text()
    """)
    scan = _Scan("m.py")
    scan.visit(ast.parse(source))
    assert scan.found == {
        ("m.py", "<module>", "import psutil"), ("m.py", "<module>", "from glob import glob"),
        ("m.py", "f", "open"), ("m.py", "f", "os.path.exists"),
        ("m.py", "C.g", "os.listdir"), ("m.py", "C.g", ".read_text"),
    }  # fmt: skip
