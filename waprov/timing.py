"""Time for retries: every wait and deadline goes through one `Clock`.

`Clock(scale)` multiplies each delay, timeout and deadline by `scale` (the
`WAPROV_RETRY_SCALE` override, so fault tests run in milliseconds) and records the
unscaled delays it slept, in order, so tests and the run report can show them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, List, Tuple

from waprov.errors import HostError

if TYPE_CHECKING:
    from waprov.system import System


class Clock:
    """Scaled sleeps and deadlines; `slept` lists (what, unscaled seconds)."""

    def __init__(
        self,
        scale: float = 1.0,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not scale > 0:
            raise ValueError("the retry scale must be a positive number")
        self.scale = scale
        self._sleep = sleep
        self._monotonic = monotonic
        self.slept: List[Tuple[str, float]] = []

    def seconds(self, seconds: float) -> float:
        """A duration from a policy, scaled."""
        return seconds * self.scale

    def deadline(self, seconds: float) -> float:
        """The monotonic time `seconds` (scaled) from now."""
        return self._monotonic() + seconds * self.scale

    def remaining(self, deadline: float) -> float:
        return deadline - self._monotonic()

    def sleep(self, seconds: float, what: str = "") -> None:
        """Wait `seconds` (unscaled as the policy states it; the scale applies here)."""
        self.slept.append((what, seconds))
        self._sleep(seconds * self.scale)


def boot_time(system: System, stat: str = "/proc/stat") -> float:
    """When this boot began (seconds since the epoch): the kernel's `btime` line, what
    psutil.boot_time() reads on Linux (not psutil itself: importing it costs tenths of a
    second at a busy boot, before the host keys are begun)."""
    try:
        raw = system.read(stat, limit=1 << 22)
        for line in (raw or b"").decode("ascii", "replace").splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (HostError, ValueError, IndexError) as e:
        raise HostError(f"cannot read the boot time from {stat}: {e}") from None
    raise HostError(f"cannot read the boot time from {stat}: no btime line")
