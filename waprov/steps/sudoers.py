"""sudoers (WA §5.3): `<OS.SudoersDir>/waagent`, 0440.

The line is `<user> ALL=(ALL) NOPASSWD: ALL` when there is no password, else
`<user> ALL=(ALL) ALL`; it is appended unless the same line (trailing whitespace aside) is
there, other lines are kept. When the directory is missing, `#includedir <dir>` is
appended to `<dir>/../sudoers` (once) and the directory created. The new file is checked
with `visudo -c -f` before it replaces the old one (improvement: a bad file never lands).
A user name that sudoers reads as something else (`ALL`, `Defaults`, an `*_Alias` keyword,
an alias-shaped word of capitals, digits and `_`) is refused here as in the user step.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Optional

from waprov.errors import HostError, ProvisionError
from waprov.state import SUDOERS_CHECK, state_path
from waprov.steps import Ctx
from waprov.system import HostPath

log = logging.getLogger("waprov")
SUDOERS_KEYWORDS = frozenset(
    {"ALL", "Defaults", "User_Alias", "Runas_Alias", "Host_Alias", "Cmnd_Alias", "Cmd_Alias"}
)
_ALIAS_NAME = re.compile(r"[A-Z][A-Z0-9_]*")  # sudoers' ALIAS token


def sudoers_name_problem(name: str) -> Optional[str]:
    """Why `name` cannot stand as the user of a sudoers line; None when it can."""
    if name == "ALL":
        return "ALL is the sudoers keyword for every user: its line would give every account root"
    if name in SUDOERS_KEYWORDS:
        return f"{name} is a sudoers keyword, not a user name to sudoers"
    if _ALIAS_NAME.fullmatch(name):
        return "sudoers reads a word of capital letters, digits and '_' as an alias name, not as a user"
    return None


def sudoers_line(user: str, nopasswd: bool) -> str:
    return f"{user} ALL=(ALL) NOPASSWD: ALL" if nopasswd else f"{user} ALL=(ALL) ALL"


def with_line(text: str, line: str) -> str:
    """`text` with `line` appended (with a newline) unless an identical line is there."""
    if any(existing.rstrip() == line for existing in text.split("\n")):
        return text
    return text + line + "\n"


def _fail(message: str) -> ProvisionError:
    return ProvisionError("failed to configure sudoers", "sudoers", message)


def configure_sudoers(ctx: Ctx) -> None:
    problem = sudoers_name_problem(ctx.data.username)
    if problem is not None:  # the user step refuses it first; defence in depth
        raise _fail(f"UserName {ctx.data.username!r} gets no sudoers line: {problem}")
    directory = ctx.config.sudoers_dir.rstrip("/") or "/"
    if ctx.system.kind(directory) == "absent":
        main = os.path.normpath(os.path.join(directory, "..", "sudoers"))
        include = f"#includedir {directory}"
        text = (ctx.system.read(main) or b"").decode("utf-8", "surrogateescape")
        if include not in text.split("\n"):
            mode, owner = ctx.system.mode_owner(main) or (0o440, None)
            ctx.system.write(
                main, (text + "\n" + include + "\n").encode("utf-8", "surrogateescape"), mode, owner
            )
        ctx.system.makedirs(directory, 0o755)
    path = os.path.join(directory, "waagent")
    text = (ctx.system.read(path) or b"").decode("utf-8", "surrogateescape")
    new = with_line(text, sudoers_line(ctx.data.username, ctx.data.password is None))
    check = state_path(SUDOERS_CHECK, ctx.state_dir)
    if new != text and ctx.system.has_command("visudo"):
        ctx.system.makedirs(ctx.state_dir, 0o700)
        ctx.system.write(check, new.encode("utf-8", "surrogateescape"), 0o440)
        try:
            ctx.system.run(["visudo", "-c", "-q", "-f", HostPath(check)], timeout=30)
        except HostError as e:
            raise _fail(f"the new {path} does not pass visudo, left unchanged: {e}") from None
        finally:
            ctx.system.remove(check)
    elif new != text:
        log.warning("visudo is not installed: %s is written without a syntax check", path)
    ctx.system.write(path, new.encode("utf-8", "surrogateescape"), 0o440)
