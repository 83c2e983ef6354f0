"""The web page in headless Chromium (Debian's /usr/bin/chromium driven by Python playwright;
no browser download): it lists the finished demo study, shows its trials, curves and
parallel coordinates, its report tab (importances, the reward-vs-KL front, the CSV), refuses
a bad launch with the field named, and the chat box gets a reply from the best checkpoint.
Screenshots go to test-artifacts/ (gitignored)."""
from __future__ import annotations

import pytest
from browser import ARTIFACTS, chromium_page, needs_chromium

try:
    from .api_service import DEMO, TOKEN, Service, shared_base
except ImportError:  # tests/e2e is not a package: pytest put it on sys.path
    from api_service import DEMO, TOKEN, Service, shared_base

pytestmark = [pytest.mark.ray, needs_chromium]


@pytest.fixture(scope="module")
def service(ray_cluster, tmp_path_factory):
    pytest.importorskip("playwright.sync_api", reason="needs the python playwright package (test extra)")
    svc = Service(shared_base(tmp_path_factory), ray_cluster["dashboard"]).start()
    svc.ensure_demo()
    yield svc
    svc.stop()


@pytest.fixture
def page():
    with chromium_page() as pg:
        yield pg


def test_page_study_trials_and_chat(service, page):
    page.goto(service.url + "/")
    # Every API route needs the token: the page says so, and draws the list once it is entered.
    assert "API token" in page.locator("p.error").inner_text()
    page.fill("#token", TOKEN)
    page.dispatch_event("#token", "change")
    row = page.locator(f"tr[data-study='{DEMO}']")
    row.wait_for()
    assert "finished" in row.inner_text()
    page.screenshot(path=str(ARTIFACTS / "web-studies.png"), full_page=True)

    row.locator("a").click()
    page.wait_for_url(f"**/#/study/{DEMO}")
    page.locator("#trials tbody tr").nth(1).wait_for()
    trials = page.locator("#trials tbody tr")
    assert trials.count() == 2
    assert all("finished" in trials.nth(i).inner_text() for i in range(2))
    assert page.locator("#study-state").inner_text() == "finished"
    assert page.locator("#curves svg path").count() == 2  # one curve per trial
    assert page.locator("#loss svg path").count() == 2
    assert page.locator("#parcoords svg polyline").count() == 2

    # Without a token the chat explains; with it, the best checkpoint answers.
    page.fill("#token", "")
    page.dispatch_event("#token", "change")
    page.fill("#chat-input", "Can you give me a tip about tea?")
    page.click("#chat-send")
    page.locator(".msg-model.failed").wait_for()
    assert "token" in page.locator(".msg-model.failed").inner_text()
    page.fill("#token", TOKEN)
    page.dispatch_event("#token", "change")
    page.fill("#chat-input", "Can you give me a tip about tea?")
    page.click("#chat-send")
    reply = page.locator(".msg-model.done")
    reply.wait_for(timeout=120_000)
    text = reply.locator("span").inner_text()
    assert text and not text.startswith("error")
    page.screenshot(path=str(ARTIFACTS / "web-study.png"), full_page=True)

    # What the trials said, side by side with the reference's answers to the same prompts.
    page.click("#generations-box summary")
    table = page.locator("#generations-table")
    table.wait_for()
    assert table.locator("thead th").count() == 4  # prompt, reference, two trials
    assert table.locator("tbody tr").count() == 16
    assert "score" in table.locator("tbody tr").first.inner_text()
    page.screenshot(path=str(ARTIFACTS / "web-generations.png"), full_page=True)
    assert page.errors == []


def test_report_tab(service, page):
    report = service.client.get(f"/studies/{DEMO}/report").json()
    page.goto(service.url + "/")
    page.fill("#token", TOKEN)
    page.dispatch_event("#token", "change")
    page.goto(f"{service.url}/#/study/{DEMO}/report")  # the tab is in the URL
    page.locator("#report-top tbody tr").nth(1).wait_for(timeout=120_000)
    # The page shows what the route says (two short trials may well tie, and then there are
    # no importances but a sentence saying why).
    imp = report["importances"]
    if imp["values"]:
        shown = page.locator("#importances tbody tr")
        assert [shown.nth(i).locator("td").first.inner_text() for i in range(shown.count())] == list(imp["values"])
    else:
        assert page.locator("#importances").count() == 0
    if imp["note"]:
        assert page.locator("#importances-note").inner_text() == imp["note"]
    assert page.locator("#report-observations li").all_inner_texts() == report["observations"]
    # The demo judges what trials say: reward and win rate against KL, the Pareto front in red.
    fronts = report["frontier"]["fronts"]
    for y in ("eval/gen/reward", "eval/gen/win_rate"):
        chart = page.locator(f"#frontier .chart[data-y='{y}']")
        assert chart.locator("circle.point").count() == 2
        assert chart.locator("circle.point.front").count() == len(fronts[y]) >= 1
        assert chart.locator("circle.champion").count() == 1
    with page.expect_download() as download:
        page.click("#report-csv")
    lines = open(download.value.path()).read().splitlines()
    assert len(lines) == 3 and "param.train.learning_rate" in lines[0] and "final.eval/gen/win_rate" in lines[0]
    page.screenshot(path=str(ARTIFACTS / "web-report.png"), full_page=True)
    assert page.errors == []


def test_launch_form_names_bad_field(service, page):
    page.goto(service.url + "/#/launch")
    page.fill("#token", TOKEN)
    page.dispatch_event("#token", "change")
    yaml_text = page.input_value("#yaml").replace("builtin:demo/train", "/etc/passwd")
    page.fill("#yaml", yaml_text)
    page.click("#launch")
    problem = page.locator("#problems li").first
    problem.wait_for()
    assert "data.train.path" in problem.inner_text() and "outside the allowed data roots" in problem.inner_text()
    page.screenshot(path=str(ARTIFACTS / "web-launch-422.png"))
    assert page.errors == []


def test_docs_render_without_a_network(service, page):
    from urllib.parse import urlsplit

    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(service.url + "/docs")
    operations = page.locator(".opblock-summary-path")
    operations.nth(8).wait_for()  # Swagger UI drew the schema's operations
    paths = {operations.nth(i).inner_text().replace("\u200b", "") for i in range(operations.count())}
    assert {"/studies", "/studies/{study_id}/generate", "/healthz"} <= paths
    hosts = {urlsplit(url).netloc for url in requested if not url.startswith("data:")}
    assert hosts == {urlsplit(service.url).netloc}, requested
    page.screenshot(path=str(ARTIFACTS / "web-docs.png"))
    assert page.errors == []
