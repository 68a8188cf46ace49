"""Property-based run over the OpenAPI description: no request, whatever its content, gets a 5xx.

Schemathesis generates requests for every operation in `/api/openapi.json` (valid and invalid
bodies, parameters and paths) and sends them to a fresh app whose providers are the local fake.
"""
from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

FUZZ_CONFIG = {"batch": {"max_in_flight": 1, "max_wait_seconds": 1}}
KNOWN = ('{"id": "known", "question": "What is a lease in English land law?", "answer": "A term of years.", '
         '"topic": "Property Law - Leasehold vs Freehold", "difficulty": "basic", "case_citation": '
         '"Street v Mountford [1985] AC 809", "reasoning": "Step 1: exclusive possession."}')


def test_no_request_gets_a_server_error(make_app, fake):
    fake.latency = 0.01
    app = make_app(FUZZ_CONFIG)
    app.test_client().post("/api/import/jsonl", json={"content": KNOWN})
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    failures = []
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=30, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            case.call_and_validate(checks=[not_a_server_error])

        try:
            run()
        except Exception as exc:  # collect every failing operation, then report them together
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
