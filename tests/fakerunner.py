"""A scripted command runner: the edge System uses to run commands, replaced in pure tests.

Each handler gets (argv, stdin) and returns (rc, stdout, stderr); a command without a
handler is "not installed" (FileNotFoundError, as from exec). Every call is recorded.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Tuple

Handler = Callable[[List[str], Optional[bytes]], Tuple[int, bytes, bytes]]


def ok(argv: List[str], data: Optional[bytes]) -> Tuple[int, bytes, bytes]:
    return 0, b"", b""


def fail(message: str, rc: int = 1) -> Handler:
    return lambda argv, data: (rc, b"", message.encode())


class ScriptedRunner:
    def __init__(self, **handlers: Handler) -> None:
        self.handlers: Dict[str, Handler] = dict(handlers)
        self.calls: List[List[str]] = []
        self.outputs: List[int] = []  # the output descriptors given (System.run(output=...))

    def __call__(
        self, argv: List[str], data: Optional[bytes], timeout: float, output: Optional[int] = None
    ) -> Tuple[int, bytes, bytes]:
        self.calls.append(list(argv))
        if output is not None:
            self.outputs.append(output)
        handler = self.handlers.get(os.path.basename(argv[0]))
        if handler is None:
            raise FileNotFoundError(argv[0])
        return handler(argv, data)

    def which(self, name: str) -> Optional[str]:
        """System's `which`: the commands with a handler are the installed ones."""
        return f"/usr/bin/{name}" if name in self.handlers else None

    def names(self) -> List[str]:
        return [os.path.basename(c[0]) for c in self.calls]
