"""A property-based fuzz of the HTTP API from its own OpenAPI schema: no request gets a 5xx.

Schemathesis reads /openapi.json and, for every operation, generates requests
that fit the schema and requests that break it (bodies of each declared
content type, random bytes as PNG or JPEG, pixel arrays of any shape and
value, missing and extra fields). Bounded: at most MAX_EXAMPLES requests per
operation, no database of past failures, no deadline per example (a 2-core CI
machine under load must not make it flaky).
"""

from __future__ import annotations

import importlib
import os

import pytest

# Skipped where the web extra or schemathesis is missing, but never in CI, which installs both.
for _name in ("fastapi", "schemathesis"):
    if os.environ.get("CI"):
        importlib.import_module(_name)
    else:
        pytest.importorskip(_name)

import schemathesis  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from digitlab.web.app import create_app  # noqa: E402

MAX_EXAMPLES = 40


@pytest.fixture(scope="module")
def api_schema(served_model):
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(served_model))


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case) -> None:
    case.call_and_validate(checks=[not_a_server_error])
