"""Shell-variable files (`KEY=value` lines, `#` comments) edited as WALinuxAgent edits them,
through configobj (WA §5.1a).

configobj reads such a file into ordered keys that keep the comments and blank lines before
them and their raw values (with `list_values=False` the quotes stay part of the value, so
nothing is re-quoted), and writes it back; `KEY=value` without spaces is the one change to
its writer. Two rules, both WALinuxAgent's:

- `replace_or_append` (RHEL `ifcfg-<if>` `DHCP_HOSTNAME`, RHEL 6's `/etc/sysconfig/network`
  `HOSTNAME`; WA's `fileutil.update_conf_file`): every empty line and the key's line go, the
  comments keep their order, `KEY=value` comes last, the file ends with a newline. The file
  is always rewritten, so a second run leaves the same bytes.
- `set_in_place` (SUSE `/etc/sysconfig/network/dhcp` `DHCLIENT_HOSTNAME_OPTION`): nothing
  when the text after the last `=` of the key's line is one of `keep`; else that line
  becomes `KEY=value` where it is, or, when the key is absent, `KEY=value` is added at the
  end. Everything else stays byte for byte, the final newline too. (WA appends without a
  newline, so its file ends without one, or the line is glued to a last line that had
  none; here the added line ends with a newline.)

The key is a variable: WA matches lines by their start, so it also takes a line such as
`DHCP_HOSTNAME_X=1` for `DHCP_HOSTNAME`; here that is another variable, left alone. A file
configobj would not write back byte for byte before any edit (CRLF line ends, an indented
or `KEY = v` line, an inline comment after a space, a whitespace-only line, triple quotes,
`[section]` lines, a line that is no assignment, a duplicate key, non-UTF-8 bytes) is
refused with `SysconfigError` naming the file, the line and the reason: such a file is left
as it is rather than normalised, where WALinuxAgent's line rule would have edited it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple

from waprov.errors import HostError

if TYPE_CHECKING:
    from configobj import ConfigObj


class SysconfigError(HostError):
    """A shell-variable file that cannot be edited faithfully (the message says why)."""


def _shell_vars() -> type[ConfigObj]:
    """configobj's ConfigObj writing `KEY=value` (imported on first use: only the RHEL and
    SUSE families need it)."""
    from configobj import ConfigObj

    class ShellVars(ConfigObj):  # type: ignore[misc]
        def _write_line(self, indent_string: str, entry: str, this_entry: Any, comment: str) -> str:
            key = self._quote(entry, multiline=False)
            return f"{indent_string}{key}={self._quote(this_entry)}{comment}"

    return ShellVars


def _split(text: str) -> Tuple[List[str], bool]:
    """The file's lines (split on `\\n` only) and whether it ended with a newline."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
        return lines, True
    return lines, False


def _join(lines: Sequence[str], newline: bool) -> str:
    return "\n".join(lines) + ("\n" if newline and lines else "")


def parse(raw: bytes, path: str, *, exact: bool = True) -> Tuple[ConfigObj, bool]:
    """(the parsed file, whether it ended with a newline); SysconfigError when configobj
    cannot read it or (`exact`) would not write it back unchanged."""
    from configobj import ConfigObjError

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SysconfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    lines, newline = _split(text)
    try:
        conf = _shell_vars()(lines, list_values=False, interpolation=False, write_empty_values=True)
    except ConfigObjError as e:
        raise SysconfigError(f"{path}: {e}") from None
    if conf.sections:
        raise SysconfigError(f"{path}: a [{conf.sections[0]}] line is not shell syntax")
    written = conf.write()
    if exact and written != lines:
        pairs = enumerate(zip(lines, written))
        at = next((i for i, (a, b) in pairs if a != b), min(len(lines), len(written)))
        shown = lines[at] if at < len(lines) else "(the end of the file)"
        raise SysconfigError(
            f"{path}: line {at + 1} ({shown!r}) would not be written back as it is "
            "(CRLF, indentation, spaces around '=', an inline comment or triple quotes)"
        )
    return conf, newline


def replace_or_append(raw: bytes, path: str, key: str, value: str) -> str:
    """WA's update_conf_file: the new text (see the module docstring)."""
    conf, _ = parse(raw, path)
    if key in conf:
        keys = list(conf.keys())
        at = keys.index(key)
        before = list(conf.comments.get(key, []))  # the key's comment lines stay where they were
        del conf[key]
        if at < len(keys) - 1:
            after = keys[at + 1]
            conf.comments[after] = before + list(conf.comments.get(after, []))
        else:
            conf.final_comment = before + list(conf.final_comment)
    conf.initial_comment = [c for c in conf.initial_comment if c != ""]
    conf.final_comment = [c for c in conf.final_comment if c != ""]
    for name in conf.keys():
        conf.comments[name] = [c for c in conf.comments.get(name, []) if c != ""]
    # after everything, the comments that end the file too (configobj would put a new key
    # before those): the one line added by hand
    return _join([*conf.write(), f"{key}={value}"], True)


def set_in_place(raw: bytes, path: str, key: str, value: str, keep: Sequence[str]) -> Optional[str]:
    """The SUSE rule: the new text, or None when the key's value is one of `keep`."""
    conf, newline = parse(raw, path)
    if key in conf:
        # WA's value: the line's text after its last "=" (the line is `key=value#comment`,
        # byte for byte, or parse() would have refused the file)
        line = f"{key}={conf[key]}{conf.inline_comments.get(key) or ''}"
        if line.split("=")[-1] in keep:
            return None
        conf[key] = value
        conf.inline_comments[key] = None
        return _join(conf.write(), newline)
    lines, _ = _split(raw.decode("utf-8"))
    return _join([*lines, f"{key}={value}"], True)


def value_of(raw: bytes, path: str, key: str) -> Optional[str]:
    """The key's raw value (quotes kept), None when absent (a file read, not edited: its
    lines need not be written back as they are)."""
    conf, _ = parse(raw, path, exact=False)
    found = conf.get(key)
    return found if isinstance(found, str) else None
