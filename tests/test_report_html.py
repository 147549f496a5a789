"""The registrar's HTML report (issue 12): ``cdiwatch audit FILE --html OUT``.

The page is rendered as a user makes it (a subprocess), opened in headless
Chromium from ``file://``, and every figure it shows is read back from the
DOM and checked against ``--json`` and :func:`pipeline.report.data.report_data`:
the rate tables (whose columns must add up), the delay, daily and downgrade
tables, the charts' rows and the rate in plain words.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from chromium import chromium, screenshot_path
from pipeline.commands.audit import audit_files
from pipeline.core.audit import AuditParts
from pipeline.report.data import report_data
from pipeline.report.html import render_html
from pipeline.settings import Settings
from support import ROOT, SAMPLE

PARTS = ("recorded_on_time", "recorded_late", "overdue", "pending", "exempt")
RATE_FIELDS = ("required", "recorded_on_time", "recorded_late", "overdue", "pending", "at_risk", "exempt",
               "downgraded")


def cdiwatch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def number(text: str) -> int:
    return int(text.replace(",", ""))


TABLE_JS = """t => [...t.querySelectorAll('tbody tr, tfoot tr')].map(tr => ({
    name: tr.dataset.name || null, head: tr.querySelector('th').textContent.trim(),
    cells: [...tr.querySelectorAll('td')].map(td => td.textContent.trim())}))"""


def check_rate_table(rows: list[dict], expected: list[dict], total: dict) -> None:
    assert [r["name"] for r in rows] == [e["name"] for e in expected] + ["all"]
    for row, want in zip(rows, expected + [total]):
        got = dict(zip(RATE_FIELDS, map(number, row["cells"][:8])))
        assert got == {k: want[k] for k in RATE_FIELDS}, row["head"]
        # the columns add up: required = on time + late + overdue + pending + exempt
        assert got["required"] == sum(got[k] for k in PARTS), row["head"]
        assert got["at_risk"] <= got["pending"] and got["downgraded"] <= got["exempt"]
        if want["rate"] is None:
            assert row["cells"][8] == "no decision yet"
        else:
            assert row["cells"][8] == pct(want["rate"])
            assert row["cells"][9] == f"{pct(want['low'])} – {pct(want['high'])}"


@pytest.mark.integration
def test_html_report_of_the_sample_shows_the_audits_numbers(tmp_path):
    out = tmp_path / "report.html"
    proc = cdiwatch("audit", str(SAMPLE.relative_to(ROOT)), "--html", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"report written to {out}" in proc.stderr
    audit = json.loads(cdiwatch("audit", str(SAMPLE), "--json").stdout)
    report = audit_files([str(SAMPLE)], Settings()).report()
    assert report["audit"]["incidents"] == audit["incidents"]
    html = out.read_text(encoding="utf-8")
    # self-contained: no script, nothing fetched
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=""", html, re.I)
    assert set(re.findall(r"https?://[^\s\"'<)]+", html)) <= {"http://www.w3.org/2000/svg"}

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 1500})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(out.as_uri())

        inc = audit["incidents"]
        rate = audit["recording_rate"]
        words = page.inner_text("#rate-words")
        assert words.startswith(f"{pct(rate['value'])} of the crime-related incidents")
        recorded = inc["recorded_on_time"] + inc["recorded_late"]
        assert f"{recorded:,} of {recorded + inc['overdue']:,}" in words
        assert f"between {pct(rate['low'])} and {pct(rate['high'])}" in words
        assert page.inner_text("#sum-words").startswith(
            f"{inc['required']:,} crime-related incidents = {inc['recorded_on_time']:,} recorded on time + ")

        # the rate tables, by category (most harmful first) and by channel
        total = {**report["total"], "name": "all"}
        by_category = page.eval_on_selector("#table-by-category", TABLE_JS)
        check_rate_table(by_category, report["by_category"], total)
        for row in report["by_category"]:  # and the same as --json's by_category
            assert {k: row[k] for k in RATE_FIELDS} == audit["by_category"][row["name"]]
        assert [r["head"] for r in by_category[:3]] == ["Rape", "Sexual offence", "Violence with injury"]
        check_rate_table(page.eval_on_selector("#table-by-channel", TABLE_JS), report["by_channel"], total)

        # forest plots: one dot and interval per decided row, at its rate; the overall line
        for key in ("by-category", "by-channel"):
            rows = report[key.replace("-", "_")]
            dots = page.eval_on_selector_all(f"#chart-{key} g.row", "gs => gs.map(g => [g.dataset.name, "
                                                                    "+g.dataset.rate])")
            assert dots == [[r["name"], pytest.approx(r["rate"], abs=1e-6)] for r in rows if r["rate"] is not None]
            assert page.locator(f"#chart-{key} line.overall").count() == 1

        # delays against the 24-hour line: the counts are the recorded incidents
        delays = page.eval_on_selector("#table-delays", TABLE_JS)
        assert [(d["head"], number(d["cells"][0])) for d in delays[:-1]] == \
            [(d["bucket"], d["count"]) for d in report["delays"]]
        assert number(delays[-1]["cells"][0]) == recorded
        assert page.locator("#chart-delays rect.bar").count() == len(report["delays"])
        assert page.locator("#chart-delays line.deadline").count() == 1

        # daily recorded / overdue over the period
        daily = page.eval_on_selector("#table-daily", TABLE_JS)
        assert [d["head"] for d in daily] == [d["day"] for d in report["daily"]]
        for got, want in zip(daily, report["daily"]):
            values = list(map(number, got["cells"]))
            assert values[1:] == [want[k] for k in PARTS] and values[0] == sum(values[1:])
        assert sum(number(d["cells"][0]) for d in daily) == inc["required"]

        # downgrades by category
        downgrades = page.eval_on_selector("#table-downgrades", TABLE_JS)
        assert [(d["name"], number(d["cells"][1])) for d in downgrades[:-1]] == \
            [(r["name"], r["downgraded"]) for r in report["by_category"]]
        assert number(downgrades[-1]["cells"][1]) == inc["downgraded"]

        # every chart is an image with a title, and has a table with a caption
        charts = page.eval_on_selector_all("svg.chart", "ss => ss.map(s => [s.getAttribute('role'), "
                                                        "s.querySelector('title').textContent])")
        assert len(charts) == 5 and all(role == "img" and title for role, title in charts)
        captions = page.eval_on_selector_all("table", "ts => ts.map(t => t.caption && t.caption.textContent)")
        assert len(captions) == 5 and all(captions)
        assert not errors
        page.wait_for_timeout(200)
        for path in screenshot_path(tmp_path, "report.png"):
            page.screenshot(path=str(path))


def test_an_empty_report_renders_without_figures():
    """No data yet (a live cluster that just started): every section says so, nothing breaks."""
    html = render_html(report_data(AuditParts(), Settings().core()), "http://127.0.0.1:6066")
    assert "No crime-related incident has been recorded or passed its deadline yet." in html
    assert "<svg" not in html.split('id="delays"')[1].split("</section>")[0]  # no empty delay chart


def test_the_source_and_labels_are_escaped():
    report = audit_files([str(SAMPLE)], Settings()).report()
    report["by_category"][0]["label"] = "<b>Rape</b>"
    html = render_html(report, "<script>alert(1)</script>.jsonl")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;.jsonl" in html
    assert "<b>Rape</b>" not in html and "&lt;b&gt;Rape&lt;/b&gt;" in html
