"""Schemathesis against the service's own OpenAPI schema, run as `st run --checks all` runs
it: the engine through every phase (examples, coverage, fuzzing, stateful link chains) with
every check enabled (server errors, status codes, content types, response schemas and
headers, positive data accepted, negative data rejected, ignored auth, unsupported methods,
Allow headers, ...), a seed of its own, and the bearer token.

Runs against a real service with the finished demo study in it (about half of the generated
study ids are swapped for the demo's, so trials/best/generate return real data, and the
stateful phase reaches it through GET /studies' links), and with PREFSWEEP_MAX_RUNNING_STUDIES=0
so a generated config that happens to be valid gets 429 instead of starting a real sweep.
Bounded: PREFSWEEP_SCHEMATHESIS_EXAMPLES examples per operation (default 25)."""
from __future__ import annotations

import os
import zlib

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="needs schemathesis (test extra)")

try:
    from .api_service import AUTH, DEMO, Service, shared_base
except ImportError:  # tests/e2e is not a package: pytest put it on sys.path
    from api_service import AUTH, DEMO, Service, shared_base

pytestmark = pytest.mark.ray
EXAMPLES = int(os.environ.get("PREFSWEEP_SCHEMATHESIS_EXAMPLES", "25"))
SEED = 20_26_10  # this test's own: the same cases on every run
CONFIG = {
    "seed": SEED,
    "cache": {"enabled": False},  # no state carried between runs: the seed alone decides the cases
    "headers": AUTH,
    "request-timeout": 120,
    "generation": {"max-examples": EXAMPLES, "database": "none"},
    "checks": {"enabled": True},  # --checks all
    "phases": {"stateful": {"max-steps": 20}},
    "operations": [{
        # A config the schema accepts can still be refused for what no JSON schema can say: a
        # data file that does not exist, a path outside the data roots, a swept value that
        # breaks another section, a key only the server sets. 422 there is "accepted" data
        # answered correctly; every other operation keeps the default expectations. (This filter
        # also takes the POSTs below /studies: POST /studies/{id}/best is 403 on a service without
        # a Hugging Face token of its own, as here.)
        "include-path": "/studies", "include-method": "POST",
        "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "422",
                                                                      "429"]}},
    }],
}


@pytest.fixture(scope="module")
def service(ray_cluster, tmp_path_factory):
    svc = Service(shared_base(tmp_path_factory), ray_cluster["dashboard"]).start()
    svc.ensure_demo()
    svc.env["PREFSWEEP_MAX_RUNNING_STUDIES"] = "0"
    svc.env["PREFSWEEP_MAX_NEW_TOKENS"] = "32"  # bounds the time generation examples take
    svc.restart()
    yield svc
    svc.stop()


def failures_of(events) -> tuple[list[str], dict]:
    """Distinct check failures (operation, check, title -> first message) and what ran."""
    from schemathesis.engine import events as ev

    found: dict[tuple, str] = {}
    ran: dict = {"phases": set(), "responses": 0, "stateful_transitions": 0}
    for event in events:
        if isinstance(event, ev.PhaseStarted):
            ran["phases"].add(event.phase.name.name)
            if event.payload is not None:
                ran["stateful_transitions"] = event.payload.transitions_selected
        elif isinstance(event, ev.ScenarioFinished):
            ran["responses"] += sum(1 for i in event.recorder.interactions.values() if i.response is not None)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        found.setdefault((event.recorder.label, check.name, failure.title), str(failure)[:1500])
        elif isinstance(event, ev.NonFatalError):
            found.setdefault((event.label, "error", type(event.value).__name__), str(event.value)[:1500])
        elif isinstance(event, ev.FatalError):
            found.setdefault(("run", "fatal", type(event.exception).__name__), str(event.exception)[:1500])
        elif isinstance(event, ev.EngineFinished):
            for failure in event.failures:
                found.setdefault(("run", "after_run", failure.title), str(failure)[:1500])
    return [f"{op} [{check}] {title}\n{message}" for (op, check, title), message in found.items()], ran


def test_openapi_conformance_every_check_stateful_too(service):
    from schemathesis.engine import from_schema

    schema = schemathesis.openapi.from_url(service.url + "/openapi.json", config=schemathesis.Config.from_dict(CONFIG))

    @schema.hook
    def map_path_parameters(context, path_parameters):
        study = (path_parameters or {}).get("study_id")  # None for operations without path parameters
        if study is not None and zlib.crc32(str(study).encode()) % 2 == 0:
            path_parameters["study_id"] = DEMO  # real data for about half the cases
        return path_parameters

    failures, ran = failures_of(from_schema(schema).execute())
    print(f"schemathesis: seed {SEED}, {EXAMPLES} examples/operation, phases {sorted(ran['phases'])}, "
          f"{ran['responses']} responses, {ran['stateful_transitions']} stateful transitions")
    assert {"COVERAGE", "FUZZING", "STATEFUL_TESTING"} <= ran["phases"], ran
    assert ran["stateful_transitions"] >= 5 and ran["responses"] >= 500, ran
    assert not failures, "\n\n".join(failures)
