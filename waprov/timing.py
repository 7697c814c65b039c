"""Time for retries: every wait and deadline goes through one `Clock`.

`Clock(scale)` multiplies each delay, timeout and deadline by `scale` (the
`WAPROV_RETRY_SCALE` override, so fault tests run in milliseconds) and records the
unscaled delays it slept, in order, so tests and the run report can show them.
"""

from __future__ import annotations

import time
from typing import Callable, List, Tuple

from waprov.errors import HostError


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


def boot_time(stat: str = "/proc/stat") -> float:
    """When this boot began (seconds since the epoch): the kernel's `btime` line, what
    psutil.boot_time() reads on Linux. Read directly because importing psutil costs tenths
    of a second at a busy boot, before the host keys are begun."""
    try:
        with open(stat, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError) as e:
        raise HostError(f"cannot read the boot time from {stat}: {e}") from None
    raise HostError(f"cannot read the boot time from {stat}: no btime line")
