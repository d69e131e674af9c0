"""The API's own description, fuzzed: cases generated from the OpenAPI document (every
operation, bounded in examples), sent with a user's, a worker's and an admin's token,
against a controller with a queued, a running and a finished job. No answer may be a
5xx: bad input is a 4xx with a message. The cases are the same on every run
(derandomized); scripts/test-service.sh runs this file in a pytest of its own."""

from __future__ import annotations

import itertools

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode

from conftest import tar_bytes

EXAMPLES = 25  # per operation, mode and role: about 40 s in all; 8 missed a planted 500


@pytest.fixture
def database_url(tmp_path) -> str:
    """SQLite only: what is fuzzed is the handling of input, the same on both databases."""
    return f"sqlite:///{tmp_path}/jobqueue.db"


@pytest.fixture(params=["alice", "w1", "root"], ids=["user", "worker", "admin"])
def who(request) -> str:
    return request.param


@pytest.fixture
def api(make_stack, who):
    stack = make_stack(claim_wait_seconds=1)  # a generated claim may ask to wait long
    done = stack.submit_ok(files={"main.py": b"pass\n", "data/in.csv": b"1\n"})
    lease = stack.claim_ok()["lease"]
    stack.upload(done["id"], lease, results=tar_bytes({"out/r.txt": b"r"}))
    stack.submit_ok()
    stack.claim_ok()  # one running
    stack.submit_ok()  # one queued
    headers = stack.headers(who)
    return stack, schemathesis.openapi.from_wsgi("/api/v1/openapi.json", stack.app,
                                                 headers=headers), headers


def test_no_generated_request_gets_a_5xx(api):
    stack, schema, headers = api
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15  # every route of the document, none skipped

    # Inputs the document allows, and inputs it does not (wrong types, out of range,
    # missing fields): both must be answered without a 5xx.
    for operation, mode in itertools.product(operations, GenerationMode):
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def no_5xx(case):
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        try:
            no_5xx()
        except Unsatisfiable:
            # Nothing in the operation can be made invalid (no parameters, no body).
            assert mode is GenerationMode.NEGATIVE, operation.label
