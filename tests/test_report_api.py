"""GET /studies/{id}/report and POST /studies/{id}/best over real HTTP (uvicorn on a free port)
for a study made by hand (tests/report_study.py: real Optuna and MLflow stores, no Ray), and
the page's report tab in headless Chromium."""
from __future__ import annotations

import csv
import io

import httpx
import pytest
from browser import ARTIFACTS, chromium_page, needs_chromium
from report_study import GEN, METRIC, build
from test_api_unit import AUTH, TOKEN, served, settings_for

from api.app import create_app
from api.schemas import public
from sweep.study.report import build_report


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("report-api")
    (base / "data").mkdir()
    return base


@pytest.fixture(scope="module")
def study(base):
    return build(base / "runs", gen=GEN)


@pytest.fixture(scope="module")
def service(base, study):
    with served(create_app(settings_for(base))) as url, httpx.Client(base_url=url, timeout=60, headers=AUTH) as client:
        client.url = url
        yield client


def test_the_report_as_json_and_as_csv(service):
    report = service.get("/studies/syn/report")
    assert report.status_code == 200, report.text
    data = report.json()
    # Ray Tune's state is not here: the trials are Optuna's, joined with MLflow's runs.
    assert len(data["trials"]) == 8 and [t["rank"] for t in data["trials"]] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [t["state"] for t in data["trials"]].count("stopped") == 2
    assert abs(sum(data["importances"]["values"].values()) - 1) < 1e-9
    assert f"The best 3 trials by {METRIC} all use objective.beta = 0.2 (3 of 8 trials use it)." in data["observations"]
    assert all(t["mlflow_run_id"] for t in data["trials"])

    as_csv = service.get("/studies/syn/report", params={"format": "csv"})
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.headers["content-disposition"] == 'attachment; filename="syn-trials.csv"'
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(rows) == 8 and list(rows[0]) == data["columns"] and rows[0]["param.objective.beta"] == "0.2"

    other = service.get("/studies/syn/report", params={"importance": "mean_decrease_impurity"}).json()["importances"]
    assert other["evaluator"] == "mean_decrease_impurity" and abs(sum(other["values"].values()) - 1) < 1e-9
    assert service.get("/studies/syn/report", params={"format": "xml"}).status_code == 422
    assert service.get("/studies/syn/report", params={"importance": "shap"}).status_code == 422
    assert service.get("/studies/nope/report").status_code == 404
    assert httpx.get(f"{service.url}/studies/syn/report").status_code == 401  # the token, as everywhere


def test_pushing_needs_the_services_own_token_and_a_strict_body(service):
    off = service.post("/studies/syn/best", json={"repo_id": "me/syn"})
    assert off.status_code == 403 and "PREFSWEEP_HF_TOKEN" in off.json()["detail"]
    for body, field in [({"repo_id": "me/syn", "token": "hf_x"}, "token"),  # a token is never taken from a request
                        ({"repo_id": "me/syn.git"}, "repo_id"), ({"repo_id": "me/a--b"}, "repo_id"),
                        ({"repo_id": "me/syn", "private": "yes"}, "private"),
                        ({"repo_id": "me/syn", "revision": "../x"}, "revision"), ({}, "repo_id")]:
        answer = service.post("/studies/syn/best", json=body)
        assert answer.status_code == 422 and [p["field"] for p in answer.json()["detail"]] == [field], (body, answer.text)
    assert service.post("/studies/nope/best", json={"repo_id": "me/syn"}).status_code == 404


def test_a_service_with_a_token_pushes_only_where_it_may(base, study):
    app = create_app(settings_for(base, hf_token="hf_service_token", hf_namespaces="team"))
    with served(app) as url, httpx.Client(base_url=url, timeout=60, headers=AUTH) as client:
        elsewhere = client.post("/studies/syn/best", json={"repo_id": "me/syn"})
        assert elsewhere.status_code == 403 and "only to team" in elsewhere.json()["detail"]
        # Allowed, but this hand-made study has no checkpoint in Ray's state to push.
        nothing = client.post("/studies/syn/best", json={"repo_id": "team/syn"})
        assert nothing.status_code == 404 and "no trial" in nothing.json()["detail"]
        assert "hf_service_token" not in elsewhere.text + nothing.text


@needs_chromium
def test_the_report_tab(service, study):
    record, rows = study
    with chromium_page() as page:
        page.goto(service.url + "/")
        page.fill("#token", TOKEN)
        page.dispatch_event("#token", "change")
        page.goto(service.url + "/#/study/syn/report")  # a tab is a link
        page.locator("#importances tbody tr").nth(1).wait_for()
        assert page.locator("#tabbtn-report").get_attribute("aria-selected") == "true"
        assert page.locator("#tab-trials").is_hidden()
        assert "objective.beta = 0.2" in page.locator("#report-observations").inner_text()
        assert page.locator("#report-top tbody tr").count() == 8
        with page.expect_download() as download:
            page.click("#report-csv")
        assert download.value.suggested_filename == "syn-trials.csv"
        lines = open(download.value.path()).read().splitlines()
        assert len(lines) == 9 and lines[0].startswith("rank,number,trial_id")

        # The reward-vs-KL scatter, drawn from the report of the same study with Tune's rows
        # (which only a real sweep leaves on disk): every trial with the metrics, the front in red.
        data = public(build_report(record, rows).data)
        page.evaluate("r => { const p = document.querySelector('#tab-report'); p.textContent = ''; "
                      "Prefsweep.drawReport(p, r); }", data)
        for y in data["frontier"]["ys"]:
            chart = page.locator(f"#frontier .chart[data-y='{y}']")
            assert chart.locator("circle.point").count() == 4
            assert chart.locator("circle.point.front").count() == len(data["frontier"]["fronts"][y]) == 3
            assert chart.locator("polyline.front-line").count() == 1 and chart.locator("circle.champion").count() == 1
            assert chart.locator("rect.reference").count() == 1
        page.screenshot(path=str(ARTIFACTS / "web-report.png"), full_page=True)
        page.click("#tabbtn-trials")
        assert page.locator("#tab-trials").is_visible() and page.url.endswith("#/study/syn")
        assert page.errors == []
