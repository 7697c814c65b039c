"""The HTTP layer against real local servers: retry policies, deadlines, headers, proxies."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar, Iterator, List

import pytest

from tests.conftest import SCALE, closed_port, virtual_clock, waits
from tests.fakefabric import CLOSE, GARBAGE, RESET, FakeFabric, Fault, delay, status
from waprov import __version__
from waprov.errors import ProtocolError
from waprov.http import HttpClient, HttpStatusError, RetryPolicy
from waprov.timing import Clock

WIRE = RetryPolicy("wireserver", attempts=6, delay=1.0)


def versions_url(fabric: FakeFabric) -> str:
    return f"http://{fabric.wireserver}/?comp=versions"


def test_fibonacci_back_off_on_retryable_statuses(
    fabric: FakeFabric, client: HttpClient, clock: Clock
) -> None:
    fabric.script("versions", status(500), status(502), status(504), status(507))
    resp = client.request("GET", versions_url(fabric), WIRE)
    assert resp.status == 200
    assert waits(clock) == [2.0, 3.0, 5.0, 8.0]
    assert len(fabric.requests_for("versions")) == 5


def test_the_pauses_really_happen_scaled(fabric: FakeFabric, client: HttpClient) -> None:
    fabric.script("versions", status(500), status(500))
    client.request("GET", versions_url(fabric), WIRE)
    times = [r.time for r in fabric.requests_for("versions")]
    assert times[1] - times[0] >= 2.0 * SCALE
    assert times[2] - times[1] >= 3.0 * SCALE


def test_throttling_uses_one_second_and_more_attempts(
    fabric: FakeFabric, client: HttpClient, clock: Clock
) -> None:
    fabric.script("versions", *[status(503)] * 7, status(429), status(403))
    assert client.request("GET", versions_url(fabric), WIRE).status == 200
    assert waits(clock) == [1.0] * 9  # 10 attempts although the policy says 6


def test_retries_run_out_with_the_last_status_in_the_error(
    fabric: FakeFabric, client: HttpClient, clock: Clock
) -> None:
    fabric.script("versions", *[status(500, b"busy")] * 6)
    with pytest.raises(HttpStatusError) as e:
        client.request("GET", versions_url(fabric), WIRE)
    assert e.value.status == 500
    assert "after 6 attempts" in str(e.value) and "HTTP 500: busy" in str(e.value)
    assert waits(clock) == [2.0, 3.0, 5.0, 8.0, 13.0]


def test_a_status_that_is_not_retried_fails_at_once(
    fabric: FakeFabric, client: HttpClient, clock: Clock
) -> None:
    fabric.script("versions", status(404, b"no such thing"), status(410))
    with pytest.raises(HttpStatusError) as e:
        client.request("GET", versions_url(fabric), WIRE)
    assert e.value.status == 404 and "no such thing" in str(e.value)
    assert clock.slept == [] and len(fabric.requests_for("versions")) == 1


@pytest.mark.parametrize("fault", [RESET, CLOSE])
def test_a_dropped_connection_is_retried_at_once_then_with_the_back_off(
    fabric: FakeFabric, client: HttpClient, clock: Clock, fault: Fault
) -> None:
    fabric.script("versions", *[fault] * 5)
    assert client.request("GET", versions_url(fabric), WIRE).status == 200
    assert waits(clock) == [0.1, 0.2, 0.4, 2.0, 3.0]  # 3 quick retries (not attempts), then WA's
    assert len(fabric.requests_for("versions")) == 6


def test_quick_retries_do_not_pass_the_deadline(client: HttpClient) -> None:
    clock = virtual_clock()
    policy = RetryPolicy("short", attempts=6, delay=1.0, deadline=0.25)
    with pytest.raises(ProtocolError, match=r"at its 0.25s deadline, after 2 attempts: connection refused"):
        HttpClient(clock).request("GET", f"http://127.0.0.1:{closed_port()}/", policy)
    assert waits(clock) == [0.1]  # 0.2 more would pass 0.25 s


def test_an_unanswered_request_times_out_and_is_retried(fabric: FakeFabric, clock: Clock) -> None:
    fabric.script("versions", delay(1.0))
    client = HttpClient(clock, min_timeout=0.05)  # the policy's 10 s scaled to 10 ms, floor 50 ms
    resp = client.request("GET", versions_url(fabric), WIRE)
    assert resp.status == 200 and len(fabric.requests_for("versions")) == 2
    assert waits(clock) == [2.0]  # a timeout keeps WALinuxAgent's back-off


def test_every_failed_attempt_is_a_warning_with_its_reason(
    fabric: FakeFabric, client: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    fabric.script("versions", CLOSE, status(500, b"busy"), status(404, b"gone away"))
    with caplog.at_level(logging.WARNING, logger="waprov"), pytest.raises(HttpStatusError):
        client.request("GET", versions_url(fabric), WIRE)
    url = versions_url(fabric)
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING] == [
        (logging.WARNING, f"wireserver: GET {url} attempt 1 failed: connection closed without a response"),
        (logging.WARNING, f"wireserver: GET {url} attempt 2 failed: HTTP 500: busy"),
        (logging.WARNING, f"wireserver: GET {url} attempt 3 failed: HTTP 404: gone away"),
    ]


def test_the_deadline_stops_retrying(fabric: FakeFabric) -> None:
    clock = virtual_clock()
    policy = RetryPolicy("short", attempts=100, delay=1.0, deadline=12.0)
    fabric.script("versions", *[status(500)] * 100)
    with pytest.raises(ProtocolError, match="at its 12s deadline"):
        HttpClient(clock).request("GET", versions_url(fabric), policy)
    assert waits(clock) == [2.0, 3.0, 5.0]  # 8 more would pass 12 s


def test_a_refused_connection_is_a_clear_error(client: HttpClient, clock: Clock) -> None:
    with pytest.raises(ProtocolError, match="gave up after 5 attempts: connection refused"):
        client.request("GET", f"http://127.0.0.1:{closed_port()}/", RetryPolicy("x", attempts=2, delay=1.0))
    assert waits(clock) == [0.1, 0.2, 0.4, 2.0]


def test_accept_turns_a_bad_200_into_a_retry(fabric: FakeFabric, client: HttpClient, clock: Clock) -> None:
    fabric.script("versions", GARBAGE)
    resp = client.request(
        "GET", versions_url(fabric), WIRE, accept=lambda r: "garbage" if r.body.startswith(b"\x00") else None
    )
    assert resp.body.startswith(b"<?xml") and waits(clock) == [2.0]


def test_common_headers(fabric: FakeFabric, client: HttpClient) -> None:
    client.request("GET", versions_url(fabric), WIRE, headers={"x-ms-version": "2012-11-30"})
    (req,) = fabric.requests_for("versions")
    assert req.headers["User-Agent"] == f"waprov/{__version__}"
    assert req.headers["Connection"] == "close"
    assert req.headers["x-ms-version"] == "2012-11-30"


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[List[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[tuple[int, List[str]]]:
    """A recording HTTP proxy on 127.0.0.1 (it answers every request itself)."""
    seen: List[str] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()


def test_httpproxy_applies_to_outside_urls_only(fabric: FakeFabric, proxy: tuple[int, List[str]]) -> None:
    port, seen = proxy
    client = HttpClient(Clock(SCALE), proxy_host="127.0.0.1", proxy_port=port)
    client.request("GET", versions_url(fabric), WIRE)  # the wireserver: direct
    assert seen == [] and len(fabric.requests_for("versions")) == 1
    client.request("GET", "http://storage.example.invalid/blob", WIRE, internal=False)
    assert seen == ["http://storage.example.invalid/blob"]


def test_proxy_environment_applies_to_outside_urls_only(
    fabric: FakeFabric, proxy: tuple[int, List[str]]
) -> None:
    port, seen = proxy
    env = {"http_proxy": f"http://127.0.0.1:{port}", "NO_PROXY": "skip.example.invalid"}
    client = HttpClient(Clock(SCALE), environ=env)
    client.request("GET", versions_url(fabric), WIRE)
    client.request("GET", f"{fabric.imds_url}/metadata/instance?x", WIRE, headers={"Metadata": "true"})
    assert seen == []
    client.request("GET", "http://storage.example.invalid/a", WIRE, internal=False)
    assert seen == ["http://storage.example.invalid/a"]
    assert client.proxies_for("http://skip.example.invalid/b", internal=False) == {}
    assert client.proxies_for("http://168.63.129.16/", internal=False) == {}
    assert client.proxies_for("http://169.254.169.254/", internal=False) == {}
