"""The error family: every failure waprov reports is a WaprovError with a clear message.

`exit_code` is what the command line returns for it: 2 for usage and configuration
errors, 1 when the requested operation failed. Messages never contain secrets: System
redacts them before an error is built.
"""

from __future__ import annotations


class WaprovError(Exception):
    """A failure with a message fit for an administrator (no traceback needed)."""

    exit_code = 1


class UsageError(WaprovError):
    """The command line is wrong."""

    exit_code = 2


class ConfigError(WaprovError):
    """A configuration file is unusable; the message names the file and the reason."""

    exit_code = 2

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class HostError(WaprovError):
    """A change to the host (a command, a file) failed."""


class ProtocolError(WaprovError):
    """What Azure gave us (ovf-env.xml, IMDS, the wireserver) is unusable or unreachable.

    The message is WALinuxAgent's wording where one exists (for example
    `Failed to validate OVF: HostName not found`), so reports read the same.
    """


class CommandNotFound(HostError):
    """The command is not installed (or not executable)."""


class CommandError(HostError):
    """A command exited non-zero; what a failure report needs, already redacted."""

    def __init__(self, message: str, command: str, exit_code: int, stderr_tail: str) -> None:
        super().__init__(message)
        self.command = command
        self.exit_status = exit_code
        self.stderr_tail = stderr_tail


class ProvisionError(WaprovError):
    """A provisioning step failed. `reason` is a fixed short phrase (the report's
    `reason=`), `step` the step's name, `data` supporting key=value items (a command, its
    exit code, a stderr tail, a path); `str()` is the full, secret-free message."""

    def __init__(self, reason: str, step: str, message: str, **data: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.step = step
        self.data = data
