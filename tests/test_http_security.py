"""The worker's HTTP port per contract §7, against a real worker (issue 10).

A worker with ``CDI_HTTP_TOKEN`` and the sample replayed into it:
- every data endpoint answers 401 without the token, with a wrong one or a
  malformed header, and 200 with it; ``/healthz``, ``/readyz`` and the
  board's static files (no data) are open;
- the security headers are on every response: 200, 400, 401, 404;
- faust's built-in pages (tables, router, stats, graph) are not served;
- a worker bound to a non-loopback address without a token refuses to start
  (exit 2, one line) and starts with ``CDI_HTTP_ALLOW_ANONYMOUS=true`` or a token.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest

from pipeline.commands.replay import replay
from pipeline.kafka.local import LocalBroker, free_port
from pipeline.settings import Settings
from pipeline.stream.web.security import SECURITY_HEADERS
from support import ROOT, SAMPLE, Processes, worker_env

pytestmark = pytest.mark.integration

TOKEN = "tok-Gx81-http-security-test"
DATA = ["/metrics", "/audit", "/report", "/incidents", "/incidents?status=overdue", "/board/state"]
OPEN = ["/healthz", "/readyz", "/", "/static/board.js", "/static/board.css"]
FAUST_PAGES = ["/table/", "/router/", "/stats/", "/graph/", "/table/incidents/x/", "/table/incidents/",
               "/router/incidents/x/", "/stats", "/graph"]


def request(url: str, token: str | None = None, authorization: str | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of a GET, whatever the status."""
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if authorization is not None:
        headers["Authorization"] = authorization
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def assert_secure_headers(headers: dict, what: str) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, f"{what}: {name} is {headers.get(name)!r}"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """(broker, worker URL, an incident id): a token-protected worker with the sample processed."""
    from conftest import _binary_or_skip

    tmp = tmp_path_factory.mktemp("http")
    procs = Processes(tmp)
    with LocalBroker(binary=_binary_or_skip()) as broker:
        procs.broker = broker
        try:
            url = procs.start_worker("worker", broker.url, worker_env(CDI_HTTP_TOKEN=TOKEN))

            procs.wait_until("worker ready", lambda: _status(url + "/readyz") == 200, timeout=90)
            assert replay([SAMPLE], Settings(broker=broker.url)).ok

            def some_incident():
                status, _h, body = request(url + "/incidents?status=overdue&limit=1", TOKEN)
                page = json.loads(body) if status == 200 else []
                return page[0]["incident_id"] if page else None

            incident_id = procs.wait_until("an overdue incident", some_incident, timeout=90)
            yield broker, url, incident_id, procs
        finally:
            procs.stop_all()


def data_paths(incident_id: str) -> list[str]:
    return DATA + [f"/incidents/{quote(incident_id, safe='')}"]


def test_data_endpoints_need_the_token(secured):
    _broker, url, incident_id, _procs = secured
    for path in data_paths(incident_id):
        status, headers, body = request(url + path)
        assert status == 401, f"{path} without a token: {status}"
        assert headers.get("WWW-Authenticate", "").startswith("Bearer"), path
        assert list(json.loads(body)) == ["error"], path  # no data in a 401
        assert_secure_headers(headers, f"401 {path}")
        for wrong in ("Bearer wrong-token", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", TOKEN, f"bearer {TOKEN}",
                      f"Basic {TOKEN}", "Bearer ", ""):
            assert request(url + path, authorization=wrong)[0] == 401, f"{path} with {wrong!r}"
        status, headers, body = request(url + path, TOKEN)
        assert status == 200, f"{path} with the token: {status} {body[:200]!r}"
        assert_secure_headers(headers, f"200 {path}")
        assert headers.get("Cache-Control") == "no-store", path


def test_health_and_board_files_are_open(secured):
    _broker, url, incident_id, _procs = secured
    for path in OPEN:
        status, headers, body = request(url + path)
        assert status == 200, f"{path} without a token: {status}"
        assert_secure_headers(headers, path)
    # the board's files hold no data: it comes from the protected endpoints
    for path in OPEN[2:]:
        assert incident_id.encode() not in request(url + path)[2], path


def test_security_headers_on_errors(secured):
    _broker, url, _iid, _procs = secured
    status, headers, _ = request(url + "/no-such-page", TOKEN)
    assert status == 404
    assert_secure_headers(headers, "404")
    status, headers, _ = request(url + "/no-such-page")
    assert status == 401  # unknown paths are not open either
    assert_secure_headers(headers, "401 unknown path")
    status, headers, _ = request(url + "/incidents?status=bogus", TOKEN)
    assert status == 400
    assert_secure_headers(headers, "400")
    status, headers, _ = request(url + "/incidents/NO-SUCH-INCIDENT", TOKEN)
    assert status == 404
    assert_secure_headers(headers, "404 incident")


def test_faust_builtin_pages_are_not_served(secured):
    _broker, url, _iid, _procs = secured
    for path in FAUST_PAGES:
        status, headers, body = request(url + path, TOKEN)
        assert status == 404, f"{path}: {status} {body[:200]!r}"
        assert_secure_headers(headers, path)
        assert request(url + path)[0] == 401, path


def _worker(tmp, broker, port: int, **env: str) -> subprocess.Popen:
    base = {k: v for k, v in worker_env().items() if k not in ("CDI_HTTP_TOKEN", "CDI_HTTP_TOKEN_FILE",
                                                                 "CDI_HTTP_ALLOW_ANONYMOUS")}
    base.update(env)
    return subprocess.Popen([sys.executable, "-m", "pipeline", "worker", "--broker", broker.url, "--web-host",
                             "0.0.0.0", "--web-port", str(port), "--data-dir", str(tmp / f"data-{port}")],
                            env=base, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_network_bound_worker_needs_a_token_or_an_explicit_opt_out(secured, tmp_path):
    broker, _url, _iid, procs = secured
    # no token: refuses before touching the broker or the port
    t0 = time.monotonic()
    proc = _worker(tmp_path, broker, free_port())
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "CDI_HTTP_TOKEN" in lines[0] and "CDI_HTTP_ALLOW_ANONYMOUS" in lines[0], err
    assert not out and time.monotonic() - t0 < 20

    # with the explicit opt-out, or with a token, it starts (its own app id: its own group)
    for name, env, token in (("anonymous", {"CDI_HTTP_ALLOW_ANONYMOUS": "true"}, None),
                             ("token", {"CDI_HTTP_TOKEN": TOKEN + "-2"}, TOKEN + "-2")):
        port = free_port()
        proc = _worker(tmp_path, broker, port, CDI_APP_ID=f"cdiwatch-{name}", **env)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while _status(base + "/readyz") != 200:
                assert proc.poll() is None, proc.communicate()[1][-2000:]
                assert time.monotonic() < deadline, f"{name} worker not ready"
                time.sleep(0.3)
            assert request(base + "/audit", token)[0] == 200
            assert request(base + "/audit")[0] == (200 if token is None else 401)
        finally:
            proc.terminate()
            try:
                proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def _status(url: str) -> int | None:
    try:
        return request(url)[0]
    except OSError:  # not listening yet
        return None
