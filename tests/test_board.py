"""The control room's board in a real browser (issue 12): headless Chromium
driven by Playwright, against a real worker on a real broker (Tansu).

What a control-room lead does with it: filter by district (kept in the URL),
page through the lists, open an incident and read why it has its status (its
timeline, deadline, linked crimes, the rule), see the downgrades, notice new
rows and a silent feed, and give the access token once. Every page is also
checked for console errors: a Content-Security-Policy violation (an inline
script or style) shows up there.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import orjson
import pytest

from chromium import chromium, screenshot_path
from pipeline.capture import read_capture
from pipeline.commands.replay import replay
from pipeline.kafka.local import LocalBroker
from pipeline.settings import Settings
from pipeline.simulation import SimMessage, Simulator
from support import EXPECTED_AUDIT, SAMPLE, Processes, get_json, http_ok, same_audit, worker_env

pytestmark = pytest.mark.integration

ZONE = ZoneInfo("Europe/London")
EXPECTED = json.loads(EXPECTED_AUDIT.read_text())
VIEWPORT = {"width": 1360, "height": 900}


def local(iso: str, seconds: bool = False) -> str:
    """An RFC 3339 instant as the board writes it: ``Tue 6 Oct 14:33 BST``."""
    d = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(ZONE)
    return f"{d:%a} {d.day} {d:%b} {d:%H:%M}{d.strftime(':%S') if seconds else ''} {d.tzname()}"


def wait_ready(procs: Processes, url: str) -> None:
    procs.wait_until(f"{url} ready", lambda: http_ok(url + "/readyz"), timeout=90)


def board_counts(url: str, token: str | None = None) -> dict:
    import urllib.request

    req = urllib.request.Request(url + "/board/state", headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.load(resp)["counts"]


SAMPLE_COUNTS = {"overdue": EXPECTED["incidents"]["overdue"], "at_risk": EXPECTED["incidents"]["at_risk"],
                 "pending": EXPECTED["incidents"]["pending"] - EXPECTED["incidents"]["at_risk"],
                 "downgraded": EXPECTED["incidents"]["downgraded"]}


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def sample_board(tmp_path_factory):
    """One broker, one worker, the sample replayed; the board shows all of it."""
    from conftest import _binary_or_skip

    procs = Processes(tmp_path_factory.mktemp("board"))
    with LocalBroker(binary=_binary_or_skip()) as broker:
        procs.broker = broker
        try:
            url = procs.start_worker("worker", broker.url)
            wait_ready(procs, url)
            assert replay([str(SAMPLE)], Settings(broker=broker.url)).ok
            procs.wait_until("the expected audit", lambda: same_audit(get_json(url + "/audit"), EXPECTED))
            procs.wait_until("the board lists every incident", lambda: board_counts(url) == SAMPLE_COUNTS, timeout=30)
            yield broker, url, procs
        finally:
            procs.stop_all()


class Page:
    """A fresh browser tab (own sessionStorage) that records console errors and JS dialogs."""

    def __init__(self, browser) -> None:
        self.context = browser.new_context(viewport=VIEWPORT, locale="en-GB")
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.js_dialogs: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.js_dialogs.append(d.message), d.dismiss()))

    def close(self) -> None:
        self.context.close()
        assert not self.errors, f"console errors: {self.errors}"
        assert not self.js_dialogs, f"the board used alert()/prompt(): {self.js_dialogs}"


@pytest.fixture
def tab(browser):
    t = Page(browser)
    yield t.page
    t.close()


def rows(page, status: str) -> list[dict]:
    return page.eval_on_selector_all(
        f'section[data-status="{status}"] tbody tr[data-id]',
        """trs => trs.map(tr => ({id: tr.dataset.id, cells: [...tr.children].map(c => c.innerText.trim()),
                                  titles: [...tr.querySelectorAll('[title]')].map(e => e.title),
                                  isNew: !!tr.querySelector('.badge-new')}))""")


def api(url: str, path: str) -> tuple[int, list]:
    import urllib.request

    with urllib.request.urlopen(url + path, timeout=5) as resp:
        return int(resp.headers["X-Total-Count"]), json.load(resp)


def test_filter_by_district_is_kept_in_the_url_and_lists_page_through_the_api(sample_board, tab):
    _broker, url, _procs = sample_board
    tab.goto(url + "/")
    tab.wait_for_selector('section[data-status="overdue"] tbody tr[data-id]')
    assert tab.inner_text("#n-overdue") == str(SAMPLE_COUNTS["overdue"])
    assert tab.inner_text("#n-downgraded") == str(SAMPLE_COUNTS["downgraded"])
    # accessible: labelled filters, captioned tables with column headers, a row header per incident
    assert tab.get_by_label("District", exact=True).evaluate("e => e.tagName") == "SELECT"
    assert tab.get_by_label("Category", exact=True).evaluate("e => e.tagName") == "SELECT"
    assert tab.eval_on_selector_all("section.list table", "ts => ts.map(t => !!t.caption && "
                                    "t.querySelectorAll('thead th[scope=col]').length)") == [8, 8, 8]
    assert tab.locator('section[data-status="overdue"] tbody th[scope=row] a.open').count() == 25

    # a page of 25, most harmful first: the same order as the API's
    total, first_page = api(url, "/incidents?status=overdue&sort=harm&limit=25")
    shown = rows(tab, "overdue")
    assert [r["id"] for r in shown] == [e["incident_id"] for e in first_page] and total == 33 > 25
    assert tab.inner_text('section[data-status="overdue"] .range') == "1–25 of 33"
    # human labels, the raw code on hover
    top = first_page[0]
    assert shown[0]["cells"][1].startswith("Stalking and harassment") and top["category"] in shown[0]["titles"]
    assert local(top["deadline"]) in shown[0]["cells"][6]

    tab.click('section[data-status="overdue"] button.next')
    tab.wait_for_function('() => document.querySelector(\'section[data-status="overdue"] .range\').textContent == "26–33 of 33"')
    assert "page_overdue=2" in tab.url
    _, second_page = api(url, "/incidents?status=overdue&sort=harm&limit=25&offset=25")
    assert [r["id"] for r in rows(tab, "overdue")] == [e["incident_id"] for e in second_page]

    # filter by district: in the URL, the lists filtered, back to page 1
    tab.select_option("#f-district", "Thanet")
    tab.wait_for_url("**district=Thanet**")
    assert "page_overdue" not in tab.url
    n, thanet = api(url, "/incidents?status=overdue&sort=harm&district=Thanet")
    tab.wait_for_function(f'() => document.querySelectorAll(\'section[data-status="overdue"] tbody tr[data-id]\').length == {n}')
    got = rows(tab, "overdue")
    assert [r["id"] for r in got] == [e["incident_id"] for e in thanet]
    assert all(r["cells"][3] == "Thanet" for r in got)
    for status in ("at_risk", "downgraded"):
        assert all(r["cells"][3] == "Thanet" for r in rows(tab, status))

    # the URL is the view: a reload (or a shared link) shows the same filter
    tab.goto(url + "/?district=Thanet&category=violence_without_injury")
    tab.wait_for_selector('section[data-status="overdue"] tbody tr')
    tab.wait_for_function('() => document.querySelector("#f-category").value == "violence_without_injury"')
    assert tab.input_value("#f-district") == "Thanet"
    n, both = api(url, "/incidents?status=overdue&sort=harm&district=Thanet&category=violence_without_injury")
    assert [r["id"] for r in rows(tab, "overdue")] == [e["incident_id"] for e in both] and n >= 1
    # Back returns to the previous view; Clear drops the filters
    tab.go_back()
    tab.wait_for_function('() => document.querySelector("#f-category").value == ""')
    tab.click("#f-clear")
    tab.wait_for_function('() => location.search == ""')
    tab.wait_for_function('() => document.querySelector(\'section[data-status="overdue"] .range\').textContent == "1–25 of 33"')


def on_time_incident() -> str:
    """An incident of the sample with a crime linked and recorded (any status but overdue)."""
    for m in read_capture([SAMPLE]):
        try:
            doc = orjson.loads(m.payload)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict) and doc.get("event_type") == "recorded" and doc.get("incident_ids"):
            return doc["incident_ids"][0]
    raise AssertionError("no recorded crime with an incident in the sample")


def test_open_an_incident_shows_its_timeline_deadline_crimes_and_rule(sample_board, tab, tmp_path):
    _broker, url, _procs = sample_board
    tab.goto(url + "/")
    tab.wait_for_selector('section[data-status="overdue"] tbody tr[data-id]')
    first = rows(tab, "overdue")[0]["id"]
    d = get_json(f"{url}/incidents/{first}")

    # keyboard: tab to the first incident link and press Enter
    link = tab.locator(f'section[data-status="overdue"] a.open[data-id="{first}"]')
    link.focus()
    tab.keyboard.press("Enter")
    tab.wait_for_selector("#detail[open] .timeline")
    assert f"incident={first}" in tab.url
    text = tab.inner_text("#detail")
    assert tab.inner_text("#d-title") == f"Incident {first}"
    assert "Overdue" in tab.inner_text("#detail .badge")
    why = tab.inner_text("#d-rule")
    # the rule in local time: "required since <day> 14:33 BST; no record by the deadline 14:33 next day: overdue since"
    assert why.startswith(f"Why: Required since {local(d['required_since'])}; no record by the deadline ")
    assert "next day: overdue since" in why and tab.get_attribute("#d-rule", "title") == d["rule"]
    assert local(d["deadline"], seconds=True) in text
    items = tab.eval_on_selector_all("#detail .timeline li", "lis => lis.map(li => li.className)")
    assert sum("event" in c for c in items) == len(d["events"]) and any("deadline" in c for c in items)
    assert "No crime record is linked to this incident." in text
    tab.keyboard.press("Escape")
    # The dialog's ``close`` event (which updates the address and the focus)
    # comes in a task after ``open`` is cleared: wait for the address itself.
    tab.wait_for_function("() => !document.querySelector('#detail').open && !location.search.includes('incident=')")
    assert "incident=" not in tab.url
    assert tab.evaluate("document.activeElement.dataset.id") == first  # focus back on the row

    # a deep link to an incident with its crime: the linked crimes and the record in the timeline
    recorded = on_time_incident()
    d = get_json(f"{url}/incidents/{recorded}")
    assert d["crimes"], d
    tab.goto(f"{url}/?incident={recorded}")
    tab.wait_for_selector("#detail[open] table.crimes")
    crimes = tab.inner_text("#detail table.crimes")
    for c in d["crimes"]:
        assert c["crime_id"] in crimes and local(c["recorded_at"], seconds=True) in crimes
    assert tab.locator("#detail .timeline li.crime").count() == len(d["crimes"])
    assert tab.get_attribute("#detail .badge", "title") == d["status"]

    # the picture for the README: a high-harm overdue incident
    tab.goto(f"{url}/?incident={first}")
    tab.wait_for_selector("#detail[open] .timeline")
    tab.wait_for_timeout(300)
    for path in screenshot_path(tmp_path, "incident.png"):
        tab.screenshot(path=str(path))


def test_downgrades_are_listed_and_explained(sample_board, tab):
    _broker, url, _procs = sample_board
    tab.goto(url + "/")
    tab.wait_for_selector('section[data-status="downgraded"] tbody tr[data-id]')
    n, downgrades = api(url, "/incidents?status=downgraded&sort=harm")
    shown = rows(tab, "downgraded")
    assert n == EXPECTED["incidents"]["downgraded"] == len(shown)
    assert [r["id"] for r in shown] == [e["incident_id"] for e in downgrades]
    labels = {"no_crime": "No crime", "reclassified_non_crime": "Reclassified as non-crime"}
    for r, e in zip(shown, downgrades):
        assert r["cells"][7] == labels[e["reason"]] and e["reason"] in r["titles"]

    tab.click(f'a.open[data-id="{downgrades[0]["incident_id"]}"]')
    tab.wait_for_selector("#detail[open] .timeline")
    assert tab.inner_text("#detail .badge") == "Downgraded"
    assert tab.inner_text("#d-rule").endswith("a downgrade.")
    text = tab.inner_text("#detail")
    assert labels[downgrades[0]["reason"]] in text
    assert "Reclassified to" in text or "Closed: No crime" in text


def write_capture(path, messages) -> int:
    with open(path, "wb") as fh:
        for m in messages:
            fh.write(orjson.dumps({"topic": m.topic, "key": m.key, "payload": m.payload.decode("utf-8", "replace"),
                                   "ts": m.ts_ms}) + b"\n")
    return len(messages)


def _unrecorded_rape(reported: float) -> SimMessage:
    at = datetime.fromtimestamp(reported, timezone.utc).isoformat().replace("+00:00", "Z")
    payload = {"schema": "incident.v1", "event_id": "board-test-rape", "event_type": "opened",
               "incident_id": "BOARD-TEST-1", "occurred_at": at, "reported_at": at, "channel": "999",
               "district": "Medway", "category": "rape", "flags": ["vulnerable_victim"]}
    return SimMessage(reported + 1, "cc.incidents", "BOARD-TEST-1", orjson.dumps(payload))


def test_live_board_marks_new_rows_and_warns_when_the_feeds_stop(fresh_broker, browser, tmp_path):
    """A capture that ends now: most of it at once, its last 20 minutes live
    (80 times real time); then the feeds stop and the banner says so."""
    silent_after = 10
    hours = 30
    sim = Simulator(hours=hours, seed=7, start=time.time() - hours * 3600 - 120)
    messages = list(sim)
    cut = sim.end / 1e6 - 20 * 60
    # What the tail brings onto the first page depends on the hour the capture
    # ends (the simulated force is busier by day), so one row is certain: a rape
    # with a vulnerable victim (the most harmful kind, first in harm order),
    # reported in the bulk, unrecorded: overdue once the watermark (10 min behind
    # the latest event) passes its deadline, two thirds of the way through the tail.
    messages.append(_unrecorded_rape(reported=cut + 4 * 60 - 24 * 3600))
    messages.sort(key=lambda m: m.arrival)
    bulk, tail = tmp_path / "bulk.jsonl", tmp_path / "tail.jsonl"
    n_bulk = write_capture(bulk, [m for m in messages if m.arrival < cut])
    tail_messages = [m for m in messages if m.arrival >= cut]
    write_capture(tail, tail_messages)
    # Which feed falls silent first depends on the hour the capture ends: the one
    # whose last message comes first. Within 2 s of real time (160 s of the capture
    # at 80x) the board may see both fall silent in one tick, so either may lead.
    last = {m.topic: m.arrival for m in tail_messages}
    assert set(last) == {"cc.incidents", "rms.crimes"}
    feed_name = {"cc.incidents": "Incidents feed", "rms.crimes": "Records feed"}
    first_silent = feed_name[min(last, key=last.__getitem__)]
    close_call = abs(last["cc.incidents"] - last["rms.crimes"]) < 2 * 80

    procs = Processes(tmp_path, fresh_broker)
    t = Page(browser)
    try:
        url = procs.start_worker("worker", fresh_broker.url, worker_env(CDI_FEED_SILENT_AFTER=f"{silent_after}s"))
        wait_ready(procs, url)
        settings = Settings(broker=fresh_broker.url)
        assert replay([str(bulk)], settings).ok

        def all_read():
            events = get_json(url + "/audit")["events"]
            return sum(sum(c.values()) for c in events.values()) == n_bulk
        procs.wait_until("the first part read", all_read, timeout=60)

        page = t.page
        page.set_viewport_size({"width": 1360, "height": 1300})  # the README picture: header and two lists
        page.goto(url + "/")
        page.wait_for_selector('section[data-status="overdue"] tbody tr[data-id]')
        assert page.is_hidden("#banner")
        assert page.locator("#feeds li.ok").count() == 2
        lag = page.inner_text("#clock-lag")
        assert lag.endswith("min") and " d " not in lag and " h " not in lag, lag  # a capture that ends now

        feeder = threading.Thread(target=replay, args=([str(tail)], settings), kwargs={"speed": 80})
        feeder.start()
        try:
            # rows that appear since the previous refresh are marked
            page.wait_for_selector("tbody tr.new .badge-new", timeout=25_000)
            assert page.is_hidden("#banner")
            page.wait_for_timeout(500)
            for path in screenshot_path(tmp_path, "board.png"):
                page.screenshot(path=str(path))
        finally:
            feeder.join(timeout=60)

        # the feeds stop: past the threshold the banner and the feed names turn red
        page.wait_for_selector("#banner:not([hidden])", timeout=(silent_after + 15) * 1000)
        banner = page.inner_text("#banner")
        if close_call:
            assert banner.startswith(("Incidents feed silent for", "Records feed silent for")), banner
        else:
            assert banner.startswith(f"{first_silent} silent for"), banner
        assert f"alert after {silent_after} s without a message" in banner
        page.wait_for_function("() => document.querySelectorAll('#feeds li.silent').length == 2",
                               timeout=(silent_after + 15) * 1000)  # the other feed follows
        silent = page.locator("#feeds li.silent")
        feeds_text = page.inner_text("#feeds")
        assert "Records feed silent for" in feeds_text and "Incidents feed silent for" in feeds_text, feeds_text
        assert silent.first.evaluate("e => getComputedStyle(e).color") == "rgb(164, 0, 29)"
        assert page.inner_text("#announce").endswith("silent.")  # said once to a screen reader
    finally:
        t.close()
        procs.stop_all()


def test_the_board_asks_for_the_token_once_then_shows_data(sample_board, browser):
    broker, _url, procs = sample_board
    secret = "s3cret-board-token"
    # a second deployment (own app id) on the same broker reads the same sample, behind a token
    url = procs.start_worker("secured", broker.url, worker_env(CDI_HTTP_TOKEN=secret, CDI_APP_ID="secured"))
    wait_ready(procs, url)
    procs.wait_until("the secured board", lambda: board_counts(url, secret) == SAMPLE_COUNTS, timeout=90)

    t = Page(browser)
    try:
        page = t.page
        page.goto(url + "/")
        page.wait_for_selector("#token-dialog[open]")
        assert page.locator("#token-input").is_visible()
        assert page.get_by_label("Token", exact=True).count() == 1  # a labelled field
        page.fill("#token-input", "wrong")
        page.press("#token-input", "Enter")
        page.wait_for_function("() => document.querySelector('#token-why').textContent.includes('not accepted')")
        assert page.is_visible("#token-dialog")
        page.fill("#token-input", secret)
        page.click("#token-submit")
        page.wait_for_selector('section[data-status="overdue"] tbody tr[data-id]')
        assert page.inner_text("#n-overdue") == str(SAMPLE_COUNTS["overdue"])
        assert not page.evaluate("document.querySelector('#token-dialog').open")
        # kept for the tab: refreshes and a reload do not ask again
        page.wait_for_timeout(6000)
        page.reload()
        page.wait_for_selector('section[data-status="overdue"] tbody tr[data-id]')
        assert not page.evaluate("document.querySelector('#token-dialog').open")
        assert page.evaluate("sessionStorage.getItem('cdiwatch-token')") == secret
        t.errors = [e for e in t.errors if "401" not in e]  # the refused requests themselves
    finally:
        t.close()
        procs.stop("secured")


def test_audit_url_writes_the_registrars_report_of_the_live_cluster(sample_board, tmp_path):
    """``cdiwatch audit --url URL --html`` draws the cluster's ``/report``: the same page as offline."""
    import subprocess
    import sys

    from pipeline.commands.audit import audit_files
    from pipeline.report.html import render_html
    from support import ROOT

    _broker, url, _procs = sample_board
    out = tmp_path / "live.html"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "audit", "--url", url, "--html", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    offline = render_html(audit_files([str(SAMPLE)], Settings()).report(), url)
    assert out.read_text(encoding="utf-8") == offline
