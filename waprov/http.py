"""HTTP for everything waprov says to Azure: one session factory, retries, proxy rules.

`HttpClient.request()` makes one logical call under a `RetryPolicy`: retryable statuses
and transport errors are retried with WALinuxAgent's Fibonacci back-off (delay x 2, 3,
5, 8, ...) or a fixed interval, throttling statuses use a short fixed delay and more
attempts, and the whole call stops at the policy's deadline. A connection refused, reset
or closed before any response is first retried at once a few times (0.1, 0.2, 0.4 s,
`RetryPolicy.quick_retries`, not counted as attempts) before that back-off applies: one
dropped connection at boot must not cost WALinuxAgent's 30 s. Timeouts and statuses keep
WALinuxAgent's policy. Every failed attempt is logged at WARNING with its reason.
Internal endpoints (the wireserver, IMDS) never go through a proxy; `HttpProxy.Host`/`Port`,
else `http_proxy`/`https_proxy` minus `no_proxy`, apply to outside URLs only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, Mapping, Optional, Tuple
from urllib.parse import urlsplit

import requests

from waprov import __version__
from waprov.errors import ProtocolError
from waprov.timing import Clock

log = logging.getLogger("waprov")
MAX_BODY = 16 * 1024 * 1024
OK_STATUSES = frozenset({200, 201, 202})
# WA restutil: retried statuses, and the throttling subset (fixed 1 s, at least 25 attempts)
WIRE_RETRY = frozenset({205, 206, 403, 429, 500, 501, 502, 503, 504, 507})
WIRE_THROTTLE = frozenset({403, 429, 503})
INTERNAL_HOSTS = frozenset({"168.63.129.16", "169.254.169.254"})
# a connection refused, reset or closed before any response: retried at once, these pauses
QUICK_RETRIES = (0.1, 0.2, 0.4)
USER_AGENT = f"waprov/{__version__}"


@dataclass(frozen=True)
class RetryPolicy:
    """How one logical call is retried; every time here is unscaled seconds."""

    name: str
    attempts: int
    delay: float
    backoff: str = "fibonacci"  # or "fixed"
    retry_statuses: FrozenSet[int] = WIRE_RETRY
    throttle_statuses: FrozenSet[int] = WIRE_THROTTLE
    throttle_delay: float = 1.0
    throttle_attempts: int = 25
    deadline: float = 300.0
    timeout: float = 10.0
    quick_retries: Tuple[float, ...] = QUICK_RETRIES

    def wait(self, failures: int, throttled: bool) -> float:
        """The pause after the `failures`-th failed attempt."""
        if throttled:
            return self.throttle_delay
        if self.backoff == "fixed":
            return self.delay
        a, b = 2, 3
        for _ in range(failures - 1):
            a, b = b, a + b
        return self.delay * a


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = field(repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


class HttpStatusError(ProtocolError):
    """The server answered with a status that is not success and not retried (or the
    retries ran out on one)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Transport(Exception):
    """No usable answer; `early`: the connection failed before any response began
    (refused, reset, closed), which a quick retry may cure."""

    def __init__(self, reason: str, early: bool = False) -> None:
        super().__init__(reason)
        self.early = early


def _snippet(body: bytes, limit: int = 200) -> str:
    text = body[:limit].decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    return text + ("..." if len(body) > limit else "")


def _no_proxy_match(host: str, no_proxy: str) -> bool:
    for entry in no_proxy.replace(" ", "").split(","):
        if not entry:
            continue
        if entry == "*":
            return True
        entry = entry.split(":")[0].lstrip(".").lower()
        if host == entry or host.endswith("." + entry):
            return True
    return False


class HttpClient:
    """One per run. `accept(response)` may return a reason to treat a 2xx as a retryable
    failure (a goal state without RoleInstance, an unparsable IMDS document)."""

    def __init__(
        self,
        clock: Clock,
        *,
        proxy_host: Optional[str] = None,
        proxy_port: Optional[int] = None,
        environ: Optional[Mapping[str, str]] = None,
        min_timeout: float = 1.0,
    ) -> None:
        self.clock = clock
        self.min_timeout = min_timeout  # a scaled timeout never goes below this (seconds)
        self.proxy_host = proxy_host
        self.proxy_port = proxy_port
        self.environ = dict(environ or {})
        self.session = requests.Session()
        self.session.trust_env = False  # proxies and netrc only as stated here

    def proxies_for(self, url: str, internal: bool) -> Dict[str, str]:
        """The proxy for `url`: none for the wireserver and IMDS, ever."""
        host = (urlsplit(url).hostname or "").lower()
        if internal or host in INTERNAL_HOSTS:
            return {}
        if self.proxy_host:
            port = f":{self.proxy_port}" if self.proxy_port is not None else ""
            proxy = f"http://{self.proxy_host}{port}"
            return {"http": proxy, "https": proxy}
        env = {k.lower(): v for k, v in self.environ.items() if v}
        if _no_proxy_match(host, env.get("no_proxy", "")):
            return {}
        scheme = urlsplit(url).scheme
        env_proxy = env.get(f"{scheme}_proxy")
        return {scheme: env_proxy} if env_proxy else {}

    def _once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Optional[bytes],
        timeout: float,
        internal: bool,
    ) -> Response:
        all_headers = {"User-Agent": USER_AGENT, "Connection": "close", **headers}
        try:
            with self.session.request(
                method,
                url,
                headers=all_headers,
                data=body,
                timeout=timeout,
                proxies=self.proxies_for(url, internal),
                allow_redirects=False,
                stream=True,
            ) as r:
                chunks, size = [], 0
                for chunk in r.iter_content(65536):
                    size += len(chunk)
                    if size > MAX_BODY:
                        raise _Transport(f"response larger than {MAX_BODY} bytes")
                    chunks.append(chunk)
                return Response(r.status_code, b"".join(chunks), dict(r.headers))
        except requests.exceptions.Timeout:
            raise _Transport(f"no answer within {timeout:.3g}s") from None
        except requests.exceptions.ConnectionError as e:  # before any response (not mid-body)
            reason = _describe(e)
            raise _Transport(reason, early=reason in _EARLY_REASONS) from None
        except requests.exceptions.RequestException as e:
            raise _Transport(_describe(e)) from None

    def request(
        self,
        method: str,
        url: str,
        policy: RetryPolicy,
        *,
        headers: Optional[Mapping[str, str]] = None,
        body: Optional[bytes] = None,
        internal: bool = True,
        accept: Optional[Callable[[Response], Optional[str]]] = None,
    ) -> Response:
        deadline = self.clock.deadline(policy.deadline)
        attempts = policy.attempts
        tries = failures = quick = 0  # all attempts; failures under the back-off; quick retries
        while True:
            tries += 1
            throttled, early, status = False, False, None
            timeout = max(self.clock.seconds(policy.timeout), self.min_timeout)
            timeout = min(timeout, max(self.clock.remaining(deadline), 0.05))
            try:
                resp = self._once(method, url, headers or {}, body, timeout, internal)
            except _Transport as e:
                reason, early = str(e), e.early
            else:
                if resp.status in OK_STATUSES:
                    problem = accept(resp) if accept else None
                    if problem is None:
                        return resp
                    reason = problem
                elif resp.status in policy.retry_statuses:
                    status = resp.status
                    reason = f"HTTP {resp.status}: {_snippet(resp.body)}"
                    if resp.status in policy.throttle_statuses:
                        throttled = True
                        attempts = max(attempts, policy.throttle_attempts)
                else:  # not retried: the caller decides (a 410 means the goal state changed)
                    reason = f"HTTP {resp.status}: {_snippet(resp.body)}"
                    log.warning("%s: %s %s attempt %d failed: %s", policy.name, method, url, tries, reason)
                    raise HttpStatusError(f"{method} {url} failed: {reason}", resp.status)
            log.warning("%s: %s %s attempt %d failed: %s", policy.name, method, url, tries, reason)
            if early and quick < len(policy.quick_retries):
                wait = policy.quick_retries[quick]
                quick += 1
                if self.clock.remaining(deadline) >= self.clock.seconds(wait):
                    self.clock.sleep(wait, f"{policy.name} (connection retry)")
                    continue
            failures += 1
            wait = policy.wait(failures, throttled)
            if failures >= attempts:
                why = f"after {tries} attempts"
            elif self.clock.remaining(deadline) < self.clock.seconds(wait):
                why = f"at its {policy.deadline:g}s deadline, after {tries} attempts"
            else:
                self.clock.sleep(wait, policy.name)
                continue
            message = f"{method} {url} gave up {why}: {reason}"
            if status is not None:
                raise HttpStatusError(message, status)
            raise ProtocolError(message)


# what requests' nested error texts contain -> the short reason shown
_TRANSPORT_REASONS = {
    "Connection refused": "connection refused",
    "Connection reset": "connection reset",
    "Name or service not known": "name or service not known",
    "Network is unreachable": "network is unreachable",
    "No route to host": "no route to host",
    "RemoteDisconnected": "connection closed without a response",
    "Broken pipe": "connection closed while sending",
    "timed out": "timed out",
}
# a connection that failed before any response: quick retries first (QUICK_RETRIES)
_EARLY_REASONS = frozenset(
    {
        "connection refused",
        "connection reset",
        "connection closed without a response",
        "connection closed while sending",
    }
)


def _describe(e: Exception) -> str:
    text = str(e)
    for marker, reason in _TRANSPORT_REASONS.items():
        if marker in text:
            return reason
    return f"{type(e).__name__}: {text[:200]}"
