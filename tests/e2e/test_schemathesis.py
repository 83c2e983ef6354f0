"""Schemathesis against the service's own OpenAPI schema: no 5xx, and every response has a
documented status, content type and body shape.

Runs against a real service with the finished demo study in it (about half of the generated
study ids are swapped for the demo's, so trials/best/generate return real data), with the
bearer token (so mutating routes get past 401), and with PREFSWEEP_MAX_RUNNING_STUDIES=0 so
a generated config that happens to be valid gets 429 instead of starting a real sweep.
Bounded: a fixed number of examples per operation (PREFSWEEP_SCHEMATHESIS_EXAMPLES)."""
from __future__ import annotations

import os
import zlib

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="needs schemathesis (test extra)")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

try:
    from .api_service import AUTH, DEMO, Service, shared_base
except ImportError:  # tests/e2e is not a package: pytest put it on sys.path
    from api_service import AUTH, DEMO, Service, shared_base

pytestmark = pytest.mark.ray
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = int(os.environ.get("PREFSWEEP_SCHEMATHESIS_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def service(ray_cluster, tmp_path_factory):
    svc = Service(shared_base(tmp_path_factory), ray_cluster["dashboard"]).start()
    svc.ensure_demo()
    svc.env["PREFSWEEP_MAX_RUNNING_STUDIES"] = "0"
    svc.env["PREFSWEEP_MAX_NEW_TOKENS"] = "32"  # bounds the time generation examples take
    svc.restart()
    yield svc
    svc.stop()


def test_openapi_conformance(service):
    # Driven by hand (hypothesis @given per operation): schemathesis' pytest fixture loader
    # does not work with pytest 9.
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(service.url + "/openapi.json")
    failures, ran = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                params = case.path_parameters or {}
                if "study_id" in params and zlib.crc32(str(params["study_id"]).encode()) % 2 == 0:
                    params["study_id"] = DEMO  # real data for about half the cases
                case.call_and_validate(headers=AUTH, checks=CHECKS, timeout=120)

            try:
                check()
                ran += 1
            except Unsatisfiable:
                continue  # no invalid input exists (e.g. GET /healthz has no parameters)
            except Exception as exc:  # hypothesis re-raises the (minimal) failing case
                failures.append(f"{operation.label} [{mode.value}]: {exc}"[:4000])
    assert ran >= 15, f"only {ran} operation/mode runs: the schema lost operations?"
    assert not failures, "\n\n".join(failures)
