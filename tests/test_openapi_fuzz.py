"""Property-based run over the OpenAPI description: no request, whatever its content, gets a 5xx,
and every answer matches what the document says (status, media type, headers, body schema).

Schemathesis generates requests for every operation in `/api/openapi.json` (valid bodies,
parameters and paths, then invalid ones wherever there is a query or a body) and sends them to a fresh app whose providers are the local fake.
"""
from __future__ import annotations

import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

FUZZ_CONFIG = {"batch": {"max_in_flight": 1, "max_wait_seconds": 1}}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
KNOWN = ('{"id": "known", "question": "What is a lease in English land law?", "answer": "A term of years.", '
         '"topic": "Property Law - Leasehold vs Freehold", "difficulty": "basic", "case_citation": '
         '"Street v Mountford [1985] AC 809", "reasoning": "Step 1: exclusive possession."}')


def test_no_request_gets_a_server_error(make_app, fake):
    fake.latency = 0.01
    app = make_app(FUZZ_CONFIG)
    app.test_client().post("/api/import/jsonl", json={"content": KNOWN})
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    schema.config.max_stream_events = 1  # the batch stream never ends: read its first frame only
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    failures = []
    for operation in operations:
        modes = [GenerationMode.POSITIVE]
        if _takes_input(operation.definition.raw):
            modes.append(GenerationMode.NEGATIVE)  # values the document rules out: a 4xx, never a 5xx
        for mode in modes:
            @given(case=operation.as_strategy(mode))
            @settings(max_examples=30, derandomize=True, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case):
                # identity: the WSGI transport does not decode compressed bodies (compression has its own test)
                case.call_and_validate(checks=CHECKS, headers={"Accept-Encoding": "identity"})

            try:
                run()
            except Exception as exc:  # collect every failing operation, then report them together
                failures.append(f"{operation.method.upper()} {operation.path} ({mode}): {exc}")
    assert not failures, "\n\n".join(failures)


def _takes_input(definition: dict) -> bool:
    """Whether an operation has a query parameter or a body that invalid values can be made for."""
    return "requestBody" in definition or any(p["in"] == "query" for p in definition.get("parameters", ()))
