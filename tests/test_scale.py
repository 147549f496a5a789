"""200,000 open incidents in the cluster (150,000 overdue), on one and on three
workers (issue 9, item 1): nothing unbounded goes into one record or one
response, ``/audit`` is exact, ``/incidents`` pages and filters correctly with
``X-Total-Count``, and ``GET /incidents/{id}`` answers from any worker.

How fast a page answers at this size is measured in ``make bench`` (a timing
assert here would only measure the test machine).
"""

from __future__ import annotations

import urllib.request

import orjson
import pytest

from pipeline.capture import write_capture
from pipeline.commands.audit import audit_files
from pipeline.commands.replay import replay
from pipeline.core.times import HOUR, MINUTE, format_time
from pipeline.core.vocabulary import DEFAULT_DISTRICTS
from pipeline.settings import Settings
from support import Processes, get_json, http_ok, read_topics, same_audit, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OPEN = 200_000
OVERDUE = 150_000
CATEGORIES = ("rape", "theft", "burglary", "violence_with_injury", "fraud")
NOW_US = 1_790_000_000_000_000  # 2026-09-21, well in the past: no future timestamps


def make_capture(path) -> None:
    """200k crime-related incidents opened and never recorded: 150k past their deadline."""
    latest = NOW_US
    records = []
    for i in range(OPEN):
        if i < OVERDUE:
            reported = latest - 30 * HOUR - (i % 10_000) * 6 * 1_000_000
        else:
            reported = latest - 20 * HOUR + (i % 10_000) * 6 * 1_000_000
        event = {"schema": "incident.v1", "event_id": f"e{i}", "event_type": "opened", "incident_id": f"I{i:06d}",
                 "occurred_at": format_time(min(reported + MINUTE, latest)), "reported_at": format_time(reported),
                 "channel": "999", "district": DEFAULT_DISTRICTS[i % len(DEFAULT_DISTRICTS)],
                 "category": CATEGORIES[i % len(CATEGORIES)]}
        records.append(("cc.incidents", f"I{i:06d}", orjson.dumps(event), None))
    write_capture(records, str(path))


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    path = tmp_path_factory.mktemp("scale") / "open.jsonl"
    make_capture(path)
    return path, audit_files([str(path)], Settings()).audit()


def page(url: str, query: str) -> tuple[int, list]:
    with urllib.request.urlopen(f"{url}/incidents?{query}", timeout=30) as resp:
        return int(resp.headers["X-Total-Count"]), orjson.loads(resp.read())


@pytest.mark.parametrize("workers", [1, 3])
def test_200k_open_incidents(fresh_broker, tmp_path, capture, workers):
    path, expected = capture
    assert expected["incidents"]["overdue"] == OVERDUE and expected["incidents"]["pending"] == OPEN - OVERDUE
    procs = Processes(tmp_path, fresh_broker)
    try:
        urls = [procs.start_worker(f"w{i}", fresh_broker.url, worker_env()) for i in range(workers)]
        procs.wait_until("workers ready", lambda: all(http_ok(u + "/readyz") for u in urls), timeout=120)
        assert replay([str(path)], Settings(broker=fresh_broker.url)).ok

        def converged():
            try:
                return all(same_audit(get_json(u + "/audit", timeout=30), expected) and
                           page(u, "status=overdue&limit=1")[0] == OVERDUE for u in urls)
            except OSError:
                return False

        procs.wait_until("every /audit exact and every board index complete", converged, timeout=600, interval=2)
        for url in urls:
            total, first = page(url, "status=overdue&limit=5000")
            assert total == OVERDUE and len(first) == 5000
            deadlines = [(x["deadline"], x["incident_id"]) for x in first]
            assert deadlines == sorted(deadlines)
            total, deep = page(url, "status=overdue&limit=500&offset=100000")
            assert total == OVERDUE and len(deep) == 500
            total, tail = page(url, f"status=overdue&limit=500&offset={OVERDUE - 100}")
            assert len(tail) == 100
            total, medway = page(url, "status=overdue&district=Medway&category=rape&limit=50&offset=10")
            assert total == sum(1 for i in range(OVERDUE) if DEFAULT_DISTRICTS[i % 13] == "Medway"
                                and CATEGORIES[i % 5] == "rape")
            assert all(x["district"] == "Medway" and x["category"] == "rape" for x in medway)
            total, pending = page(url, "status=pending&limit=10")
            assert total + page(url, "status=at_risk&limit=1")[0] == OPEN - OVERDUE
            for incident_id in ("I000000", "I149999", "I199999", "I123457"):
                d = get_json(f"{url}/incidents/{incident_id}")
                assert d["incident_id"] == incident_id and d["events"][0]["event_type"] == "opened"
                assert d["status"] in (("overdue",) if int(incident_id[1:]) < OVERDUE else ("pending", "at_risk"))
                assert d["deadline"] and d["crimes"] == []
        # nothing unbounded in one record: the largest view and changelog records stay small
        for topic in ("cdiwatch-views", "cdiwatch-incident-changelog"):
            sizes = [len(v or b"") for _t, _p, _k, v in read_topics(fresh_broker.bootstrap, [topic], timeout=60)]
            assert sizes and max(sizes) < 100_000, (topic, max(sizes))
    finally:
        procs.stop_all()
